"""A small CNN classifier for 28x28 grey images (or 64x64 RGB ones: a folder's labelled subfolders); its
penultimate layer is the feature space for FID."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from einops import rearrange
from torch import nn

FEATURES = 128  # size of the penultimate activations that quality metrics compare
# The trained weights ship as package data, found from the installed package, whatever the working directory.
WEIGHTS_DIR = Path(str(resources.files("models") / "weights"))


class Classifier(nn.Module):
    """(B, C, H, W) in [0, 1] -> conv-conv-pool -> conv-conv-pool -> average-pooled to 7x7x2W -> F ->
    class logits. At 28x28 the pooling to 7x7 is the identity (the digits' classifiers); at 64x64 it
    averages the 16x16 map.

    No BatchNorm and no dropout: the module has no buffers and no randomness, so the pure train step
    and evaluation see the same deterministic function.
    """

    def __init__(self, width: int = 32, features: int = FEATURES, classes: int = 10, channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv4 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, features)
        self.head = nn.Linear(features, classes)
        self.pool = nn.MaxPool2d(2)
        self.fit = nn.AdaptiveAvgPool2d(7)

    def features(self, x):
        """Penultimate activations (B, F), after the ReLU: what FID and precision/recall compare."""
        h = self.pool(self.conv2(self.conv1(x - 0.5).relu()).relu())  # (B, W, 14, 14)
        h = self.fit(self.pool(self.conv4(self.conv3(h).relu()).relu()))  # (B, 2W, 7, 7)
        return self.fc(rearrange(h, "b c h w -> b (c h w)")).relu()  # (B, F)

    def forward(self, x):
        """Class logits (B, classes)."""
        return self.head(self.features(x))


def build_classifier(
    width: int = 32, features: int = FEATURES, classes: int = 10, channels: int = 1
) -> Classifier:
    """The classifier behind weights_path(dataset) (defaults = the digits' shipped ones)."""
    return Classifier(width, features, classes, channels)


def weights_path(dataset: str) -> Path:
    """Where the trained classifier for `dataset` (or a labelled folder's name) lives (written by
    experiments.classifier)."""
    return WEIGHTS_DIR / f"classifier-{dataset}.safetensors"

"""The feature space of the quality metrics: the project's trained classifier, loaded from the
weights shipped inside the models package, and its features and logits for a batch of images."""

from __future__ import annotations

import torch
from safetensors import safe_open

from engine import CheckpointError, load_weights
from harness.data import DATASETS, DataError
from models.classifier import build_classifier, weights_path


def classifier_meta(path) -> dict:
    """The metadata a classifier file was exported with (experiments.classifier)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def folder_classifier(class_names: list[str]) -> str | None:
    """The name of a shipped classifier trained on folders with exactly these subfolder classes
    (e.g. the emoji groups of `make data-emoji`), or None."""
    if not class_names:
        return None
    for path in sorted(weights_path("*").parent.glob("classifier-*.safetensors")):
        meta = classifier_meta(path)
        if meta.get("classes", "").split(",") == list(class_names):
            return meta.get("dataset")
    return None


def load_classifier(dataset: str, device="cpu"):
    """The trained feature classifier for `dataset` (mnist, fashion-mnist, or a labelled folder's
    name such as emoji), in eval mode on `device`."""
    path = weights_path(dataset)
    if dataset not in DATASETS and not path.exists():
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if not path.exists():
        raise CheckpointError(
            f"no classifier weights at {path}: run `make train-classifier` "
            f"(python -m experiments.classifier --dataset {dataset})"
        )
    try:
        meta = classifier_meta(path)
        classes = len(meta["classes"].split(",")) if "classes" in meta else 10  # the digits' files: 10
        model = build_classifier(
            int(meta.get("width", 32)), classes=classes, channels=int(meta.get("channels", 1))
        )
        model.load_state_dict(load_weights(path)[0], strict=True)
    except CheckpointError:
        raise
    except Exception as e:  # unreadable file or a state_dict that does not fit the architecture
        raise CheckpointError(f"{path} is not a loadable classifier ({type(e).__name__}: {e})") from None
    return model.to(device, memory_format=torch.channels_last).eval()  # 3x the NCHW rate on a CPU


@torch.no_grad()
def classifier_outputs(model, images: torch.Tensor, batch_size: int = 250):
    """(features (N, F) float32, logits (N, classes) float32), both on the CPU, for images (N, C, H, W)
    in [0, 1] (the shape the classifier was trained on), run through `model` on its own device
    `batch_size` images at a time (on a 2-core CPU, channels-last weights and 250 images a batch
    took 10,000 MNIST digits in 3.6 s where NCHW in batches of 1,000 took 11.3-11.8 s)."""
    channels = model.conv1.in_channels
    if images.dim() != 4 or images.shape[1] != channels:
        raise ValueError(f"images must be (N, {channels}, H, W), got {tuple(images.shape)}")
    device = next(model.parameters()).device
    feats, logits = [], []
    for chunk in images.split(batch_size):
        f = model.features(chunk.to(device, torch.float32))  # (b, F)
        feats.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
    return torch.cat(feats), torch.cat(logits)

"""The feature space of the quality metrics: the project's trained classifier, loaded from the
weights shipped inside the models package, and its features and logits for a batch of images."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine import CheckpointError
from harness.data import DATASETS, DataError
from models.classifier import build_classifier, weights_path


def load_classifier(dataset: str, device="cpu"):
    """The trained feature classifier for `dataset` (mnist or fashion-mnist), in eval mode on `device`."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    path = weights_path(dataset)
    if not path.exists():
        raise CheckpointError(
            f"no classifier weights at {path}: run `make train-classifier` "
            f"(python -m experiments.classifier --dataset {dataset})"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            width = int((f.metadata() or {}).get("width", 32))
        model = build_classifier(width)
        model.load_state_dict(load_file(str(path)), strict=True)
    except Exception as e:  # unreadable file or a state_dict that does not fit the architecture
        raise CheckpointError(f"{path} is not a loadable classifier ({type(e).__name__}: {e})") from None
    return model.to(device).eval()


@torch.no_grad()
def classifier_outputs(model, images: torch.Tensor, batch_size: int = 1000):
    """(features (N, F) float32, logits (N, 10) float32), both on the CPU, for images (N, 1, 28, 28)
    in [0, 1], run through `model` on its own device `batch_size` images at a time."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    device = next(model.parameters()).device
    feats, logits = [], []
    for chunk in images.split(batch_size):
        f = model.features(chunk.to(device, torch.float32))  # (b, F)
        feats.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
    return torch.cat(feats), torch.cat(logits)

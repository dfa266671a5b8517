"""A run's data splits: train, validation (held out of train when asked) and test, on the run's device."""

from __future__ import annotations

from typing import NamedTuple

import torch

from harness.config import UsageError
from harness.data import Dataset, load_dataset

HELD_OUT = 0.1  # share of an image folder kept out of training, to score against (at least one image)
VAL_SEED = 2024  # which training images --val-split holds out (fixed: the same for every run)


class Splits(NamedTuple):
    """The images a run trains on, selects on (None: no validation split) and reports on."""

    train: Dataset
    val: Dataset | None
    test: Dataset


def split_off(data: Dataset, n: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(the rest, n images) of a split: a fixed seeded shuffle, its last n held out."""
    perm = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed)).to(
        data.images.device
    )
    keep, held = perm[: len(perm) - n], perm[len(perm) - n :]
    return Dataset(data.images[keep], data.labels[keep]), Dataset(data.images[held], data.labels[held])


def held_out_split(data: Dataset, fraction: float = HELD_OUT, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, held out) of a folder's images: a fixed seeded shuffle, the last max(1, fraction * N)
    held out; a single image is both (nothing to hold out)."""
    if len(data.images) < 2:
        return data, data
    return split_off(data, max(1, int(len(data.images) * fraction)), seed)


def load_splits(cfg, device) -> tuple[Dataset, Dataset]:
    """(train, test) of cfg.dataset on device; an image folder's test split is its held-out tenth."""
    if cfg.dataset == "imagefolder":
        from harness.imagefolder import load_image_folder  # torchvision's image codecs: only when used

        if not cfg.image_folder:
            raise UsageError("--dataset imagefolder needs --image-folder PATH")
        images = load_image_folder(cfg.image_folder, cfg.image_size, cfg.channels, device, cfg.max_pixels)
        return held_out_split(images)
    splits = ("train", "test")
    return tuple(load_dataset(cfg.dataset, s, device=device, download=cfg.download) for s in splits)


def load_run_data(cfg, device) -> Splits:
    """cfg's splits on device; a config with a val_split field > 0 holds that many training images
    out (VAL_SEED: the same ones for every run) for per-epoch scores and model selection."""
    train, test = load_splits(cfg, device)
    n = getattr(cfg, "val_split", 0)  # an experiment's own flag (experiments.vae), not every run's
    if not n:
        return Splits(train, None, test)
    if n >= len(train.images):
        raise UsageError(f"--val-split {n} leaves no training images")
    train, val = split_off(train, n, seed=VAL_SEED)
    return Splits(train, val, test)

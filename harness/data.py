"""Tensor-resident data: IDX files read once into uint8 device tensors, epochs as seeded index gathers."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import torch

from harness.files import FileError, open_regular

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # CLI name -> torchvision folder
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


class DataError(Exception):
    """A data file is missing or unreadable; the message is one line meant for the user."""


class Dataset(NamedTuple):
    images: torch.Tensor  # (N, H, W) grey or (N, C, H, W) uint8, on the target device
    labels: torch.Tensor  # (N,) int64


def data_dir() -> Path:
    """Where data sets live: $DATA_DIR, else ./data."""
    return Path(os.environ.get("DATA_DIR", "data"))


def _read_idx(path: Path, magic: int, ndim: int) -> torch.Tensor:
    """Parse one uncompressed IDX file (big-endian header, uint8 payload) into a CPU tensor. Only a
    regular file is opened (a FIFO or /dev/zero would block or never end), and its size is checked
    against the header before the payload is read."""
    offset = 4 + 4 * ndim
    try:
        with os.fdopen(open_regular(path, follow=True), "rb") as f:
            size, header = os.fstat(f.fileno()).st_size, f.read(offset)
            if len(header) < offset or int.from_bytes(header[:4], "big") != magic:
                raise DataError(f"{path} is not an IDX file with magic {magic} (corrupt or wrong file)")
            dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
            expected = offset + math.prod(dims)  # Python integers: no overflow
            if size != expected:
                raise DataError(f"{path} has {size} bytes, its header promises {expected} (truncated?)")
            raw = header + f.read(size - offset)
    except FileError as e:
        raise DataError(str(e)) from None
    except OSError as e:  # a folder in its place, no permission, an I/O error
        raise DataError(f"cannot read {path} ({e.strerror or e})") from None
    if len(raw) != expected:
        raise DataError(f"{path} changed while it was read ({len(raw)} of {expected} bytes)")
    if expected == offset:  # no items: frombuffer refuses an empty buffer
        return torch.zeros(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(dims)


def _try_download(name: str, root: Path) -> None:
    """Fetch the files with torchvision's downloader (only when asked: these machines are offline)."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}
    try:
        for train in (True, False):
            cls[name](str(root), train=train, download=True)
    except Exception as e:  # any network / checksum failure becomes one line
        raise DataError(f"download of {name} into {root} failed ({type(e).__name__}: {e})") from None


def load_dataset(name: str, split: str, root=None, device="cpu", download=False) -> Dataset:
    """Read a dataset split from torchvision's layout (root/MNIST/raw/...) onto `device`."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in _FILES:
        raise DataError(f"unknown split {split!r}; choose 'train' or 'test'")
    root = Path(root) if root is not None else data_dir()
    raw = root / DATASETS[name] / "raw"
    paths = [raw / f for f in _FILES[split]]
    if download and not all(p.exists() for p in paths):
        _try_download(name, root)
    missing = [p.name for p in paths if not p.exists()]
    zipped = [p.name + ".gz" for p in paths if not p.exists() and p.with_name(p.name + ".gz").exists()]
    if zipped:
        raise DataError(f"{raw} holds {', '.join(zipped)} still compressed: gunzip them first")
    if missing:
        raise DataError(
            f"{name} {split} files missing under DATA_DIR={root}: expected {raw}/{{{','.join(missing)}}} "
            "(set DATA_DIR to the folder holding MNIST/raw and FashionMNIST/raw, or pass --download)"
        )
    images = _read_idx(paths[0], _IMAGE_MAGIC, 3)
    labels = _read_idx(paths[1], _LABEL_MAGIC, 1)
    if len(images) != len(labels):
        raise DataError(f"{raw}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0 or tuple(images.shape[1:]) != (28, 28):  # what every model here is built for
        shape = "x".join(map(str, images.shape[1:]))
        raise DataError(f"{paths[0]} holds {len(images)} images of {shape} pixels; {name} has 28x28 images")
    return Dataset(images.to(device), labels.to(device=device, dtype=torch.int64))


def load_mnist(root=None, split="train", device="cpu", download=False) -> Dataset:
    """MNIST split as uint8 (N, 28, 28) images and int64 labels on `device`."""
    return load_dataset("mnist", split, root, device, download)


def load_fashion_mnist(root=None, split="train", device="cpu", download=False) -> Dataset:
    """Fashion-MNIST split as uint8 (N, 28, 28) images and int64 labels on `device`."""
    return load_dataset("fashion-mnist", split, root, device, download)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) grey -> float (B, 1, H, W); uint8 (B, C, H, W) -> float (B, C, H, W); in [0, 1]."""
    if images.dtype != torch.uint8 or images.ndim not in (3, 4):  # div_ below must act on a fresh copy
        raise ValueError(
            f"to_unit expects uint8 (B, H, W) or (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return images.to(torch.float32).div_(255.0)


def binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarisation: each pixel an independent Bernoulli draw with its intensity as p."""
    return torch.bernoulli(x, generator=generator)


def epoch_permutation(n: int, seed: int, epoch: int, device) -> torch.Tensor:
    """The sample order of one epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g, device=device)

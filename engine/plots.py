"""PNG figures: per-epoch curves from metrics.jsonl records and labelled image grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def plot_curves(records: list[dict], panels: list[tuple[str, str]], path, title: str) -> None:
    """One panel per (label, metric): train_<metric> and test_<metric> against epoch."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    epochs = [r["epoch"] for r in records]
    for ax, (label, key) in zip(axes[0], panels):
        for split, style in (("train", "-o"), ("test", "--s")):
            values = [r.get(f"{split}_{key}") for r in records]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, markersize=3, label=split)
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)


def save_image_rows(rows: list[torch.Tensor], labels: list[str], path, title: str) -> None:
    """Rows of images (each (N, C, H, W) in [0, 1]) stacked vertically, each row labelled."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.25 * len(rows) + 0.6), squeeze=False)
    for ax, images, label in zip(axes[:, 0], rows, labels):
        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=len(images), padding=1)
        ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)


def save_image_grid(images: torch.Tensor, path, title: str, nrow: int = 8) -> None:
    """A square-ish grid of images (N, C, H, W) in [0, 1]."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[1] / grid.shape[2] + 0.4))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)

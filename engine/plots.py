"""PNG figures: per-epoch curves from metrics.jsonl records and labelled image grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
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


def plot_latents(panels: list[tuple[str, torch.Tensor, torch.Tensor]], path, title: str) -> None:
    """Side-by-side scatters of 2-D codes (N, 2) coloured by label, all on the same axis limits."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    allz = torch.cat([z for _, z, _ in panels]).float().cpu()
    lo, hi = allz.quantile(0.001, dim=0), allz.quantile(0.999, dim=0)
    for ax, (name, z, labels) in zip(axes[0], panels):
        z, labels = z.float().cpu(), labels.cpu()
        sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="code dim 1", ylabel="code dim 2", title=name)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(sc, ax=axes[0].tolist(), ticks=range(10), label="class")
    fig.suptitle(title)
    fig.savefig(Path(path), dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_bars(values: list[float], path, title: str, xlabel: str, ylabel: str) -> None:
    """A bar per entry (e.g. KL per latent dimension)."""
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(values) + 2), 3.6))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)


def save_grids_side_by_side(grids: list[tuple[str, torch.Tensor]], path, title: str, nrow=8) -> None:
    """Several image grids (each (N, C, H, W) in [0, 1]) next to each other, each titled."""
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5.4), squeeze=False)
    for ax, (name, images) in zip(axes[0], grids):
        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)

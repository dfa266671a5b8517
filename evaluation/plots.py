"""Figures: per-epoch and per-step curves, labelled image grids (grey or RGB) and animated GIF grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from harness.board import make_grid


class _Lazy:
    """A module imported at its first use: matplotlib adds to the start-up time,
    which a run need not pay before its first step (its first figure comes after an epoch)."""

    def __init__(self, load):
        self._load, self._module = load, None

    def __getattr__(self, name):
        if self._module is None:
            self._module = self._load()
        return getattr(self._module, name)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot

    return matplotlib.pyplot


plt = _Lazy(_pyplot)
ticker = _Lazy(lambda: __import__("matplotlib.ticker").ticker)
Image = _Lazy(lambda: __import__("PIL.Image").Image)


def _grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1], C = 1 or 3, as one (3, H', W') CPU grid; make_grid repeats a
    single channel three times, so grey stays grey and RGB keeps its colours."""
    return make_grid(
        images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value
    )


def _show(ax, grid: torch.Tensor) -> None:
    """Draw a (3, H, W) grid in [0, 1] as RGB (so no colormap applies) without axes."""
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path) -> None:
    """Lay out, write the PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)


def plot_curves(records: list[dict], panels: list[tuple[str, str]], path, title: str) -> None:
    """One panel per (label, metric): train_, val_ and test_<metric> against epoch (those present)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    epochs = [r["epoch"] for r in records]
    for ax, (label, key) in zip(axes[0], panels):
        for split, style in (("train", "-o"), ("val", ":^"), ("test", "--s")):
            values = [r.get(f"{split}_{key}") for r in records]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, markersize=3, label=split)
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save(fig, path)


def save_image_rows(rows: list[torch.Tensor], labels: list[str], path, title: str) -> None:
    """Rows of images (each (N, C, H, W) in [0, 1]) stacked vertically, each row labelled."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.25 * len(rows) + 0.6), squeeze=False)
    for ax, images, label in zip(axes[:, 0], rows, labels):
        _show(ax, _grid(images, nrow=len(images), padding=1, pad_value=0.0))
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    _save(fig, path)


def save_nearest_grid(samples, pool, path, title: str, sample_feats=None, pool_feats=None, per_row=16):
    """Each of `samples` (N, C, H, W) in [0, 1] above its nearest image of `pool` (Euclidean, in the
    given features; pixels when none), per_row pairs to a row: memorised images show as equal pairs."""
    from evaluation.quality import nearest_neighbours

    flat = lambda t: t.flatten(1).float()  # noqa: E731
    a = flat(samples) if sample_feats is None else sample_feats
    b = flat(pool) if pool_feats is None else pool_feats
    nearest = pool[nearest_neighbours(a.cpu(), b.cpu(), k=1)[:, 0].to(pool.device)]
    rows, labels = [], []
    for i in range(0, len(samples), per_row):
        rows += [samples[i : i + per_row], nearest[i : i + per_row]]
        labels += ["generated", "nearest\ntraining image"]
    save_image_rows(rows, labels, path, title)


def save_image_grid(images: torch.Tensor, path, title: str, nrow: int = 8) -> None:
    """A square-ish grid of images (N, C, H, W) in [0, 1], grey (C = 1) or RGB (C = 3)."""
    grid = _grid(images, nrow)
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[1] / grid.shape[2] + 0.4))
    _show(ax, grid)
    ax.set_axis_off()
    ax.set_title(title)
    _save(fig, path)


def plot_latents(panels: list[tuple[str, torch.Tensor, torch.Tensor]], path, title: str, shared=True) -> None:
    """Side-by-side scatters of 2-D codes (N, 2) coloured by label, all on the same axis limits
    (shared) or each on its own."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    allz = torch.cat([z for _, z, _ in panels]).float().cpu()
    for ax, (name, z, labels) in zip(axes[0], panels):
        z, labels = z.float().cpu(), labels.cpu()
        limits = allz if shared else z
        lo, hi = limits.quantile(0.001, dim=0), limits.quantile(0.999, dim=0)
        sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="code dim 1", ylabel="code dim 2", title=name)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(sc, ax=axes[0].tolist(), ticks=range(10), label="class")
    fig.suptitle(title)
    fig.savefig(Path(path), dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_bars(
    values: list[float] | dict[str, list[float]], path, title: str, xlabel: str, ylabel: str
) -> None:
    """A bar per entry (e.g. KL per latent dimension); a dict of equal-length lists: grouped bars,
    one colour per key, with a legend (e.g. class shares of generated and real images)."""
    series = values if isinstance(values, dict) else {"": values}
    n = len(next(iter(series.values())))
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * n * len(series) + 2), 3.6))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(n)], vals, width, label=name or None)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    if len(series) > 1:
        ax.legend()
    _save(fig, path)


def save_grids_side_by_side(grids: list[tuple[str, torch.Tensor]], path, title: str, nrow=8) -> None:
    """Several image grids (each (N, C, H, W) in [0, 1], grey or RGB) next to each other, each titled."""
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5.4), squeeze=False)
    for ax, (name, images) in zip(axes[0], grids):
        _show(ax, _grid(images, nrow))
        ax.set_axis_off()
        ax.set_title(name)
    fig.suptitle(title)
    _save(fig, path)


def _smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average over `window` points; the window shrinks at the ends (no lag, no edge dip)."""
    x, window = torch.tensor(values, dtype=torch.float64), max(window, 1)
    sums = torch.cat([torch.zeros(1, dtype=x.dtype), x.cumsum(0)])  # sums[k] = x[:k].sum()
    i = torch.arange(len(x))
    lo, hi = (i - window // 2).clamp(min=0), (i - window // 2 + window).clamp(max=len(x))
    return ((sums[hi] - sums[lo]) / (hi - lo)).tolist()


def plot_step_curves(
    records: list[dict], panels: list[tuple[str, list[str]]], path, title: str, smooth: int = 50
) -> None:
    """One panel per (label, keys): each key against "step", raw (faint) and smoothed over `smooth`
    points in the same colour. Records missing a key, or holding a non-finite value, are left out."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels):
        for i, key in enumerate(keys):
            points = [(r["step"], float(r[key])) for r in records if r.get(key) is not None]
            points = [(s, v) for s, v in points if math.isfinite(v)]
            if not points:
                continue
            steps, values = zip(*points)
            ax.plot(steps, values, color=f"C{i}", alpha=0.25, linewidth=0.8)
            ax.plot(steps, _smooth(list(values), smooth), color=f"C{i}", linewidth=1.6, label=key)
        ax.set(xlabel="step", ylabel=label, title=label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    _save(fig, path)


def save_png(images: torch.Tensor, path, nrow: int = 8) -> None:
    """A batch (N, C, H, W) in [0, 1] as one PNG grid, black between the tiles: the pixels of
    torchvision.utils.save_image(images, path, nrow), without importing torchvision."""
    grid = _grid(images, nrow, pad_value=0.0).mul(255).add(0.5).to(torch.uint8)  # (3, H, W)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(Path(path))


def read_png(path) -> torch.Tensor:
    """A PNG as a batch of one, (1, 3, H, W) in [0, 1] (a frame for save_gif)."""
    with Image.open(Path(path)) as image:
        pixels = np.array(image.convert("RGB"))  # (H, W, 3) uint8, a copy torch may write to
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


def save_gif(frames: list[torch.Tensor], path, duration_ms: int = 400, nrow: int = 8) -> None:
    """An animated GIF, looping forever, of one grid per frame (each a batch (N, C, H, W) in [0, 1],
    C = 1 or 3; all frames the same shape). PIL merges identical consecutive frames into one."""
    if not frames or any(f.shape != frames[0].shape for f in frames):
        raise ValueError(f"save_gif needs frames of one shape, got {[tuple(f.shape) for f in frames]}")
    grey = frames[0].shape[1] == 1  # save as "L": exact greys, no palette quantisation
    images = []
    for frame in frames:
        grid = _grid(frame, nrow).mul(255).round().to(torch.uint8)  # (3, H, W)
        images.append(Image.fromarray(grid[0].numpy() if grey else grid.permute(1, 2, 0).numpy()))
    images[0].save(Path(path), save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


QUALITY = [("fid", "FID (lower is better)"), ("precision", "precision"), ("recall", "recall")]


def plot_quality_vs_time(
    curves: dict[str, list[dict]], path, title: str, floor: float | None = None, metrics=QUALITY
) -> None:
    """Scores of probes.jsonl records against wall-clock seconds (top) and images seen (bottom), one
    line per labelled run, one panel per (key, label) of `metrics` (the first on a log scale);
    `floor`: the first metric's real-vs-real value, dashed, with 5x it dotted."""
    fig, axes = plt.subplots(2, len(metrics), figsize=(5 * len(metrics), 7.2), squeeze=False)
    for row, (x_key, x_label) in enumerate((("wall_s", "wall-clock seconds"), ("images", "images seen"))):
        for ax, (key, label) in zip(axes[row], metrics):
            for name, records in curves.items():
                points = [(r[x_key], r[key]) for r in records if key in r]
                if points:
                    ax.plot(*zip(*points), "-o", markersize=3, label=name)
            if key == metrics[0][0]:
                ax.set_yscale("log")
                if floor:
                    ax.axhline(floor, color="grey", linestyle="--", label=f"floor {floor:.2f}")
                    ax.axhline(5 * floor, color="grey", linestyle=":", label="5x floor")
            ax.set(xlabel=x_label, ylabel=label, title=label)
            ax.grid(alpha=0.3)
            if key == metrics[0][0] or len(curves) == 1:  # several runs: one legend, on the first panel
                ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(title)
    _save(fig, path)

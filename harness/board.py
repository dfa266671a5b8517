"""TensorBoard event files of a run (runs/<name>/tensorboard): the scalars the loop already has on the
host, image grids, the code projector. Written by rank 0 only; a resumed run purges what a killed
process logged after its checkpoint, so no step appears twice."""

from __future__ import annotations

import math
from pathlib import Path

import torch

FOLDER = "tensorboard"


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """torchvision.utils.make_grid's layout, without importing torchvision (half a second of a short
    run): images (N, C, H, W), one channel repeated to three, nrow to a row, each tile with padding
    above and left of it and one more band below and right of all; a single image as it is."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    n, c, h, w = images.shape
    if n == 1:
        return images[0]
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    tiles = images.new_full((rows * cols, c, h + padding, w + padding), pad_value)
    tiles[:n, :, padding:, padding:] = images
    grid = tiles.view(rows, cols, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + padding), cols * (w + padding))
    return torch.nn.functional.pad(grid, (0, padding, 0, padding), value=pad_value)


class Board:
    """A SummaryWriter once opened, or nothing at all when off (--no-tensorboard, or a rank other than 0)."""

    def __init__(self, run_dir, enabled: bool = True):
        self.folder, self.enabled = Path(run_dir) / FOLDER, enabled
        self.writer, self.constants = None, {}

    def open(self, purge_step: int = 0, constants: dict | None = None) -> Board:
        """Start writing; purge_step: a resume's first step (what a killed process logged from there on
        is dropped). constants: joined to every step record (the lr): numbers, or schedules of the step."""
        if self.enabled and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used

            self.writer = SummaryWriter(str(self.folder), purge_step=purge_step or None)
        self.constants = dict(constants or {})
        return self

    def scalars(self, record: dict, step: int) -> None:
        """Every finite number of a record (a steps.jsonl or metrics.jsonl line) under its own name."""
        if self.writer is None:
            return
        for name, value in record.items():
            if name not in ("step", "epoch") and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(name, value, step)

    def at(self, step: int) -> dict:
        """The constants' values at `step` (a schedule evaluated there)."""
        return {k: float(v(torch.tensor(step))) if callable(v) else v for k, v in self.constants.items()}

    def image(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        """A grid of images (N, C, H, W) in [0, 1]."""
        if self.writer is None:
            return
        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
        self.writer.add_image(tag, grid, step)

    def embedding(self, codes: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, step: int) -> None:
        """Codes (N, Z) in the embedding projector, each with its image (N, C, H, W) and label."""
        if self.writer is None:
            return
        self.writer.add_embedding(
            codes.float().cpu(), metadata=labels.tolist(), label_img=images.float().cpu(), global_step=step,
            tag="test_codes",
        )  # fmt: skip

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

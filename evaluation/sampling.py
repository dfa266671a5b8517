"""A trained generator as one value, and the images it draws for scores, grids and pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

SAMPLE_BATCH = 500  # generator batch when sampling for scores (BatchNorm runs on batch statistics)


class Sampler(NamedTuple):
    """A generator and its weights: generate(params, buffers, z, y) -> (images in [-1, 1], buffers),
    z ~ N(0, I) of latent_dim, y the labels of a conditional generator (classes > 0) or None."""

    generate: Callable
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    latent_dim: int
    classes: int = 0  # 0: unconditional

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def labels(self, n: int) -> torch.Tensor | None:
        """The labels asked for when n images are drawn for scores: 0, 1, ..., classes-1, 0, 1, ...
        (balanced); None for an unconditional generator."""
        return sample_labels(n, self.classes, self.device)

    def __call__(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] of one batch of codes (and labels); the returned buffers are dropped."""
        return self.generate(self.params, self.buffers, z, y)[0]


def sample_labels(n: int, classes: int, device) -> torch.Tensor | None:
    """0, 1, ..., classes-1, 0, 1, ... (n labels, balanced); None where classes is 0."""
    return torch.arange(n, device=device) % classes if classes else None


@torch.no_grad()
def sample_images(sampler: Sampler, n: int, seed: int, batch: int = SAMPLE_BATCH, rows=None) -> torch.Tensor:
    """n images in [0, 1], (n, C, H, W), from z ~ N(0, I) drawn with `seed` (only z[rows] if given),
    and for a conditional generator the labels of Sampler.labels. BatchNorm runs on batch statistics,
    as pytorch/examples' DCGAN samples; nothing is mutated."""
    device = sampler.device
    z = torch.randn(n, sampler.latent_dim, generator=torch.Generator(device=device).manual_seed(seed),
                    device=device)  # fmt: skip
    y = sampler.labels(n)
    z, y = (z, y) if rows is None else (z[rows], None if y is None else y[rows])
    parts = [(z[i : i + batch], None if y is None else y[i : i + batch]) for i in range(0, len(z), batch)]
    out = [sampler(zi, yi).float() for zi, yi in parts]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)

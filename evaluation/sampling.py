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
    critic: Callable | None = None  # critic(images in [-1, 1], y) -> D's logits: rejection sampling

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
    as pytorch/examples' DCGAN samples; nothing is mutated. A sampler with a critic draws through
    `rejection_sample` instead (rows are not supported there)."""
    if sampler.critic is not None:
        if rows is not None:
            raise ValueError("a sampler with a critic draws whole sets only (rows=None)")
        return rejection_sample(sampler, n, seed, batch)
    device = sampler.device
    z = torch.randn(n, sampler.latent_dim, generator=torch.Generator(device=device).manual_seed(seed),
                    device=device)  # fmt: skip
    y = sampler.labels(n)
    z, y = (z, y) if rows is None else (z[rows], None if y is None else y[rows])
    parts = [(z[i : i + batch], None if y is None else y[i : i + batch]) for i in range(0, len(z), batch)]
    out = [sampler(zi, yi).float() for zi, yi in parts]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


DRS_QUANTILE = 0.9  # the shift M: this quantile of the burn-in's logits (docs/gans.md)
DRS_BURN_IN = 4  # sampling batches drawn before M is set (and then judged like the rest)


@torch.no_grad()
def rejection_sample(sampler: Sampler, n: int, seed: int, batch: int = SAMPLE_BATCH) -> torch.Tensor:
    """n images in [0, 1] by discriminator rejection sampling (Azadi et al. 2019). A logistic
    discriminator at its optimum outputs the logit log(p_data / p_g), so a generated image kept
    with probability exp(logit - M) is a draw from p_g * p_data / p_g = p_data wherever the ratio
    stays below e^M; above it the probability is clipped to 1. M is the DRS_QUANTILE of the first
    DRS_BURN_IN batches' logits (the paper shifts by the burn-in's maximum and a gamma to the same
    end). A conditional sampler's images come back in the order of Sampler.labels(n), each drawn
    with its label and judged by the critic's logit for that label. Deterministic in `seed`."""
    device = sampler.device
    gen = torch.Generator(device=device).manual_seed(seed)
    classes = max(sampler.classes, 1)
    wanted = sampler.labels(n) if sampler.classes else torch.zeros(n, dtype=torch.long, device=device)
    need = torch.bincount(wanted, minlength=classes).tolist()
    kept: list[list[torch.Tensor]] = [[] for _ in range(classes)]
    have, pending, shift = [0] * classes, [], None
    while any(h < k for h, k in zip(have, need)):
        z = torch.randn(batch, sampler.latent_dim, generator=gen, device=device)
        y = sample_labels(batch, sampler.classes, device)
        images = sampler(z, y).float()
        logits = (sampler.critic(images) if y is None else sampler.critic(images, y)).float().flatten()
        pending.append((images, y, logits))
        if shift is None and len(pending) < DRS_BURN_IN:
            continue
        if shift is None:
            shift = torch.cat([p[2] for p in pending]).quantile(DRS_QUANTILE)
        for images, y, logits in pending:
            accept = torch.rand(batch, generator=gen, device=device) < (logits - shift).exp()
            for c in range(classes):
                kept[c].append(images[accept if y is None else accept & (y == c)])
                have[c] += len(kept[c][-1])
        pending = []
    out = torch.empty(n, *images.shape[1:], device=device)
    for c in range(classes):
        out[wanted == c] = torch.cat(kept[c])[: need[c]]
    return ((out + 1) / 2).clamp(0, 1)

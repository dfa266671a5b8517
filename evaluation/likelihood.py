"""Likelihood of a VAE: the IWAE bound (Burda et al. 2015) on log p(x), exact or streamed over k."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from harness.progress import bar
from losses import log_importance_weights


def streamed_iwae_bound(log_weight_chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """log (1/k) sum_i w_i per row, from (N, k_j) chunks of log importance weights whose k_j add up
    to k: one logsumexp per chunk, combined with logaddexp, so memory stays one chunk's whatever k."""
    lse, k = None, 0
    for chunk in log_weight_chunks:
        part = torch.logsumexp(chunk, dim=1)
        lse, k = (part if lse is None else torch.logaddexp(lse, part)), k + chunk.shape[1]
    return lse - math.log(k)


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/k) sum_i w_i per row of (N, k) log importance weights: the IWAE lower bound on log p(x)."""
    return streamed_iwae_bound([log_weights])


@torch.no_grad()
def iwae_bounds(model, x, z_dim: int, k: int, seed: int, images_per_pass=100, k_per_pass=100) -> torch.Tensor:
    """(N,) IWAE bounds on log p(x) with k samples, per image, streamed over k in chunks (memory ~
    images_per_pass * k_per_pass * 784 floats, whatever k is); a progress bar with an ETA on a
    terminal."""
    gen = torch.Generator(device=x.device).manual_seed(seed)

    def chunks(xb):  # (images, kc) log weights, kc <= k_per_pass, drawn in order
        for j in range(0, k, k_per_pass):
            eps = torch.randn(min(k_per_pass, k - j), len(xb), z_dim, generator=gen, device=x.device)
            yield log_importance_weights(model, xb, eps)

    bounds = []
    with bar(total=len(x), desc=f"NLL (IWAE k={k})", unit="img", leave=False) as shown:
        for i in range(0, len(x), images_per_pass):
            bounds.append(streamed_iwae_bound(chunks(x[i : i + images_per_pass])))
            shown.update(len(bounds[-1]))
    return torch.cat(bounds)


def iwae_nll(model, x, z_dim: int, k: int, seed: int, images_per_pass=100, k_per_pass=100) -> float:
    """Mean -log p(x) over x estimated by the IWAE bound with k samples (iwae_bounds' mean)."""
    return -float(iwae_bounds(model, x, z_dim, k, seed, images_per_pass, k_per_pass).mean())


def standard_error(values: torch.Tensor) -> float:
    """The standard error of values' mean (0 for a single value): how far the mean over a subset of
    test images may sit from the mean over all of them."""
    return float(values.double().std() / math.sqrt(len(values))) if len(values) > 1 else 0.0


def nll_subset(x: torch.Tensor, n: int) -> torch.Tensor:
    """n images of x for the (costly) NLL: a seeded random subset, not the first n (MNIST's test set
    is ordered by writer group); all of x when n is 0 or larger than x."""
    if not n or n >= len(x):
        return x
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n]
    return x[keep.to(x.device)]

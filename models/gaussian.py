"""Diagonal Gaussians as (mean, log-variance) pairs: densities and the two priors a VAE layer has."""

from __future__ import annotations

import math

import torch

LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in fp16/bf16
LOG_2PI = math.log(2 * math.pi)


def split_gaussian(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A network's (..., 2Z) output as (mean, log-variance), (..., Z) each, the log-variance clamped."""
    mu, logvar = h.chunk(2, dim=-1)
    return mu, logvar.clamp(*LOGVAR_RANGE)


def gaussian_log_density(z, mu, logvar):
    """log N(z; mu, exp(logvar)) summed over the last dimension, broadcasting: (..., Z) -> (...)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + LOG_2PI + logvar).sum(-1)


def prior_log_density(z, mixture=None):
    """log p(z) in float32, (..., Z) -> (...): N(0, I), or with mixture = (mu, logvar) of K components
    (K, Z) the equal-weight mixture of those Gaussians (the VampPrior's)."""
    z = z.float()
    if mixture is None:
        return -0.5 * (z.square() + LOG_2PI).sum(-1)
    mu, logvar = (t.float() for t in mixture)
    return torch.logsumexp(gaussian_log_density(z[..., None, :], mu, logvar), -1) - math.log(len(mu))


def pseudo_images(k: int) -> torch.nn.Parameter | None:
    """K learned VampPrior pseudo-images as logits (K, 1, 28, 28), near-black at first like Tomczak and
    Welling's N(0.05, 0.01) pixels; None for k=0 (the N(0, I) prior)."""
    if not k:
        return None
    return torch.nn.Parameter(math.log(0.05 / 0.95) + 0.2 * torch.randn(k, 1, 28, 28))

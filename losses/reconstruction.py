"""Per-image reconstruction errors computed from decoder logits, in float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | logits) in nats per image, summed over pixels: (B, ...) -> (B,).

    Computed from logits (never sigmoid + log), so it stays finite under bf16/fp16 autocast.
    """
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return nll.flatten(1).sum(1)


def squared_error(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per pixel of sigmoid(logits) against x in [0, 1]: (B, ...) -> (B,)."""
    return (torch.sigmoid(logits.float()) - x.float()).square().flatten(1).mean(1)

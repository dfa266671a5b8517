"""Learning-rate schedules: pure functions of the optimizer's step-count tensor."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Schedule = Callable[[torch.Tensor], torch.Tensor]


def constant(lr: float) -> Schedule:
    """The same rate at every step."""
    return lambda count: torch.full_like(count, lr, dtype=torch.float64)


def linear_warmup(lr: float, warmup_steps: int) -> Schedule:
    """lr * (t + 1) / warmup_steps for the first warmup_steps steps, then lr."""

    def schedule(count: torch.Tensor) -> torch.Tensor:
        t = count.to(torch.float64)
        return lr * torch.clamp((t + 1) / max(warmup_steps, 1), max=1.0)

    return schedule


def cosine(lr: float, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0) -> Schedule:
    """Linear warm-up, then a half cosine from lr down to final_lr at total_steps (then flat)."""
    warm = linear_warmup(lr, warmup_steps)
    span = max(total_steps - warmup_steps, 1)

    def schedule(count: torch.Tensor) -> torch.Tensor:
        t = torch.clamp(count.to(torch.float64) - warmup_steps, min=0, max=span)
        decayed = final_lr + 0.5 * (lr - final_lr) * (1 + torch.cos(math.pi * t / span))
        return torch.where(count < warmup_steps, warm(count), decayed)

    return schedule


def as_schedule(lr: float | torch.Tensor | Schedule) -> Schedule:
    """Accept a float or a 0-d tensor (constant rate) or a schedule."""
    if isinstance(lr, torch.Tensor):
        return lambda count: lr.to(torch.float64)
    return lr if callable(lr) else constant(float(lr))

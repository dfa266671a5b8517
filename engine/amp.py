"""Mixed precision: an autocast policy and fp16 dynamic loss scaling as pure functions of the state."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

Tensors = dict[str, torch.Tensor]
PRECISIONS = ("fp32", "bf16", "fp16")


class ScalerConfig(NamedTuple):
    """torch.amp.GradScaler's defaults; bound when the step is built, never changed by it."""

    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000


def autocast(precision: str, device_type: str):
    """The forward-pass context for a precision: fp32 runs as is, bf16/fp16 under torch.autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type, dtype=dtype)


def scaler_init(device, config: ScalerConfig = ScalerConfig()) -> Tensors:
    """Loss-scale state: the scale and how many finite steps have passed since it last changed."""
    return {
        "scale": torch.full((), config.init_scale, dtype=torch.float32, device=device),
        "growth_tracker": torch.zeros((), dtype=torch.int32, device=device),
    }


def unscale(grads: Tensors, scaler: Tensors) -> tuple[Tensors, torch.Tensor]:
    """Divide gradients by the scale; also return whether any of them is inf/nan (a 0-d bool)."""
    # GradScaler computes 1/scale in float64 and rounds once to float32; so do we.
    inv_scale = scaler["scale"].double().reciprocal().float()
    keys = list(grads)
    unscaled = torch._foreach_mul([grads[k] for k in keys], inv_scale)
    norms = torch._foreach_norm(unscaled, ord=float("inf"))  # nan/inf propagate into the max-norm
    found_inf = ~torch.isfinite(torch.stack(norms)).all()
    return dict(zip(keys, unscaled)), found_inf


def scaler_update(scaler: Tensors, found_inf: torch.Tensor, config: ScalerConfig) -> Tensors:
    """Back off on a non-finite step; grow after growth_interval finite steps in a row."""
    scale, tracker = scaler["scale"], scaler["growth_tracker"]
    successful = tracker + 1
    grow = successful >= config.growth_interval
    grown = scale * config.growth_factor
    grown = torch.where(torch.isfinite(grown), grown, scale)  # GradScaler never grows to inf
    new_scale = torch.where(found_inf, scale * config.backoff_factor, torch.where(grow, grown, scale))
    zero = torch.zeros_like(tracker)
    new_tracker = torch.where(found_inf | grow, zero, successful)
    return {"scale": new_scale, "growth_tracker": new_tracker}

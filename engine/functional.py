"""Calling an nn.Module as a pure function of (params, buffers)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def call_module(module: nn.Module, params: dict, buffers: dict, *args, **kwargs):
    """module(*args) with the given tensors; returns (output, buffers after the call).

    BatchNorm updates its running statistics in place; it does so on copies here, and the copies
    come back, so the caller's buffers are never mutated.
    """
    new_buffers = {k: v.clone() for k, v in buffers.items()}
    out = functional_call(module, (params, new_buffers), args, kwargs, strict=True)
    return out, new_buffers


def load_into(module: nn.Module, params: dict, buffers: dict) -> nn.Module:
    """Copy state tensors into a module (for eager evaluation, sampling and plots)."""
    with torch.no_grad():
        module.load_state_dict({**params, **buffers}, strict=True)
    return module

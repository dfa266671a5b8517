"""Collectives used inside a step: traceable all-reduces, so data parallelism stays one compiled region."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

Tensors = dict[str, torch.Tensor]


def mean_over_ranks(tensors: Tensors) -> Tensors:
    """The mean of every tensor over the ranks, one collective per floating dtype (usually one):
    the tensors are flattened into a single buffer, summed with a functional all-reduce (traceable,
    so it lives inside the compiled step) and divided by the world size. Integer tensors are
    returned as they are."""
    means = dict(tensors)
    dtypes = dict.fromkeys(v.dtype for v in tensors.values() if v.is_floating_point())
    for dtype in dtypes:
        group = {k: v for k, v in tensors.items() if v.dtype == dtype}
        flat = torch.cat([v.reshape(-1) for v in group.values()])  # (total elements,)
        summed = funcol.all_reduce(flat, "sum", dist.group.WORLD) / dist.get_world_size()
        start = 0
        for k, v in group.items():
            means[k] = summed[start : start + v.numel()].view(v.shape)
            start += v.numel()
    return means

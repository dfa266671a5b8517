"""Train state: a frozen container of tensor dicts keyed by the module's state_dict names."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]


class TrainState(NamedTuple):
    """Everything a step reads and writes. NamedTuples are pytrees, so torch.compile sees through it."""

    params: Tensors  # trainable tensors, keyed like module.named_parameters()
    buffers: Tensors  # non-trainable tensors (BatchNorm statistics), keyed like named_buffers()
    opt: Any  # the optimizer's state: a dict of tensors / tensor dicts
    step: torch.Tensor  # 0-d int64 count of steps taken
    scaler: Tensors  # fp16 dynamic loss-scale state ({} for fp32 / bf16)


class Aux(NamedTuple):
    """What a loss function returns beside the loss: 0-d metric tensors and updated buffers."""

    metrics: Tensors
    buffers: Tensors


def module_tensors(module: nn.Module) -> tuple[Tensors, Tensors]:
    """Detached copies of a module's parameters and buffers (the module keeps only its skeleton)."""
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in module.named_buffers()}
    return params, buffers


def init_state(module: nn.Module, optimizer, scaler: Tensors | None = None) -> TrainState:
    """A fresh TrainState on the module's device: copied params/buffers, optimizer state, step 0."""
    params, buffers = module_tensors(module)
    device = next(iter(params.values())).device
    step = torch.zeros((), dtype=torch.int64, device=device)
    return TrainState(params, buffers, optimizer.init(params), step, scaler or {})


def tree_map(fn, tree, *rest):
    """fn applied leaf by leaf to one or more nested NamedTuple / dict / list structures of one shape."""
    if isinstance(tree, torch.Tensor):
        return fn(tree, *rest)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tree_map(fn, *vs) for vs in zip(tree, *rest, strict=True)))
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, *vs) for vs in zip(tree, *rest, strict=True))
    return tree


def write_state(old, new, donate: bool, keep_old: torch.Tensor | None = None):
    """The state after an update: `new`, or `old` wherever the 0-d bool keep_old is set (a skipped
    update; no host sync). donate=True writes the result into old's storage in one pass and returns
    old: the one donation mechanism of the engine (bitwise the same result as donate=False)."""
    if keep_old is None:
        return tree_map(lambda o, n: o.copy_(n), old, new) if donate else new
    if donate:
        return tree_map(lambda o, n: torch.where(keep_old, o, n, out=o), old, new)
    return tree_map(lambda o, n: torch.where(keep_old, o, n), old, new)


def stack_states(states: list):
    """S states of one structure -> one state whose tensors have a leading axis S (a vmapped step's)."""
    return tree_map(lambda *tensors: torch.stack(tensors), *states)


def unstack_state(state, i: int):
    """The i-th of the states stack_states stacked."""
    return tree_map(lambda t: t[i], state)


def clone_state(state):
    """A deep copy of any state pytree (for purity checks and snapshots)."""
    return tree_map(lambda t: t.clone(), state)


def flatten_state(tree, prefix: str = "") -> Tensors:
    """Nested state -> flat {'params/fc1.weight': t, 'opt/mu/fc1.weight': t, 'step': t, ...}."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        items = zip(tree._fields, tree, strict=True)
    elif isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        raise TypeError(f"cannot flatten {type(tree).__name__} at '{prefix}'")
    flat: Tensors = {}
    for key, value in items:
        flat.update(flatten_state(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def unflatten_state(flat: Tensors, template, prefix: str = ""):
    """Inverse of flatten_state, shaped like `template`; raises KeyError on a missing entry."""
    if isinstance(template, torch.Tensor):
        return flat[prefix]
    join = (lambda k: f"{prefix}/{k}") if prefix else str
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        values = (unflatten_state(flat, v, join(k)) for k, v in zip(template._fields, template, strict=True))
        return type(template)(*values)
    if isinstance(template, list | tuple):
        return type(template)(unflatten_state(flat, v, join(i)) for i, v in enumerate(template))
    return {k: unflatten_state(flat, v, join(k)) for k, v in template.items()}

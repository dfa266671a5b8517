"""Functional optimizers: pairs of pure functions init(params) and update(grads, opt, params)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from engine.schedules import Schedule, as_schedule

Tensors = dict[str, torch.Tensor]


class Optimizer(NamedTuple):
    """init(params) -> opt_state; update(grads, opt_state, params) -> (params, opt_state).

    update never writes into its inputs; a step that donates its input state writes the result
    back itself (engine.state.write_state), so donation lives in one place.
    """

    init: Callable[[Tensors], Any]
    update: Callable[..., tuple[Tensors, Any]]


class _ListOps:
    """ops.NAME(list, ...): torch._foreach_NAME (one multi-tensor call), or, with foreach=False, the
    same per-tensor op in a loop; torch.func.vmap (sweeps) has no batching rules for foreach kernels.
    The loop runs an in-place NAME_ out of place and puts the results in the list: the same kernel,
    but vmap has no batching rules for lerp_ or addcmul_ either, and would loop over the configs."""

    def __init__(self, foreach: bool):
        self.foreach = foreach

    def copies(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """A list to update: fresh clones for the foreach kernels, which write in place; the loop
        writes into no tensor, so its list may hold the inputs themselves."""
        return [x.clone() for x in xs] if self.foreach else list(xs)

    def __getattr__(self, name):
        if name.startswith("__"):  # pickle and copy probe dunders before __init__ ran: not ops
            raise AttributeError(name)
        if self.foreach:
            return getattr(torch, f"_foreach_{name}")

        op = getattr(torch, name.removesuffix("_"))

        def loop(xs, *args, **kwargs):
            per = [a if isinstance(a, list) else [a] * len(xs) for a in args]
            out = [op(x, *(a[i] for a in per), **kwargs) for i, x in enumerate(xs)]
            if not name.endswith("_"):
                return out
            xs[:] = out

        return loop


def _once(x: torch.Tensor) -> torch.Tensor:
    """x itself, but computed once per step under torch.compile. Inductor inlines a 0-d expression
    (the bias corrections' pow and sqrt of the step count, a schedule's cos) into the loop of every
    tensor element it scales; a reduction is always stored to a buffer, and x + 0 == x (but for
    -0.0, which becomes +0.0); docs/performance.md has what it saved in the compiled mlp VAE step on
    CPU. Eager, and on GPUs (where the recomputation is free and the extra reduction a kernel
    launch): x as it is."""
    if not torch.compiler.is_compiling() or x.device.type != "cpu":
        return x
    return torch.stack([x, torch.zeros_like(x)]).sum(0)


def _zeros_like(params: Tensors) -> Tensors:
    return {k: torch.zeros_like(v) for k, v in params.items()}


def _count(params: Tensors) -> torch.Tensor:
    return torch.zeros((), dtype=torch.int64, device=next(iter(params.values())).device)


def adam(
    lr: float | Schedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    foreach: bool = True,
) -> Optimizer:
    """Adam (Kingma & Ba), matching torch.optim.Adam; decoupled=True gives AdamW."""
    lr_fn, ops = as_schedule(lr), _ListOps(foreach)

    def init(params: Tensors) -> dict:
        return {"count": _count(params), "mu": _zeros_like(params), "nu": _zeros_like(params)}

    def update(grads: Tensors, opt: dict, params: Tensors):
        keys = list(params)
        g = [grads[k] for k in keys]
        p = ops.copies([params[k] for k in keys])
        m = ops.copies([opt["mu"][k] for k in keys])
        v = ops.copies([opt["nu"][k] for k in keys])
        lr_t = lr_fn(opt["count"])  # float64 0-d: rate for this step
        count = opt["count"] + 1
        t = count.to(torch.float64)
        if weight_decay and not decoupled:
            g = ops.add(g, p, alpha=weight_decay)
        if weight_decay and decoupled:
            ops.mul_(p, _once((1 - lr_t * weight_decay).float()))
        ops.lerp_(m, g, 1 - b1)
        ops.mul_(v, b2)
        ops.addcmul_(v, g, g, value=1 - b2)
        # Same operation order as torch.optim.Adam(foreach=True), so rounding agrees too.
        neg_step_size = _once((-lr_t / (1 - b1**t)).float())
        denom = ops.sqrt(v)
        ops.div_(denom, _once(torch.sqrt(1 - b2**t).float()))
        ops.add_(denom, eps)
        delta = ops.mul(m, neg_step_size)  # p + (-step * m) / denom, as addcdiv does
        ops.div_(delta, denom)
        ops.add_(p, delta)
        new_opt = {"count": count, "mu": dict(zip(keys, m)), "nu": dict(zip(keys, v))}
        return dict(zip(keys, p)), new_opt

    return Optimizer(init, update)


def adamw(lr: float | Schedule = 1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, foreach=True):
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, matching torch.optim.AdamW."""
    return adam(lr, b1, b2, eps, weight_decay, decoupled=True, foreach=foreach)


def sgd(
    lr: float | Schedule = 1e-2,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    foreach: bool = True,
) -> Optimizer:
    """SGD with optional (Nesterov) momentum, matching torch.optim.SGD with dampening=0."""
    if nesterov and momentum <= 0:
        raise ValueError("nesterov momentum needs momentum > 0")
    lr_fn, ops = as_schedule(lr), _ListOps(foreach)

    def init(params: Tensors) -> dict:
        opt = {"count": _count(params)}
        if momentum:
            opt["momentum"] = _zeros_like(params)
        return opt

    def update(grads: Tensors, opt: dict, params: Tensors):
        keys = list(params)
        g = [grads[k] for k in keys]
        p = ops.copies([params[k] for k in keys])
        lr_t = _once(lr_fn(opt["count"]).float())
        new_opt = {"count": opt["count"] + 1}
        if weight_decay:
            g = ops.add(g, p, alpha=weight_decay)
        if momentum:
            # A zero-initialised buffer makes the first step buf = g, as torch.optim.SGD does.
            buf = ops.copies([opt["momentum"][k] for k in keys])
            ops.mul_(buf, momentum)
            ops.add_(buf, g)
            g = ops.add(g, buf, alpha=momentum) if nesterov else buf
            new_opt["momentum"] = dict(zip(keys, buf))
        delta = ops.mul(g, lr_t)
        ops.sub_(p, delta)
        return dict(zip(keys, p)), new_opt

    return Optimizer(init, update)


def flat(optimizer: Optimizer) -> Optimizer:
    """optimizer run on one flat buffer per dtype: its state (Adam's moments) kept flat, the params and
    gradients concatenated into one buffer each per step, the new params handed back as views of the
    updated buffer. An elementwise optimizer (adam, adamw, sgd) is then a handful of kernels over all
    parameters instead of a few per tensor, with the same arithmetic on every element: bitwise the
    per-tensor update (tests/test_optim.py). Checkpoints hold the flat state as it is."""

    def layout(params: Tensors) -> dict[str, list[str]]:  # dtype name -> the params' names, in order
        groups: dict[str, list[str]] = {}
        for name, p in params.items():
            groups.setdefault(str(p.dtype).removeprefix("torch."), []).append(name)
        return groups

    def pack(tensors: Tensors, groups: dict[str, list[str]]) -> Tensors:
        return {g: torch.cat([tensors[k].reshape(-1) for k in names]) for g, names in groups.items()}

    def init(params: Tensors):
        return optimizer.init(pack(params, layout(params)))

    def update(grads: Tensors, opt, params: Tensors):
        groups = layout(params)
        new, opt = optimizer.update(pack(grads, groups), opt, pack(params, groups))
        out = {}
        for g, names in groups.items():
            parts = new[g].split([params[k].numel() for k in names])
            out.update({k: part.view(params[k].shape) for k, part in zip(names, parts, strict=True)})
        return {k: out[k] for k in params}, opt

    return Optimizer(init, update)


def with_hyperparams(factory: Callable[..., Optimizer], **hyper: float) -> Optimizer:
    """factory(**hyper), with those hyperparameters kept as tensors in the optimizer state.

    They can then differ between the copies of a state stacked for torch.func.vmap (a sweep over
    learning rates trains as one step) or be changed mid-run without recompiling.
    """

    def init(params: Tensors) -> dict:
        device = next(iter(params.values())).device
        tensors = {k: torch.tensor(float(v), dtype=torch.float64, device=device) for k, v in hyper.items()}
        return {"hyper": tensors, "inner": factory(**hyper).init(params)}

    def update(grads: Tensors, opt: dict, params: Tensors):
        params, inner = factory(**opt["hyper"]).update(grads, opt["inner"], params)
        return params, {"hyper": opt["hyper"], "inner": inner}

    return Optimizer(init, update)

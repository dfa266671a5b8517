"""make_train_step: gradient, loss scaling and optimizer update as one pure (optionally compiled) step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.amp import ScalerConfig, autocast, scaler_update, unscale
from engine.distributed import sum_over_ranks
from engine.optim import Optimizer
from engine.state import Aux, TrainState, flatten_state, unflatten_state

LossFn = Callable[[dict, dict, dict], tuple[torch.Tensor, Aux]]


def default_compile(device_type: str) -> bool:
    """Compile by default on CUDA, and on CPU too: on 2 CPU cores the compiled mlp VAE step measured
    1.8x the eager one and the conv VAE 1.08x (README, Performance); the first step pays ~20 s."""
    return device_type in ("cuda", "cpu")


def _select(keep_old: torch.Tensor, old, new):
    """Per tensor: old where keep_old else new (no host sync), shaped like `new`."""
    flat_old, flat_new = flatten_state(old), flatten_state(new)
    chosen = {k: torch.where(keep_old, flat_old[k], v) for k, v in flat_new.items()}
    return unflatten_state(chosen, new)


def _nonfinite(loss: torch.Tensor, grads: dict) -> torch.Tensor:
    """0-d bool: the loss or any gradient is inf/nan. A float64 sum is finite exactly when every
    float32 entry is (it cannot overflow), and one read pass; per-tensor ops, no foreach: vmap-able."""
    sums = [loss.double()] + [g.sum(dtype=torch.float64) for g in grads.values()]
    return ~torch.isfinite(torch.stack(sums)).all()


def _select_into(keep_old: torch.Tensor, old, new) -> None:
    """Donate mode's _select: old where keep_old else new, written into old's storage in one pass."""
    flat_old, flat_new = flatten_state(old), flatten_state(new)
    for k, v in flat_old.items():
        torch.where(keep_old, v, flat_new[k], out=v)


def make_train_step(
    loss_fn: LossFn,
    optimizer: Optimizer,
    *,
    precision: str = "fp32",
    compile: bool | str | None = None,
    donate: bool = False,
    scaler_config: ScalerConfig = ScalerConfig(),
    all_reduce: Callable[[dict], dict] | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Build `step(state, batch) -> (state, metrics)`.

    loss_fn(params, buffers, batch) -> (loss, Aux(metrics, buffers)) sees `batch["step"]`, the step
    tensor, for schedules inside the loss. compile: True, False, None (per-device default) or a
    torch.compile mode such as "reduce-overhead" (CUDA graphs). donate=True lets the step overwrite
    the input state's storage; the result is bitwise the same as donate=False. all_reduce (data
    parallel, e.g. engine.distributed.mean_over_ranks) maps a flat dict of tensors to their means
    over the ranks; the step calls it once, between gradient and update, on the gradients, the
    metrics and the float buffers together, so every rank applies the same update.
    """
    step = _step_fn(loss_fn, optimizer, precision, donate, scaler_config, all_reduce)
    return _maybe_compile(step, compile)


def _synced(all_reduce, grads: dict, metrics: dict, buffers: dict):
    """Gradients, metrics and buffers (each rank's BatchNorm statistics of its own shard) averaged
    over the ranks in one collective."""
    parts = {"grads": grads, "metrics": metrics, "buffers": buffers}
    packed = {f"{part}/{k}": v for part, tensors in parts.items() for k, v in tensors.items()}
    means = all_reduce(packed)
    return tuple({k: means[f"{part}/{k}"] for k in tensors} for part, tensors in parts.items())


def _step_fn(loss_fn, optimizer, precision, donate, scaler_config, all_reduce=None):
    """The uncompiled pure step that make_train_step wraps (and make_vmapped_train_step vmaps)."""
    fp16 = precision == "fp16"
    autocast(precision, "cpu")  # validate the precision name now, not at the first step

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        batch = {**batch, "step": state.step}
        device_type = state.step.device.type

        def objective(params):
            with autocast(precision, device_type):
                loss, aux = loss_fn(params, state.buffers, batch)
            scaled = loss * state.scaler["scale"] if fp16 else loss
            return scaled, (loss, aux)

        grads, (loss, aux) = torch.func.grad(objective, has_aux=True)(state.params)
        metrics = {"loss": loss, **aux.metrics}
        if all_reduce is not None:  # data parallel: the global batch's mean gradient, on every rank
            grads, metrics, buffers = _synced(all_reduce, grads, metrics, aux.buffers)
            loss, aux = metrics["loss"], aux._replace(buffers=buffers)
        if fp16:  # a scaled gradient may overflow: unscale, and skip the update where it did
            grads, skip = unscale(grads, state.scaler)
        else:  # an inf/nan loss or gradient: skip the update; the loop stops on it or counts it
            skip = _nonfinite(loss, grads)
        params, opt = optimizer.update(grads, state.opt, state.params, inplace=False)
        old, new = {"params": state.params, "opt": state.opt}, {"params": params, "opt": opt}
        if not fp16:  # an inf/nan forward may have poisoned BatchNorm statistics too
            old["buffers"], new["buffers"] = state.buffers, aux.buffers
        if donate:  # the old tensors where skip: no host sync
            _select_into(skip, old, new)
            new = old
        else:
            new = _select(skip, old, new)
        buffers = new.get("buffers", aux.buffers)  # fp16 keeps them, as GradScaler does
        metrics["skipped"] = skip.float()
        scaler = state.scaler
        if fp16:
            scaler = scaler_update(state.scaler, skip, scaler_config)
            metrics["loss_scale"] = state.scaler["scale"]
        return TrainState(new["params"], buffers, new["opt"], state.step + 1, scaler), metrics

    return step


def make_vmapped_train_step(
    loss_fn: LossFn, optimizer: Optimizer, *, config_keys=(), precision="fp32", compile=None
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One step for S models at once: `step(stacked_state, batch)`, every state tensor with a
    leading axis of size S (torch.func.vmap), inside the same single compiled region.

    The batch is shared by all S models, except its `config_keys` entries (e.g. a per-model KL
    weight), which carry the leading S axis too. Use an optimizer built with foreach=False: vmap has
    no batching rules for the multi-tensor kernels.
    """
    single = _step_fn(loss_fn, optimizer, precision, False, ScalerConfig())

    def step(state: TrainState, batch: dict):
        axes = {k: 0 if k in config_keys else None for k in batch}
        return torch.func.vmap(single, in_dims=(0, axes), randomness="error")(state, batch)

    return _maybe_compile(step, compile)


def make_eval_step(loss_fn: LossFn, *, precision: str = "fp32") -> Callable[[TrainState, dict], dict]:
    """Build `eval_step(state, batch) -> metrics`: the loss and its metrics without gradients (eager)."""

    def eval_step(state: TrainState, batch: dict) -> dict:
        batch = {**batch, "step": state.step}
        with torch.no_grad(), autocast(precision, state.step.device.type):
            loss, aux = loss_fn(state.params, state.buffers, batch)
        return {"loss": loss, **aux.metrics}

    return eval_step


def evaluate_mean(eval_step, state, batches, world=None) -> dict[str, float]:
    """Per-example means of eval_step's metrics over batches (weighted by batch size); one host sync.

    Data parallel (world.size > 1): rank r evaluates batches r, r + size, ... and the totals are
    summed over the ranks, so every rank returns the means over all batches."""
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    totals, n, first = None, 0, None
    for i, batch in enumerate(batches):
        first = batch if first is None else first
        if i % size != rank:
            continue
        metrics = eval_step(state, batch)
        values = torch.stack([v.float() for v in metrics.values()]) * len(batch["x"])
        totals, n = (values if totals is None else totals + values), n + len(batch["x"])
    if totals is None:  # more ranks than batches: this one adds nothing, but in the same shape
        metrics = eval_step(state, first)
        totals = torch.zeros(len(metrics), device=state.step.device)
    if size > 1:
        summed = sum_over_ranks(torch.cat([totals, totals.new_tensor([n])]))
        totals, n = summed[:-1], summed[-1]
    return dict(zip(metrics, (totals / n).tolist()))


def _maybe_compile(step, compile):
    """Wrap the whole step in one torch.compile region, resolving the per-device default lazily."""
    compiled = {}

    def run(state: TrainState, batch: dict):
        device_type = state.step.device.type
        if device_type not in compiled:
            choice = default_compile(device_type) if compile is None else compile
            mode = choice if isinstance(choice, str) else None
            compiled[device_type] = torch.compile(step, fullgraph=True, mode=mode) if choice else step
        return compiled[device_type](state, batch)

    return run

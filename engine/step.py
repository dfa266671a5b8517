"""make_train_step: gradient, loss scaling and optimizer update as one pure (optionally compiled) step."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.amp import ScalerConfig, autocast, scaler_update, unscale
from engine.cache import UntrustedEntry, cache_key, fingerprint, read_signed, remove_entry, sign
from engine.optim import Optimizer
from engine.state import Aux, Tensors, TrainState, tree_map, write_state

LossFn = Callable[[dict, dict, dict], tuple[torch.Tensor, Aux]]


@dataclass(frozen=True)
class StepOptions:
    """How every step of a run is built, one value passed whole (a run builds it once from its config).

    compile: True, False, None (per-device default), "auto", a COMPILE_MODES name or a torch.compile
    mode such as "reduce-overhead" (CUDA graphs). donate=True lets the step overwrite the input
    state's storage; the result is bitwise the same as donate=False. all_reduce (data parallel, e.g.
    engine.mean_over_ranks) maps a flat dict of tensors to their means over the ranks; the step calls
    it once per update, between gradient and update, on the gradients, the metrics and the float
    buffers together, so every rank applies the same update. cache: a file for the compiled step
    (compile_step's)."""

    precision: str = "fp32"  # autocast policy: fp32, bf16, fp16 (fp16 adds dynamic loss scaling)
    compile: bool | str | None = None  # None: compiled on CPU, CUDA graphs on one GPU (default_compile)
    donate: bool = False  # the step may write the new state into the old state's storage
    scaler_config: ScalerConfig = ScalerConfig()  # fp16 loss-scale growth and backoff
    all_reduce: Callable[[dict], dict] | None = None  # None: a single process
    cache: str | Path | None = None  # None: no compiled-step file

    def __post_init__(self):
        autocast(self.precision, "cpu")  # validate the precision name now, not at the first step


def default_compile(device_type: str, ranks: bool = False) -> bool | str:
    """Compile by default on CPU and CUDA: the compiled steps measured faster than eager ones on both
    (docs/performance.md has the figures); the first step pays for the compilation. On CUDA, one
    process: with CUDA graphs (a small model's step is mostly kernel launches; a step that cannot be
    captured falls back to plain compilation, one note). Several ranks (a collective inside the step):
    without graphs."""
    if device_type == "cuda" and not ranks:
        return "cudagraphs"
    return device_type in ("cuda", "cpu")


def _nonfinite(loss: torch.Tensor, grads: dict) -> torch.Tensor:
    """0-d bool: the loss or any gradient is inf/nan. A float64 sum is finite exactly when every
    float32 entry is (it cannot overflow), and one read pass; per-tensor ops, no foreach: vmap-able."""
    sums = [loss.double()] + [g.sum(dtype=torch.float64) for g in grads.values()]
    return ~torch.isfinite(torch.stack(sums)).all()


def make_train_step(
    loss_fn: LossFn, optimizer: Optimizer, options: StepOptions = StepOptions()
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Build `step(state, batch) -> (state, metrics)`: make_pure_train_step, compiled as
    options.compile says (compile_step).

    loss_fn(params, buffers, batch) -> (loss, Aux(metrics, buffers)) sees `batch["step"]`, the step
    tensor, for schedules inside the loss.
    """
    return compile_step(make_pure_train_step(loss_fn, optimizer, options), options)


def _synced(all_reduce, grads: dict, metrics: dict, buffers: dict):
    """Gradients, metrics and buffers (each rank's BatchNorm statistics of its own shard) averaged
    over the ranks in one collective."""
    parts = {"grads": grads, "metrics": metrics, "buffers": buffers}
    packed = {f"{part}/{k}": v for part, tensors in parts.items() for k, v in tensors.items()}
    means = all_reduce(packed)
    return tuple({k: means[f"{part}/{k}"] for k in tensors} for part, tensors in parts.items())


def _unzip(pairs: dict) -> tuple[dict, dict]:
    """{name: (old, new)} -> ({name: old}, {name: new})."""
    return {k: o for k, (o, _) in pairs.items()}, {k: n for k, (_, n) in pairs.items()}


def make_pure_train_step(
    loss_fn: LossFn, optimizer: Optimizer, options: StepOptions = StepOptions()
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The uncompiled pure step that make_train_step compiles (and make_vmapped_train_step vmaps):
    torch.func.grad of loss_fn, then make_pure_update. Compose it into a larger step and compile the
    whole with compile_step. Of the options it reads precision, donate, scaler_config and all_reduce."""
    update = make_pure_update(optimizer, options)

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        batch = {**batch, "step": state.step}
        objective = scaled_objective(lambda params: loss_fn(params, state.buffers, batch), state, options)
        grads, (loss, aux) = torch.func.grad(objective, has_aux=True)(state.params)
        return update(state, grads, loss, aux)

    return step


def scaled_objective(loss_of: Callable, state: TrainState, options: StepOptions) -> Callable:
    """loss_of(x) -> (loss, Aux), run under the options' autocast, as the function to differentiate:
    x -> (loss times the fp16 loss scale, or the loss as it is; (loss, aux))."""
    fp16, device_type = options.precision == "fp16", state.step.device.type

    def objective(x):
        with autocast(options.precision, device_type):
            loss, aux = loss_of(x)
        return (loss * state.scaler["scale"] if fp16 else loss), (loss, aux)

    return objective


def make_pure_update(
    optimizer: Optimizer, options: StepOptions = StepOptions()
) -> Callable[[TrainState, Tensors, torch.Tensor, Aux], tuple[TrainState, dict]]:
    """`update(state, grads, loss, aux) -> (state, metrics)`: what a step does once it holds the
    gradient of scaled_objective (scaled by the fp16 loss scale): all_reduce, unscale or the
    non-finite check, the optimizer, the skip, the new buffers (aux.buffers) and step, donation.
    For a step that takes its gradient some other way (the GAN step pulls the generator's back
    through a vjp); make_pure_train_step is grad + update."""
    precision, donate, all_reduce = options.precision, options.donate, options.all_reduce
    fp16 = precision == "fp16"

    def update(state: TrainState, grads: Tensors, loss: torch.Tensor, aux: Aux) -> tuple[TrainState, dict]:
        metrics = {"loss": loss, **aux.metrics}
        if all_reduce is not None:  # data parallel: the global batch's mean gradient, on every rank
            grads, metrics, buffers = _synced(all_reduce, grads, metrics, aux.buffers)
            loss, aux = metrics["loss"], aux._replace(buffers=buffers)
        if fp16:  # a scaled gradient may overflow: unscale, and skip the update where it did
            grads, skip = unscale(grads, state.scaler)
        else:  # an inf/nan loss or gradient: skip the update; the loop stops on it or counts it
            skip = _nonfinite(loss, grads)
        params, opt = optimizer.update(grads, state.opt, state.params)
        metrics["skipped"] = skip.float()
        gated = {"params": (state.params, params), "opt": (state.opt, opt)}  # (old, new): kept where skip
        always = {"step": (state.step, state.step + 1)}
        if fp16:  # the scale backs off or grows; BatchNorm statistics update anyway, as GradScaler's
            metrics["loss_scale"] = state.scaler["scale"].clone()  # the scale this step used
            always["scaler"] = (state.scaler, scaler_update(state.scaler, skip, options.scaler_config))
            always["buffers"] = (state.buffers, aux.buffers)
        else:  # an inf/nan forward may have poisoned BatchNorm statistics too
            gated["buffers"] = (state.buffers, aux.buffers)
        # Donated: every new value written into its input's storage, so the state keeps its
        # addresses from step to step (what CUDA graphs replay against); else fresh tensors.
        new = {
            **write_state(*_unzip(gated), donate, keep_old=skip),  # the old tensors where skip: no sync
            **write_state(*_unzip(always), donate),
        }
        scaler = new.get("scaler", {})
        return TrainState(new["params"], new["buffers"], new["opt"], new["step"], scaler), metrics

    return update


def make_vmapped_train_step(
    loss_fn: LossFn, optimizer: Optimizer, options: StepOptions = StepOptions(), *, config_keys=()
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One step for S models at once: `step(stacked_state, batch)`, every state tensor with a
    leading axis of size S (torch.func.vmap), inside the same single compiled region.

    The batch is shared by all S models, except its `config_keys` entries (e.g. a per-model KL
    weight), which carry the leading S axis too. Use an optimizer built with foreach=False: vmap has
    no batching rules for the multi-tensor kernels. Of the options it reads precision and compile.
    """
    single = make_pure_train_step(loss_fn, optimizer, StepOptions(precision=options.precision))

    def step(state: TrainState, batch: dict):
        axes = {k: 0 if k in config_keys else None for k in batch}
        return torch.func.vmap(single, in_dims=(0, axes), randomness="error")(state, batch)

    return compile_step(step, StepOptions(compile=options.compile))


def make_eval_step(
    loss_fn: LossFn, options: StepOptions = StepOptions()
) -> Callable[[TrainState, dict], dict]:
    """Build `eval_step(state, batch) -> metrics`: the loss and its metrics without gradients (eager,
    in the options' precision)."""

    def eval_step(state: TrainState, batch: dict) -> dict:
        batch = {**batch, "step": state.step}
        with torch.no_grad(), autocast(options.precision, state.step.device.type):
            loss, aux = loss_fn(state.params, state.buffers, batch)
        return {"loss": loss, **aux.metrics}

    return eval_step


# compile= names (the CLI's --compile) -> torch.compile modes; None: no compilation.
COMPILE_MODES = {"off": None, "default": "default", "max-autotune": "max-autotune-no-cudagraphs",
                 "cudagraphs": "reduce-overhead"}  # fmt: skip
_GRAPHED = ("reduce-overhead", "max-autotune")  # torch modes that record CUDA graphs
CAPTURE_CALLS = 3  # torch warms a graphed step up, then records it: its first calls may fail to capture


def compile_mode(compile, device_type: str, ranks: bool = False) -> str | None:
    """The torch.compile mode for a compile= choice (None: run eagerly)."""
    if compile is None or compile == "auto":
        compile = default_compile(device_type, ranks)
    if isinstance(compile, bool):
        return "default" if compile else None
    return COMPILE_MODES.get(compile, compile)  # a name above, or a torch.compile mode as it is


def compile_step(step, options: StepOptions = StepOptions()):
    """The whole step as one torch.compile(fullgraph=True) region, as options.compile says: True /
    False, None or "auto" (the per-device default, resolved at the first call), a COMPILE_MODES name
    or a torch.compile mode.

    options.cache: a file for the compiled step (torch.compile's ahead-of-time artifact: traced, lowered and
    serialised once, loaded by a later process instead of traced again). The
    caller names the file so that it changes whenever the step would (its code, model, loss and
    hyperparameters: they are baked into the artifact); torch's guards still check the inputs'
    shapes, dtypes and devices at the first call, and any failure to load, match or save falls back
    to compiling as without a cache. Not for CUDA graphs.

    CUDA graphs ("cudagraphs" = "reduce-overhead"): a replay overwrites the outputs of the one
    before, so the state must not live in the graph's memory pool. A donated step (options.donate,
    built with the same options) writes every new value into its input's storage: the state tensors
    are marked as static addresses once and updated in place, replay after replay. An undonated
    step's new state is copied out of the pool. Either way the metrics are copied out before the
    next replay, which torch.compiler.cudagraph_mark_step_begin() announces. Graphs chosen by the
    default (compile None or "auto") are tried for the first CAPTURE_CALLS calls: a call that raises
    there puts a donated state back as it was, says so in one note and reruns compiled without them."""
    compile, donate, cache = options.compile, options.donate, options.cache
    chosen = compile is None or compile == "auto"  # CUDA graphs by default: a failed capture falls back
    compiled, trial = {}, {}

    def run(state, batch: dict):
        device_type = state.step.device.type  # TrainState and GANState both have .step
        if device_type not in compiled:
            mode = compile_mode(compile, device_type, options.all_reduce is not None)
            if mode is None:
                fn = step
            elif (
                cache is not None
                and mode not in _GRAPHED
                and (path := _entry(cache, step, mode, state, batch))
            ):
                fn = _cached(step, mode, (state, batch), path)
            else:
                fn = torch.compile(step, fullgraph=True, mode=mode)
            if mode in _GRAPHED and donate:
                tree_map(torch._dynamo.mark_static_address, state)
            compiled[device_type] = (fn, mode in _GRAPHED)
            trial[device_type] = CAPTURE_CALLS if chosen and mode in _GRAPHED else 0
        fn, graphed = compiled[device_type]
        if not graphed:
            return fn(state, batch)
        if trial[device_type]:  # the calls that warm up and record the graph
            trial[device_type] -= 1
            before = tree_map(torch.clone, state) if donate else None
            try:
                return replay(fn, state, batch)
            except Exception as e:
                _note("CUDA graphs could not capture this step: it runs compiled without them", e)
                if before is not None:  # a donated state may hold a half-done update: put it back
                    tree_map(lambda now, was: now.copy_(was), state, before)
                compiled[device_type] = (torch.compile(step, fullgraph=True), False)
                return compiled[device_type][0](state, batch)
        return replay(fn, state, batch)

    def replay(fn, state, batch):
        torch.compiler.cudagraph_mark_step_begin()
        new, metrics = fn(state, batch)
        if not donate:  # out of the pool: the next replay reuses it
            new = tree_map(torch.clone, new)
        return new, {k: v.clone() for k, v in metrics.items()}

    return run


def _modules(fn) -> dict[str, nn.Module]:
    """The nn.Modules a step's closures hold (they are not serialisable: the artifact refers to them
    by these names), in a fixed order: the same step built again finds them under the same names."""
    found, seen, todo = {}, set(), [fn]
    while todo:
        obj = todo.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found[f"module{len(found)}"] = obj
        elif callable(obj) and getattr(obj, "__closure__", None):
            todo += [cell.cell_contents for cell in obj.__closure__ if cell.cell_contents is not None]
    return found


def _entry(cache, step, mode: str, state, batch) -> Path | None:
    """The cache file: the caller's name and the step's fingerprint; None (one note: compiled without
    a file) where the fingerprint cannot read a value the step holds."""
    base = Path(cache)
    try:
        return base.with_stem(f"{base.stem}-{fingerprint((step, mode), (state, batch))}")
    except Exception as e:
        _note(f"compiled-step cache {base} not used", e)
        return None


def _cached(step, mode: str, args: tuple, path: Path):
    """The compiled step from the artifact at path, or compiled ahead of time and saved there; a
    failure anywhere gives torch.compile's usual lazily compiled step instead. Loading an artifact
    unpickles it: only an entry this user wrote and signed is read (engine.cache); any other is
    removed with one note."""
    modules = _modules(step)
    try:
        data = read_signed(path)
    except (UntrustedEntry, OSError) as e:
        _note(f"compiled-step cache entry {path} refused and removed", e)
        remove_entry(path)
        data = None
    try:
        if data is not None:
            loaded = torch.compiler.load_compiled_function(
                io.BytesIO(data), f_globals=step.__globals__, external_data=modules
            )
            if loaded.guard_check(*args):
                return loaded
        fn = torch.compile(step, fullgraph=True, mode=mode).aot_compile((args, {}))
    except Exception as e:  # an experimental torch API: never let it stop a run
        _note(f"compiled-step cache {path} not used", e)
        return torch.compile(step, fullgraph=True, mode=mode)  # built only here: it costs ~0.4 s
    try:
        cache_key(path.parent)  # the folder (0700) and its key first
        fn.save_compiled_function(str(path), external_data=modules)  # written atomically
        sign(path)
    except Exception as e:
        _note(f"compiled step not saved to {path}", e)
    return fn


def _note(what: str, error: Exception) -> None:
    print(f"note: {what} ({type(error).__name__}: {error})"[:300], file=sys.stderr)

"""An opened run trained and finished: fit with the run's flags (resumed from its newest checkpoint
when asked), then its weights, final test scores and target."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import sys

from engine import save_weights
from harness.files import json_text
from harness.fit import LoopOptions, fit
from harness.loader import Loader
from harness.periodic import NonFiniteError
from harness.run import RunContext, save_config
from harness.rundir import resume_state
from harness.timing import PHASES
from harness.world import barrier, broadcast_state, check_same_on_all_ranks


def loop_options(cfg, **overrides) -> LoopOptions:
    """fit's options from a run's flags (those LoopOptions and the config share), with overrides."""
    names = [f.name for f in dataclasses.fields(LoopOptions) if hasattr(cfg, f.name)]
    skip = cfg.skip_nonfinite or cfg.precision == "fp16"  # fp16: skipping overflows is the scaler's job
    return LoopOptions(**{**{n: getattr(cfg, n) for n in names}, "skip_nonfinite": skip, **overrides})


def resume(run: RunContext, state, loader: Loader):
    """(state, the epoch's metric history) from the run's newest checkpoint: rank 0 first (it sets
    damaged checkpoints aside before the others look), then the same start broadcast to every rank."""
    cfg, history = run.config, []
    if not cfg.resume and run.world.main:  # only now, data loaded and step built: a run that could not
        save_config(run.run_dir, run.experiment, cfg)  # start leaves no config.json to block a retry
    if cfg.resume:
        for turn in (True, False):
            if run.world.main == turn:
                with contextlib.redirect_stdout(sys.stdout if turn else io.StringIO()):  # say it once
                    config = dataclasses.asdict(cfg)
                    state, history = resume_state(run.run_dir, state, loader, config, cfg.RESUMABLE)
            barrier()
        if run.world.main:  # only now: a resume refused above leaves the directory as it was
            save_config(run.run_dir, run.experiment, cfg)
    if run.world.parallel:  # identical start on every rank: rank 0's state, at the same step
        check_same_on_all_ranks(loader.steps_taken, "the step to resume from", run.device)
        state = broadcast_state(state)
    return state, history


def train(run: RunContext, step, state, loader: Loader, evaluate, *, lr=None, probe=None, on_epoch_end=None,
          **loop) -> object:  # fmt: skip
    """fit with the run's flags, continuing from its newest checkpoint under --resume. lr: the
    learning rate, or its schedule, logged to TensorBoard (default --lr); loop: LoopOptions overrides
    (log_every, summary)."""
    state, history = resume(run, state, loader)
    # TensorBoard on rank 0; a resume purges the steps a killed process logged past its checkpoint
    board = run.board.open(loader.steps_taken, {"lr": run.config.lr if lr is None else lr})
    return fit(
        step, state, loader, run.run_dir, loop_options(run.config, **loop), evaluate=evaluate,
        on_epoch_end=on_epoch_end, probe=probe, history=history, config=dataclasses.asdict(run.config),
        world=run.world, board=board,
    )  # fmt: skip


def finish(run: RunContext, state, evaluate, weights=None, target_key: str = "loss") -> dict[str, float]:
    """Save plain weights ({file stem: (params, buffers)}; default model.safetensors), print the
    final test metrics, and enforce --target-<key> (exit 1 when the metric is above it)."""
    main, done = run.world.main, int(state.step)
    with PHASES("checkpoints"):
        for stem, (params, buffers) in (weights or {"model": (state.params, state.buffers)}).items():
            if main:
                save_weights(run.run_dir / f"{stem}.safetensors", params, buffers)
    with PHASES("evaluation"):
        final = evaluate(state)  # every rank: the evaluation may be sharded
    if main:
        (run.run_dir / "final.json").write_text(json_text(final))  # a nan as null: still JSON
        print(f"{run.run_dir}: final test " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
        run.board.scalars({f"final_test_{k}": v for k, v in final.items()}, done)
        run.board.close()
        PHASES.write(run.run_dir)  # where this process's time went: timings.json
        print(PHASES.line(), flush=True)
    value = final.get(target_key)
    if isinstance(value, float) and not math.isfinite(value):  # --skip-nonfinite through a diverged run
        raise NonFiniteError(f"the final test {target_key} is {value}: the run diverged (a lower --lr?)")
    target = getattr(run.config, f"target_{target_key}")
    if target and not final[target_key] <= target:
        if main:
            flag = f"--target-{target_key}"
            line = f"error: test {target_key} {final[target_key]:.4f} is above {flag} {target}"
            print(line, file=sys.stderr)
        raise SystemExit(1)
    return final

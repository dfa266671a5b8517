"""fit: the training loop around a pure step (progress, evaluation, logs, checkpoints, interruption)."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.state import flatten_state
from harness import progress
from harness.loader import Loader
from harness.rundir import (
    METRICS,
    PROBES,
    STEPS,
    append_record,
    list_checkpoints,
    read_metrics,
    remove_stale_temps,
    stack_history,
    trim_logs,
    write_checkpoint,
)
from harness.timing import PHASES
from harness.world import World, any_rank


class Interrupted(SystemExit):
    """Raised after SIGINT/SIGTERM once the checkpoint is safely written (exit code 130/143)."""


class NonFiniteError(Exception):
    """A loss or gradient went inf/nan (and --skip-nonfinite is off); one line, exit code 3."""


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a step is never cut in half."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.signum = self.signum or signum  # one SIGTERM may arrive twice (torchrun forwards it)

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _mean_metrics(history: list[dict], prefix: str) -> dict[str, float]:
    """Average per-step metric dicts over their finite values (a skipped inf/nan step does not
    poison the mean); one host sync for the whole list."""
    if not history:
        return {}
    keys = list(history[-1])  # the newest step's order (older entries may come from a checkpoint)
    values = torch.stack([torch.stack([m[k].float() for k in keys]) for m in history])  # (steps, keys)
    finite = torch.isfinite(values)
    means = torch.where(finite, values, 0).sum(0) / finite.sum(0)
    return {f"{prefix}{k}": v for k, v in zip(keys, means.tolist())}


class _Watch:
    """Looks for updates the step skipped as non-finite (its `*skipped` metrics), at sync points only."""

    def __init__(self, skip: bool, checked: int):
        self.skip, self.checked = skip, checked  # history[:checked] was looked at already

    def check(self, history: list[dict], done: int, last: Path | None) -> None:
        start, self.checked = self.checked, len(history)
        recent = history[start:]
        keys = [k for k in (recent[0] if recent else ()) if k.endswith("skipped")]
        if self.skip or not keys:
            return
        flags = torch.stack([torch.stack([m[k] for k in keys]) for m in recent])  # (steps, players)
        hits = flags.nonzero().tolist()  # sync point
        if not hits:
            return
        i, j = hits[0]
        metrics, player = recent[i], keys[j][: -len("skipped")]
        bad = [k for k, v in metrics.items() if k.startswith(player) and not math.isfinite(float(v))]
        what = ", ".join(f"{k}={float(metrics[k])}" for k in bad) or f"{player}gradient (loss finite)"
        step = done - (len(history) - 1 - (start + i))
        raise NonFiniteError(
            f"step {step}: non-finite {what}; that update was not applied and the run stopped "
            f"(last good checkpoint: {last or 'none yet'}; --skip-nonfinite skips such updates instead)"
        )


def _assert_finite(state, done: int, last) -> None:
    """Never write inf/nan into a checkpoint; one host sync over the whole state."""
    flat = {k: v for k, v in flatten_state(state).items() if v.is_floating_point()}
    ok = torch.stack([torch.isfinite(v).all() for v in flat.values()]).tolist()
    if not all(ok):
        bad = next(k for k, good in zip(flat, ok) if not good)
        raise NonFiniteError(
            f"the state holds non-finite values ({bad}) at step {done}: not checkpointed; "
            f"last good checkpoint: {last or 'none yet'}"
        )


class _Saver:
    """Writes the rotating checkpoints of a run: the state, the loader cursor, the epoch's metrics
    (on rank 0 only: every rank holds the same state)."""

    def __init__(self, run_dir: Path, loader: Loader, config, keep: int, main: bool):
        self.run_dir, self.loader, self.config, self.keep, self.main = run_dir, loader, config, keep, main
        newest = list_checkpoints(run_dir)
        self.last, self.last_step = (newest[0] if newest else None), None

    def save(self, state, done: int, history: list[dict]) -> None:
        if done == self.last_step or not self.main:  # e.g. SIGINT right after a --checkpoint-every write
            return
        with PHASES("checkpoints"):
            _assert_finite(state, done, self.last)
            extra = {"loader": self.loader.state_dict(), "history": stack_history(history)}
            self.last = write_checkpoint(self.run_dir, done, state, extra, self.config, self.keep)
        self.last_step = done


@dataclass(frozen=True)
class LoopOptions:
    """How fit runs, bound once per run (an experiment's config fills it from its flags)."""

    epochs: int = 1  # passes over the loader
    max_steps: int = 0  # stop after this many steps in total (0: every epoch)
    log_every: int = 50  # steps between sync points: steps.jsonl means, non-finite check, signals
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at the end of each epoch only)
    keep: int = 2  # checkpoints kept, newest first
    skip_nonfinite: bool = False  # skip and count inf/nan updates instead of stopping
    progress: bool = True  # a progress bar on rank 0
    summary: tuple[str, ...] = ("train_loss", "test_loss")  # record keys printed after each epoch
    probe_every: int = 0  # steps between probe(state) calls (0: none), logged to probes.jsonl


def fit(
    step: Callable,
    state,
    loader: Loader,
    run_dir,
    options: LoopOptions = LoopOptions(),
    *,
    evaluate: Callable | None = None,
    on_epoch_end: Callable | None = None,
    probe: Callable | None = None,
    history: list[dict] | None = None,
    config: dict | None = None,
    world: World = World(),
    board=None,
):
    """Train until `options.epochs` epochs (or `max_steps` steps) are done, continuing from loader's
    cursor (and the epoch's metric `history`, as resume_state returns it).

    Every epoch: evaluate(state) -> {name: float}, one JSON line in metrics.jsonl, on_epoch_end(state,
    record), then a checkpoint (its metadata holds `config`); one every `checkpoint_every` steps too,
    the newest `keep` kept. A skipped non-finite update stops the run (NonFiniteError) unless
    skip_nonfinite. SIGINT/SIGTERM finish the current step, checkpoint, and exit 130/143.

    Data parallel (world.size > 1): every rank runs this loop in step with the others (the step and
    evaluate hold the collectives); rank 0 alone writes logs and checkpoints and calls on_epoch_end;
    a signal is agreed on at the log_every sync points, so all ranks stop after the same step.

    probe(state) -> {name: float}, every `probe_every` steps on every rank (it may be sharded): one
    line in probes.jsonl with the step, the images seen and the wall-clock seconds of the run so far
    (carried over a resume from the last line kept), for quality-against-time curves.

    board (harness.board.Board, rank 0): the steps.jsonl and metrics.jsonl records as TensorBoard
    scalars at the same steps (with the samples/s of the step records and board.constants).
    """
    opt = options
    run_dir, main = Path(run_dir), world.main
    spe = loader.steps_per_epoch
    done = loader.steps_taken  # host-side step count: no sync to read state.step
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)
        trim_logs(run_dir, done)  # records a killed process wrote after its last checkpoint
    history = list(history or [])
    saver, watch = _Saver(run_dir, loader, config, opt.keep, main), _Watch(opt.skip_nonfinite, len(history))
    log = append_record if main else lambda path, record: None
    stopped, first = False, True
    clock = _RunClock(run_dir)

    with _StopFlag() as stop:
        while loader.epoch < opt.epochs and not (opt.max_steps and done >= opt.max_steps):
            epoch, ran, t0 = loader.epoch, 0, time.perf_counter()
            bar = progress.bar(
                total=spe,
                initial=loader.batch,
                desc=f"epoch {epoch + 1}/{opt.epochs}",
                enabled=opt.progress and main,
                leave=False,
            )
            with PHASES("train steps"):  # less the phases timed inside
                for batch in loader:
                    if first:  # this process's first step: tracing and compilation
                        with PHASES("compile (first step)"):
                            state, metrics = step(state, batch)
                            if loader.device.type == "cuda":  # the run's one extra sync: time it whole
                                torch.cuda.synchronize(loader.device)
                        PHASES.stepped()
                        first = False
                    else:
                        state, metrics = step(state, batch)
                    history.append(metrics)
                    done, ran = done + 1, ran + 1
                    bar.update(1)
                    if done % opt.log_every == 0:  # sync point: non-finite check, running means
                        with PHASES("log syncs"):
                            watch.check(history, done, saver.last)
                            recent = _mean_metrics(history[-opt.log_every :], "")
                            log(run_dir / STEPS, {"step": done, **recent})
                            rate = ran * loader.batch_size / (time.perf_counter() - t0)
                            if board is not None:
                                board.scalars({**recent, "samples_per_s": rate, **board.at(done)}, done)
                            shown = {k: f"{v:.3f}" for k, v in list(recent.items())[:3]}
                            bar.set_postfix(**shown, samples_s=f"{rate:,.0f}")
                    if probe is not None and opt.probe_every and done % opt.probe_every == 0:
                        images = done * loader.batch_size  # the global batch: real images seen
                        with PHASES("probes"):
                            probed = probe(state)
                        log(run_dir / PROBES, {"step": done, "images": images, **probed, "wall_s": clock()})
                    if opt.checkpoint_every and done % opt.checkpoint_every == 0 and loader.epoch == epoch:
                        watch.check(history, done, saver.last)
                        saver.save(state, done, history)
                    stopped = _stopping(stop, world, done, opt.log_every, loader.device)
                    if stopped or (opt.max_steps and done >= opt.max_steps):
                        break
                bar.close()
                with PHASES("log syncs"):
                    watch.check(history, done, saver.last)
            if loader.epoch > epoch:  # the epoch is complete: evaluate, record, checkpoint
                record = _epoch_record(
                    epoch, done, history, time.perf_counter() - t0, ran, loader, evaluate, state
                )
                log(run_dir / METRICS, record)  # before the checkpoint: a resume past it trims it
                if board is not None:
                    board.scalars(record, done)
                if on_epoch_end is not None and main:
                    with PHASES("epoch-end plots"):
                        on_epoch_end(state, record)
                history, watch.checked = [], 0
                saver.save(state, done, history)
                if board is not None:
                    board.flush()  # on disk with the checkpoint
                if main:
                    progress.say(_summary(record, opt.summary))
            else:  # stopped inside the epoch: the checkpoint keeps the cursor and the epoch's metrics
                saver.save(state, done, history)
            if stopped:
                if board is not None:
                    board.close()
                code = 143 if stop.signum == signal.SIGTERM else 130
                if main:
                    print(
                        f"interrupted at step {done}; checkpoint saved as {saver.last}; "
                        f"continue with --resume {run_dir}"
                    )
                raise Interrupted(code)
    return state


class _RunClock:
    """Wall-clock seconds of a run across resumes: this process's time plus the last probe's."""

    def __init__(self, run_dir: Path):
        records = read_metrics(run_dir, PROBES)  # trimmed to the resumed step already
        self.offset, self.t0 = (records[-1]["wall_s"] if records else 0.0), time.perf_counter()

    def __call__(self) -> float:
        return round(self.offset + time.perf_counter() - self.t0, 3)


def _stopping(stop: _StopFlag, world: World, done: int, log_every: int, device) -> bool:
    """Whether to stop after this step for SIGINT/SIGTERM. Data parallel: the ranks agree at the
    log_every sync points (one tiny all-reduce), since a signal may reach them a step apart."""
    if not world.parallel:
        return stop.signum is not None
    return done % log_every == 0 and any_rank(stop.signum is not None, device)


def _epoch_record(epoch, done, history, elapsed, ran, loader, evaluate, state) -> dict:
    """The metrics.jsonl line of one epoch: train means, test metrics, time and throughput."""
    record = {"epoch": epoch + 1, "step": done, **_mean_metrics(history, "train_")}
    skipped = [k for k in history[-1] if k.endswith("skipped")]
    if skipped:  # updates not applied because a loss or gradient was inf/nan (fp16: loss-scale overflows)
        flags = torch.stack([torch.stack([m[k] for k in skipped]) for m in history])
        record["skipped_nonfinite"] = int(flags.sum())
    if evaluate is not None:  # evaluate.split names the split it scores (test unless it says)
        split = getattr(evaluate, "split", "test")
        with PHASES("evaluation"):
            scores = evaluate(state)
        record.update({f"{split}_{k}": v for k, v in scores.items()})
    record["epoch_time_s"] = round(elapsed, 3)  # this process's share of the epoch, when resumed
    record["samples_per_s"] = round(ran * loader.batch_size / elapsed, 1)
    return record


def _summary(record: dict, names: tuple[str, ...]) -> str:
    """One line per epoch for the terminal: the `names` the record has, and the throughput."""
    keys = [k for k in names if k in record]
    parts = [f"{k} {record[k]:.4f}" for k in keys]
    return f"epoch {record['epoch']}: " + ", ".join(parts) + f", {record['samples_per_s']:,.0f} samples/s"

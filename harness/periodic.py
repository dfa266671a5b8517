"""The periodic actions of fit, each its own small piece: the step log (running means, the non-finite
watch, the progress bar), probes, checkpoints, the stop flag and the end of an epoch."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch

from engine import flatten_state
from harness import progress
from harness.board import Board
from harness.evaluator import Evaluator
from harness.loader import Loader
from harness.rundir import (
    METRICS,
    PROBES,
    STEPS,
    append_record,
    list_checkpoints,
    read_metrics,
    stack_history,
    write_checkpoint,
)
from harness.timing import PHASES
from harness.world import World, any_rank


class Interrupted(SystemExit):
    """Raised after SIGINT/SIGTERM once the checkpoint is safely written (exit code 130/143)."""


class NonFiniteError(Exception):
    """A loss or gradient went inf/nan (and --skip-nonfinite is off); one line, exit code 3."""


class Journal:
    """Where records go: JSON lines in the run directory (rank 0 only) and TensorBoard scalars (a
    board that is off, the default, writes nothing)."""

    def __init__(self, run_dir: Path, main: bool, board: Board | None = None):
        self.run_dir, self.main = run_dir, main
        self.board = Board(run_dir, enabled=False) if board is None else board

    def write(self, name: str, record: dict, step: int, scalars: dict | None = None) -> None:
        """One line of run_dir/name; the record (or `scalars`, if given) on the board at `step`."""
        if self.main:
            append_record(self.run_dir / name, record)
        self.board.scalars(record if scalars is None else scalars, step)


def mean_metrics(history: list[dict], prefix: str) -> dict[str, float]:
    """Average per-step metric dicts over their finite values (a skipped inf/nan step does not
    poison the mean; a metric with none is left out); one host sync for the whole list."""
    if not history:
        return {}
    keys = list(history[-1])  # the newest step's order (older entries may come from a checkpoint)
    values = torch.stack([torch.stack([m[k].float() for k in keys]) for m in history])  # (steps, keys)
    finite = torch.isfinite(values)
    counts = finite.sum(0)
    means = torch.where(finite, values, 0).sum(0) / counts
    # a metric with no finite value here is left out (a lazy penalty's nan on the steps without it)
    return {f"{prefix}{k}": v for k, v, n in zip(keys, means.tolist(), counts.tolist()) if n}


class EpochMeter:
    """One epoch's progress bar, steps and seconds (this process's share of it, when resumed)."""

    def __init__(self, loader: Loader, epochs: int, enabled: bool):
        self.loader, self.ran, self.t0, self.t1 = loader, 0, time.perf_counter(), None
        desc = f"epoch {loader.epoch + 1}/{epochs}"
        self.bar = progress.bar(total=loader.steps_per_epoch, initial=loader.batch, desc=desc,
                                enabled=enabled, leave=False)  # fmt: skip

    def stepped(self) -> None:
        self.ran += 1
        self.bar.update(1)

    def close(self) -> None:
        """The pass over the loader is over: the bar closed, the clock stopped (no evaluation in it)."""
        self.bar.close()
        self.t1 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return (self.t1 or time.perf_counter()) - self.t0

    @property
    def rate(self) -> float:
        """Training images per second so far this epoch."""
        return self.ran * self.loader.batch_size / self.elapsed


class StepLog:
    """The epoch's per-step metrics; every `every` steps (a sync point) their running means in
    steps.jsonl, TensorBoard and the bar, after a look for updates the step skipped as non-finite."""

    def __init__(self, every: int, skip_nonfinite: bool, journal: Journal, history: list[dict] | None):
        self.every, self.skip, self.journal = every, skip_nonfinite, journal
        self.history = list(history or [])
        self.checked = len(self.history)  # history[:checked] was looked at already

    def __call__(self, metrics: dict, done: int, meter: EpochMeter, last_checkpoint) -> None:
        self.history.append(metrics)
        if done % self.every:
            return
        with PHASES("log syncs"):
            self.check(done, last_checkpoint)
            recent = mean_metrics(self.history[-self.every :], "")
            rate = meter.rate
            extra = {"samples_per_s": rate, **self.journal.board.at(done)}
            self.journal.write(STEPS, {"step": done, **recent}, done, {**recent, **extra})
            shown = {k: f"{v:.3f}" for k, v in list(recent.items())[:3]}
            meter.bar.set_postfix(**shown, samples_s=f"{rate:,.0f}")

    def new_epoch(self) -> None:
        self.history, self.checked = [], 0

    def sync(self, done: int, last_checkpoint) -> None:
        """The end of a pass over the loader: a sync point for the steps not yet looked at."""
        with PHASES("log syncs"):
            self.check(done, last_checkpoint)

    def check(self, done: int, last_checkpoint) -> None:
        """NonFiniteError naming the first update skipped since the last look (unless skip_nonfinite)."""
        start, self.checked = self.checked, len(self.history)
        recent = self.history[start:]
        keys = [k for k in (recent[0] if recent else ()) if k.endswith("skipped")]
        if self.skip or not keys:
            return
        flags = torch.stack([torch.stack([m[k] for k in keys]) for m in recent])  # (steps, players)
        hits = flags.nonzero().tolist()  # sync point
        if hits:
            i, j = hits[0]
            step = done - (len(self.history) - 1 - (start + i))
            raise NonFiniteError(_nonfinite_message(recent[i], keys[j], step, last_checkpoint))


def _nonfinite_message(metrics: dict, key: str, step: int, last_checkpoint) -> str:
    player = key[: -len("skipped")]
    bad = [k for k, v in metrics.items() if k.startswith(player) and not math.isfinite(float(v))]
    what = ", ".join(f"{k}={float(metrics[k])}" for k in bad) or f"{player}gradient (loss finite)"
    return (
        f"step {step}: non-finite {what}; that update was not applied and the run stopped "
        f"(last good checkpoint: {last_checkpoint or 'none yet'}; "
        "--skip-nonfinite skips such updates instead)"
    )


class Saver:
    """Writes the rotating checkpoints of a run: the state, the loader cursor, the epoch's metrics
    (on rank 0 only: every rank holds the same state)."""

    def __init__(self, run_dir: Path, loader: Loader, config, keep: int, every: int, main: bool):
        self.run_dir, self.loader, self.config, self.keep, self.main = run_dir, loader, config, keep, main
        self.every = every  # also checkpoint every N steps (0: at the end of each epoch only)
        newest = list_checkpoints(run_dir)
        self.last, self.last_step = (newest[0] if newest else None), None

    def every_n(self, state, done: int, log: StepLog, same_epoch: bool) -> None:
        """The --checkpoint-every checkpoint, after a look for skipped updates (an epoch's last step
        is checkpointed by the epoch's end instead)."""
        if self.every and done % self.every == 0 and same_epoch:
            log.check(done, self.last)
            self(state, done, log.history)

    def __call__(self, state, done: int, history: list[dict]) -> None:
        if done == self.last_step or not self.main:  # e.g. SIGINT right after a --checkpoint-every write
            return
        with PHASES("checkpoints"):
            _assert_finite(state, done, self.last)
            extra = {"loader": self.loader.state_dict(), "history": stack_history(history)}
            self.last = write_checkpoint(self.run_dir, done, state, extra, self.config, self.keep)
        self.last_step = done


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


class Probes:
    """probe(state) -> {name: float} every `every` steps: one line in probes.jsonl with the step, the
    real images seen and the run's wall-clock seconds (carried over a resume from the last line kept)."""

    def __init__(self, probe, every: int, journal: Journal, batch_size: int):
        self.probe, self.every, self.journal, self.batch_size = probe, every, journal, batch_size
        records = read_metrics(journal.run_dir, PROBES)  # trimmed to the resumed step already
        self.offset, self.t0 = (records[-1]["wall_s"] if records else 0.0), time.perf_counter()

    def __call__(self, state, done: int) -> None:
        if self.probe is None or not self.every or done % self.every:
            return
        with PHASES("probes"):
            probed = self.probe(state)
        wall = round(self.offset + time.perf_counter() - self.t0, 3)
        record = {"step": done, "images": done * self.batch_size, **probed, "wall_s": wall}
        self.journal.write(PROBES, record, done, {})  # in probes.jsonl only, not on the board


class EpochEnd:
    """A finished epoch: evaluate, one line in metrics.jsonl, on_epoch_end(state, record) (rank 0),
    and the summary line on the terminal."""

    def __init__(self, evaluate, on_epoch_end, journal: Journal, summary: tuple[str, ...]):
        plain = evaluate is not None and not isinstance(evaluate, Evaluator)  # a function: scores "test"
        self.evaluate = Evaluator(evaluate) if plain else evaluate
        self.on_epoch_end, self.journal, self.summary = on_epoch_end, journal, summary

    def __call__(self, state, epoch: int, done: int, history: list[dict], meter: EpochMeter) -> None:
        record = {"epoch": epoch + 1, "step": done, **mean_metrics(history, "train_")}
        skipped = [k for k in history[-1] if k.endswith("skipped")]
        if skipped:  # updates not applied for an inf/nan loss or gradient (fp16: loss-scale overflows)
            flags = torch.stack([torch.stack([m[k] for k in skipped]) for m in history])
            record["skipped_nonfinite"] = int(flags.sum())
        if self.evaluate is not None:
            with PHASES("evaluation"):
                scores = self.evaluate(state)
            record.update({f"{self.evaluate.split}_{k}": v for k, v in scores.items()})
        record["epoch_time_s"] = round(meter.elapsed, 3)  # this process's share of the epoch, when resumed
        record["samples_per_s"] = round(meter.rate, 1)
        self.journal.write(METRICS, record, done)  # before the checkpoint: a resume past it trims it
        if self.on_epoch_end is not None and self.journal.main:
            with PHASES("epoch-end plots"):
                self.on_epoch_end(state, record)
        if self.journal.main:
            keys = [k for k in self.summary if k in record]
            parts = ", ".join(f"{k} {record[k]:.4f}" for k in keys)
            progress.say(f"epoch {record['epoch']}: {parts}, {record['samples_per_s']:,.0f} samples/s")


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a step is never cut in half. Data
    parallel: the ranks agree at the sync points (one tiny all-reduce), since a signal may reach them
    a step apart."""

    pending: int | None = None  # a signal taken before the loop (main_guard's SIGTERM): acted on at once

    def __init__(self, world: World, every: int, device):
        self.world, self.every, self.device, self.signum = world, every, device, None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self.signum = StopFlag.pending
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.signum = self.signum or signum  # one SIGTERM may arrive twice (torchrun forwards it)

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def __call__(self, done: int) -> bool:
        """Whether to stop after this step."""
        if not self.world.parallel:
            return self.signum is not None
        return done % self.every == 0 and any_rank(self.signum is not None, self.device)

    def exit(self, done: int, last_checkpoint, run_dir: Path) -> None:
        """After the checkpoint: say where it is, and exit 130 (SIGINT) or 143 (SIGTERM)."""
        if self.world.main:
            print(f"interrupted at step {done}; checkpoint saved as {last_checkpoint}; "
                  f"continue with --resume {run_dir}")  # fmt: skip
        raise Interrupted(143 if self.signum == signal.SIGTERM else 130)

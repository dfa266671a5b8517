"""fit: the training loop around a pure step (progress, evaluation, logs, checkpoints, interruption).

Every epoch: evaluate(state) -> {name: float} (a harness.Evaluator names its split; a plain function
scores "test"), one JSON line in metrics.jsonl, on_epoch_end(state, record), then a checkpoint (its
metadata holds `config`); one every `checkpoint_every` steps too, the newest `keep` kept. A skipped
non-finite update stops the run (NonFiniteError) unless skip_nonfinite. SIGINT/SIGTERM finish the
current step, checkpoint, and exit 130/143. probe(state) every `probe_every` steps: probes.jsonl.
board (harness.board.Board, rank 0): the records as TensorBoard scalars at the same steps.

Data parallel (world.size > 1): every rank runs the loop in step with the others (the step and
evaluate hold the collectives); rank 0 alone writes logs and checkpoints and calls on_epoch_end; a
signal is agreed on at the log_every sync points, so all ranks stop after the same step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.loader import Loader
from harness.periodic import EpochEnd, EpochMeter, Journal, Probes, Saver, StepLog, StopFlag
from harness.rundir import remove_stale_temps, trim_logs
from harness.timing import PHASES
from harness.world import World


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
    """Train for options.epochs epochs (or max_steps steps in all) from the loader's cursor and the
    epoch's metric history, as resume_state returns them; the module's docstring tells what happens when."""
    opt, run_dir = options, Path(run_dir)
    journal = _open_journal(run_dir, loader.steps_taken, world.main, board)
    log = StepLog(opt.log_every, opt.skip_nonfinite, journal, history)
    save = Saver(run_dir, loader, config, opt.keep, opt.checkpoint_every, world.main)
    probes = Probes(probe, opt.probe_every, journal, loader.batch_size)
    epoch_end = EpochEnd(evaluate, on_epoch_end, journal, opt.summary)
    step = _first_call_timed(step, loader.device)
    with StopFlag(world, opt.log_every, loader.device) as stop:
        while loader.epoch < opt.epochs and not (opt.max_steps and loader.steps_taken >= opt.max_steps):
            epoch, stopped = loader.epoch, False
            meter = EpochMeter(loader, opt.epochs, opt.progress and world.main)
            with PHASES("train steps"):  # less the phases timed inside
                trained = steps(step, state, loader, opt.max_steps)
                for state, metrics in trained:
                    done = loader.steps_taken
                    meter.stepped()
                    log(metrics, done, meter, save.last)
                    probes(state, done)
                    save.every_n(state, done, log, same_epoch=loader.epoch == epoch)
                    if stopped := stop(done):
                        break
                meter.close()
                log.sync(loader.steps_taken, save.last)
            if loader.epoch > epoch:  # the epoch is complete: evaluate, record, checkpoint
                epoch_end(state, epoch, loader.steps_taken, log.history, meter)
                log.new_epoch()
            save(state, loader.steps_taken, log.history)  # inside an epoch: the cursor and its metrics
            journal.board.flush()  # TensorBoard's events on disk with the checkpoint
            if stopped:
                journal.board.close()
                stop.exit(loader.steps_taken, save.last, run_dir)
    return state


def steps(step: Callable, state, loader: Loader, max_steps: int = 0) -> Iterator[tuple]:
    """(state, metrics) after each step over the rest of the loader's epoch, up to max_steps in all
    (0: no limit): the one loop every trainer here runs its step in."""
    for batch in loader:
        state, metrics = step(state, batch)
        yield state, metrics
        if max_steps and loader.steps_taken >= max_steps:
            return


def _open_journal(run_dir: Path, done: int, main: bool, board) -> Journal:
    """The run's records, continuing at step `done`: what a killed process left past it is dropped."""
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)
        trim_logs(run_dir, done)  # records a killed process wrote after its last checkpoint
    return Journal(run_dir, main, board)


def _first_call_timed(step: Callable, device) -> Callable:
    """step, with this process's first call (tracing and compilation) timed as its own phase."""
    first = True

    def timed(state, batch):
        nonlocal first
        if not first:
            return step(state, batch)
        first = False
        with PHASES("compile (first step)"):
            out = step(state, batch)
            if device.type == "cuda":  # the run's one extra sync: time it whole
                torch.cuda.synchronize(device)
        PHASES.stepped()
        return out

    return timed

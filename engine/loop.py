"""fit: the training loop around a pure step (progress, evaluation, metrics.jsonl, checkpoints)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.loader import Loader

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"  # running means every log_every steps, for per-step curves


class Interrupted(SystemExit):
    """Raised after SIGINT/SIGTERM once the checkpoint is safely written (exit code 130/143)."""


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a step is never cut in half."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _mean_metrics(history: list[dict], prefix: str) -> dict[str, float]:
    """Average a list of per-step metric dicts; one host sync for the whole list."""
    if not history:
        return {}
    keys = list(history[0])
    means = torch.stack([torch.stack([m[k].float() for k in keys]) for m in history]).mean(0)
    return {f"{prefix}{k}": v for k, v in zip(keys, means.tolist())}


def resume_state(run_dir, state, loader: Loader):
    """Load the run's checkpoint into (state, loader); returns the state."""
    state, extra, _ = load_checkpoint(Path(run_dir) / CHECKPOINT, state, device=state.step.device)
    loader.load_state_dict({k[len("loader/") :]: v for k, v in extra.items() if k.startswith("loader/")})
    return state


def fit(
    step: Callable,
    state,
    loader: Loader,
    *,
    epochs: int,
    run_dir,
    evaluate: Callable | None = None,
    config: dict | None = None,
    max_steps: int = 0,
    log_every: int = 50,
    on_epoch_end: Callable | None = None,
    progress: bool = True,
):
    """Train until `epochs` epochs (or `max_steps` steps) are done, continuing from loader's cursor.

    Every epoch: evaluate(state) -> {name: float}, one JSON line in metrics.jsonl, a checkpoint, and
    on_epoch_end(state, record). SIGINT/SIGTERM finish the current step, checkpoint, and exit.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spe = loader.steps_per_epoch
    done = loader.epoch * spe + loader.batch  # host-side step count: no sync to read state.step

    def checkpoint(state):
        save_checkpoint(run_dir / CHECKPOINT, state, {"loader": loader.state_dict()}, config)

    with _StopFlag() as stop:
        while loader.epoch < epochs and not (max_steps and done >= max_steps):
            epoch, history, t0 = loader.epoch, [], time.perf_counter()
            bar = tqdm(
                total=spe,
                initial=loader.batch,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not progress,
                dynamic_ncols=True,
                leave=False,
            )
            for batch in loader:
                state, metrics = step(state, batch)
                history.append(metrics)
                done += 1
                bar.update(1)
                if done % log_every == 0:  # sync point: running means for the bar and steps.jsonl
                    rate = len(history) * loader.batch_size / (time.perf_counter() - t0)
                    recent = _mean_metrics(history[-log_every:], "")
                    with open(run_dir / STEPS, "a") as f:
                        f.write(json.dumps({"step": done, **recent}) + "\n")
                    shown = {k: f"{v:.3f}" for k, v in list(recent.items())[:3]}
                    bar.set_postfix(**shown, samples_s=f"{rate:,.0f}")
                if stop.signum is not None or (max_steps and done >= max_steps):
                    break
            bar.close()
            if loader.epoch > epoch:  # the epoch is complete: evaluate, record, checkpoint
                record = _epoch_record(
                    epoch, done, history, time.perf_counter() - t0, loader.batch_size, evaluate, state
                )
                with open(run_dir / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
                checkpoint(state)
                tqdm.write(_summary(record))
                if on_epoch_end is not None:
                    on_epoch_end(state, record)
            else:  # stopped inside the epoch: the checkpoint keeps the cursor
                checkpoint(state)
            if stop.signum is not None:
                code = 130 if stop.signum == signal.SIGINT else 143
                print(
                    f"interrupted at step {done}; checkpoint saved in {run_dir}; "
                    f"continue with --resume {run_dir}"
                )
                raise Interrupted(code)
    return state


def _epoch_record(epoch, done, history, elapsed, batch_size, evaluate, state) -> dict:
    """The metrics.jsonl line of one epoch: train means, test metrics, time and throughput."""
    record = {"epoch": epoch + 1, "step": done, **_mean_metrics(history, "train_")}
    if evaluate is not None:
        record.update({f"test_{k}": v for k, v in evaluate(state).items()})
    record["epoch_time_s"] = round(elapsed, 3)
    record["samples_per_s"] = round(len(history) * batch_size / elapsed, 1)
    return record


def _summary(record: dict) -> str:
    """One line per epoch for the terminal."""
    names = ("train_loss", "test_loss", "test_kl", "train_d_loss", "train_g_loss", "test_fid", "test_is")
    keys = [k for k in names if k in record]
    parts = [f"{k} {record[k]:.4f}" for k in keys]
    return f"epoch {record['epoch']}: " + ", ".join(parts) + f", {record['samples_per_s']:,.0f} samples/s"


def read_metrics(run_dir, name: str = METRICS) -> list[dict]:
    """All epoch records of a run (or, with name=STEPS, its running per-step means)."""
    path = Path(run_dir) / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""A run directory: step-numbered checkpoints (newest K kept, linked as latest), resume, JSON-line logs."""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

import torch

from engine.checkpoint import (
    CheckpointError,
    CorruptCheckpoint,
    atomic_write,
    fsync_dir,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from engine.state import flatten_state
from harness.files import FileError, append_line, json_text, open_regular, parse_json, read_text
from harness.loader import Loader

LATEST = "checkpoint.safetensors"  # run_dir/LATEST: a relative symlink to the newest checkpoint
FOLDER = "checkpoints"
METRICS = "metrics.jsonl"  # one record per epoch
STEPS = "steps.jsonl"  # running means every log_every steps, for per-step curves
PROBES = "probes.jsonl"  # fit's probe(state) every probe_every steps, with images seen and wall seconds
LOCK = ".lock"  # held (flock) by the one process writing the run; the kernel drops it when that dies
_held: dict[Path, int] = {}  # run directory -> this process's open lock file descriptor


class RunInUse(CheckpointError):
    """Another live process holds the run directory; the message names its pid."""


def lock_run_dir(run_dir, create: bool = True) -> None:
    """Take the run directory's exclusive lock for the rest of this process's life, before anything
    in it is read, swept or written; another holder is a RunInUse naming its pid. Every writer into
    a run directory takes it: training, a sweep's --out, eval-gan and explore (create=False: the
    finished run they write beside must exist)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    if not create and not run_dir.is_dir():
        raise FileError(f"{run_dir} is not a run directory (no such folder)")
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = open_regular(run_dir / LOCK, os.O_RDWR | os.O_CREAT)  # a planted link is refused, not followed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        what = f"{run_dir} is in use by another run (pid {holder})"
        raise RunInUse(f"{what}; wait for it to end, or pick another --run-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[run_dir] = fd


_STEP_FILE = re.compile(r"step-(\d+)\.safetensors")


def step_path(run_dir, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step-{step:08d}.safetensors"


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint file's name says it was written at."""
    return int(_STEP_FILE.fullmatch(Path(path).name)[1])


def list_checkpoints(run_dir) -> list[Path]:
    """The run's checkpoint files, newest step first."""
    folder = Path(run_dir) / FOLDER
    steps = [(int(m[1]), p) for p in folder.glob("step-*") if (m := _STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(steps, reverse=True)]


def has_checkpoint(run_dir) -> bool:
    """Whether a run has written anything a new run would overwrite (a dangling link counts)."""
    return bool(list_checkpoints(run_dir)) or os.path.lexists(Path(run_dir) / LATEST)


STALE_TEMPS = (".*.tmp*", ".tmp*")  # ours (.name.tmpPID) and safetensors' own (.tmpXXXXXX)


def remove_stale_temps(run_dir) -> None:
    """Delete the temporary files a killed process left behind, never renamed in: ours (.name.tmpPID)
    and safetensors' own (.tmpXXXXXX: save_file writes through a temporary file of the Rust tempfile
    crate). Only the run's one writer calls this, holding the run directory's lock."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / FOLDER):
        for tmp in [t for pattern in STALE_TEMPS for t in folder.glob(pattern)]:
            tmp.unlink(missing_ok=True)


def _link_latest(run_dir: Path, target: Path) -> None:
    """Point run_dir/LATEST at target: a fresh symlink renamed over the old one (atomic)."""
    link = run_dir / LATEST
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, run_dir), tmp)
    os.replace(tmp, link)
    fsync_dir(run_dir)


def write_checkpoint(run_dir, step: int, state, extra, config, keep: int) -> Path:
    """Save checkpoints/step-<step>.safetensors atomically, link it as latest, keep the newest `keep`."""
    run_dir = Path(run_dir)
    path = step_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, state, extra, config)
    verify_checkpoint(path)  # read back whole against its checksum before anything older goes
    _link_latest(run_dir, path)
    for old in list_checkpoints(run_dir)[keep:]:  # only after the new one is safely in place
        if checkpoint_step(old) < step:  # never one newer than the checkpoint just verified
            old.unlink(missing_ok=True)
    return path


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def load_newest(run_dir, template, extra_template=None, device="cpu", warn=_warn):
    """(state, extra, metadata, path, corrupt) from the newest intact checkpoint.

    Each damaged newer file is reported in one line through `warn` and returned in `corrupt` (the
    caller sets them aside once it commits to the resume). None intact: CheckpointError."""
    paths, corrupt = list_checkpoints(run_dir), []
    for path in paths:
        try:
            return (*load_checkpoint(path, template, extra_template, device), path, corrupt)
        except CorruptCheckpoint as e:
            warn(f"warning: {e}; trying an older checkpoint")
            corrupt.append(path)
    if not paths:
        raise CheckpointError(f"{run_dir} holds no checkpoint")
    names = ", ".join(p.name for p in corrupt)
    raise CheckpointError(f"no intact checkpoint in {run_dir}: all {len(corrupt)} are damaged ({names})")


def set_aside(run_dir, paths, intact: Path) -> None:
    """Rename damaged checkpoints to *.corrupt (kept for a look, out of the rotation and of resumes)
    and link the newest intact one as latest."""
    for path in paths:
        path.rename(path.with_name(path.name + ".corrupt"))
    if paths:
        _link_latest(Path(run_dir), intact)


def stack_history(history: list[dict]) -> dict[str, torch.Tensor]:
    """The epoch's per-step metrics as {name: (steps,)} tensors, for the checkpoint."""
    return {k: torch.stack([m[k] for m in history]) for k in history[-1]} if history else {}


def _check_saved_config(meta_config: dict, config: dict | None, path: Path, resumable) -> None:
    """A checkpoint from a run with other structural settings is refused before anything changes."""
    for key, value in (config or {}).items():
        listed = list(value) if isinstance(value, tuple) else value  # a tuple field reads back as a list
        if key in meta_config and key not in resumable and meta_config[key] != listed:
            raise CheckpointError(
                f"{path} was written with {key}={meta_config[key]!r}, but this run has {key}={value!r} "
                "(checkpoint copied from another run, or config.json edited?)"
            )


def resume_state(run_dir, state, loader: Loader, config: dict | None = None, resumable=()):
    """Load the newest intact checkpoint into (state, loader); returns (state, the epoch's metric
    history so far). A checkpoint whose saved config differs from `config` in a field not named in
    `resumable` is refused. Damaged newer checkpoints are reported and renamed *.corrupt; a run
    killed before its first checkpoint starts again from step 0."""
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir):
        print(f"{run_dir} holds no checkpoint yet: starting from step 0")
        return state, []
    state, extra, meta, path, corrupt = load_newest(run_dir, state, device=_state_device(state))
    _check_saved_config(meta["config"], config, path, resumable)
    try:
        cursor = {k[len("loader/") :]: v for k, v in extra.items() if k.startswith("loader/")}
        loader.load_state_dict(cursor, step=checkpoint_step(path))
    except ValueError as e:
        raise CheckpointError(f"{path} cannot resume here: {e}") from None
    device = _state_device(state)  # the epoch's metrics so far, beside the new ones
    stacked = {k[len("history/") :]: v.to(device) for k, v in extra.items() if k.startswith("history/")}
    steps = len(next(iter(stacked.values()))) if stacked else 0
    history = [{k: v[i] for k, v in stacked.items()} for i in range(steps)]
    set_aside(run_dir, corrupt, path)
    print(
        f"resuming {run_dir} from {path.relative_to(run_dir)} "
        f"(epoch {loader.epoch + 1}, batch {loader.batch})"
    )
    return state, history


def _state_device(state) -> torch.device:
    return next(iter(flatten_state(state).values())).device


def append_record(path: Path, record: dict) -> None:
    """One JSON line at the end of a log (a non-finite value written as null)."""
    append_line(path, json_text(record, indent=None))


def _parse_lines(path: Path, text: str) -> list[dict]:
    """The records of a log's text; a torn last line (a process killed mid-write) is dropped. A line
    that is not a record with an integer step (where it has one) is a FileError naming it."""
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            record = parse_json(line, f"{path} line {i + 1}")
        except FileError:
            if i < len(lines) - 1:
                raise FileError(f"{path} line {i + 1} is not JSON (edited by hand?)") from None
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step", 0), int):
            raise FileError(f"{path} line {i + 1} is not a record with an integer step (edited by hand?)")
        records.append(record)
    return records


def trim_logs(run_dir: Path, done: int) -> None:
    """Keep only the log records up to step `done`, so a resumed run rewrites what follows exactly."""
    for name in (METRICS, STEPS, PROBES):
        path = run_dir / name
        if not os.path.lexists(path):
            continue
        text = read_text(path)
        kept = [r for r in _parse_lines(path, text) if r.get("step", 0) <= done]
        new = "".join(json_text(r, indent=None) for r in kept)
        if new != text:
            atomic_write(path, lambda tmp, text=new: tmp.write_text(text))


def read_metrics(run_dir, name: str = METRICS) -> list[dict]:
    """All epoch records of a run (or, with name=STEPS, its running per-step means)."""
    path = Path(run_dir) / name
    return _parse_lines(path, read_text(path)) if os.path.lexists(path) else []

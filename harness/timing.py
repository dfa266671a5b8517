"""Where a command's wall time goes: named phases timed as they run (exclusive of the phases nested in
them), from the process's start to the end, written to the run's timings.json and printed in one line."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

TIMINGS = "timings.json"


def process_start() -> float:
    """time.time() at which this process started (Linux: /proc; elsewhere: when this module loaded)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, clock ticks after boot (field 22 of proc(5))
        lines = Path("/proc/stat").read_text().splitlines()
        boot = next(int(line.split()[1]) for line in lines if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _LOADED


_LOADED = time.time()


class Phases:
    """Seconds per named phase. `with phases("x"):` adds the block's time to x, less the time of the
    phases opened inside it (each second counts once); the rest of the wall time is "other"."""

    def __init__(self, start: float | None = None):
        self.start = process_start() if start is None else start
        self.seconds: dict[str, float] = {}
        self.first_step: float | None = None  # seconds from the start to the end of the first step
        self._open: list[list] = []  # [name, started, nested seconds] of the blocks running now

    def begin_run(self) -> None:
        """A run starts: the first in this process counts the time since its start as imports; a later
        one (several runs in one process) starts a fresh table from now."""
        if self.seconds:
            self.start, self.seconds, self.first_step = time.time(), {}, None
        else:
            self.mark("start-up (imports)")

    def mark(self, name: str) -> None:
        """Everything from the process's start until now not yet counted goes to `name` (the imports)."""
        self.add(name, max(0.0, time.time() - self.start - sum(self.seconds.values())))

    def stepped(self) -> None:
        """The first step is done: remember how long the command took to get there."""
        if self.first_step is None:
            self.first_step = time.time() - self.start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, name: str):
        frame = [name, time.perf_counter(), 0.0]
        self._open.append(frame)
        try:
            yield
        finally:
            self._open.pop()
            took = time.perf_counter() - frame[1]
            self.add(name, took - frame[2])
            if self._open:
                self._open[-1][2] += took

    def table(self) -> dict[str, float]:
        """{phase: seconds} in the order first seen, then "other" and "total" (since process start)."""
        total = time.time() - self.start
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 3)
        out["total"] = round(total, 3)
        if self.first_step is not None:  # not a phase: a point in time, apart from the sum
            out["to_first_step"] = round(self.first_step, 3)
        return out

    def line(self) -> str:
        t = self.table()
        parts = [f"{k} {v:.1f}" for k, v in t.items() if k not in ("total", "to_first_step") and v >= 0.05]
        first = f" (first step done at {t['to_first_step']:.1f} s)" if "to_first_step" in t else ""
        return f"wall {t['total']:.1f} s{first}: " + ", ".join(parts)

    def write(self, run_dir) -> None:
        (Path(run_dir) / TIMINGS).write_text(json.dumps(self.table(), indent=2) + "\n")


PHASES = Phases()  # the one process's phases: the harness and evaluation add to it


class Throttled:
    """fn(*args), skipped while the time since its last call is under 1/share of that call's own
    duration, so it takes at most about `share` of the wall time (per-epoch plots: a drawing can
    cost more than a short epoch); the first call always runs, and flush() makes the last skipped
    call, so the final state is always drawn."""

    def __init__(self, fn, share: float = 0.05):
        self.fn, self.share = fn, share
        self.next_at, self.pending = 0.0, None

    def __call__(self, *args) -> None:
        if time.perf_counter() < self.next_at:
            self.pending = args
            return
        self.pending = None
        t0 = time.perf_counter()
        self.fn(*args)
        took = time.perf_counter() - t0
        self.next_at = t0 + took / self.share

    def flush(self) -> None:
        if self.pending is not None:
            args, self.pending = self.pending, None
            self.fn(*args)

"""How work is timed: device syncs around it, round lengths calibrated to a target, quick-mode settings."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

QUICK = os.environ.get("BENCH_QUICK") == "1"  # a smoke run while developing: short, few rounds
ROUNDS = 2 if QUICK else 5  # timed rounds per case, after one warm-up round
TARGET_S = 0.05 if QUICK else 0.5  # seconds per round the step count is calibrated to
MAX_STEPS = 2000  # per round, whatever the calibration says


def sync(device) -> None:
    """Wait for queued device work (a no-op on CPU, where every op has finished when it returns)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # sync point


def timed(fn: Callable[[], object], device) -> float:
    """Seconds for fn() including the device work it queued: synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def calibrate(advance: Callable[[int], None], device, target_s: float = TARGET_S) -> int:
    """Steps per round so that a round lasts about target_s: run 1, 2, 4, ... steps until a run takes
    a quarter of the target, then scale. These runs also warm up (CUDA graphs record on early calls)."""
    n = 1
    while True:
        elapsed = timed(lambda n=n: advance(n), device)
        if elapsed >= target_s / 4 or n >= MAX_STEPS:
            return max(1, min(MAX_STEPS, round(n * target_s / max(elapsed, 1e-9))))
        n *= 2

"""End to end, as a user waits for it: pytorch/examples' whole VAE program (bench.classic_vae) and
the project's parity command for the same epochs, alternated, each timed from launch to exit: the
command's first run on empty compile caches, its first run after `make setup` (`python -m
experiments.warm --only parity` into other empty caches, untimed), then the peer and the command in
turn, `E2E_ROUNDS` times each (default 2), medians reported. The CPU and its vector extensions head
the table: eager PyTorch's speed, hence the ratio, depends on them. Where a GPU is present both run on
it (the real script takes the accelerator unless --no-accel; the command's --device auto), and the
table names it: the GPU end-to-end case.

`E2E_EPOCHS` (default 10) sets the epochs. A timing, not a test: it fails only when a program
fails or a test loss is not a number.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.report import E2E, cpu_name

EPOCHS = int(os.environ.get("E2E_EPOCHS", "10"))
ROUNDS = int(os.environ.get("E2E_ROUNDS", "2"))
ROOT = Path(__file__).resolve().parent.parent


def _launch(argv: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds from launch to exit, stdout) of `python -m argv...`; a failure shows its stderr."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *argv], env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert done.returncode == 0, f"{argv[0]} exited {done.returncode}: {done.stderr[-2000:]}"
    return wall, done.stdout


def _ours(run_dir: Path, env: dict, *extra: str) -> tuple[float, dict]:
    argv = ["experiments.vae", "--arch", "mlp", "--epochs", str(EPOCHS), "--batch-size", "128"]
    wall, _ = _launch([*argv, "--lr", "1e-3", "--run-dir", str(run_dir), *extra], env)
    return wall, json.loads((run_dir / "timings.json").read_text())


def test_end_to_end(benchmark, tmp_path):
    caches = {
        "PURESTEP_CACHE": str(tmp_path / "steps"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    env = {**os.environ, **caches}
    set_up = {**os.environ, **{k: f"{v}-setup" for k, v in caches.items()}}
    runs: dict[str, list] = {"first": [], "setup": [], "ours": [], "classic": []}

    def alternated():  # the first runs (no setup, then after it), then peer and command in turn
        runs["first"].append(_ours(tmp_path / "first", env))
        _launch(["experiments.warm", "--only", "parity"], set_up)  # what `make setup` runs
        runs["setup"].append(_ours(tmp_path / "setup", set_up))
        for i in range(ROUNDS):
            runs["classic"].append(
                _launch(["bench.classic_vae", "--epochs", str(EPOCHS), "--out", str(tmp_path / "c")], env)
            )
            runs["ours"].append(_ours(tmp_path / f"ours{i}", env))

    benchmark.pedantic(alternated, rounds=1, iterations=1)
    first_s, first_timings = runs["first"][0]
    setup_s = runs["setup"][0][0]
    ours_s = statistics.median(w for w, _ in runs["ours"])
    classic_s = statistics.median(w for w, _ in runs["classic"])
    ours_loss = json.loads((tmp_path / "ours0" / "final.json").read_text())["loss"]
    epochs = [json.loads(line) for line in (tmp_path / "ours0" / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["samples_per_s"] for r in epochs[1:]) or [epochs[0]["samples_per_s"]]  # past compiling
    classic_loss = float(re.findall(r"Test set loss: ([\d.]+)", runs["classic"][0][1])[-1])
    assert math.isfinite(ours_loss) and math.isfinite(classic_loss)
    row = {
        "epochs": EPOCHS,
        "rounds": ROUNDS,
        "cpu": f"{cpu_name()} ({torch.backends.cpu.get_cpu_capability()})",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,  # both programs use it
        "classic_runs_s": [w for w, _ in runs["classic"]],
        "classic_s": classic_s,
        "classic_test_loss": classic_loss,
        "first_s": first_s,
        "ours_runs_s": [w for w, _ in runs["ours"]],
        "ours_s": ours_s,
        "ours_test_loss": ours_loss,
        "speedup": classic_s / ours_s,
        "first_speedup": classic_s / first_s,
        "setup_s": setup_s,
        "setup_speedup": classic_s / setup_s,
        "precision": json.loads((tmp_path / "ours0" / "config.json").read_text())["precision"],
        "loop_samples_per_s": rates[len(rates) // 2],  # the median epoch's, evaluation apart
        "first_step_cold_s": first_timings["to_first_step"],
        "first_step_warm_s": runs["ours"][0][1]["to_first_step"],
        "phases": runs["ours"][0][1],
        "first_phases": first_timings,
    }
    benchmark.extra_info.update(row)
    E2E.append(row)

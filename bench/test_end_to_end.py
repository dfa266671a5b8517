"""End to end, as a user waits for it: pytorch/examples' whole VAE program (bench.classic_vae) and
the project's command for the same epochs, back to back, each timed from launch to exit; and the
command's time from launch to its first step done, with cold and with warm compile caches.

`E2E_EPOCHS` (default 10) sets the epochs. A timing, not a test: it fails only when a program
fails or a test loss is not a number.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.report import E2E

EPOCHS = int(os.environ.get("E2E_EPOCHS", "10"))
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
    # time to the first step: empty caches (torch.compile from nothing), then the same command again
    _, cold = _ours(tmp_path / "cold", env, "--max-steps", "1")
    _, warm = _ours(tmp_path / "warm", env, "--max-steps", "1")
    walls = {}

    def both():  # back to back, the project's command first (with the cache the runs above left)
        walls["ours"], timings = _ours(tmp_path / "ours", env)
        walls["classic"], out = _launch(
            ["bench.classic_vae", "--epochs", str(EPOCHS), "--out", str(tmp_path / "c")], env
        )
        walls["ours_timings"], walls["classic_out"] = timings, out

    benchmark.pedantic(both, rounds=1, iterations=1)
    ours_loss = json.loads((tmp_path / "ours" / "final.json").read_text())["loss"]
    epochs = [json.loads(line) for line in (tmp_path / "ours" / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["samples_per_s"] for r in epochs[1:]) or [epochs[0]["samples_per_s"]]  # past compiling
    classic_loss = float(re.findall(r"Test set loss: ([\d.]+)", walls["classic_out"])[-1])
    assert math.isfinite(ours_loss) and math.isfinite(classic_loss)
    row = {
        "epochs": EPOCHS,
        "classic_s": walls["classic"],
        "classic_test_loss": classic_loss,
        "ours_s": walls["ours"],
        "ours_test_loss": ours_loss,
        "speedup": walls["classic"] / walls["ours"],
        "loop_samples_per_s": rates[len(rates) // 2],  # the median epoch's, evaluation apart
        "first_step_cold_s": cold["to_first_step"],
        "first_step_warm_s": warm["to_first_step"],
        "phases": walls["ours_timings"],
    }
    benchmark.extra_info.update(row)
    E2E.append(row)

"""Throughput of every case (train steps, data path, peer loop): one driver over bench.cases.grid()."""

from __future__ import annotations

import pytest
import torch

from bench import cases
from bench.report import ROWS
from bench.roofline import count_flops
from bench.timing import ROUNDS, calibrate, sync, timed

_FLOPS: dict[tuple, int] = {}  # (case, device, batch) -> FLOPs per step


def _flops_per_step(spec: cases.Spec, data) -> int | None:
    """Counted once per case and batch, on a fresh eager fp32 step (None for the data path: no matmuls)."""
    if spec.case == "data_path":
        return None
    key = (spec.case, spec.device, spec.batch)
    if key not in _FLOPS:
        work = cases.build(spec._replace(precision="fp32", compile="eager"), data)
        _FLOPS[key] = count_flops(lambda: work.advance(1))
    return _FLOPS[key]


def _row(spec: cases.Spec, step_s: float, steps: int, first_call_s: float, flops, peak, peak_mib) -> dict:
    tflops = flops / step_s / 1e12 if flops else None
    return {
        "id": spec.id,
        **spec._asdict(),
        "steps_per_round": steps,
        "rounds": ROUNDS,
        "ms_per_step": step_s * 1e3,
        "samples_per_s": spec.batch / step_s,
        "flops_per_step": flops,
        "tflops": tflops,
        "peak_tflops": peak,
        "pct_of_peak": 100 * tflops / peak if tflops else None,
        "peak_mib": peak_mib,
        "first_call_s": first_call_s,
        "compile_s": max(0.0, first_call_s - step_s),
    }


@pytest.mark.parametrize("spec", cases.grid())
def test_throughput(benchmark, mnist, roofline, spec):
    """First call (compilation) timed alone; steps per round calibrated; one warm-up round, then the
    median of ROUNDS rounds, each ending in a device sync."""
    data = mnist(spec.device)
    flops = _flops_per_step(spec, data)
    work = cases.build(spec, data)
    first_call_s = timed(lambda: work.advance(1), spec.device)
    steps = work.steps_per_round or calibrate(work.advance, spec.device)
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats(spec.device)

    def one_round():
        work.advance(steps)
        sync(spec.device)  # sync point: the round's device work is inside the timing

    setup = lambda: sync(spec.device)  # noqa: E731  (queued work never leaks into a round)
    benchmark.pedantic(one_round, setup=setup, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    step_s = benchmark.stats.stats.median / steps
    peak_mib = torch.cuda.max_memory_allocated(spec.device) / 2**20 if spec.device == "cuda" else None
    # read before the roofline, whose first call per precision runs an 8192 x 8192 matmul
    row = _row(spec, step_s, steps, first_call_s, flops, roofline(spec.device, spec.precision), peak_mib)
    benchmark.extra_info.update(row)
    ROWS.append(row)

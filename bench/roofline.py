"""The practical roofline (a large dense matmul's TFLOP/s per dtype) and FLOPs counted per step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.timing import timed

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}  # (n, n) @ (n, n): large enough to be compute-bound


def matmul_peak(device, precision: str, size: int | None = None, reps: int = 5, target_s: float = 0.3):
    """{"tflops", "size", "reps"}: TFLOP/s of (n, n) @ (n, n) matmuls in `precision`, the median over
    `reps` timed batches of about target_s each, after one untimed warm-up call."""
    n = size or MATMUL_SIZE[torch.device(device).type]
    a, b = (torch.randn(n, n, device=device, dtype=DTYPES[precision]) for _ in range(2))
    per_call = timed(lambda: a @ b, device)  # warm-up (kernel selection); sizes the batches
    calls = max(1, round(target_s / per_call))

    def batch():
        for _ in range(calls):
            a @ b

    times = sorted(timed(batch, device) / calls for _ in range(reps))
    return {"tflops": 2 * n**3 / times[len(times) // 2] / 1e12, "size": n, "reps": reps}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matmuls and convolutions fn() runs, forward and backward, as FlopCounterMode counts
    them; elementwise work (activations, losses, the optimizer update) is not counted. The count goes
    through torch.func.grad too: bench/test_flops.py checks it against an explicit autograd count."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()

"""Benchmark fixtures (MNIST per device, the matmul roofline per dtype) and the summary written at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import harness
from bench.report import E2E, PEAKS, ROWS, SCALING, SKIPPED, machine, peer_ratios, summary
from bench.roofline import matmul_peak
from bench.timing import QUICK, ROUNDS, TARGET_S

RESULTS = Path(__file__).parent / "results"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each case compiles from scratch: all steps share a few code objects, and dynamo's recompile
    limit would otherwise send later cases to eager without a word."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def mnist():
    """get(device): the MNIST train split on that device, read once."""
    cache = {}

    def get(device: str):
        if device not in cache:
            cache[device] = harness.load_mnist(os.environ.get("DATA_DIR"), "train", device=device)
        return cache[device]

    return get


@pytest.fixture(scope="session")
def roofline():
    """peak(device, precision): the matmul TFLOP/s of that dtype, measured once in this session."""

    def peak(device: str, precision: str) -> float:
        if (device, precision) not in PEAKS:
            reps, target_s = (3, 0.1) if QUICK else (5, 0.3)
            PEAKS[(device, precision)] = matmul_peak(device, precision, reps=reps, target_s=target_s)
        return PEAKS[(device, precision)]["tflops"]

    return peak


def pytest_runtest_logreport(report):
    """Remember skipped cases (the GPU ones on a machine without one) for the summary."""
    if report.skipped and "test_throughput[" in report.nodeid:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        SKIPPED[report.nodeid.split("[", 1)[1].rstrip("]")] = reason.removeprefix("Skipped: ")


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Add the engine/peer ratios to each case and the peaks and skipped cases to the saved JSON."""
    ratios = peer_ratios(ROWS)
    for bench in output_json["benchmarks"]:
        case_id = bench["extra_info"].get("id")
        if case_id in ratios:
            bench["extra_info"]["vs_peer"] = ratios[case_id]
    output_json["bench"] = {
        "machine": machine(),
        "matmul_peaks": [{"device": d, "precision": p, **v} for (d, p), v in PEAKS.items()],
        "skipped": SKIPPED,
    }


def pytest_terminal_summary(terminalreporter, config):
    """Print the markdown summary and write it as summary.md beside the JSON (or in bench/results/)."""
    if not (ROWS or SCALING or E2E):
        return
    text = summary(ROUNDS, TARGET_S)
    terminalreporter.write_line("\n" + text)
    json_path = config.getoption("benchmark_json", None)
    if json_path is not None and not isinstance(json_path, str | os.PathLike):
        json_path = json_path.name  # older versions pass the open file (a Path's .name is only its last part)
    folder = Path(json_path).parent if json_path else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(json_path).stem if json_path else "latest"
    path = folder / ("summary.md" if stem == "latest" else f"{stem}.md")  # make bench: summary.md
    path.write_text(text)
    terminalreporter.write_line(f"summary written to {path}")

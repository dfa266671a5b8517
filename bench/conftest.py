"""Benchmark fixtures: MNIST on each device, and a summary table written at the end of the run."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch

import engine

RESULTS = Path(__file__).parent / "results"
ROWS: list[dict] = []  # one per measured case, filled by the benchmarks


def devices() -> list:
    """cpu always; cuda only when present (the skipped GPU cases are listed in the summary)."""
    cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
    return ["cpu", pytest.param("cuda", marks=cuda)]


@pytest.fixture(scope="session")
def mnist():
    cache = {}

    def get(device: str):
        if device not in cache:
            cache[device] = engine.load_mnist(os.environ.get("DATA_DIR"), "train", device=device)
        return cache[device]

    return get


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


def pytest_terminal_summary(terminalreporter):
    """Print the samples/s table with engine/peer ratios and write it beside the JSON."""
    if not ROWS:
        return
    peers = {(r["device"], r["batch"]): r["samples_per_s"] for r in ROWS if r["case"].startswith("peer")}
    lines = [
        f"Machine: {machine()}",
        "",
        "| case | device | batch | samples/s | ms/step | vs peer |",
        "|---|---|---|---|---|---|",
    ]
    for r in ROWS:
        peer = peers.get((r["device"], r["batch"]))
        ratio = f"{r['samples_per_s'] / peer:.2f}x" if peer and not r["case"].startswith("peer") else ""
        lines.append(
            f"| {r['case']} | {r['device']} | {r['batch']} | {r['samples_per_s']:,.0f} | "
            f"{r['ms_per_step']:.3f} | {ratio} |"
        )
    skipped = [rep.nodeid for rep in terminalreporter.stats.get("skipped", [])]
    if skipped:
        lines += ["", f"Skipped (no GPU here): {len(skipped)} cases"]
    text = "\n".join(lines)
    terminalreporter.write_line("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.md").write_text(text + "\n")

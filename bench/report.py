"""The run's results (one row per measured case, matmul peaks, skipped cases) and the markdown summary."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch

from bench.cases import MODELS, Spec

ROWS: list[dict] = []  # one per measured case, in run order
PEAKS: dict[tuple[str, str], dict] = {}  # (device, precision) -> roofline.matmul_peak(...)
SKIPPED: dict[str, str] = {}  # case id -> skip reason
SCALING: list[dict] = []  # data-parallel rows of bench/test_scaling.py
E2E: list[dict] = []  # bench/test_end_to_end.py: whole programs, back to back


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cpu = f"{os.cpu_count()} CPU cores ({cpu_name()}, {torch.backends.cpu.get_cpu_capability()})"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def peer_ratios(rows: list[dict]) -> dict[str, float]:
    """Case id -> samples/s over the peer's at the same device and batch. The peer writes the mlp VAE,
    so only the mlp VAE rows get a ratio."""
    peers = {(r["device"], r["batch"]): r["samples_per_s"] for r in rows if r["case"] == "peer"}
    return {
        r["id"]: r["samples_per_s"] / peers[(r["device"], r["batch"])]
        for r in rows
        if r["case"] == "mlp_vae" and (r["device"], r["batch"]) in peers
    }


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _data_shares(rows: list[dict]) -> dict[str, float]:
    """Case id -> % of its step time that the data path alone takes at the same device and batch."""
    data = {(r["device"], r["batch"]): r["ms_per_step"] for r in rows if r["case"] == "data_path"}
    return {
        r["id"]: 100 * data[(r["device"], r["batch"])] / r["ms_per_step"]
        for r in rows
        if r["case"] in MODELS and (r["device"], r["batch"]) in data
    }


def _table(rows: list[dict]) -> list[str]:
    ratios, shares = peer_ratios(rows), _data_shares(rows)
    head = "case | device | precision | compile | batch | samples/s | ms/step | GFLOP/step | TFLOP/s"
    lines = [f"| {head} | % of peak | peak MiB | vs peer | data path % |", "|" + "---|" * 13]
    for r in rows:
        gflop = r["flops_per_step"] / 1e9 if r["flops_per_step"] else None
        cells = [
            r["case"], r["device"], r["precision"], r["compile"], str(r["batch"]),
            f"{r['samples_per_s']:,.0f}", f"{r['ms_per_step']:.3f}", _num(gflop, ".3f"),
            _num(r["tflops"], ".4f"), _num(r["pct_of_peak"], ".1f"), _num(r["peak_mib"], ",.0f"),
            _num(ratios.get(r["id"]), ".2f") + ("x" if r["id"] in ratios else ""),
            _num(shares.get(r["id"]), ".1f"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _peak_lines() -> list[str]:
    return [
        f"- matmul peak, {device} {precision}: {p['tflops']:.4f} TFLOP/s "
        f"(({p['size']}, {p['size']}) @ ({p['size']}, {p['size']}), median of {p['reps']} timed batches)"
        for (device, precision), p in PEAKS.items()
    ]


def _compile_lines(rows: list[dict]) -> list[str]:
    compiled = [r for r in rows if r["compile"] != "eager"]
    if not compiled:
        return []
    lines = ["", "First call (compilation) of each compiled case, apart from the timed rounds:", ""]
    lines += ["| case | first call s | compile s (first call - one step) |", "|---|---|---|"]
    lines += [f"| {r['id']} | {r['first_call_s']:.1f} | {r['compile_s']:.1f} |" for r in compiled]
    return lines


def _skipped_lines() -> list[str]:
    """The skipped cases grouped by case, as the product of the values they span."""
    if not SKIPPED:
        return []
    reasons = sorted(set(SKIPPED.values()))
    lines = ["", f"Skipped cases ({'; '.join(reasons)}): {len(SKIPPED)}", ""]
    specs = [Spec.from_id(i) for i in SKIPPED]
    for case in dict.fromkeys(s.case for s in specs):
        group = [s for s in specs if s.case == case]
        spans = [list(dict.fromkeys(getattr(s, f) for s in group)) for f in Spec._fields[1:]]
        if math.prod(map(len, spans)) == len(group):  # the whole product: say it in one line
            product = " x ".join(", ".join(map(str, span)) for span in spans)
            lines.append(f"- {case}: {len(group)} ({product})")
        else:
            lines.append(f"- {case}: {len(group)} ({', '.join(s.id for s in group)})")
    return lines


def _scaling_lines(rows: list[dict]) -> list[str]:
    """The 1- and 2-process CPU rows and the scaling efficiency of each compile mode and batch."""
    if not rows:
        return []
    lines = [
        "",
        "Data parallel on CPU (torch.distributed, gloo, loopback), mlp VAE, one torch thread per "
        "process (bench/test_scaling.py); batch is the global batch; scaling efficiency = samples/s "
        "over processes x the 1-process samples/s:",
        "",
    ]
    lines += [
        "| compile | batch | processes | samples/s | ms/step | scaling efficiency |",
        "|---|---|---|---|---|---|",
    ]
    single = {(r["compile"], r["batch"]): r["samples_per_s"] for r in rows if r["processes"] == 1}
    for r in sorted(rows, key=lambda r: (r["compile"], r["batch"], r["processes"])):
        base = single.get((r["compile"], r["batch"]))
        eff = r["samples_per_s"] / (r["processes"] * base) if base and r["processes"] > 1 else None
        cells = [r["compile"], str(r["batch"]), str(r["processes"]), f"{r['samples_per_s']:,.0f}"]
        cells += [f"{r['ms_per_step']:.3f}", "" if eff is None else f"{100 * eff:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _case_lines(rounds: int, target_s: float) -> list[str]:
    """The case table, the matmul peaks and the compile times (nothing when no case ran)."""
    if not ROWS:
        return []
    return [
        "",
        f"Median of {rounds} timed rounds of about {target_s} s each (the data path: one epoch a round), "
        "after a first call and a warm-up round; FLOPs counted once per case on an eager fp32 step "
        "(matmuls and convolutions, forward and backward); % of peak against the matmul peak of the "
        "case's precision on its device. Model cases include the data path, as training does; "
        "data path % is the share of the step that the data path alone takes.",
        "",
        *_table(ROWS),
        "",
        "Practical roofline, measured in this run:",
        "",
        *_peak_lines(),
        *_compile_lines(ROWS),
    ]


def _e2e_lines(rows: list[dict]) -> list[str]:
    """Whole programs back to back, and where the command's time went."""
    if not rows:
        return []
    lines = []
    for r in rows:
        where = r["cpu"] + (f" with an {r['gpu']} (both programs on the GPU)" if r.get("gpu") else "")
        lines += ["", f"End to end (bench/test_end_to_end.py) on {where}: the mlp VAE, batch 128, launch"]
        lines[-1] += " to exit; the command's first run on empty compile caches, its first after `make"
        lines[-1] += f" setup`, then peer and command alternated, {r['rounds']} runs each, medians:"
        lines += [
            "",
            "| program | epochs | runs, wall s | median s | final test loss |",
            "|---|---|---|---|---|",
        ]
        classic = "pytorch/examples vae/main.py (bench/classic_vae.py)"
        ours = "python -m experiments.vae --arch mlp --epochs E --batch-size 128 --lr 1e-3"
        runs = {k: ", ".join(f"{w:.1f}" for w in r[k]) for k in ("classic_runs_s", "ours_runs_s")}
        c, o, f = r["classic_test_loss"], r["ours_test_loss"], r["first_s"]
        lines.append(
            f"| {classic} | {r['epochs']} | {runs['classic_runs_s']} | {r['classic_s']:.1f} | {c:.2f} |"
        )
        lines.append(f"| {ours}, first run (empty caches) | {r['epochs']} | {f:.1f} | {f:.1f} | |")
        s = r["setup_s"]
        lines.append(f"| {ours}, first run after `make setup` | {r['epochs']} | {s:.1f} | {s:.1f} | |")
        lines.append(
            f"| {ours}, later runs | {r['epochs']} | {runs['ours_runs_s']} | {r['ours_s']:.1f} | {o:.2f} |"
        )
        cold, warm = r["first_step_cold_s"], r["first_step_warm_s"]
        first = f"{cold:.1f} s with empty compile caches, {warm:.1f} s warm"
        lines += [
            "",
            f"The command finished {r['first_speedup']:.2f}x sooner on its first run, "
            f"{r['setup_speedup']:.2f}x on its first after `make setup`, "
            f"{r['speedup']:.2f}x on later ones. Launch to the end of its 1st step: {first}.",
        ]
        precision = r["precision"]  # the command's --precision, as it resolved
        step = next((x for x in ROWS if x["id"] == f"mlp_vae-cpu-{precision}-compiled-128"), None)
        rate = r["loop_samples_per_s"]
        loop = f"The training loop ran {rate:,.0f} samples/s (median epoch after the first)"
        if step:  # the same case timed alone by test_throughput in this run
            alone = step["samples_per_s"]
            loop += f": {100 * rate / alone:.0f}% of the step's rate timed alone in this run ({alone:,.0f}, "
            loop += f"{precision})"
        lines += ["", loop + ".", ""]
        runs = {"first run": r["first_phases"], "a later run": r["phases"]}
        names = [k for k in {**r["first_phases"], **r["phases"]} if k != "to_first_step"]
        lines += ["Where the command's time went (timings.json, seconds):", ""]
        lines += ["| run | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for name, phases in runs.items():
            lines.append(f"| {name} | " + " | ".join(f"{phases.get(k, 0.0):.1f}" for k in names) + " |")
    return lines


def summary(rounds: int, target_s: float) -> str:
    """The markdown summary: machine, the case table, matmul peaks, compile times, data-parallel
    scaling, skipped cases."""
    gpus = torch.cuda.device_count()
    lines = [
        f"Machine: {machine()}",
        *_case_lines(rounds, target_s),
        *_scaling_lines(SCALING),
        *_e2e_lines(E2E),
        *(
            ["", f"NCCL scaling across GPUs: not measured by this suite ({gpus} GPUs here)."]
            if SCALING
            else []
        ),
        *_skipped_lines(),
    ]
    return "\n".join(lines) + "\n"

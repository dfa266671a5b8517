"""Are GANs created equal, at this machine's scale (Lucic et al. 2018): every GAN loss on one architecture,
one optimiser and one step budget, several seeds each, scored alike; writes the table of mean and
standard deviation per loss (`make compare-gan-losses`). Finished runs are reused, so an interrupted
comparison continues where it stopped."""

from __future__ import annotations

import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments import gan
from harness import main_guard, option, parse_config
from harness.config import DATASET_NAMES, TrainingFlags, forwarded
from harness.files import json_text, read_json

ROWS = {  # row -> flags of experiments.gan; everything else is make train-gan's default
    "non-saturating": ["--loss", "nonsaturating", "--r1-gamma", "0"],
    "hinge": ["--loss", "hinge", "--r1-gamma", "0"],
    "least-squares": ["--loss", "lsgan", "--r1-gamma", "0"],
    "WGAN-GP": ["--loss", "wgan-gp", "--r1-gamma", "0"],
    "default: non-saturating + R1": [],
}
METRICS = ("fid", "precision", "recall", "is")


def _short(row: str) -> str:
    """A row's name on the command line and in run folders: "default: ..." -> "default"."""
    return row.split(":")[0].replace(" ", "-").lower()


@dataclass(frozen=True)
class GANLossesConfig(TrainingFlags):
    batch_size: int = option(64, "images per discriminator update (make train-gan's)")
    dataset: str = option("mnist", "data set", DATASET_NAMES)
    seeds: tuple[int, ...] = option((0, 1, 2), "comma-separated seeds, one run per loss and seed")
    steps: int = option(600, "generator steps per run (the one budget)")
    eval_samples: int = option(10000, "generated images scored per run against the test split")
    out: str = option("runs/gan-losses", "folder of the runs")
    table: str = option("docs/gan-losses.md", "markdown file the table is written to")
    args: str = option("", "more experiments.gan flags for every run, e.g. '--arch mlp --width 16'")
    losses: tuple[str, ...] = option(tuple(map(_short, ROWS)), "comma-separated rows to run (all by default)")
    progress: bool = option(False, "show each run's progress bar")  # many runs: quiet by default

    def __post_init__(self):
        super().__post_init__()
        self.require(self.steps >= 1 and len(self.seeds) >= 1, "--steps and --seeds must not be empty")
        self.require(self.eval_samples >= 10, "--eval-samples must be at least 10")
        known = tuple(map(_short, ROWS))
        unknown = [name for name in self.losses if name not in known]
        self.require(not unknown, f"--losses: unknown {', '.join(unknown)}; choose from {', '.join(known)}")


def run_one(cfg: GANLossesConfig, flags: list[str], seed: int, run_dir: Path) -> dict:
    """Final scores of one run and its wall seconds, kept in run_dir/comparison.json and read back from
    there when the run finished before."""
    done = run_dir / "comparison.json"
    if not done.exists():
        t0 = time.perf_counter()
        argv = [
            *forwarded(cfg, TrainingFlags),  # --device, --batch-size, --compile, --progress
            *shlex.split(cfg.args),  # after them: --args may override any
            *flags,
            "--dataset",
            cfg.dataset,
            "--seed",
            str(seed),
            "--max-steps",
            str(cfg.steps),
        ]
        argv += ["--eval-samples", str(cfg.eval_samples), "--probe-every", "0", "--run-dir", str(run_dir)]
        if (run_dir / "config.json").exists():  # an earlier comparison stopped inside this run
            argv += ["--resume"]
        final = gan.main(argv)
        final["wall_s"] = round(time.perf_counter() - t0, 1)
        done.write_text(json_text(final))
    return read_json(done)


def _cell(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_table(cfg: GANLossesConfig, results: dict[str, list[dict]], wall_s: float, argv) -> str:
    seeds = ", ".join(map(str, cfg.seeds))
    lines = [
        "# GAN losses compared (Lucic et al. 2018's protocol at this machine's scale)",
        "",
        f"Written by `python -m experiments.gan_losses {' '.join(argv)}` in {wall_s / 60:.1f} min.",
        "",
        f"{cfg.dataset}; every loss on `make train-gan`'s architecture and optimiser (BatchNorm-free "
        f"DCGAN discriminator, Adam, EMA generator), {cfg.steps} generator steps with one discriminator "
        f"step each, seeds {seeds}. Scores: {cfg.eval_samples:,} EMA-generator samples against the test "
        "split on the project's classifier features (FID, IS, k=3 precision and recall); mean ± standard "
        "deviation over the seeds. Only the default row has the R1 penalty; WGAN-GP has its own.",
        "",
        "| loss | FID | precision | recall | IS | seconds per run |",
        "|---|---|---|---|---|---|",
    ]
    for row, finals in results.items():
        cells = [_cell([f[m] for f in finals], 3 if m in ("precision", "recall") else 2) for m in METRICS]
        lines.append(
            f"| {row} | " + " | ".join(cells) + f" | {statistics.fmean(f['wall_s'] for f in finals):.0f} |"
        )
    return "\n".join(lines) + "\n"


@main_guard
def main(argv=None):
    cfg, _ = parse_config(GANLossesConfig, argv, "python -m experiments.gan_losses", __doc__)
    t0, out, results = time.perf_counter(), Path(cfg.out), {}
    for row, flags in ROWS.items():
        if (name := _short(row)) not in cfg.losses:
            continue
        results[row] = [run_one(cfg, flags, s, out / f"{name}-seed{s}") for s in cfg.seeds]
        print(
            f"{row}: " + ", ".join(f"{m} {statistics.fmean(f[m] for f in results[row]):.3f}" for m in METRICS)
        )
    wall = sum(f["wall_s"] for finals in results.values() for f in finals)
    shown = sys.argv[1:] if argv is None else argv
    text = write_table(cfg, results, max(wall, time.perf_counter() - t0), shown)
    Path(cfg.table).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.table).write_text(text)
    print(f"wrote {cfg.table}")
    return results


if __name__ == "__main__":
    main()

"""Train (or reuse) an AE and a VAE of the same architecture, code size and epochs, evaluate both,
and write report.md: `make compare-ae-vae ARGS="--latent-dim 2"`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluation.autoencoders import FULL_IMAGES, FULL_K, QUICK_IMAGES, QUICK_K, evaluate_run, nll_line
from evaluation.report import write_compare_report, write_run_report
from evaluation.trained import run_config
from experiments import ae, vae
from harness import DataError, main_guard, option, parse_config
from harness.config import BINARIZE, DATASET_NAMES, RunFlags, TrainingFlags, forwarded
from models import ARCHS


def _same_config(run_dir: Path, wanted: dict) -> bool:
    saved = run_config(run_dir) if (run_dir / "final.json").exists() else None
    return saved is not None and all(saved.get(k) == v for k, v in wanted.items())


def train_or_reuse(kind: str, run_dir: Path, wanted: dict, extra: list[str]) -> None:
    """Train `kind` into run_dir unless a finished run with the same settings is there already."""
    if _same_config(run_dir, wanted):
        print(f"reusing {run_dir} (same config, already trained)")
        return
    if (run_dir / "checkpoint.safetensors").exists() and not (run_dir / "final.json").exists():
        argv = ["--resume", str(run_dir), "--epochs", str(wanted["epochs"]), *extra]  # finish it
    else:
        if (run_dir / "checkpoint.safetensors").exists():
            raise DataError(f"{run_dir} holds a run with other settings; pick another --out")
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in wanted.items()] + [
            "--run-dir",
            str(run_dir),
            *extra,
        ]
    {"ae": ae.main, "vae": vae.main}[kind](argv)


@dataclass(frozen=True)
class CompareConfig(RunFlags):
    dataset: str = option("mnist", "data set", DATASET_NAMES)
    arch: str = option("conv", "encoder/decoder of both models", tuple(ARCHS))
    latent_dim: int = option(2, "size of both codes")
    epochs: int = option(10, "passes over the training set, each model")
    binarize: str = option("none", "dynamic: fresh Bernoulli pixels each time an image is used", BINARIZE)
    iwae_k: int = option(QUICK_K, "importance samples for the VAE's NLL")
    iwae_images: int = option(QUICK_IMAGES, "NLL on a seeded subset of N test images (0: all)")
    full: bool = option(False, f"the papers' NLL protocol: k={FULL_K} over every test image (hours on a CPU)")
    out: str = option("", "output folder; empty: runs/compare-<dataset>-<arch>-z<dim>")

    def __post_init__(self):
        super().__post_init__()
        ok = min(self.latent_dim, self.epochs, self.iwae_k) >= 1
        self.require(ok, "--latent-dim, --epochs and --iwae-k must be at least 1")


@main_guard
def main(argv=None):
    args, _ = parse_config(CompareConfig, argv, "python -m experiments.compare", __doc__)
    out = Path(
        args.out
        or f"runs/compare-{args.dataset}-{args.arch}-z{args.latent_dim}"
        + ("-bin" if args.binarize == "dynamic" else "")
    )
    wanted = {
        "dataset": args.dataset,
        "arch": args.arch,
        "latent_dim": args.latent_dim,
        "epochs": args.epochs,
        "binarize": args.binarize,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    extra = forwarded(args, TrainingFlags)  # --device, --compile, --progress for both runs
    pair = {}
    for kind in ("ae", "vae"):
        run_dir = out / kind
        train_or_reuse(kind, run_dir, wanted, extra)
        k, images = (FULL_K, FULL_IMAGES) if args.full else (args.iwae_k, args.iwae_images)
        cfg, model, result, tensors = evaluate_run(run_dir, k, images, args.device)
        if "nll" in result:
            print(nll_line(result))
        write_run_report(run_dir, cfg, model, result, tensors)
        pair[kind], pair[f"{kind}_dir"] = (cfg, model, result, tensors), run_dir
    print(f"wrote {write_compare_report(out, pair)}")


if __name__ == "__main__":
    main()

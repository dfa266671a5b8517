"""Train (or reuse) an AE and a VAE of the same architecture, code size and epochs, evaluate both,
and write report.md: `make compare-ae-vae ARGS="--latent-dim 2"`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.data import DataError
from experiments import ae, vae
from experiments.evaluate import evaluate_run
from experiments.report import write_compare_report, write_run_report


def _same_config(run_dir: Path, wanted: dict) -> bool:
    path = run_dir / "config.json"
    if not (run_dir / "final.json").exists() or not path.exists():
        return False
    saved = json.loads(path.read_text())
    return all(saved.get(k) == v for k, v in wanted.items())


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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__)
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    p.add_argument("--arch", default="conv", choices=("mlp", "conv"))
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--binarize", default="none", choices=("none", "dynamic"))
    p.add_argument("--iwae-k", type=int, default=1000, help="importance samples for the VAE's NLL")
    p.add_argument(
        "--iwae-images", type=int, default=0, help="NLL on a seeded subset of N test images (0: all)"
    )
    p.add_argument("--out", default="", help="default: runs/compare-<dataset>-<arch>-z<dim>")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile the train steps (default: on)",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.latent_dim < 1 or args.epochs < 1 or args.iwae_k < 1:
        p.error("--latent-dim, --epochs and --iwae-k must be at least 1")
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
    }
    extra = (["--no-progress"] if args.no_progress else []) + ([] if args.compile else ["--no-compile"])
    pair = {}
    try:
        for kind in ("ae", "vae"):
            run_dir = out / kind
            train_or_reuse(kind, run_dir, wanted, extra)
            cfg, model, result, tensors = evaluate_run(run_dir, args.iwae_k, args.iwae_images)
            write_run_report(run_dir, cfg, model, result, tensors)
            pair[kind], pair[f"{kind}_dir"] = (cfg, model, result, tensors), run_dir
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {write_compare_report(out, pair)}")


if __name__ == "__main__":
    main()

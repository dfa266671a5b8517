"""Score a finished GAN run against the real data: `python -m experiments.eval_gan RUN_DIR` writes
eval.json, a nearest-neighbour grid and report.md into it (`make eval-gan RUN=dir`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from evaluation.autoencoders import decode, load_trained
from evaluation.fidelity import RealReference, random_subset, sample_images
from evaluation.plots import save_image_rows
from evaluation.quality import inception_score, nearest_neighbours
from experiments.gan import CLASSIFIED, GANConfig
from harness import Config, DataError, UsageError, main_guard, option, parse_config, resolve_device
from harness.config import DEVICES
from harness.run import TEST_SEED, load_splits
from losses.gan import make_gan_loss
from models.gan import build_gan

FIGURES = [  # (file written by training, caption)
    ("samples_vs_real.png", "EMA generator on a fixed z beside real test images"),
    ("losses_per_step.png", "losses and D outputs per step (faint: raw; solid: smoothed)"),
    ("losses_per_epoch.png", "losses and D outputs per epoch"),
    ("fid_is.png", "FID and IS of the EMA generator after each epoch"),
    ("progress.gif", "the fixed-z grid after each epoch"),
]


def load_generator(run_dir: Path, device):
    """(GANConfig, generate function, generator params, buffers) of a finished GAN run."""
    path = run_dir / "config.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.pop("experiment", None) != "gan" or not (run_dir / "generator.safetensors").exists():
        raise DataError(f"{run_dir} is not a finished GAN run (config.json and generator.safetensors)")
    cfg = GANConfig(**saved)
    if cfg.dataset not in CLASSIFIED:
        raise UsageError(f"eval-gan scores against {' or '.join(CLASSIFIED)}; this run used {cfg.dataset}")
    gen, disc = build_gan(cfg.arch, (1, 28, 28), cfg.latent_dim, cfg.width)
    weights = load_file(str(run_dir / "generator.safetensors"), device=str(device))
    gen.load_state_dict(weights, strict=True)  # checks every name and shape
    params = {k: v for k, v in weights.items() if k in dict(gen.named_parameters())}
    buffers = {k: v for k, v in weights.items() if k not in params}
    return cfg, make_gan_loss(gen.to(device), disc.to(device), cfg.loss).generate, params, buffers


@torch.no_grad()
def vae_samples(vae_run: Path, dataset: str, n: int, seed: int, device) -> tuple[str, torch.Tensor]:
    """A VAE run's decoded prior draws: sigmoid of the decoder's logits (Bernoulli means)."""
    cfg, model = load_trained(vae_run, device)
    if cfg.get("experiment") != "vae" or cfg.get("dataset") != dataset:
        raise DataError(f"{vae_run} is not a VAE run on {dataset}")
    z = torch.randn(
        n, cfg["latent_dim"], generator=torch.Generator(device=device).manual_seed(seed), device=device
    )
    return f"VAE samples ({cfg['arch']}, z={cfg['latent_dim']}, {vae_run.name})", torch.sigmoid(
        decode(model, z)
    )


def evaluate(run_dir: Path, vae_run: Path | None, n: int, device) -> dict:
    """The metric table rows and the nearest-neighbour grid."""
    cfg, generate, params, buffers = load_generator(run_dir, device)
    train, test = load_splits(cfg, device)
    reference = RealReference(cfg.dataset, test, device)
    fake = sample_images(generate, params, buffers, n, cfg.latent_dim, TEST_SEED)
    rows = {f"GAN ({cfg.arch}, {cfg.loss}, EMA generator)": reference.score(fake)}
    floor = random_subset(train, n, TEST_SEED)
    rows["real training images (the floor)"] = reference.score(floor)
    if vae_run is not None:
        name, images = vae_samples(vae_run, cfg.dataset, n, TEST_SEED, device)
        rows[name] = reference.score(images)
    is_test, is_test_std = inception_score(reference.logits)
    rows["real test images (vs themselves)"] = {"fid": 0.0, "is": is_test, "is_std": is_test_std}
    # nearest training image in feature space for the first 16 generated samples
    train_feats, _ = reference.embed(floor)
    gen_feats, _ = reference.embed(fake[:16])
    nn_idx = nearest_neighbours(gen_feats, train_feats, k=1)[:, 0].to(floor.device)
    save_image_rows(
        [fake[:16], floor[nn_idx]],
        ["generated", "nearest training image"],
        run_dir / "nearest_neighbours.png",
        f"{cfg.dataset}: generated samples and their nearest of {n:,} training images (classifier features)",
    )
    return {"dataset": cfg.dataset, "samples": n, "rows": rows}


def write_report(run_dir: Path, result: dict) -> None:
    rows, floor = result["rows"], result["rows"]["real training images (the floor)"]["fid"]
    lines = [
        f"# GAN evaluation: {run_dir}",
        "",
        f"{result['samples']:,} images per row against the {result['dataset']} test split, on the "
        "penultimate features of the project's classifier (FID), its class probabilities (IS) "
        "and k=3 nearest-neighbour manifolds (precision, recall).",
        "",
        "| images | FID | FID / floor | IS | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        pr = [f"{r[k]:.3f}" if k in r else "" for k in ("precision", "recall")]
        ratio = f"{r['fid'] / floor:.1f}x" if floor > 0 and r["fid"] > 0 else ""
        lines.append(
            f"| {name} | {r['fid']:.3f} | {ratio} | {r['is']:.2f} ± {r['is_std']:.2f} | {pr[0]} | {pr[1]} |"
        )
    lines += ["", "![nearest neighbours](nearest_neighbours.png)", ""]
    lines += [f"![{caption}]({f})\n" for f, caption in FIGURES if (run_dir / f).exists()]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class EvalGANConfig(Config):
    run_dir: str = option("", "a finished run of experiments.gan", positional=True)
    vae_run: str = option("", "a finished VAE run to score beside the GAN (empty: none)")
    samples: int = option(10000, "images per row (compare_gan: 10,000)")
    device: str = option("auto", "where tensors live", DEVICES)

    def __post_init__(self):
        super().__post_init__()
        self.require(self.samples >= 10, "--samples must be at least 10")


@main_guard
def main(argv=None):
    args, _ = parse_config(EvalGANConfig, argv, "python -m experiments.eval_gan", __doc__)
    run_dir, vae_run = Path(args.run_dir), Path(args.vae_run) if args.vae_run else None
    result = evaluate(run_dir, vae_run, args.samples, resolve_device(args.device))
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(run_dir, result)
    for name, r in result["rows"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    print(f"wrote {run_dir / 'report.md'}")
    return result


if __name__ == "__main__":
    main()

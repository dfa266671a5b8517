"""Evaluate a saved AE or VAE run: `python -m experiments.evaluate RUN_DIR` writes eval.json,
figures and report.md into it (`make eval RUN=dir`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from engine import metrics
from engine.data import DataError, load_dataset
from engine.loader import fixed_images
from engine.run import TEST_SEED, resolve_device
from losses import bernoulli_nll, elbo, gaussian_kl, log_importance_weights, squared_error
from models import build_ae, build_vae

CHUNK = 500  # images per forward pass


def load_trained(run_dir: Path, device):
    """(config dict, model with the run's final weights, in eval mode)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    build = {"vae": build_vae, "ae": build_ae}.get(cfg.get("experiment"))
    if build is None or not (run_dir / "model.safetensors").exists():
        raise DataError(f"{run_dir} is not a finished AE/VAE run (config.json and model.safetensors)")
    model = build(cfg["arch"], cfg["latent_dim"]).to(device)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors"), device=str(device)), strict=True)
    return cfg, model.eval()


@torch.no_grad()
def encode(model, x):
    """Posterior means (VAE) or codes (AE), and log-variances (VAE) or None, for all of x."""
    outs = [model.encode(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)]
    if isinstance(outs[0], tuple):
        return torch.cat([o[0] for o in outs]).float(), torch.cat([o[1] for o in outs]).float()
    return torch.cat(outs).float(), None


@torch.no_grad()
def decode(model, z):
    """Pixel logits (N, 1, 28, 28) of codes z, in chunks."""
    return torch.cat([model.decode(z[i : i + CHUNK]) for i in range(0, len(z), CHUNK)])


@torch.no_grad()
def iwae_nll(model, x, z_dim: int, k: int, seed: int, images_per_pass=100, k_per_pass=100) -> float:
    """Mean -log p(x) estimated by the IWAE bound with k samples, streamed over k in chunks
    (memory ~ images_per_pass * k_per_pass * 784 floats, whatever k is)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    bounds = []
    for i in tqdm(range(0, len(x), images_per_pass), desc=f"IWAE k={k}", leave=False):
        xb = x[i : i + images_per_pass]
        lse = torch.full((len(xb),), -math.inf, device=x.device)
        for j in range(0, k, k_per_pass):
            kc = min(k_per_pass, k - j)
            eps = torch.randn(kc, len(xb), z_dim, generator=gen, device=x.device)
            lse = torch.logaddexp(lse, torch.logsumexp(log_importance_weights(model, xb, eps), 1))
        bounds.append(lse - math.log(k))
    return -float(torch.cat(bounds).mean())


def nll_subset(x: torch.Tensor, n: int) -> torch.Tensor:
    """n images of x for the (costly) NLL: a seeded random subset, not the first n (MNIST's test set
    is ordered by writer group); all of x when n is 0 or larger than x."""
    if not n or n >= len(x):
        return x
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n]
    return x[keep.to(x.device)]


def evaluate(cfg: dict, model, train, test, iwae_k: int, iwae_images: int) -> tuple[dict, dict]:
    """(metrics, tensors for the figures) of a trained model on the run's data set."""
    dyn = cfg.get("binarize") == "dynamic"
    x_tr, x_te = fixed_images(train, TEST_SEED + 2, dyn), fixed_images(test, TEST_SEED, dyn)
    mu_tr, _ = encode(model, x_tr)
    mu_te, logvar_te = encode(model, x_te)
    logits = decode(model, mu_te)  # reconstructions from the posterior mean / the code
    z_dim = mu_te.shape[1]
    out = {
        "mse": float(squared_error(logits, x_te).mean()),
        "bce": float(bernoulli_nll(logits, x_te).mean()),
        "pca_mse": metrics.pca_reconstruction_mse(x_tr, x_te, z_dim),
        "knn_acc": metrics.knn_accuracy(mu_tr, train.labels, mu_te, test.labels, k=5),
        "linear_probe_acc": metrics.linear_probe_accuracy(mu_tr, train.labels, mu_te, test.labels),
        "silhouette": metrics.silhouette_score(mu_te, test.labels),
    }
    if logvar_te is not None:  # VAE: the likelihood side
        g = torch.Generator(device=x_te.device).manual_seed(TEST_SEED + 1)
        eps = torch.randn(mu_te.shape, generator=g, device=x_te.device)
        sampled = decode(model, mu_te + eps * torch.exp(0.5 * logvar_te))
        _, m = elbo(sampled, x_te, mu_te, logvar_te)
        kl_dims = gaussian_kl(mu_te, logvar_te).mean(0)  # (Z,)
        subset = nll_subset(x_te, iwae_images)
        out.update(
            neg_elbo=float(m["neg_elbo"]),
            kl=float(m["kl"]),
            active_units=metrics.active_units(mu_te),
            kl_per_dim=kl_dims.tolist(),
            nll=iwae_nll(model, subset, z_dim, iwae_k, TEST_SEED + 3),
            iwae_k=iwae_k,
            iwae_images=len(subset),
        )
    return out, {"x": x_te, "labels": test.labels, "mu": mu_te}


def evaluate_run(run_dir, iwae_k=1000, iwae_images=0, device="auto"):
    """Load, evaluate, and write eval.json; returns (config, model, metrics, tensors)."""
    run_dir, device = Path(run_dir), resolve_device(device)
    cfg, model = load_trained(run_dir, device)
    train = load_dataset(cfg["dataset"], "train", device=device)
    test = load_dataset(cfg["dataset"], "test", device=device)
    result, tensors = evaluate(cfg, model, train, test, iwae_k, iwae_images)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return cfg, model, result, tensors


def main(argv=None):
    from experiments.report import write_run_report

    p = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__)
    p.add_argument("run_dir", help="a finished run of experiments.ae or experiments.vae")
    p.add_argument("--iwae-k", type=int, default=1000, help="importance samples per image for the NLL")
    p.add_argument(
        "--iwae-images", type=int, default=0, help="NLL on a seeded subset of N test images (0: all)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    if args.iwae_k < 1 or args.iwae_images < 0:
        p.error("--iwae-k must be >= 1 and --iwae-images >= 0")
    try:
        cfg, model, result, tensors = evaluate_run(args.run_dir, args.iwae_k, args.iwae_images, args.device)
    except (DataError, FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        print(f"error: cannot evaluate {args.run_dir}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    path = write_run_report(Path(args.run_dir), cfg, model, result, tensors)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

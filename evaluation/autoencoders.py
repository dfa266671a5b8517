"""Evaluation of a finished AE or VAE run: reconstruction, likelihood and latent-space metrics."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.checkpoint import atomic_write
from evaluation import latents as metrics
from evaluation.likelihood import iwae_bounds, nll_subset, scored_seconds, standard_error
from harness.data import DataError, load_dataset
from harness.loader import fixed_images
from harness.run import TEST_SEED, resolve_device
from losses import bernoulli_nll, elbo, gaussian_kl, one_draw_kl, squared_error
from models import build_ae, build_vae

CHUNK = 500  # images per forward pass


def load_trained(run_dir: Path, device):
    """(config dict, model with the run's final weights, in eval mode); DataError if it is not one."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        cfg = None
    build = {"vae": build_vae, "ae": build_ae}.get(cfg.get("experiment")) if isinstance(cfg, dict) else None
    if (
        build is None
        or not (run_dir / "model.safetensors").exists()
        or not {"arch", "latent_dim"} <= cfg.keys()
    ):
        raise DataError(f"{run_dir} is not a finished AE/VAE run (config.json and model.safetensors)")
    prior = {"prior": cfg.get("prior", "normal"), "pseudo_inputs": cfg.get("pseudo_inputs", 500)}
    model = build(cfg["arch"], cfg["latent_dim"], **(prior if build is build_vae else {})).to(device)
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


def evaluate(
    cfg: dict, model, train, test, iwae_k: int, iwae_images: int, blocks_dir=None
) -> tuple[dict, dict]:
    """(metrics, tensors for the figures) of a trained model on the run's data set; blocks_dir: where
    the NLL keeps its scored blocks (resumable, shared by processes started on the same run)."""
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
        z = mu_te + eps * torch.exp(0.5 * logvar_te)
        vamp = getattr(model, "pseudo_logits", None) is not None
        kl = None  # N(0, I): the analytic KL; the VampPrior: log q(z|x) - log p(z) at the same draw
        if vamp:
            log_pz = torch.cat([model.log_prior(z[i : i + CHUNK]) for i in range(0, len(z), CHUNK)])
            kl = one_draw_kl(eps, logvar_te, log_pz)
        _, m = elbo(decode(model, z), x_te, mu_te, logvar_te, kl=kl)
        subset = nll_subset(x_te, iwae_images)
        t0 = time.perf_counter()
        seed, per_pass = TEST_SEED + 3, (100, 100)  # images per block, draws per pass
        if blocks_dir is not None:  # saved blocks are reused only for the same scoring
            blocks_dir = Path(blocks_dir) / f"k{iwae_k}-n{len(subset)}-seed{seed}-{per_pass[0]}x{per_pass[1]}"
        nll = -iwae_bounds(model, subset, z_dim, iwae_k, seed, *per_pass, blocks_dir=blocks_dir)
        wall = time.perf_counter() - t0 if blocks_dir is None else scored_seconds(blocks_dir)
        out.update(
            neg_elbo=float(m["neg_elbo"]),
            kl=float(m["kl"]),
            active_units=metrics.active_units(mu_te),
            **({} if vamp else {"kl_per_dim": gaussian_kl(mu_te, logvar_te).mean(0).tolist()}),
            nll=float(nll.mean()),
            nll_se=standard_error(nll) if len(subset) < len(x_te) else 0.0,  # all scored: no sampling
            iwae_k=iwae_k,
            iwae_images=len(subset),
            nll_wall_s=round(wall, 3),  # compute time, summed over processes when shared
        )
    return out, {"x": x_te, "labels": test.labels, "mu": mu_te}


def weights_digest(path: Path) -> str:
    """12 hex digits of the weights file's SHA-256: scored NLL blocks belong to these weights only."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


QUICK_K, QUICK_IMAGES = 1000, 500  # the default NLL: about 1.5 min for the conv VAE on 2 CPU cores
FULL_K, FULL_IMAGES = 5000, 0  # --full: Burda et al.'s protocol, k=5000 over every test image


def evaluate_run(run_dir, iwae_k=QUICK_K, iwae_images=QUICK_IMAGES, device="auto"):
    """Load, evaluate, and write eval.json; returns (config, model, metrics, tensors)."""
    run_dir, device = Path(run_dir), resolve_device(device)
    cfg, model = load_trained(run_dir, device)
    train = load_dataset(cfg["dataset"], "train", device=device)
    test = load_dataset(cfg["dataset"], "test", device=device)
    blocks_dir = run_dir / "nll" / weights_digest(run_dir / "model.safetensors")
    result, tensors = evaluate(cfg, model, train, test, iwae_k, iwae_images, blocks_dir)
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(run_dir / "eval.json", lambda tmp: tmp.write_text(text))  # processes may share a run
    return cfg, model, result, tensors

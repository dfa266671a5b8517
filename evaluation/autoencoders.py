"""Evaluation of a finished AE or VAE run: reconstruction, likelihood and latent-space metrics."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from engine import atomic_write
from evaluation import latents as metrics
from evaluation.likelihood import iwae_bounds, nll_subset, scored_seconds, standard_error
from evaluation.trained import load_trained
from harness import TEST_SEED, DataError, load_dataset, resolve_device
from harness.loader import fixed_images
from losses import bernoulli_nll, elbo, gaussian_kl, hierarchical_elbo, one_draw_kl, squared_error

CHUNK = 500  # images per forward pass


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
def prior_samples(
    run_dir: Path, n: int, seed: int, device, dataset: str | None = None
) -> tuple[dict, torch.Tensor]:
    """(config, n decoded prior draws) of a finished VAE run: its N(0, I) prior or VampPrior, the
    decoder's Bernoulli means. DataError if it is not a VAE run (on `dataset`, when given)."""
    cfg, model = load_trained(run_dir, device)
    if cfg.get("experiment") != "vae" or dataset not in (None, cfg.get("dataset")):
        raise DataError(f"{run_dir} is not a VAE run" + (f" on {dataset}" if dataset else ""))
    z = model.sample_prior(n, torch.Generator(device=device).manual_seed(seed))
    return cfg, torch.sigmoid(decode(model, z))


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
        vamp, layers = getattr(model, "pseudo_logits", None) is not None, getattr(model, "layers", 1)
        if layers == 2:  # one draw of each layer, per-layer KL and active units
            m = _hierarchical_elbo(model, x_te, eps, vamp)
            half = z_dim // 2
            out.update(
                kl_per_layer=[float(m["kl1"]), float(m["kl2"])],
                active_units_per_layer=[  # z1: what it adds to its prior's mean given z2
                    metrics.active_units(mu_te[:, :half] - model.p1(mu_te[:, half:])[0]),
                    metrics.active_units(mu_te[:, half:]),
                ],
            )
        else:
            z = mu_te + eps * torch.exp(0.5 * logvar_te)
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
            **({} if vamp or layers == 2 else {"kl_per_dim": gaussian_kl(mu_te, logvar_te).mean(0).tolist()}),
            nll=float(nll.mean()),
            nll_se=standard_error(nll) if len(subset) < len(x_te) else 0.0,  # all scored: no sampling
            iwae_k=iwae_k,
            iwae_images=len(subset),
            nll_wall_s=round(wall, 3),  # compute time, summed over processes when shared
        )
    return out, {"x": x_te, "labels": test.labels, "mu": mu_te}


@torch.no_grad()
def _hierarchical_elbo(model, x, eps, vamp: bool) -> dict[str, torch.Tensor]:
    """A two-layer VAE's -ELBO, KL and per-layer KL on x, one draw per image (eps (N, 2Z)), in chunks."""
    sums = {}
    for i in range(0, len(x), CHUNK):
        xi, ei = x[i : i + CHUNK], eps[i : i + CHUNK]
        for k, v in hierarchical_elbo(model(xi, ei), xi, ei, vamp=vamp)[1].items():  # chunk means
            sums[k] = sums.get(k, 0.0) + v * len(xi)
    return {k: v / len(x) for k, v in sums.items()}


def weights_digest(path: Path) -> str:
    """12 hex digits of the weights file's SHA-256: scored NLL blocks belong to these weights only."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


QUICK_K, QUICK_IMAGES = 1000, 500  # the default NLL: a quick look (docs/evaluation.md: its time)
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


def nll_line(result: dict) -> str:
    """NLL, its standard error over the test images scored, k and the wall time, in one line."""
    se = f" +- {result['nll_se']:.2f} (standard error over the images)" if result.get("nll_se") else ""
    how = f"IWAE k={result['iwae_k']}, {result['iwae_images']:,} test images, {result['nll_wall_s']:,.1f} s"
    return f"NLL {result['nll']:.2f}{se} nats ({how})"

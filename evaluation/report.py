"""Figures and report.md for evaluated AE/VAE runs: one run (`make eval`) or an AE-VAE pair."""

from __future__ import annotations

from pathlib import Path

import torch

from evaluation import latents as metrics
from evaluation.plots import (
    plot_bars,
    plot_latents,
    save_grids_side_by_side,
    save_image_grid,
    save_image_rows,
)

ROWS = [  # (metric key, label, format)
    ("mse", "reconstruction MSE per pixel", "{:.4f}"),
    ("bce", "reconstruction BCE (nats/image)", "{:.2f}"),
    ("kl", "KL(q(z|x) || p(z)) (nats)", "{:.2f}"),
    ("neg_elbo", "negative ELBO (nats)", "{:.2f}"),
    ("nll", "NLL, IWAE bound (nats)", "{:.2f}"),
    ("active_units", "active units (Var E[z|x] > 0.01)", "{}"),
    ("kl_per_layer", "KL of z1 / of z2 (nats)", "{0[0]:.2f} / {0[1]:.2f}"),
    ("active_units_per_layer", "active units of z1 (E[z1|x] - E[z1|z2]) / of z2", "{0[0]} / {0[1]}"),
    ("knn_acc", "5-NN accuracy on codes", "{:.3f}"),
    ("linear_probe_acc", "linear probe accuracy on codes", "{:.3f}"),
    ("silhouette", "silhouette by class", "{:.3f}"),
    ("pca_mse", "PCA baseline MSE, same code size", "{:.4f}"),
]


def _cell(result: dict, key: str, fmt: str) -> str:
    return fmt.format(result[key]) if key in result else "n/a"


def _codes_2d(mu: torch.Tensor) -> torch.Tensor:
    """2-D codes as they are; larger codes through their top two principal axes (in torch)."""
    if mu.shape[1] <= 2:
        return mu if mu.shape[1] == 2 else torch.cat([mu, torch.zeros_like(mu)], 1)
    mean, comps = metrics.pca_fit(mu, 2)
    return metrics.pca_project(mu, mean, comps)


@torch.no_grad()
def _figures(run_dir: Path, name: str, model, result: dict, tensors: dict, z_dim: int) -> list[str]:
    """The figures of one model; returns their file names."""
    x, mu, dev = tensors["x"], tensors["mu"], tensors["x"].device
    files = []
    n = 16
    recon = torch.sigmoid(model.decode(mu[:n]))
    save_image_rows(
        [x[:n], recon],
        ["original", "reconstruction"],
        run_dir / "eval_reconstructions.png",
        f"{name}: test images above their reconstructions",
    )
    files.append("eval_reconstructions.png")
    # interpolations: 6 pairs of test digits, codes mixed linearly in 10 steps
    t = torch.linspace(0, 1, 10, device=dev)[:, None]
    rows = [torch.sigmoid(model.decode((1 - t) * mu[2 * i] + t * mu[2 * i + 1])) for i in range(6)]
    save_image_rows(
        rows,
        [f"pair {i + 1}" for i in range(6)],
        run_dir / "interpolations.png",
        f"{name}: decoded straight lines between the codes of two test images",
    )
    files.append("interpolations.png")
    g = torch.Generator(device=dev).manual_seed(0)
    if hasattr(model, "sample_prior"):  # a VAE: its prior's draws
        z, drawn = model.sample_prior(64, g), "p(z)"
    else:  # an AE has no prior: N(0, I) shows what its decoder makes of codes it was not trained on
        z, drawn = torch.randn(64, z_dim, generator=g, device=dev), "N(0, I)"
    samples = torch.sigmoid(model.decode(z))
    save_image_grid(samples, run_dir / "eval_samples.png", f"{name}: decoded z ~ {drawn}")
    files.append("eval_samples.png")
    plot_latents(
        [(name, _codes_2d(mu), tensors["labels"])],
        run_dir / "latents.png",
        f"{name}: test-set codes" + (" (top-2 PCA projection)" if z_dim > 2 else ""),
    )
    files.append("latents.png")
    if getattr(model, "layers", 1) == 2:
        files += layer_figures(run_dir, model, mu, tensors["labels"], name)
    if "kl_per_dim" in result:
        plot_bars(
            result["kl_per_dim"],
            run_dir / "kl_per_dim.png",
            f"{name}: KL per latent dimension",
            "latent dimension",
            "KL (nats/image)",
        )
        files.append("kl_per_dim.png")
        if z_dim == 2:  # the decoded manifold over the prior's quantiles
            q = torch.special.ndtri(torch.linspace(0.05, 0.95, 15, device=dev))
            grid = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).view(-1, 2)
            save_image_grid(
                torch.sigmoid(model.decode(grid)),
                run_dir / "manifold.png",
                f"{name}: decoded grid over the N(0, I) quantiles 5%..95%",
                nrow=15,
            )
            files.append("manifold.png")
    return files


@torch.no_grad()
def layer_figures(run_dir: Path, model, mu: torch.Tensor, labels: torch.Tensor, name: str) -> list[str]:
    """A two-layer VAE's layers apart, from its test codes mu = [mu1, mu2]: each layer's codes by
    class (layer_codes.png), and rows that each hold one z2 ~ p(z2) fixed while z1 ~ p(z1|z2) is
    redrawn (layer_samples.png: what the lower layer adds). Returns the file names."""
    half = mu.shape[1] // 2
    panels = [("z1, the lower layer", mu[:, :half]), ("z2, the top layer", mu[:, half:])]
    plot_latents(
        [(title, _codes_2d(codes), labels) for title, codes in panels],
        run_dir / "layer_codes.png",
        f"{name}: test-set codes of each layer (top-2 PCA projection of each)",
        shared=False,
    )
    g = torch.Generator(device=mu.device).manual_seed(0)
    tops = model.sample_prior(8, g)[:, half:]
    rows = [torch.sigmoid(model.decode(model.sample_prior(12, g, z2=t.expand(12, -1)))) for t in tops]
    save_image_rows(
        rows,
        [f"z2 #{i + 1}" for i in range(len(rows))],
        run_dir / "layer_samples.png",
        f"{name}: each row one z2 ~ p(z2) held fixed, z1 ~ p(z1|z2) redrawn along it",
    )
    return ["layer_codes.png", "layer_samples.png"]


def _table(columns: list[tuple[str, dict]]) -> list[str]:
    head = "| metric | " + " | ".join(c for c, _ in columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for key, label, fmt in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(r, key, fmt) for _, r in columns) + " |")
    return lines


def _settings(cfg: dict, result: dict) -> str:
    nll = (
        f"; NLL from k={result['iwae_k']} importance samples on {result['iwae_images']:,} test images"
        + (f" (standard error over the images {result['nll_se']:.2f})" if result.get("nll_se") else "")
        + (f" ({result['nll_wall_s']:,.0f} s)" if "nll_wall_s" in result else "")
        if "nll" in result
        else ""
    )
    prior = f", VampPrior ({cfg['pseudo_inputs']} pseudo-inputs)" if cfg.get("prior") == "vamp" else ""
    prior = (" per layer, two stochastic layers z2 -> z1 -> x" if cfg.get("layers", 1) == 2 else "") + prior
    length = f"{cfg['epochs']} epochs"
    if cfg.get("max_steps"):  # stopped early: the steps it took, on the schedule of all the epochs
        length = f"{cfg['max_steps']:,} steps (of a {cfg['epochs']}-epoch schedule)"
    return (
        f"{cfg['dataset']}, arch `{cfg['arch']}`, code size {cfg['latent_dim']}{prior}, {length}, "
        f"binarize `{cfg.get('binarize', 'none')}`{nll}."
    )


def write_run_report(run_dir: Path, cfg: dict, model, result: dict, tensors: dict) -> Path:
    """report.md for one run: its table, its figures (training curves included)."""
    name = f"{cfg['experiment'].upper()} {cfg['arch']} z={cfg['latent_dim']}"
    files = _figures(run_dir, name, model, result, tensors, cfg["latent_dim"])
    curves = [f for f in ("loss.png", "kl.png") if (run_dir / f).exists()]
    lines = [f"# {name} on {cfg['dataset']}: evaluation", "", _settings(cfg, result), ""]
    lines += _table([(name, result)]) + [""]
    lines += [f"![{f}]({f})" for f in curves + files]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def conclusion(ae: dict, vae: dict) -> list[str]:
    """Three sentences drawn from the measured numbers, not written in advance."""
    better = "AE" if ae["mse"] < vae["mse"] else "VAE"
    worse = "VAE" if better == "AE" else "AE"
    line1 = (
        f"- Reconstruction: the {better} reconstructs better (MSE {min(ae['mse'], vae['mse']):.4f} vs "
        f"{max(ae['mse'], vae['mse']):.4f} for the {worse}); PCA with the same code size gets "
        f"{ae['pca_mse']:.4f}, so the AE is {ae['pca_mse'] / ae['mse']:.1f}x and the VAE "
        f"{vae['pca_mse'] / vae['mse']:.1f}x better than the linear baseline."
    )
    cluster = "AE" if ae["knn_acc"] > vae["knn_acc"] else "VAE"
    line2 = (
        f"- Codes: a 5-NN classifier reads the digit from the {cluster}'s codes more accurately "
        f"({ae['knn_acc']:.3f} AE vs {vae['knn_acc']:.3f} VAE; linear probe {ae['linear_probe_acc']:.3f} "
        f"vs {vae['linear_probe_acc']:.3f}; silhouette {ae['silhouette']:.3f} vs {vae['silhouette']:.3f})."
    )
    line3 = (
        f"- Generation: only the VAE is a density model: -log p(x) <= {vae['nll']:.2f} nats "
        f"(IWAE k={vae['iwae_k']}), negative ELBO {vae['neg_elbo']:.2f}, with {vae['active_units']} "
        f"of {len(vae['kl_per_dim'])} latent units active; see the N(0, I) samples below."
    )
    return [line1, line2, line3]


@torch.no_grad()
def write_compare_report(out_dir: Path, pair: dict) -> Path:
    """report.md comparing an AE and a VAE: table, conclusion, and side-by-side figures."""
    (ae_cfg, ae_model, ae, ae_t), (vae_cfg, vae_model, vae, vae_t) = pair["ae"], pair["vae"]
    z_dim, dev = ae_cfg["latent_dim"], ae_t["x"].device
    panels = [
        (f"AE ({ae_cfg['arch']}, z={z_dim})", _codes_2d(ae_t["mu"]), ae_t["labels"]),
        (f"VAE ({vae_cfg['arch']}, z={z_dim})", _codes_2d(vae_t["mu"]), vae_t["labels"]),
    ]
    plot_latents(panels, out_dir / "latents_ae_vs_vae.png", "test-set codes, same axis limits")
    g = torch.Generator(device=dev).manual_seed(0)
    z = torch.randn(64, z_dim, generator=g, device=dev)
    save_grids_side_by_side(
        [
            ("AE decoder", torch.sigmoid(ae_model.decode(z))),
            ("VAE decoder", torch.sigmoid(vae_model.decode(z))),
        ],
        out_dir / "samples_ae_vs_vae.png",
        "the same 64 draws z ~ N(0, I), decoded",
    )
    x = ae_t["x"][:16]
    save_image_rows(
        [
            x,
            torch.sigmoid(ae_model.decode(ae_t["mu"][:16])),
            torch.sigmoid(vae_model.decode(vae_t["mu"][:16])),
        ],
        ["original", "AE", "VAE"],
        out_dir / "reconstructions_ae_vs_vae.png",
        "test images and their reconstructions",
    )
    lines = [
        f"# AE vs VAE: {ae_cfg['dataset']}, {ae_cfg['arch']}, code size {z_dim}",
        "",
        _settings(vae_cfg, vae),
        "",
        *_table([("AE", ae), ("VAE", vae)]),
        "",
        "## What the numbers say",
        "",
        *conclusion(ae, vae),
        "",
        "![codes](latents_ae_vs_vae.png)",
        "![samples](samples_ae_vs_vae.png)",
        "![reconstructions](reconstructions_ae_vs_vae.png)",
    ]
    for kind, run in (("ae", pair["ae_dir"]), ("vae", pair["vae_dir"])):
        rel = Path(run).relative_to(out_dir) if Path(run).is_relative_to(out_dir) else Path(run)
        lines += [f"![{kind} curves]({rel}/loss.png)"]
        if kind == "vae":
            lines += [f"![vae KL]({rel}/kl.png)", f"![vae KL per dim]({rel}/kl_per_dim.png)"]
            if z_dim == 2:
                lines += [f"![vae manifold]({rel}/manifold.png)"]
        lines += [f"![{kind} interpolations]({rel}/interpolations.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

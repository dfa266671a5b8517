"""Train a VAE on MNIST or Fashion-MNIST: `python -m experiments.vae --help` lists the flags."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import engine
from evaluation.explore import EpochFigures, finish_exploring
from evaluation.plots import plot_curves, save_image_grid, save_image_rows
from harness import RunConfig, RunContext, main_guard, open_run, option, read_metrics, to_unit, train
from harness.config import LR_DECAYS
from harness.selection import keep_if_best, selected
from harness.world import barrier
from losses import make_elbo_loss, make_hierarchical_loss, make_iwae_loss
from models import ARCHS, PRIORS, build_vae

OBJECTIVES = ("elbo", "iwae")


@dataclass(frozen=True)
class VAEConfig(RunConfig):
    arch: str = option("conv", "encoder/decoder: mlp = the classic 784-400-Z VAE", tuple(ARCHS))
    latent_dim: int = option(20, "size of the latent code z (of each layer's, with --layers 2)")
    layers: int = option(
        1, "stochastic layers: 2 is the hierarchical VAE z2 -> z1 -> x (prior on z2)", (1, 2)
    )
    beta: float = option(1.0, "weight of the KL term (beta-VAE); 1 is the ELBO")
    kl_warmup: int = option(0, "steps over which the KL weight ramps up from 0 to beta")
    objective: str = option("elbo", "training objective: elbo, or the IWAE bound with --k draws", OBJECTIVES)
    k: int = option(1, "importance samples per image for --objective iwae")
    dreg: bool = option(
        False, "--objective iwae: the doubly-reparameterised encoder gradient (Tucker et al. 2018)"
    )
    prior: str = option("normal", "p(z): N(0, I), or vamp: the VampPrior's learned mixture", PRIORS)
    pseudo_inputs: int = option(500, "--prior vamp: learned pseudo-images in the mixture")
    free_bits: float = option(
        0.0, "nats of KL per latent unit that cost nothing (ELBO; normal prior, or per layer with --layers 2)"
    )
    lr_decay: str = option("constant", "learning rate: constant, or cosine: to 0 over --epochs", LR_DECAYS)
    val_split: int = option(
        0, "hold out N training images: per-epoch scores and model selection on them, test scored once"
    )

    def __post_init__(self):
        super().__post_init__()
        self.require(self.latent_dim >= 1, f"--latent-dim must be at least 1, got {self.latent_dim}")
        self.require(self.k >= 1, f"--k must be at least 1, got {self.k}")
        self.require(self.val_split >= 0, f"--val-split must be >= 0, got {self.val_split}")
        iwae = self.objective == "iwae"
        self.require(iwae or (self.k == 1 and not self.dreg), "--k and --dreg need --objective iwae")
        self.require(
            not iwae or (self.beta == 1 and not self.kl_warmup and not self.free_bits),
            "--beta, --kl-warmup and --free-bits are for --objective elbo",
        )
        vamp = self.prior == "vamp"
        self.require(self.pseudo_inputs >= 1, f"--pseudo-inputs must be at least 1, got {self.pseudo_inputs}")
        self.require(self.free_bits >= 0, f"--free-bits must be >= 0, got {self.free_bits}")
        one = self.layers == 1
        self.require(
            not (vamp and self.free_bits and one), "--free-bits needs --prior normal (or --layers 2)"
        )
        self.require(not (vamp and self.dreg), "--dreg needs --prior normal")
        self.require(not (self.dreg and not one), "--dreg is for --layers 1")

    def tag(self) -> str:
        objective = f"-iwae{self.k}" + ("-dreg" if self.dreg else "") if self.objective == "iwae" else ""
        prior = f"-vamp{self.pseudo_inputs}" if self.prior == "vamp" else ""
        free_bits = f"-fb{self.free_bits:g}" if self.free_bits else ""
        layers = "-l2" if self.layers == 2 else ""
        return f"{self.arch}{layers}-z{self.latent_dim}{objective}{prior}{free_bits}"


SELECT_ON = {"elbo": "val_neg_elbo", "iwae": "val_neg_iwae"}  # the bounds, not a weighted loss


def save_plots(run: RunContext, model, state) -> None:
    """loss.png, kl.png, reconstructions.png and samples.png in the run directory."""
    cfg, records = run.config, read_metrics(run.run_dir)
    tag = f"VAE {cfg.arch} z={cfg.latent_dim} on {cfg.dataset}"
    plot_curves(records, [("negative ELBO (nats/image)", "neg_elbo")], run.run_dir / "loss.png", tag)
    panels = [("reconstruction -log p(x|z) (nats)", "recon"), ("KL(q(z|x) || p(z)) (nats)", "kl")]
    if cfg.layers == 2:
        panels += [("KL of z1: q(z1|x,z2) || p(z1|z2)", "kl1"), ("KL of z2: q(z2|x) || p(z2)", "kl2")]
    plot_curves(records, panels, run.run_dir / "kl.png", tag)
    engine.load_into(model, state.params, state.buffers)
    with torch.no_grad():
        x = to_unit(run.test.images[:16])  # (16, 1, 28, 28)
        recon = torch.sigmoid(model.decode(model.encode(x)[0]))  # decoded posterior means
        g = torch.Generator(device=run.device).manual_seed(cfg.seed)
        samples = torch.sigmoid(model.decode(model.sample_prior(64, g)))
    save_image_rows(
        [x, recon],
        ["test image", "reconstruction"],
        run.run_dir / "reconstructions.png",
        f"{tag}: test images and their reconstructions",
    )
    save_image_grid(samples, run.run_dir / "samples.png", f"{tag}: decoded z ~ p(z)")


@main_guard
def main(argv=None):
    run = open_run(VAEConfig, argv, "vae")  # flags, run directory, device, data (and --val-split)
    cfg, val = run.config, run.data.val is not None
    model = build_vae(cfg.arch, cfg.latent_dim, cfg.prior, cfg.pseudo_inputs, cfg.layers).to(run.device)
    if cfg.layers == 2:
        loss_fn = make_hierarchical_loss(model, cfg.objective, cfg.beta, cfg.kl_warmup, cfg.free_bits)
    elif cfg.objective == "iwae":
        loss_fn = make_iwae_loss(model, dreg=cfg.dreg)
    else:
        loss_fn = make_elbo_loss(model, cfg.beta, cfg.kl_warmup, cfg.free_bits)
    # reparameterisation noise, drawn by the loader on device: (B, Z), or (B, K, Z) for the IWAE bound
    code = model.latent_dim  # [z1, z2] side by side with --layers 2
    noise = {"eps": (cfg.k, code) if cfg.objective == "iwae" else (code,)}
    loader = run.loader(noise)
    lr = cfg.lr if cfg.lr_decay == "constant" else engine.cosine(cfg.lr, cfg.epochs * loader.steps_per_epoch)
    optimizer = engine.adam(lr)
    step = engine.make_train_step(loss_fn, optimizer, run.options)
    test = run.evaluator(loss_fn, noise)
    scored = run.evaluator(loss_fn, noise, split="val") if val else test  # each epoch's scores
    figures = EpochFigures(run, model, lambda s: save_plots(run, model, s), code)

    def on_epoch_end(s, record):
        figures(s, record)
        if val:
            keep_if_best(run.run_dir, s, record, SELECT_ON[cfg.objective])

    summary = ("train_loss", f"{scored.split}_loss", f"{scored.split}_kl")
    state = run.init_state(model, optimizer)
    state = train(run, step, state, loader, scored, lr=lr, on_epoch_end=on_epoch_end, summary=summary)
    figures.flush()  # the last epoch's figures, if the throttle skipped them
    if val:  # the test split scores the epoch chosen on validation, and only that one
        barrier()
        state = selected(run.run_dir, state)
    return finish_exploring(run, model, state, test, f"VAE {cfg.arch} z={cfg.latent_dim} on {cfg.dataset}")


if __name__ == "__main__":
    main()

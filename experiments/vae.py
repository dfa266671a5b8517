"""Train a VAE on MNIST or Fashion-MNIST: `python -m experiments.vae --help` lists the flags."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import engine
from evaluation.plots import plot_curves, save_image_grid, save_image_rows
from harness import Run, RunConfig, main_guard, option, read_metrics, to_unit
from losses import make_elbo_loss
from models import ARCHS, build_vae


@dataclass(frozen=True)
class VAEConfig(RunConfig):
    arch: str = option("conv", "encoder/decoder: mlp = the classic 784-400-Z VAE", tuple(ARCHS))
    latent_dim: int = option(20, "size of the latent code z")
    beta: float = option(1.0, "weight of the KL term (beta-VAE); 1 is the ELBO")
    kl_warmup: int = option(0, "steps over which the KL weight ramps up from 0 to beta")

    def __post_init__(self):
        super().__post_init__()
        self.require(self.latent_dim >= 1, f"--latent-dim must be at least 1, got {self.latent_dim}")

    def tag(self) -> str:
        return f"{self.arch}-z{self.latent_dim}"


def save_plots(run: Run, model, state, records) -> None:
    """loss.png, kl.png, reconstructions.png and samples.png in the run directory."""
    cfg, tag = run.config, f"VAE {run.config.arch} z={run.config.latent_dim} on {run.config.dataset}"
    plot_curves(records, [("negative ELBO (nats/image)", "neg_elbo")], run.run_dir / "loss.png", tag)
    panels = [("reconstruction -log p(x|z) (nats)", "recon"), ("KL(q(z|x) || p(z)) (nats)", "kl")]
    plot_curves(records, panels, run.run_dir / "kl.png", tag)
    engine.load_into(model, state.params, state.buffers)
    with torch.no_grad():
        x = to_unit(run.test.images[:16])  # (16, 1, 28, 28)
        recon = torch.sigmoid(model.decode(model.encode(x)[0]))  # decoded posterior means
        g = torch.Generator(device=run.device).manual_seed(cfg.seed)
        z = torch.randn(64, cfg.latent_dim, generator=g, device=run.device)
        samples = torch.sigmoid(model.decode(z))
    save_image_rows(
        [x, recon],
        ["test image", "reconstruction"],
        run.run_dir / "reconstructions.png",
        f"{tag}: test images and their reconstructions",
    )
    save_image_grid(samples, run.run_dir / "samples.png", f"{tag}: decoded z ~ N(0, I)")


@main_guard
def main(argv=None):
    run = Run.start(VAEConfig, argv, "vae")
    cfg = run.config
    model = build_vae(cfg.arch, cfg.latent_dim).to(run.device)
    loss_fn = make_elbo_loss(model, beta=cfg.beta, kl_warmup_steps=cfg.kl_warmup)
    optimizer = engine.adam(cfg.lr)
    step = engine.make_train_step(
        loss_fn, optimizer, precision=cfg.precision, compile=cfg.compile, donate=cfg.donate,
        all_reduce=run.all_reduce,  # None unless launched with torchrun
    )  # fmt: skip
    noise = {"eps": (cfg.latent_dim,)}  # reparameterisation noise, drawn by the loader on device
    evaluate = run.evaluator(loss_fn, noise)
    state = run.fit(
        step,
        run.init_state(model, optimizer),
        run.loader(noise),
        evaluate,
        on_epoch_end=lambda s, _: save_plots(run, model, s, read_metrics(run.run_dir)),
        summary=("train_loss", "test_loss", "test_kl"),
    )
    return run.finish(state, evaluate)


if __name__ == "__main__":
    main()

"""Train a deterministic auto-encoder on MNIST or Fashion-MNIST: `python -m experiments.ae --help`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import engine
from evaluation.explore import EpochFigures, finish_exploring
from evaluation.plots import plot_curves, save_image_rows
from harness import RunConfig, RunContext, main_guard, open_run, option, read_metrics, to_unit, train
from losses import make_ae_loss
from losses.ae import RECONSTRUCTIONS
from models import ARCHS, build_ae


@dataclass(frozen=True)
class AEConfig(RunConfig):
    arch: str = option("conv", "encoder/decoder: mlp (784-400-Z) or conv", tuple(ARCHS))
    latent_dim: int = option(16, "size of the code z")
    loss: str = option("bce", "reconstruction error to train on", RECONSTRUCTIONS)

    def __post_init__(self):
        super().__post_init__()
        self.require(self.latent_dim >= 1, f"--latent-dim must be at least 1, got {self.latent_dim}")

    def tag(self) -> str:
        return f"{self.arch}-z{self.latent_dim}"


def save_plots(run: RunContext, model, state) -> None:
    """loss.png and reconstructions.png in the run directory."""
    cfg = run.config
    tag = f"AE {cfg.arch} z={cfg.latent_dim} on {cfg.dataset}"
    panels = [(f"training loss ({cfg.loss})", "loss"), ("MSE per pixel", "mse")]
    plot_curves(read_metrics(run.run_dir), panels, run.run_dir / "loss.png", tag)
    engine.load_into(model, state.params, state.buffers)
    with torch.no_grad():
        x = to_unit(run.test.images[:16])  # (16, 1, 28, 28)
        recon = torch.sigmoid(model(x)[0])
    save_image_rows(
        [x, recon],
        ["test image", "reconstruction"],
        run.run_dir / "reconstructions.png",
        f"{tag}: test images and their reconstructions",
    )


@main_guard
def main(argv=None):
    run = open_run(AEConfig, argv, "ae")  # flags, run directory, device, data
    cfg = run.config
    model = build_ae(cfg.arch, cfg.latent_dim).to(run.device)
    loss_fn = make_ae_loss(model, cfg.loss)
    optimizer = engine.adam(cfg.lr)
    step = engine.make_train_step(loss_fn, optimizer, run.options)
    evaluate = run.evaluator(loss_fn)
    figures = EpochFigures(run, model, lambda s: save_plots(run, model, s))
    state = train(run, step, run.init_state(model, optimizer), run.loader(), evaluate, on_epoch_end=figures)
    figures.flush()  # the last epoch's figures, if the throttle skipped them
    return finish_exploring(run, model, state, evaluate, f"AE {cfg.arch} z={cfg.latent_dim} on {cfg.dataset}")


if __name__ == "__main__":
    main()

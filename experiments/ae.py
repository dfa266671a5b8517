"""Train a deterministic auto-encoder on MNIST or Fashion-MNIST: `python -m experiments.ae --help`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import engine
from evaluation.explore import board_images, finish_exploring
from evaluation.plots import plot_curves, save_image_rows
from harness import Run, RunConfig, main_guard, option, read_metrics, to_unit
from harness.timing import Throttled
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


def save_plots(run: Run, model, state, records) -> None:
    """loss.png and reconstructions.png in the run directory."""
    tag = f"AE {run.config.arch} z={run.config.latent_dim} on {run.config.dataset}"
    panels = [(f"training loss ({run.config.loss})", "loss"), ("MSE per pixel", "mse")]
    plot_curves(records, panels, run.run_dir / "loss.png", tag)
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
    run = Run.start(AEConfig, argv, "ae")
    cfg = run.config
    model = build_ae(cfg.arch, cfg.latent_dim).to(run.device)
    loss_fn = make_ae_loss(model, cfg.loss)
    optimizer = engine.adam(cfg.lr)
    step = engine.make_train_step(
        loss_fn, optimizer, precision=cfg.precision, compile=cfg.compile, donate=cfg.donate,
        all_reduce=run.all_reduce, cache=run.step_cache(),  # all_reduce: None unless under torchrun
    )  # fmt: skip
    evaluate = run.evaluator(loss_fn)
    plots = Throttled(lambda s: save_plots(run, model, s, read_metrics(run.run_dir)))  # <= 5% of the time
    test_x = to_unit(run.test.images)

    def on_epoch_end(s, record):
        engine.load_into(model, s.params, s.buffers)
        board_images(run.board, model, test_x, record["step"], None, cfg.seed)
        plots(s)

    state = run.fit(step, run.init_state(model, optimizer), run.loader(), evaluate, on_epoch_end=on_epoch_end)
    plots.flush()  # the last epoch's figures, if the throttle skipped them
    return finish_exploring(run, model, state, evaluate, f"AE {cfg.arch} z={cfg.latent_dim} on {cfg.dataset}")


if __name__ == "__main__":
    main()

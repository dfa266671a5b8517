"""Train a GAN on MNIST, Fashion-MNIST or a folder of images: `python -m experiments.gan --help`."""

from __future__ import annotations

from dataclasses import dataclass

from torchvision.io import read_image
from torchvision.utils import save_image

import engine
from evaluation.fidelity import RealReference, sample_images
from evaluation.plots import plot_curves, plot_step_curves, save_gif, save_grids_side_by_side
from harness import Run, RunConfig, UsageError, main_guard, option, read_metrics, to_unit
from harness.config import DATASET_NAMES
from harness.run import TEST_SEED
from harness.rundir import STEPS
from losses.gan import GAN_LOSSES, make_gan_loss
from models.gan import GAN_ARCHS, build_gan

CLASSIFIED = DATASET_NAMES  # the built-in data sets have a project classifier, hence FID and IS


@dataclass(frozen=True)
class GANConfig(RunConfig):
    RESUMABLE = RunConfig.RESUMABLE + ("eval_samples", "target_fid")

    dataset: str = option("mnist", "data set (imagefolder: --image-folder)", CLASSIFIED + ("imagefolder",))
    epochs: int = option(5, "passes over the training set (one generator step per batch)")
    lr: float = option(2e-4, "Adam learning rate of both players (DCGAN: 2e-4)")
    arch: str = option("dcgan", "networks: dcgan (28x28 or 64x64) or mlp", GAN_ARCHS)
    loss: str = option("nonsaturating", "GAN objective, on logits", GAN_LOSSES)
    latent_dim: int = option(100, "size of the generator's input z")
    width: int = option(64, "channels of the first/last conv layer (DCGAN paper: 64); mlp: 4 x width")
    n_disc: int = option(1, "discriminator updates per generator update (WGAN-GP: 5)")
    b1: float = option(0.5, "Adam beta1 of both players (DCGAN: 0.5)")
    b2: float = option(0.999, "Adam beta2 of both players (WGAN-GP: 0.9)")
    gp_weight: float = option(10.0, "gradient-penalty weight for --loss wgan-gp")
    ema_decay: float = option(0.999, "decay of the generator-weight EMA used for samples and scores")
    image_folder: str = option("", "folder of images for --dataset imagefolder (searched recursively)")
    image_size: int = option(64, "imagefolder: images resized and centre-cropped to this (28 or 64)")
    channels: int = option(3, "imagefolder: 3 (RGB) or 1 (grey)", (1, 3))
    max_pixels: int = option(40_000_000, "imagefolder: skip larger images unread (with a warning)")
    eval_samples: int = option(10000, "generated images scored against the test split each epoch (0: none)")
    target_fid: float = option(0.0, "exit 1 if the final FID is above this (0: no target)")

    def __post_init__(self):
        super().__post_init__()
        self.require(self.latent_dim >= 1 and self.width >= 1, "--latent-dim and --width must be at least 1")
        self.require(self.image_size >= 1, f"--image-size must be at least 1, got {self.image_size}")
        ok = self.n_disc >= 1 and 0 <= self.ema_decay < 1 and self.eval_samples >= 0
        self.require(ok, "--n-disc must be >= 1, --ema-decay in [0, 1), --eval-samples >= 0")
        scored = self.dataset in CLASSIFIED and self.eval_samples > 0
        need = "--target-fid needs --dataset mnist or fashion-mnist and --eval-samples > 0"
        self.require(not self.target_fid or scored, need)

    def tag(self) -> str:
        return f"{self.arch}-{self.loss}"


def save_plots(run: Run, gan, state, reference) -> None:
    """Loss and D-output curves, FID/IS per epoch, the fixed-noise grid of this epoch and its GIF."""
    cfg, d = run.config, run.run_dir
    tag = f"{cfg.arch} GAN ({cfg.loss}) on {cfg.dataset}"
    panels = [("losses", ["d_loss", "g_loss"]), ("D(x) and D(G(z))", ["d_real", "d_fake"])]
    plot_step_curves(read_metrics(d, STEPS), panels, d / "losses_per_step.png", tag)
    records = read_metrics(d)
    epoch_panels = [("discriminator loss", "d_loss"), ("generator loss", "g_loss")]
    epoch_panels += [("D(x)", "d_real"), ("D(G(z))", "d_fake")]
    plot_curves(records, epoch_panels, d / "losses_per_epoch.png", tag)
    if reference is not None:
        plot_curves(records, [("FID vs test (lower is better)", "fid"), ("IS", "is")], d / "fid_is.png", tag)
    fixed = sample_images(gan.generate, state.ema, state.gen.buffers, 64, cfg.latent_dim, cfg.seed)
    (d / "grids").mkdir(exist_ok=True)
    save_image(fixed, d / "grids" / f"epoch-{records[-1]['epoch']:03d}.png", nrow=8, padding=2)
    frames = [read_image(str(p))[None].float() / 255 for p in sorted((d / "grids").glob("epoch-*.png"))]
    save_gif(frames, d / "progress.gif", nrow=1)
    real = to_unit(run.test.images[:64])
    source = "test split" if cfg.dataset in CLASSIFIED else "the folder"
    grids = [("generated (EMA generator, fixed z)", fixed), (f"real ({source})", real)]
    save_grids_side_by_side(grids, d / "samples_vs_real.png", tag)


@main_guard
def main(argv=None):
    run = Run.start(GANConfig, argv, "gan")
    cfg = run.config
    shape = (1, *run.train.images.shape[1:]) if run.train.images.dim() == 3 else run.train.images.shape[1:]
    try:
        gen, disc = build_gan(cfg.arch, shape, cfg.latent_dim, cfg.width, disc_norm=cfg.loss != "wgan-gp")
    except ValueError as e:
        raise UsageError(str(e)) from None
    gen, disc = gen.to(run.device), disc.to(run.device)
    gan = make_gan_loss(gen, disc, cfg.loss, cfg.gp_weight)
    g_opt, d_opt = (engine.adam(cfg.lr, b1=cfg.b1, b2=cfg.b2) for _ in range(2))
    step = engine.make_gan_step(
        *gan, g_opt, d_opt, n_disc=cfg.n_disc, ema_decay=cfg.ema_decay,
        precision=cfg.precision, compile=cfg.compile, donate=cfg.donate, all_reduce=run.all_reduce,
    )  # fmt: skip
    noise = {"z": (cfg.latent_dim,), **({"u": ()} if cfg.loss == "wgan-gp" else {})}
    scored = cfg.dataset in CLASSIFIED and cfg.eval_samples > 0
    reference = RealReference(cfg.dataset, run.test, run.device) if scored else None

    def evaluate(state, recall=False) -> dict[str, float]:
        """FID and IS of eval_samples EMA-generator images against the test split (fixed z)."""
        if reference is None:
            return {}
        n, z, world = cfg.eval_samples, cfg.latent_dim, run.world  # sharded over torchrun's ranks
        return reference.score_generator(
            gan.generate, state.ema, state.gen.buffers, n, z, TEST_SEED, recall, world
        )

    state = run.fit(
        step,
        engine.init_gan_state(gen, disc, g_opt, d_opt, cfg.precision),
        run.loader(noise, batches=cfg.n_disc),
        evaluate,
        on_epoch_end=lambda s, _: save_plots(run, gan, s, reference),
        log_every=10 if run.device.type == "cpu" else 100,  # a sync point: rarer on a GPU
        summary=("train_d_loss", "train_g_loss", "test_fid", "test_is"),
    )
    weights = {
        "generator": (state.ema, state.gen.buffers),
        "discriminator": (state.disc.params, state.disc.buffers),
    }
    return run.finish(state, lambda s: evaluate(s, recall=True), weights, target_key="fid")


if __name__ == "__main__":
    main()

"""Train a GAN on MNIST, Fashion-MNIST or a folder of images: `python -m experiments.gan --help`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

import engine
from evaluation.explore import headline, write_gan_explorer
from evaluation.features import folder_classifier
from evaluation.fidelity import RealReference
from evaluation.plots import (
    plot_curves,
    plot_quality_vs_time,
    plot_step_curves,
    read_png,
    save_gif,
    save_grids_side_by_side,
    save_nearest_grid,
    save_png,
)
from evaluation.sampling import Sampler, sample_images
from evaluation.swd import LabelledFolderReference, SWDReference
from harness import (
    TEST_SEED,
    Evaluator,
    RunConfig,
    RunContext,
    UsageError,
    finish,
    main_guard,
    open_run,
    option,
    read_metrics,
    to_unit,
    train,
)
from harness.config import DATASET_NAMES, LR_DECAYS
from harness.imagefolder import class_names
from harness.progress import say
from harness.rundir import PROBES, STEPS
from losses.augment import AUGMENTS, DRAWS
from losses.gan import GAN_LOSSES, PAIRED, make_gan_loss
from models.gan import GAN_ARCHS, build_gan

CLASSIFIED = DATASET_NAMES  # the built-in data sets have a project classifier, hence FID and IS
# what the flags left at auto become: for an --image-folder run (small, colourful data, chosen by the
# side-by-side trials in docs/results.md) and for MNIST / Fashion-MNIST (the digits' recipe)
FOLDER = {"arch": "dcgan", "width": 32, "r2_gamma": 0.1, "augment": AUGMENTS, "mbstd": 4}
BUILT_IN = {"arch": "dcgan", "width": 64, "r2_gamma": 0.0, "augment": ("none",), "mbstd": 0}


@dataclass(frozen=True)
class GANConfig(RunConfig):
    RESUMABLE = RunConfig.RESUMABLE + ("eval_samples", "target_fid", "probe_every", "probe_samples")
    # runs saved before these flags existed trained without them
    BEFORE = {"mbstd": 0, "color_p": 1.0, "top_k": 1.0, "top_k_steps": 0}

    dataset: str = option(
        "auto",
        "data set (auto: imagefolder with --image-folder, else mnist)",
        ("auto", *CLASSIFIED, "imagefolder"),
    )
    epochs: int = option(32, "passes over the training set (one generator step per batch)")
    batch_size: int = option(64, "images per discriminator update")
    lr: float = option(5e-4, "Adam learning rate of the generator (and of D unless --d-lr; DCGAN: 2e-4)")
    d_lr: float = option(1e-3, "discriminator learning rate (0: --lr); above --lr: TTUR, Heusel et al. 2017")
    lr_decay: str = option("constant", "both players' rates: constant or cosine (0 at the end)", LR_DECAYS)
    arch: str = option(
        "auto",
        "networks: dcgan or resnet (28x28 or 64x64), or mlp; auto: dcgan",
        ("auto", *GAN_ARCHS),
    )
    loss: str = option("nonsaturating", "GAN objective, on logits", GAN_LOSSES)
    r1_gamma: float = option(0.1, "weight gamma of the R1 penalty gamma/2 E|grad D(x)|^2 (0: off)")
    r2_gamma: float = option(-1.0, "weight of R2, R1 at generated images (R3GAN); -1: folders 0.1, else 0")
    augment: tuple[str, ...] = option(
        ("auto",),
        "DiffAugment of every image D sees: comma-separated from color,translation,cutout, or none; "
        "auto: all three for folders, none for digits",
        ("auto", "none", *AUGMENTS),
    )
    color_p: float = option(
        1.0, "the colour augmentation on this share of the images D sees, drawn afresh each time (ADA's p "
        "for one transform; 1: all; 0.5 on the wallpapers: worse than 1 or none, docs/results.md)"
    )  # fmt: skip
    mirror: bool = option(
        False, "x-flip half the real images, drawn afresh each time (the data set's mirror images; "
        "StyleGAN's --mirror; measured on the emoji, not the default: docs/results.md)"
    )  # fmt: skip
    r1_batch: int = option(16, "real images per batch the R1 penalty is estimated on (0: all)")
    r1_every: int = option(
        16, "lazy R1: the penalty on every Nth step, weighted N times (StyleGAN2; 1: every step)"
    )
    channels_last: bool = option(True, "convolution weights (and so activations) in channels-last layout")
    mode_seeking: float = option(0.0, "weight of the mode-seeking term in G's loss (Mao et al. 2019; 0: off)")
    top_k: float = option(
        1.0, "top-k training (Sinha et al. 2020): G learns from this share of its images, the ones D "
        "scores highest, falling from 1 over --top-k-steps (1: all; their paper: 0.5)"
    )  # fmt: skip
    top_k_steps: int = option(0, "steps over which --top-k's share falls from 1 to it (0: the whole run)")
    disc_norm: bool = option(False, "BatchNorm in the discriminator (the DCGAN paper; not with a penalty)")
    conditional: bool = option(False, "class-conditional: label embedding in G, projection discriminator")
    class_weight: float = option(1.0, "--conditional: weight of ACGAN's auxiliary classifier loss (0: none)")
    g_class_weight: float = option(-1.0, "the classifier term's weight in G's loss (-1: --class-weight)")
    latent_dim: int = option(100, "size of the generator's input z")
    width: int = option(
        0,
        "channels of the first/last conv layer (DCGAN paper: 64); mlp: 4 x width; 0: 32 for folders, else 64",
    )
    disc_width: int = option(0, "the discriminator's own --width (0: --width): a wider D, the same G")
    mbstd: int = option(
        -1, "minibatch standard deviation: D's last layer also reads the spread of groups of this many "
        "images (ProGAN, against collapse; 0: off; -1: 4 for folders with a conv D, else off)"
    )  # fmt: skip
    n_disc: int = option(1, "discriminator updates per generator update (WGAN-GP: 5)")
    b1: float = option(0.0, "Adam beta1 of both players (StyleGAN2: 0; DCGAN: 0.5)")
    b2: float = option(0.99, "Adam beta2 of both players (DCGAN: 0.999; WGAN-GP: 0.9)")
    gp_weight: float = option(10.0, "gradient-penalty weight for --loss wgan-gp")
    ema_decay: float = option(0.999, "decay of the generator-weight EMA used for samples and scores")
    image_folder: str = option("", "folder of images for --dataset imagefolder (searched recursively)")
    image_size: int = option(64, "imagefolder: images resized and centre-cropped to this (28 or 64)")
    channels: int = option(3, "imagefolder: 3 (RGB) or 1 (grey)", (1, 3))
    max_pixels: int = option(40_000_000, "imagefolder: skip larger images unread (with a warning)")
    eval_samples: int = option(
        10000, "images scored against the test split each epoch (0: none; folders: SWD)"
    )
    probe_every: int = option(1000, "steps between quick scores of the EMA generator (0: none)")
    probe_samples: int = option(2000, "images per quick score: each epoch's and every --probe-every steps'")
    target_fid: float = option(0.0, "exit 1 if the final FID is above this (0: no target)")

    def __post_init__(self):
        super().__post_init__()
        folder = self.image_folder and self.dataset in ("auto", "imagefolder")
        auto = FOLDER if folder else BUILT_IN
        resolved = {
            "dataset": "imagefolder" if folder else ("mnist" if self.dataset == "auto" else self.dataset),
            "arch": auto["arch"] if self.arch == "auto" else self.arch,
            "r2_gamma": auto["r2_gamma"] if self.r2_gamma == -1 else self.r2_gamma,
            "augment": auto["augment"] if self.augment == ("auto",) else self.augment,
            "width": self.width or auto["width"],
        }
        conv = resolved["arch"] != "mlp"
        resolved["mbstd"] = (auto["mbstd"] if conv else 0) if self.mbstd == -1 else self.mbstd
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        ok = set(self.augment) <= set(AUGMENTS) or self.augment == ("none",)
        self.require(ok, f"--augment: none, or names from {','.join(AUGMENTS)}; got {','.join(self.augment)}")
        ok = 0 < self.color_p <= 1 and (self.color_p == 1 or "color" in self.augmentations)
        self.require(ok, f"--color-p must be in (0, 1], < 1 only with --augment color, got {self.color_p}")
        ok = self.latent_dim >= 1 and self.width >= 1 and self.disc_width >= 0 and self.mbstd >= 0
        self.require(ok, "--latent-dim and --width must be at least 1, --disc-width and --mbstd at least 0")
        self.require(self.image_size >= 1, f"--image-size must be at least 1, got {self.image_size}")
        self.require(self.max_pixels >= 1, f"--max-pixels must be at least 1, got {self.max_pixels}")
        ok = self.n_disc >= 1 and self.r1_every >= 1 and 0 <= self.ema_decay < 1 and self.eval_samples >= 0
        self.require(ok, "--n-disc and --r1-every must be >= 1, --ema-decay in [0, 1), --eval-samples >= 0")
        ok = (
            min(
                self.r1_gamma,
                self.r1_batch,
                self.mode_seeking,
                self.d_lr,
                self.probe_every,
                self.class_weight,
                self.r2_gamma,
            )
            >= 0
        )
        self.require(
            ok,
            "--r1-gamma, --r2-gamma, --r1-batch, --mode-seeking, --d-lr, --probe-every, --class-weight "
            "must be >= 0",
        )
        ok = self.g_class_weight >= 0 or self.g_class_weight == -1
        self.require(ok, f"--g-class-weight must be >= 0 (or -1: --class-weight), got {self.g_class_weight}")
        ok = 0 < self.top_k <= 1 and self.top_k_steps >= 0 and (self.top_k == 1 or self.loss not in PAIRED)
        self.require(ok, "--top-k must be in (0, 1] (1 with --loss relativistic), --top-k-steps >= 0")
        self.require(self.probe_samples >= 10, "--probe-samples must be at least 10")
        ok = self.eval_samples == 0 or self.eval_samples >= 10  # the IS splits them in ten
        self.require(ok, f"--eval-samples must be 0 (no final score) or at least 10, got {self.eval_samples}")
        penalised = self.loss == "wgan-gp" or self.r1_gamma > 0 or self.r2_gamma > 0
        why = "--disc-norm: a gradient penalty is per image, BatchNorm mixes the batch (use --r1-gamma 0)"
        self.require(not (self.disc_norm and penalised), why)
        scored = self.dataset in CLASSIFIED and self.eval_samples > 0
        need = "--target-fid needs --dataset mnist or fashion-mnist and --eval-samples > 0"
        self.require(not self.target_fid or scored, need)
        self.require(not self.conditional or self.dataset in CLASSIFIED, "--conditional needs labelled data")

    @property
    def augmentations(self) -> tuple[str, ...]:
        """The DiffAugment policy (empty: none)."""
        return () if self.augment == ("none",) else self.augment

    @property
    def classes(self) -> int:
        """Classes a conditional GAN is asked for (0: unconditional)."""
        return 10 if self.conditional else 0

    @property
    def classifier_weight(self) -> float:
        """The auxiliary classifier loss's weight: --class-weight, for a conditional GAN only."""
        return self.class_weight if self.conditional else 0.0

    @property
    def generator_class_weight(self) -> float | None:
        """The classifier term's weight in the generator's loss (None: the same as D's)."""
        return None if self.g_class_weight < 0 else self.g_class_weight

    def tag(self) -> str:
        return f"{self.arch}-{self.loss}" + ("-cond" if self.conditional else "")


PLOT_STEPS = 500  # epoch-end scores and plots at least this many steps apart (MNIST: every epoch)
COLLAPSE = 0.5  # warn when the samples' diversity falls below this share of the real images'


def warn_collapse(scores: dict[str, float], step: int) -> None:
    """One line when a probe's samples are less diverse than COLLAPSE x the real images (a folder run)."""
    if "diversity" in scores and scores["diversity"] < COLLAPSE * scores["diversity_real"]:
        say(
            f"mode collapse at step {step:,}: the samples' diversity {scores['diversity']:.3f} is below "
            f"half the real images' {scores['diversity_real']:.3f} (probes.jsonl; try --augment, --r2-gamma)"
        )


def ema_sampler(gan, state, cfg) -> Sampler:
    """The EMA generator of a GAN state: what every sample, score and page of a run draws from."""
    return Sampler(gan.generate, state.ema, state.gen.buffers, cfg.latent_dim, cfg.classes)


def save_plots(run: RunContext, sampler: Sampler, reference) -> None:
    """Loss and D-output curves, FID/IS per epoch, the fixed-noise grid of this epoch and its GIF."""
    cfg, d = run.config, run.run_dir
    extras = [f"R1 {cfg.r1_gamma:g}" * bool(cfg.r1_gamma), f"R2 {cfg.r2_gamma:g}" * bool(cfg.r2_gamma),
              "DiffAugment" * bool(cfg.augmentations), "conditional" * cfg.conditional]  # fmt: skip
    data = Path(cfg.image_folder).name if cfg.dataset == "imagefolder" else cfg.dataset
    tag = f"{cfg.arch} GAN ({', '.join([cfg.loss, *filter(None, extras)])}) on {data}"
    panels = [("losses", ["d_loss", "g_loss"]), ("D(x) and D(G(z))", ["d_real", "d_fake"])]
    plot_step_curves(read_metrics(d, STEPS), panels, d / "losses_per_step.png", tag)
    records = read_metrics(d)
    epoch_panels = [("discriminator loss", "d_loss"), ("generator loss", "g_loss")]
    epoch_panels += [("D(x)", "d_real"), ("D(G(z))", "d_fake")]
    if records:  # a --max-steps run may stop before the first epoch's record
        plot_curves(records, epoch_panels, d / "losses_per_epoch.png", tag)
    if any("test_fid" in r for r in records):
        plot_curves(records, [("FID vs test (lower is better)", "fid"), ("IS", "is")], d / "fid_is.png", tag)
    if any("test_swd" in r for r in records):
        plot_curves(records, [("SWD x 1e3 vs held-out images (lower is better)", "swd")], d / "swd.png", tag)
    probes = read_metrics(d, PROBES)
    if probes and isinstance(reference, RealReference):
        title = f"{tag}: EMA generator, {cfg.probe_samples:,} samples"
        floor = reference.floor_fid(run.train, cfg.probe_samples, TEST_SEED)  # at the probes' sample size
        plot_quality_vs_time({tag: probes}, d / "quality_vs_time.png", title, floor)
    elif probes:
        title = f"{tag}: EMA generator, SWD on {len(reference):,} held-out images"
        swd = [("swd", "SWD x 1e3 (lower is better)")]
        floor = reference.floor(quick=True)["swd"]  # the probes' protocol
        plot_quality_vs_time({tag: probes}, d / "quality_vs_time.png", title, floor, swd)
    # the fixed grid: 64 draws; conditional: 80, one row of 8 per class
    fixed = sample_images(sampler, 80 if cfg.conditional else 64, cfg.seed)
    if cfg.conditional:  # sample_labels cycles 0..9: column-major into rows of one class each
        fixed = fixed.view(8, 10, *fixed.shape[1:]).transpose(0, 1).reshape(80, *fixed.shape[1:])
    if records:  # one grid per finished epoch (a --max-steps run may stop before the first)
        run.board.image("fixed_z_samples", fixed, records[-1]["step"])
        (d / "grids").mkdir(exist_ok=True)
        save_png(fixed, d / "grids" / f"epoch-{records[-1]['epoch']:03d}.png")
        frames = [read_png(p) for p in sorted((d / "grids").glob("epoch-*.png"))]
        save_gif(frames, d / "progress.gif", nrow=1)
    real = to_unit(run.test.images[: len(fixed)])
    source = "test split" if cfg.dataset in CLASSIFIED else "the folder"
    grids = [("generated (EMA generator, fixed z)", fixed), (f"real ({source})", real)]
    save_grids_side_by_side(grids, d / "samples_vs_real.png", tag)
    if cfg.dataset not in CLASSIFIED:  # a folder: memorised images show beside their source
        title = (
            f"{tag}: 32 samples, each over its nearest of {len(run.train.images):,} training images (pixels)"
        )
        save_nearest_grid(fixed[:32], to_unit(run.train.images), d / "nearest_neighbours.png", title)


@main_guard
def main(argv=None):
    run = open_run(GANConfig, argv, "gan")  # flags, run directory, device, data
    cfg = run.config
    shape = (1, *run.train.images.shape[1:]) if run.train.images.dim() == 3 else run.train.images.shape[1:]
    try:
        gen, disc = build_gan(cfg.arch, shape, cfg.latent_dim, cfg.width, cfg.disc_norm, cfg.classes,
                              cfg.classifier_weight > 0, cfg.disc_width, cfg.mbstd)  # fmt: skip
    except ValueError as e:
        raise UsageError(str(e)) from None
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format  # of the 4-d weights
    gen, disc = (m.to(run.device, memory_format=layout) for m in (gen, disc))
    noise = {"z": (cfg.latent_dim,), **({"u": ()} if cfg.loss == "wgan-gp" else {})}
    if cfg.mirror:
        noise["mirror"] = ()  # one draw per real image: flipped where positive
    if cfg.augmentations:
        noise["aug"] = (2, DRAWS + (cfg.color_p < 1))  # DiffAugment's draws: real, fake (+ colour's gate)
    loader = run.loader(noise, batches=cfg.n_disc)
    steps = cfg.epochs * loader.steps_per_epoch  # generator updates; D takes n_disc per step
    gan = make_gan_loss(gen, disc, cfg.loss, cfg.gp_weight, cfg.r1_gamma, cfg.r1_batch, cfg.mode_seeking,
                        cfg.classifier_weight, cfg.generator_class_weight, cfg.r2_gamma,
                        cfg.augmentations, cfg.mirror, cfg.color_p,
                        cfg.top_k, (cfg.top_k_steps or steps) if cfg.top_k < 1 else 0)  # fmt: skip

    def rate(lr: float, updates: int):
        return lr if cfg.lr_decay == "constant" else engine.cosine(lr, updates)

    g_lr = rate(cfg.lr, steps)
    g_opt = engine.adam(g_lr, b1=cfg.b1, b2=cfg.b2)
    d_opt = engine.adam(rate(cfg.d_lr or cfg.lr, steps * cfg.n_disc), b1=cfg.b1, b2=cfg.b2)
    lazy = cfg.r1_every if cfg.r1_gamma > 0 or cfg.r2_gamma > 0 else 1
    step = engine.make_gan_step(*gan, g_opt, d_opt, run.options, n_disc=cfg.n_disc, ema_decay=cfg.ema_decay,
                                reg_every=lazy)  # fmt: skip
    if cfg.dataset in CLASSIFIED:  # the project's classifier: FID, IS, precision, recall against test
        reference = RealReference(cfg.dataset, run.test, run.device)
    else:  # an image folder: the multi-scale SWD against its held-out images, with its floor
        name = folder_classifier(class_names(cfg.image_folder))  # and a classifier of its classes, if shipped
        reference = (
            LabelledFolderReference(run.test, run.train, TEST_SEED, name, run.device)
            if name
            else SWDReference(run.test, run.train, TEST_SEED)
        )

    def score(state, n: int, recall: bool, quick: bool = False) -> dict[str, float]:
        """Scores of n EMA-generator images (fixed z), sharded over torchrun's ranks; quick: a folder's
        probe protocol (SWD on fewer descriptors, against a floor measured alike)."""
        extra = {"quick": quick} if isinstance(reference, SWDReference) else {}
        sampler = ema_sampler(gan, state, cfg)
        return reference.score_generator(sampler, n, TEST_SEED, recall, run.world, **extra)

    def probe(state) -> dict[str, float]:
        scores = {k: v for k, v in score(state, cfg.probe_samples, True, quick=True).items() if k != "is_std"}
        warn_collapse(scores, int(state.step))
        return scores

    # after each epoch (a folder's short epochs: every few, PLOT_STEPS apart): a quick score on
    # --probe-samples images (the full one is the final's), the grids and curves
    every = max(1, math.ceil(PLOT_STEPS / loader.steps_per_epoch))

    def due(state) -> bool:
        epoch = int(state.step) // loader.steps_per_epoch
        return epoch % every == 0 or epoch >= cfg.epochs

    evaluate = Evaluator(
        lambda s: score(s, cfg.probe_samples, False, quick=True) if cfg.eval_samples and due(s) else {}
    )
    state = train(
        run,
        step,
        engine.init_gan_state(gen, disc, g_opt, d_opt, cfg.precision),
        loader,
        evaluate,
        lr=g_lr,
        on_epoch_end=lambda s, _: due(s) and save_plots(run, ema_sampler(gan, s, cfg), reference),
        log_every=10 if run.device.type == "cpu" else 100,  # a sync point: rarer on a GPU
        summary=("train_d_loss", "train_g_loss", "test_fid", "test_is", "test_swd"),
        probe=probe,
    )
    weights = {
        "generator": (state.ema, state.gen.buffers),
        "discriminator": (state.disc.params, state.disc.buffers),
    }
    final = finish(run, state, lambda s: score(s, cfg.eval_samples, True) if cfg.eval_samples else {},
                   weights, "fid")  # fmt: skip
    if run.world.main:  # the probes written since the last epoch's plots (rank 0 writes, as on_epoch_end)
        sampler = ema_sampler(gan, state, cfg)
        save_plots(run, sampler, reference)
        info = {"title": f"GAN {cfg.arch} ({cfg.loss}) on {cfg.dataset}",
                "numbers": headline(final, dataclasses.asdict(cfg))}  # fmt: skip
        print(f"wrote {write_gan_explorer(run.run_dir, sampler, cfg.seed, info)} (open it in a browser)")
    return final


if __name__ == "__main__":
    main()

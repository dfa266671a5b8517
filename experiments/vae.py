"""Train a VAE on MNIST or Fashion-MNIST: `python -m experiments.vae --help` lists the flags."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

import engine
from engine.checkpoint import atomic_write
from evaluation.explore import board_images, finish_exploring
from evaluation.plots import plot_curves, save_image_grid, save_image_rows
from harness import Run, RunConfig, UsageError, main_guard, option, read_metrics, to_unit
from harness.run import split_off
from harness.timing import Throttled
from harness.world import barrier
from losses import make_elbo_loss, make_iwae_loss
from models import ARCHS, PRIORS, build_vae

OBJECTIVES = ("elbo", "iwae")
LR_DECAYS = ("constant", "cosine")


@dataclass(frozen=True)
class VAEConfig(RunConfig):
    arch: str = option("conv", "encoder/decoder: mlp = the classic 784-400-Z VAE", tuple(ARCHS))
    latent_dim: int = option(20, "size of the latent code z")
    beta: float = option(1.0, "weight of the KL term (beta-VAE); 1 is the ELBO")
    kl_warmup: int = option(0, "steps over which the KL weight ramps up from 0 to beta")
    objective: str = option("elbo", "training objective: elbo, or the IWAE bound with --k draws", OBJECTIVES)
    k: int = option(1, "importance samples per image for --objective iwae")
    dreg: bool = option(
        False, "--objective iwae: the doubly-reparameterised encoder gradient (Tucker et al. 2018)"
    )
    prior: str = option("normal", "p(z): N(0, I), or vamp: the VampPrior's learned mixture", PRIORS)
    pseudo_inputs: int = option(500, "--prior vamp: learned pseudo-images in the mixture")
    free_bits: float = option(0.0, "nats of KL per latent dimension that cost nothing (ELBO, normal prior)")
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
        self.require(not (vamp and self.free_bits), "--free-bits needs --prior normal")
        self.require(not (vamp and self.dreg), "--dreg needs --prior normal")

    def tag(self) -> str:
        objective = f"-iwae{self.k}" + ("-dreg" if self.dreg else "") if self.objective == "iwae" else ""
        prior = f"-vamp{self.pseudo_inputs}" if self.prior == "vamp" else ""
        free_bits = f"-fb{self.free_bits:g}" if self.free_bits else ""
        return f"{self.arch}-z{self.latent_dim}{objective}{prior}{free_bits}"


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
    run = Run.start(VAEConfig, argv, "vae")
    cfg = run.config
    model = build_vae(cfg.arch, cfg.latent_dim, cfg.prior, cfg.pseudo_inputs).to(run.device)
    if cfg.objective == "iwae":
        loss_fn = make_iwae_loss(model, dreg=cfg.dreg)
    else:
        loss_fn = make_elbo_loss(model, cfg.beta, cfg.kl_warmup, cfg.free_bits)
    # reparameterisation noise, drawn by the loader on device: (B, Z), or (B, K, Z) for the IWAE bound
    noise = {"eps": (cfg.k, cfg.latent_dim) if cfg.objective == "iwae" else (cfg.latent_dim,)}
    evaluate = run.evaluator(loss_fn, noise)
    val = None
    if cfg.val_split:
        if cfg.val_split >= len(run.train.images):
            raise UsageError(f"--val-split {cfg.val_split} leaves no training images")
        run.train, val = split_off(run.train, cfg.val_split, seed=VAL_SEED)
    scored = evaluate if val is None else run.evaluator(loss_fn, noise, data=val, split="val")
    loader = run.loader(noise)
    lr = cfg.lr if cfg.lr_decay == "constant" else engine.cosine(cfg.lr, cfg.epochs * loader.steps_per_epoch)
    optimizer = engine.adam(lr)
    run.lr_schedule = None if cfg.lr_decay == "constant" else lr
    step = engine.make_train_step(
        loss_fn, optimizer, precision=cfg.precision, compile=cfg.compile, donate=cfg.donate,
        all_reduce=run.all_reduce, cache=run.step_cache(),  # all_reduce: None unless under torchrun
    )  # fmt: skip

    plots = Throttled(lambda s: save_plots(run, model, s, read_metrics(run.run_dir)))  # <= 5% of the time
    test_x = to_unit(run.test.images)

    def on_epoch_end(s, record):
        engine.load_into(model, s.params, s.buffers)
        board_images(run.board, model, test_x, record["step"], cfg.latent_dim, cfg.seed)
        plots(s)
        if val is not None:
            keep_if_best(run.run_dir, s, record, SELECT_ON[cfg.objective])

    split = scored.split
    state = run.fit(
        step,
        run.init_state(model, optimizer),
        loader,
        scored,
        on_epoch_end=on_epoch_end,
        summary=("train_loss", f"{split}_loss", f"{split}_kl"),
    )
    plots.flush()  # the last epoch's figures, if the throttle skipped them
    if val is not None:  # the test split scores the epoch chosen on validation, and only that one
        barrier()
        state = selected(run.run_dir, state)
    return finish_exploring(
        run, model, state, evaluate, f"VAE {cfg.arch} z={cfg.latent_dim} on {cfg.dataset}"
    )


SELECT_ON = {"elbo": "val_neg_elbo", "iwae": "val_neg_iwae"}  # the bounds, not a weighted loss
VAL_SEED = 2024  # which training images --val-split holds out (fixed: the same for every run)


def keep_if_best(run_dir: Path, state, record: dict, key: str = "val_loss") -> None:
    """best.safetensors and best.json: the weights of the epoch with the lowest record[key] so far.
    key: the true bound on validation, whatever the training loss weighs (beta, warm-up, free bits)."""
    best = run_dir / "best.json"
    if best.exists() and json.loads(best.read_text())[key] <= record[key]:
        return
    engine.save_weights(run_dir / "best.safetensors", state.params, state.buffers)
    text = json.dumps({k: record[k] for k in ("epoch", "step", "val_loss", key)}) + "\n"
    atomic_write(best, lambda tmp: tmp.write_text(text))


def selected(run_dir: Path, state):
    """state with the params and buffers of best.safetensors (the rest, optimizer included, as is)."""
    weights = load_file(str(run_dir / "best.safetensors"), device=str(state.step.device))
    chosen = json.loads((run_dir / "best.json").read_text())
    print(f"selected epoch {chosen['epoch']} (val loss {chosen['val_loss']:.4f})")
    params = {k: weights[k].to(v.dtype) for k, v in state.params.items()}
    buffers = {k: weights[k].to(v.dtype) for k, v in state.buffers.items()}
    return state._replace(params=params, buffers=buffers)


if __name__ == "__main__":
    main()

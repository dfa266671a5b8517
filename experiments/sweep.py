"""VAE hyper-parameter sweeps: every combination of comma-separated values, e.g.
`make sweep-vae ARGS="--latent-dim 2,8,16 --beta 0.5,1,4 --lr 1e-3,3e-3"`. Configs that share an
architecture (arch, latent size) train together: their states are stacked and one vmapped,
compiled step updates all of them; different architectures run one after another."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import engine
from engine import StepOptions, make_vmapped_train_step, stack_states, unstack_state, with_hyperparams
from evaluation.likelihood import iwae_nll, nll_subset
from harness import (
    TEST_SEED,
    Loader,
    UsageError,
    evaluate_mean,
    main_guard,
    option,
    parse_config,
    resolve_device,
    steps,
)
from harness.config import BINARIZE, DATASET_NAMES, RunFlags
from harness.data import load_dataset
from harness.files import json_text
from harness.loader import eval_batches, fixed_images
from harness.progress import bar as progress_bar
from harness.rundir import has_checkpoint, lock_run_dir
from losses import make_elbo_loss
from models import ARCHS, build_vae


@dataclass(frozen=True)
class SweepConfig(RunFlags):
    dataset: str = option("mnist", "data set", DATASET_NAMES)
    arch: tuple[str, ...] = option(("mlp",), "comma-separated encoder/decoders", tuple(ARCHS))
    latent_dim: tuple[int, ...] = option((20,), "comma-separated code sizes")
    beta: tuple[float, ...] = option((1.0,), "comma-separated KL weights")
    lr: tuple[float, ...] = option((1e-3,), "comma-separated Adam learning rates")
    epochs: int = option(5, "passes over the training set")
    binarize: str = option("none", "dynamic: fresh Bernoulli pixels each time an image is used", BINARIZE)
    max_steps: int = option(0, "stop each group after N steps (0: all epochs)")
    vmap: bool = option(True, "train configs of one architecture together (default) or one after another")
    iwae_k: int = option(100, "importance samples for each config's NLL")
    iwae_images: int = option(1000, "test images for the NLL (0: all)")
    out: str = option("runs/sweep-vae", "output folder")

    def __post_init__(self):
        super().__post_init__()
        ok = min(self.latent_dim) >= 1 and min(self.lr) > 0 and min(self.beta) >= 0 and self.epochs >= 1
        self.require(ok, "latent sizes must be >= 1, learning rates > 0, betas >= 0, epochs >= 1")
        ok = self.max_steps >= 0 and self.iwae_k >= 1 and self.iwae_images >= 0
        self.require(ok, "--max-steps and --iwae-images must be at least 0, --iwae-k at least 1")


def parse(argv) -> SweepConfig:
    return parse_config(SweepConfig, argv, "python -m experiments.sweep", __doc__)[0]


def _train(step, state, loader, total: int, extra: dict, desc: str, progress: bool):
    """`total` steps of `step` (harness.steps, epoch after epoch); `extra` entries join every batch."""
    with progress_bar(total=total, desc=desc, enabled=progress, leave=False) as bar:
        while loader.steps_taken < total:
            for state, _ in steps(lambda s, b: step(s, {**b, **extra}), state, loader, total):  # noqa: B007, B020
                bar.update(1)
    return state


def train_group(arch, z_dim, configs, args, data, device):
    """Train the (beta, lr) configs of one architecture from the same seed: stacked into one
    vmapped step, or (--no-vmap) as separate ordinary runs. Returns (model, final states, seconds)."""
    torch.manual_seed(args.seed)  # same initial weights as `experiments.vae --seed` would give
    model = build_vae(arch, z_dim).to(device)

    def loader():
        return Loader(data, args.batch_size, args.seed, {"eps": (z_dim,)}, args.binarize == "dynamic")

    total = args.max_steps or args.epochs * loader().steps_per_epoch
    t0 = time.perf_counter()
    if not args.vmap:  # the baseline: one ordinary run per config, exactly as experiments.vae trains
        finals = []
        for beta, lr in configs:
            opt = engine.adam(lr)
            state = engine.init_state(model, opt)
            step = engine.make_train_step(make_elbo_loss(model, beta), opt, StepOptions(compile=args.compile))
            finals.append(
                _train(step, state, loader(), total, {}, f"{arch} z={z_dim} b={beta} lr={lr}", args.progress)
            )
        return model, finals, time.perf_counter() - t0
    optimizer = with_hyperparams(lambda lr: engine.adam(lr, foreach=False), lr=configs[0][1])
    base = engine.init_state(model, optimizer)
    states = [
        base._replace(opt={**base.opt, "hyper": {"lr": torch.tensor(lr, dtype=torch.float64, device=device)}})
        for _, lr in configs
    ]
    step = make_vmapped_train_step(
        make_elbo_loss(model), optimizer, StepOptions(compile=args.compile), config_keys=("beta",)
    )
    beta = torch.tensor([b for b, _ in configs], device=device)
    stacked = _train(
        step,
        stack_states(states),
        loader(),
        total,
        {"beta": beta},
        f"{arch} z={z_dim} x{len(configs)} (vmap)",
        args.progress,
    )
    return model, [unstack_state(stacked, i) for i in range(len(configs))], time.perf_counter() - t0


def evaluate_config(model, state, beta, z_dim, test, args):
    """Test negative ELBO, KL, MSE (one fixed noise draw per image) and the IWAE NLL of one config."""
    eval_step = engine.make_eval_step(make_elbo_loss(model, beta=beta))
    dyn = args.binarize == "dynamic"
    batches = eval_batches(test, 1000, TEST_SEED, {"eps": (z_dim,)}, dyn)
    out = evaluate_mean(eval_step, state, batches)
    engine.load_into(model, state.params, state.buffers)
    x = nll_subset(fixed_images(test, TEST_SEED, dyn), args.iwae_images)
    out["nll"] = iwae_nll(model.eval(), x, z_dim, args.iwae_k, TEST_SEED + 3)
    return out


def plot_sweep(rows: list[dict], swept: list[str], path: Path, title: str) -> None:
    """Each metric against each swept value: one panel per (swept flag, metric)."""
    import matplotlib.pyplot as plt

    metrics = [
        ("neg_elbo", "test -ELBO (nats)"),
        ("kl", "test KL (nats)"),
        ("nll", "test NLL (nats)"),
        ("mse", "test MSE"),
    ]
    fig, axes = plt.subplots(
        len(swept), len(metrics), figsize=(4 * len(metrics), 3.2 * len(swept)), squeeze=False
    )
    for r, flag in enumerate(swept):
        for c, (key, label) in enumerate(metrics):
            ax = axes[r][c]
            values = sorted({row[flag] for row in rows})
            ax.scatter([row[flag] for row in rows], [row[key] for row in rows], s=14, alpha=0.7)
            means = [
                sum(row[key] for row in rows if row[flag] == v) / sum(row[flag] == v for row in rows)
                for v in values
            ]
            ax.plot(values, means, "-", color="tab:red", label="mean over the other flags")
            ax.set(xlabel=flag, ylabel=label)
            if flag == "lr":
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@main_guard
def main(argv=None):
    args = parse(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # its configs already share one vmapped step
        raise UsageError("a sweep runs in one process; launch it without torchrun")
    device = resolve_device(args.device)
    out = Path(args.out)
    if has_checkpoint(out) or (out / "config.json").exists():  # a training run's folder is not a sweep's
        raise UsageError(f"{out} holds a training run; pick another --out")
    lock_run_dir(out)  # one writer: a live sweep into the same folder is refused, naming its pid
    train = load_dataset(args.dataset, "train", device=device)
    test = load_dataset(args.dataset, "test", device=device)
    if args.batch_size > len(train.images):
        raise UsageError(f"--batch-size {args.batch_size} exceeds the {len(train.images)} training images")
    rows = []
    for arch, z_dim in itertools.product(args.arch, args.latent_dim):
        configs = list(itertools.product(args.beta, args.lr))
        model, states, seconds = train_group(arch, z_dim, configs, args, train, device)
        for (beta, lr), state in zip(configs, states):
            result = evaluate_config(model, state, beta, z_dim, test, args)
            rows.append(
                {
                    "arch": arch,
                    "latent_dim": z_dim,
                    "beta": beta,
                    "lr": lr,
                    **result,
                    "group_seconds": round(seconds, 1),
                    "seconds_per_config": round(seconds / len(configs), 1),
                }
            )
            print(
                f"{arch} z={z_dim} beta={beta} lr={lr}: -ELBO {result['neg_elbo']:.2f}, "
                f"KL {result['kl']:.2f}, NLL {result['nll']:.2f}, MSE {result['mse']:.4f}"
            )
    summary = {"args": dataclasses.asdict(args), "rows": rows}
    (out / "summary.json").write_text(json_text(summary))
    write_hparams(out / "tensorboard", rows)
    length = f"{args.max_steps} steps" if args.max_steps else f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    lines = [
        f"# VAE sweep on {args.dataset}: {length}, batch {args.batch_size}, "
        f"{'vmapped' if args.vmap else 'one run per config'}, NLL with k={args.iwae_k} on "
        f"{args.iwae_images or len(test.images)} test images",
        "",
        "| arch | z | beta | lr | test -ELBO | KL | NLL | MSE | group time (s) | time per config (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['latent_dim']} | {r['beta']} | {r['lr']} | {r['neg_elbo']:.2f} | "
            f"{r['kl']:.2f} | {r['nll']:.2f} | {r['mse']:.4f} | {r['group_seconds']} | "
            f"{r['seconds_per_config']} |"
        )
    swept = [
        f
        for f, vals in (("latent_dim", args.latent_dim), ("beta", args.beta), ("lr", args.lr))
        if len(vals) > 1
    ]
    if swept:
        plot_sweep(rows, swept, out / "sweep.png", f"VAE sweep on {args.dataset}")
        lines += ["", "![metrics against each swept value](sweep.png)"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'summary.md'}")


HPARAMS = ("arch", "latent_dim", "beta", "lr")


def write_hparams(log_dir: Path, rows: list[dict]) -> None:
    """One TensorBoard hparams row per config (its flags, its final metrics): `make tensorboard`."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for r in rows:
            hparams = {k: r[k] for k in HPARAMS}
            metrics = {f"hparam/{k}": v for k, v in r.items() if k not in HPARAMS and isinstance(v, float)}
            name = "-".join(f"{k}{r[k]}" for k in HPARAMS)
            writer.add_hparams(hparams, metrics, run_name=name)


if __name__ == "__main__":
    main()

"""Which model makes the best digits: trained AE, VAE, VampPrior VAE, GAN and conditional GAN runs,
10,000 samples each, scored in one feature space against the test split: `make compare-generators`.

The AE samples through a Gaussian mixture fitted on its training codes (Ghosh et al. 2020; pythae's
post-hoc sampler), the VAEs through their priors (decoded Bernoulli means), the GANs through their
EMA generators (the conditional one asked for each class in turn). Every row: FID and its ratio to
the floor (as many real training images), precision and recall (k=3), the classifier's IS, and the
run's wall time as it recorded it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.autoencoders import decode, encode, prior_samples
from evaluation.fidelity import RealReference, random_subset
from evaluation.gmm import fit_gmm, mean_log_likelihood, sample_gmm
from evaluation.plots import save_image_rows
from evaluation.sampling import sample_images
from evaluation.trained import load_generator, load_trained, run_config
from harness import (
    TEST_SEED,
    DataError,
    load_dataset,
    main_guard,
    option,
    parse_config,
    resolve_device,
    to_unit,
)
from harness.config import DATASET_NAMES, DeviceFlags, flag
from harness.files import read_json
from harness.rundir import PROBES, read_metrics

REPORTS = "docs/reports"


@dataclass(frozen=True)
class CompareGeneratorsConfig(DeviceFlags):
    dataset: str = option("mnist", "data set every run was trained on", DATASET_NAMES)
    ae_run: str = option(f"{REPORTS}/ae-mnist-conv-z16", "a finished AE run (empty: no AE row)")
    vae_run: str = option(f"{REPORTS}/vae-mnist-conv-z32-val", "a finished VAE run, N(0, I) prior")
    vamp_run: str = option(f"{REPORTS}/vae-mnist-conv-z32-vamp-90", "a finished VampPrior VAE run")
    gan_run: str = option(f"{REPORTS}/gan-mnist", "a finished GAN run (or its eval-gan export)")
    cond_gan_run: str = option(f"{REPORTS}/gan-mnist-conditional", "a finished conditional GAN run")
    samples: int = option(10000, "images per model")
    components: int = option(10, "Gaussians in the AE's code mixture")
    out: str = option("docs/generators.md", "the table (markdown); the figure beside it")

    def __post_init__(self):
        super().__post_init__()
        self.require(self.samples >= 100 and self.components >= 1, "--samples >= 100, --components >= 1")


def wall_time(run_dir: Path) -> str:
    """The run's wall time: its last process's (timings.json), or, where probes.jsonl carries more
    seconds across a resume, at least those; else the sum of its epochs' training time."""
    total = read_json(run_dir / "timings.json").get("total", 0) if (run_dir / "timings.json").exists() else 0
    probed = read_metrics(run_dir, PROBES)[-1]["wall_s"] if (run_dir / PROBES).exists() else 0
    if probed > total:  # resumed: timings.json holds the last process only
        return f">= {probed:,.0f} s (resumed; to its last probe)"
    if total:
        return f"{total:,.0f} s"
    epochs = (
        [r.get("epoch_time_s", 0) for r in read_metrics(run_dir)]
        if (run_dir / "metrics.jsonl").exists()
        else []
    )
    return f"{sum(epochs):,.0f} s (epochs only)" if epochs else "not recorded"


KINDS = {"ae_run": "ae", "vae_run": "vae", "vamp_run": "vae", "gan_run": "gan", "cond_gan_run": "gan"}


def check_kinds(cfg) -> None:
    """Each named run is a run of its row's experiment, before any image is embedded: one line if not."""
    for field, kind in KINDS.items():
        run = getattr(cfg, field)
        if run and (run_config(Path(run)) or {}).get("experiment") != kind:
            article = "an" if kind == "ae" else "a"
            raise DataError(f"{run} is not {article} {kind.upper()} run ({flag(field)})")


@torch.no_grad()
def ae_samples(run_dir: Path, train, n: int, k: int, device) -> tuple[torch.Tensor, str]:
    cfg, model = load_trained(run_dir, device)
    codes, _ = encode(model, to_unit(train.images))
    gmm = fit_gmm(codes, k, seed=TEST_SEED)
    fit = mean_log_likelihood(gmm, codes.double())
    note = f"{k} Gaussians on {len(codes):,} training codes, mean log-likelihood {fit:.1f}"
    z = sample_gmm(gmm, n, torch.Generator().manual_seed(TEST_SEED)).to(device)
    return torch.sigmoid(decode(model, z)), f"AE {cfg['arch']} z={cfg['latent_dim']} + GMM ({note})"


def vae_samples(run_dir: Path, n: int, device) -> tuple[torch.Tensor, str]:
    cfg, images = prior_samples(run_dir, n, TEST_SEED, device)
    prior = "VampPrior" if cfg.get("prior") == "vamp" else "N(0, I)"
    return images, f"VAE {cfg['arch']} z={cfg['latent_dim']}, {prior} prior"


def gan_samples(run_dir: Path, n: int, device) -> tuple[torch.Tensor, str]:
    cfg, sampler = load_generator(run_dir, device)
    kind = "conditional GAN" if sampler.classes else "GAN"
    return sample_images(sampler, n, TEST_SEED), f"{kind} {cfg['arch']} ({cfg['loss']}), EMA generator"


@main_guard
def main(argv=None):
    cfg, _ = parse_config(CompareGeneratorsConfig, argv, "python -m experiments.compare_generators", __doc__)
    check_kinds(cfg)
    device = resolve_device(cfg.device)
    train, test = (load_dataset(cfg.dataset, split, device=device) for split in ("train", "test"))
    reference = RealReference(cfg.dataset, test, device)
    floor = reference.floor_fid(train, cfg.samples, TEST_SEED)
    makers = {
        cfg.ae_run: lambda d: ae_samples(d, train, cfg.samples, cfg.components, device),
        cfg.vae_run: lambda d: vae_samples(d, cfg.samples, device),
        cfg.vamp_run: lambda d: vae_samples(d, cfg.samples, device),
        cfg.gan_run: lambda d: gan_samples(d, cfg.samples, device),
        cfg.cond_gan_run: lambda d: gan_samples(d, cfg.samples, device),
    }
    rows, grids = [], []
    for run, make in makers.items():
        if not run:
            continue
        images, name = make(Path(run))
        scores = reference.score(images)
        rows.append((name, run, scores, wall_time(Path(run))))
        grids.append(images[:16])
        ratio, pr = (
            scores["fid"] / floor,
            f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}",
        )
        print(f"{name}: FID {scores['fid']:.1f} ({ratio:.1f}x the floor), {pr}, IS {scores['is']:.2f}")
    real = random_subset(train, cfg.samples, TEST_SEED)
    grids.append(real[:16])
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = out.with_suffix(".png")
    save_image_rows(grids, [r[0].split(" (")[0] for r in rows] + ["real"], figure,
                    f"{cfg.dataset}: 16 samples of each model, and real training images")  # fmt: skip
    write_table(out, cfg, rows, floor, figure)
    print(f"wrote {out} and {figure}")


def write_table(out: Path, cfg, rows, floor: float, figure: Path) -> None:
    lines = [
        f"# Which model makes the best {'digits' if cfg.dataset == 'mnist' else 'images'} ({cfg.dataset})",
        "",
        "Written by `make compare-generators` (`python -m experiments.compare_generators`):",
        f"{cfg.samples:,} samples of each model against the test split, in the features of the project's",
        f"classifier. The floor is the FID of {cfg.samples:,} real training images: **{floor:.2f}**.",
        "Precision and recall: k=3 (Kynkaanniemi et al. 2019). IS: the classifier's Inception score",
        "(10 at most).",
        "",
        "| model | FID | / floor | precision | recall | IS | wall time | weights |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, run, s, wall in rows:
        lines.append(f"| {name} | {s['fid']:.1f} | {s['fid'] / floor:.1f}x | {s['precision']:.3f} | "
                     f"{s['recall']:.3f} | {s['is']:.2f} | {wall} | `{run}` |")  # fmt: skip
    lines += ["", f"![samples]({figure.name})", ""]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Score a finished GAN run against the real data: `python -m experiments.eval_gan RUN_DIR` writes
eval.json, a nearest-neighbour grid and report.md into it (`make eval-gan RUN=dir`)."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from engine import load_weights, save_weights
from evaluation.autoencoders import prior_samples
from evaluation.cas import classification_accuracy_score, per_class_agreement, to_dataset
from evaluation.features import folder_classifier
from evaluation.fidelity import RealReference, class_coverage, label_agreement, random_subset
from evaluation.plots import plot_bars, plot_quality_vs_time, save_image_rows, save_nearest_grid
from evaluation.quality import compare_features, inception_score
from evaluation.sampling import sample_images
from evaluation.swd import LabelledFolderReference, SWDReference
from evaluation.trained import load_generator, run_config
from harness import (
    TEST_SEED,
    DataError,
    Dataset,
    load_splits,
    main_guard,
    option,
    parse_config,
    resolve_device,
    to_unit,
)
from harness.config import DATASET_NAMES, DeviceFlags
from harness.files import json_text
from harness.imagefolder import class_names
from harness.rundir import PROBES, lock_run_dir, read_metrics

REJECTED = "EMA generator, discriminator rejection sampling"
FIGURES = [  # (file written by training, caption)
    ("samples_vs_real.png", "EMA generator on a fixed z beside real test images"),
    ("losses_per_step.png", "losses and D outputs per step (faint: raw; solid: smoothed)"),
    ("losses_per_epoch.png", "losses and D outputs per epoch"),
    ("fid_is.png", "FID and IS of the EMA generator after each epoch"),
    ("swd.png", "SWD of the EMA generator after each epoch"),
    (
        "quality_vs_time.png",
        "FID, precision and recall of the EMA generator against wall-clock time and images",
    ),
    ("quality_vs_baseline.png", "the same curves beside a baseline recipe's (--baseline-run)"),
    ("progress.gif", "the fixed-z grid after each epoch"),
]


def vae_samples(vae_run: Path, dataset: str, n: int, seed: int, device) -> tuple[str, torch.Tensor]:
    """A VAE run's row name and decoded prior draws."""
    cfg, images = prior_samples(vae_run, n, seed, device, dataset)
    return f"VAE samples ({cfg['arch']}, z={cfg['latent_dim']}, {vae_run.name})", images


def evaluate(
    run_dir: Path, vae_run: Path | None, n: int, device, cas_samples: int = 0, rejection: bool = False
) -> dict:
    """The metric table rows and the nearest-neighbour grid; rejection: one more row, the same
    generator's samples drawn by discriminator rejection sampling."""
    saved, drawn = load_generator(run_dir, device, rejection)
    sampler = drawn._replace(critic=None)  # the figures and the first row: the generator as it is
    cfg = SimpleNamespace(**saved)  # the GAN run's flags, as load_splits reads them
    train, test = load_splits(cfg, device)
    if cfg.dataset not in DATASET_NAMES:
        return evaluate_folder(cfg, drawn, train, test, n, run_dir)
    reference = RealReference(cfg.dataset, test, device)
    fake = sample_images(sampler, n, TEST_SEED)
    fake_feats, fake_logits = reference.embed(fake)
    rows = {
        f"GAN ({cfg.arch}, {cfg.loss}, EMA generator)": compare_features(
            reference.features, fake_feats, fake_logits
        )
    }
    if drawn.critic is not None:
        kept_feats, kept_logits = reference.embed(sample_images(drawn, n, TEST_SEED))
        kept = compare_features(reference.features, kept_feats, kept_logits)
        if sampler.classes:  # each image is drawn for the label of its slot, as without rejection
            kept["agreement"] = label_agreement(kept_logits, sampler.labels(n))
        rows[f"GAN ({cfg.arch}, {cfg.loss}, {REJECTED})"] = kept
    floor = random_subset(train, n, TEST_SEED)
    rows["real training images (the floor)"] = reference.score(floor)
    if vae_run is not None:
        name, images = vae_samples(vae_run, cfg.dataset, n, TEST_SEED, device)
        rows[name] = reference.score(images)
    is_test, is_test_std = inception_score(reference.logits)
    rows["real test images (vs themselves)"] = {"fid": 0.0, "is": is_test, "is_std": is_test_std}
    coverage = class_coverage(fake_logits, test.labels)
    title = f"{cfg.dataset}: classes of {n:,} generated images (classifier) and of the test split"
    shares = {"generated": coverage["class_shares"], "real (test labels)": coverage["real_shares"]}
    plot_bars(shares, run_dir / "class_histogram.png", title, "class", "share")
    result = {"dataset": cfg.dataset, "samples": n, "rows": rows, "coverage": coverage}
    if sampler.classes:
        requested = sampler.labels(n)
        result["label_agreement"] = label_agreement(fake_logits, requested)
        result["per_class_agreement"] = per_class_agreement(fake_logits, requested, sampler.classes)
        if cas_samples:  # trained on generated images only, tested on the real test split
            images = sample_images(sampler, cas_samples, TEST_SEED + 1)  # not the images scored above
            generated = to_dataset(images, sampler.labels(cas_samples))
            idx = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(TEST_SEED))
            real = Dataset(*(t[idx[:cas_samples].to(t.device)] for t in train))  # as many real images
            result["cas_samples"] = cas_samples
            result["cas"] = {"generated": classification_accuracy_score(generated, test),
                             "real": classification_accuracy_score(real, test)}  # fmt: skip
        per_class = [fake[requested == c][:12] for c in range(sampler.classes)]
        title = f"{cfg.dataset}: 12 samples per requested class (one row each)"
        save_image_rows(
            per_class, [f"class {c}" for c in range(sampler.classes)], run_dir / "per_class.png", title
        )
    # nearest training image in feature space for the first 16 generated samples
    train_feats, _ = reference.embed(floor)
    title = f"{cfg.dataset}: samples and their nearest of {n:,} training images (classifier features)"
    path = run_dir / "nearest_neighbours.png"
    save_nearest_grid(fake[:16], floor, path, title, fake_feats[:16], train_feats)
    return result


def evaluate_folder(cfg, drawn, train, test, n: int, run_dir: Path) -> dict:
    """An image-folder run: the multi-scale SWD of as many samples as the folder holds out, against
    those held-out images, beside the floor (as many training images against them); a sampler with
    a critic adds the rows of its rejection-sampled images."""
    sampler = drawn._replace(critic=None)
    name = folder_classifier(class_names(cfg.image_folder))  # a shipped classifier of its classes, if any
    if name:
        reference = LabelledFolderReference(test, train, TEST_SEED, name, sampler.device)
    else:
        reference = SWDReference(test, train, TEST_SEED)
    fake = sample_images(sampler, len(reference), TEST_SEED)
    score = reference.score(fake)
    real = score["diversity_real"]

    def row(scores: dict) -> dict:  # a sample row: the real images' figures live elsewhere
        return {k: v for k, v in scores.items() if k not in ("diversity_real", "swd_floor")}

    rows = {f"GAN ({cfg.arch}, {cfg.loss}, EMA generator)": row(score)}
    if drawn.critic is not None:
        rows[f"GAN ({cfg.arch}, {cfg.loss}, {REJECTED})"] = row(
            reference.score(sample_images(drawn, len(reference), TEST_SEED))
        )
    rows["training images (the floor)"] = {**reference.floor(), "diversity": reference.copies_diversity()}
    title = f"{cfg.image_folder}: 32 samples, each over its nearest of {len(train.images):,} training images"
    save_nearest_grid(fake[:32], to_unit(train.images), run_dir / "nearest_neighbours.png", title)
    result = {"dataset": cfg.image_folder, "samples": len(reference), "rows": rows, "metric": "swd",
              "diversity_real": real}  # fmt: skip
    if name:  # a labelled folder: scores in its classifier's features
        scores = reference.classified(sampler, n, TEST_SEED, coverage=True)
        keys = (
            "fid",
            "fid_floor",
            "is",
            "precision",
            "recall",
            "class_kl",
            "rarest_share",
            "classes_found",
            "classes",
        )
        result["classified"] = {"classifier": name, "samples": n, **{k: scores[k] for k in keys}}
        if drawn.critic is not None:
            scores = reference.classified(drawn, n, TEST_SEED, coverage=True)
            result["classified_rejection"] = {k: scores[k] for k in keys}
    return result


def _classified(c: dict) -> str:
    """One sentence of a labelled folder's scores in its classifier's features."""
    return (
        f"FID **{c['fid']:.2f}** ({c['fid'] / c['fid_floor']:.1f}x the floor {c['fid_floor']:.2f}, training "
        f"images against them), IS {c['is']:.2f}, precision {c['precision']:.3f}, recall {c['recall']:.3f}; "
        f"{c['classes_found']} of {c['classes']} classes drawn, the rarest at "
        f"{100 * c['rarest_share']:.1f}%, KL(generated || real) of the class shares {c['class_kl']:.3f}."
    )


def write_folder_report(run_dir: Path, result: dict) -> None:
    rows = result["rows"]
    levels = [k for k in next(iter(rows.values())) if k not in ("swd", "diversity")]
    lines = [
        f"# GAN evaluation: {run_dir}",
        "",
        f"Multi-scale sliced Wasserstein distance (x 1e3; Karras et al. 2018) on 7x7 Laplacian-pyramid "
        f"patches of {result['samples']:,} images per row against the {result['samples']:,} images held out "
        f"of {result['dataset']} (never trained on); lower is better, the floor is what the training "
        "images themselves score. Diversity: the mean distance between two images' pyramid levels "
        f"(docs/evaluation.md); the held-out images' own is {result['diversity_real']:.3f}.",
        "",
        "| images | SWD (mean) | " + " | ".join(levels) + " | diversity |",
        "|---|---|" + "---|" * len(levels) + "---|",
    ]
    for name, r in rows.items():
        cells = " | ".join(f"{r[k]:.2f}" for k in levels)
        lines.append(f"| {name} | {r['swd']:.2f} | {cells} | {r['diversity']:.3f} |")
    if "classified" in result:
        c = result["classified"]
        lines += [
            "",
            f"In the features of the `{c['classifier']}` classifier (trained on the folder's classes), "
            f"{c['samples']:,} samples against the held-out images: {_classified(c)}",
        ]
    if "classified_rejection" in result:
        lines += ["", f"By discriminator rejection sampling: {_classified(result['classified_rejection'])}"]
    lines += [""] + [f"![{caption}]({f})\n" for f, caption in FIGURES if (run_dir / f).exists()]
    lines += ["![each sample over its nearest training image (pixels)](nearest_neighbours.png)\n"]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


def write_report(run_dir: Path, result: dict) -> None:
    if result.get("metric") == "swd":
        return write_folder_report(run_dir, result)
    rows, floor = result["rows"], result["rows"]["real training images (the floor)"]["fid"]
    lines = [
        f"# GAN evaluation: {run_dir}",
        "",
        f"{result['samples']:,} images per row against the {result['dataset']} test split, on the "
        "penultimate features of the project's classifier (FID), its class probabilities (IS) "
        "and k=3 nearest-neighbour manifolds (precision, recall).",
        "",
        "| images | FID | FID / floor | IS | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        pr = [f"{r[k]:.3f}" if k in r else "" for k in ("precision", "recall")]
        ratio = f"{r['fid'] / floor:.1f}x" if floor > 0 and r["fid"] > 0 else ""
        lines.append(
            f"| {name} | {r['fid']:.3f} | {ratio} | {r['is']:.2f} ± {r['is_std']:.2f} | {pr[0]} | {pr[1]} |"
        )
    cov = result["coverage"]
    lines += [
        "",
        "## Mode coverage",
        "",
        f"Classes of the generated images under the classifier: KL(generated || real class frequencies) "
        f"= {cov['class_kl']:.4f} nats (0: the test split's frequencies; {math.log(10):.2f}: one class "
        f"only); rarest class {cov['rarest_class']} at {cov['rarest_share']:.1%} of the samples "
        f"(real: {cov['real_shares'][cov['rarest_class']]:.1%}).",
        "",
        "![class histogram](class_histogram.png)",
    ]
    if "label_agreement" in result:
        lines += [
            "",
            "## Conditional generation",
            "",
            f"The classifier agrees with the requested label for {result['label_agreement']:.2%} of "
            f"{result['samples']:,} samples (labels 0-9 in turn)"
            + "".join(
                f"; by discriminator rejection sampling for {r['agreement']:.2%}"
                for name, r in rows.items()
                if "agreement" in r
            )
            + ".",
            "",
            "| class | " + " | ".join(str(c) for c in range(len(result["per_class_agreement"]))) + " |",
            "|---|" + "---:|" * len(result["per_class_agreement"]),
            "| agreement | " + " | ".join(f"{a:.1%}" for a in result["per_class_agreement"]) + " |",
            "",
            "![one row per class](per_class.png)",
        ]
    if "cas" in result:
        cas = result["cas"]
        lines += [
            "",
            f"Classification accuracy score (Ravuri and Vinyals 2019): the project's classifier network "
            f"trained only on {result['cas_samples']:,} generated images (as many per class), then tested "
            f"on the real test split: **{cas['generated']:.2%}**; trained the same way on as many real "
            f"training images: {cas['real']:.2%}.",
        ]
    lines += ["", "![nearest neighbours](nearest_neighbours.png)", ""]
    lines += [f"![{caption}]({f})\n" for f, caption in FIGURES if (run_dir / f).exists()]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class EvalGANConfig(DeviceFlags):
    run_dir: str = option("", "a finished run of experiments.gan", positional=True)
    vae_run: str = option("", "a finished VAE run to score beside the GAN (empty: none)")
    samples: int = option(10000, "images per row (compare_gan: 10,000)")
    cas_samples: int = option(
        60000,
        "conditional: generated images (balanced over the classes) a classifier learns from (0: no CAS)",
    )
    baseline_run: str = option("", "another GAN run whose probes.jsonl curve is drawn beside this one's")
    export: str = option(
        "", "also copy the generator (fp16) and config.json here, a folder eval-gan can score"
    )
    rejection: bool = option(
        False, "draw the samples by discriminator rejection sampling with the run's D (Azadi et al. 2019)"
    )

    def __post_init__(self):
        super().__post_init__()
        self.require(self.samples >= 10, "--samples must be at least 10")
        ok = self.cas_samples == 0 or self.cas_samples >= 1000
        self.require(ok, f"--cas-samples must be 0 (none) or at least 1000, got {self.cas_samples}")


def _label(run_dir: Path) -> str:
    cfg = run_config(run_dir) or {}
    recipe = f"{cfg['loss']}" + (f" + R1 {cfg.get('r1_gamma')}" if cfg.get("r1_gamma") else "")
    recipe += ", BatchNorm D" if cfg.get("disc_norm", True) else ""
    return f"{recipe}, lr {cfg['lr']:g}, batch {cfg['batch_size']}"


def plot_against_baseline(run_dir: Path, baseline: Path) -> None:
    """quality_vs_baseline.png: both runs' probe curves (FID, precision, recall) on one figure."""
    curves = {_label(r): read_metrics(r, PROBES) for r in (run_dir, baseline)}
    if not all(curves.values()):
        raise DataError(f"both runs need a probes.jsonl ({run_dir}, {baseline}); train with --probe-every")
    title = "the EMA generator's quality against time, two recipes"
    plot_quality_vs_time(curves, run_dir / "quality_vs_baseline.png", title)


def export_generator(run_dir: Path, out: Path) -> None:
    """The run's EMA generator and its discriminator (for --rejection) in fp16 (half the bytes;
    sampling converts back to float32) with its config.json (all that load_generator, hence `make
    eval-gan RUN=out`, needs) and its figures."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("generator.safetensors", "discriminator.safetensors"):
        if (run_dir / name).exists():
            weights, _ = load_weights(run_dir / name)
            half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
            save_weights(out / name, half, metadata={"dtype": "float16"})
    # the training figures the report shows, the probes behind the curve and the run's wall time
    for name in ["config.json", "timings.json", "probes.jsonl", *(f for f, _ in FIGURES)]:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, out / name)


@main_guard
def main(argv=None):
    args, _ = parse_config(EvalGANConfig, argv, "python -m experiments.eval_gan", __doc__)
    run_dir, vae_run = Path(args.run_dir), Path(args.vae_run) if args.vae_run else None
    if args.baseline_run:  # before the export, which copies the figure
        plot_against_baseline(run_dir, Path(args.baseline_run))
    lock_run_dir(run_dir, create=False)  # not while a training (or another eval-gan) writes into it
    if args.export:  # before scoring: the exported fp16 copy is what gets scored and reported
        lock_run_dir(args.export)
        export_generator(run_dir, Path(args.export))
        run_dir = Path(args.export)
    device = resolve_device(args.device)
    result = evaluate(run_dir, vae_run, args.samples, device, args.cas_samples, args.rejection)
    (run_dir / "eval.json").write_text(json_text(result))
    write_report(run_dir, result)
    for name, r in result["rows"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    if "coverage" not in result:
        return result
    cov = result["coverage"]
    rarest = f"rarest class {cov['rarest_class']} {cov['rarest_share']:.2%}"
    print(f"mode coverage: KL {cov['class_kl']:.4f}, {rarest}")
    if "label_agreement" in result:
        print(f"label agreement (conditional): {result['label_agreement']:.2%}")
        print("per class: " + ", ".join(f"{c} {a:.1%}" for c, a in enumerate(result["per_class_agreement"])))
    if "cas" in result:
        cas = result["cas"]
        print(f"classification accuracy score: {cas['generated']:.2%} (real images: {cas['real']:.2%})")
    print(f"wrote {run_dir / 'report.md'}")
    return result


if __name__ == "__main__":
    main()

"""Train the CNN whose features score generated images (FID, IS, precision/recall):
`python -m experiments.classifier --help`."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import engine
from evaluation.plots import plot_curves
from harness import (
    RunConfig,
    RunContext,
    UsageError,
    finish,
    main_guard,
    open_run,
    option,
    read_metrics,
    train,
)
from harness.config import DATASET_NAMES
from harness.imagefolder import class_names
from losses.classify import SHIFT_NOISE, make_classifier_loss
from models.classifier import build_classifier, weights_path


@dataclass(frozen=True)
class ClassifierConfig(RunConfig):
    dataset: str = option(
        "mnist",
        "data set (imagefolder: --image-folder, labelled by subfolder)",
        (*DATASET_NAMES, "imagefolder"),
    )
    image_folder: str = option("", "imagefolder: a folder of class subfolders (e.g. make data-emoji's)")
    image_size: int = option(64, "imagefolder: images resized and centre-cropped to this")
    channels: int = option(3, "imagefolder: 3 (RGB) or 1 (grey)", (1, 3))
    max_pixels: int = option(40_000_000, "imagefolder: skip larger images unread (with a warning)")
    name: str = option("", "imagefolder: the exported weights' name, classifier-NAME (default: the folder's)")
    epochs: int = option(8, "passes over the training set")
    width: int = option(32, "channels of the first conv stage (the second has twice as many)")
    weight_decay: float = option(0.01, "decoupled (AdamW) weight decay")
    warmup: int = option(200, "steps of linear learning-rate warm-up before the cosine decay")
    max_shift: int = option(2, "augment: move training images by up to this many pixels (0: off)")
    export: bool = option(True, "write models/weights/classifier-<dataset>.safetensors when done")
    target_accuracy: float = option(0.0, "exit 1 if the final test accuracy is below this (0: none)")

    def __post_init__(self):
        super().__post_init__()
        self.require(self.width >= 1, f"--width must be at least 1, got {self.width}")
        ok = self.image_size >= 1 and self.max_pixels >= 1
        self.require(ok, "--image-size and --max-pixels must be at least 1")
        nonnegative = min(self.weight_decay, self.warmup, self.max_shift) >= 0
        self.require(nonnegative, "--weight-decay, --warmup and --max-shift must be >= 0")

    def tag(self) -> str:
        return "cnn"

    @property
    def weights_name(self) -> str:
        """classifier-<this>.safetensors: the data set, or the folder's name."""
        if self.dataset != "imagefolder":
            return self.dataset
        return self.name or Path(self.image_folder.rstrip("/")).name


def export_weights(run: RunContext, state, accuracy: float, argv) -> Path:
    """The trained weights as a plain state_dict, with how they were made in the metadata."""
    cfg = run.config
    path = weights_path(cfg.weights_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": shlex.join(["python", "-m", "experiments.classifier", *argv]),
        "dataset": cfg.weights_name,
        "width": str(cfg.width),
        "max_shift": str(cfg.max_shift),
        "test_accuracy": f"{accuracy:.4f}",
        **(
            {"classes": ",".join(class_names(cfg.image_folder)), "channels": str(cfg.channels)}
            if cfg.dataset == "imagefolder"
            else {}
        ),  # fmt: skip
        "torch": torch.__version__,
    }
    engine.save_weights(path, state.params, metadata=meta)  # with its sha256, as every weights file
    return path


@main_guard
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    run = open_run(ClassifierConfig, argv, "classifier")  # flags, run directory, device, data
    cfg = run.config
    if cfg.dataset == "imagefolder":  # one class per subfolder; scored on the held-out tenth
        names = class_names(cfg.image_folder)
        if len(names) < 2:
            raise UsageError(f"{cfg.image_folder} needs two or more class subfolders (and no loose images)")
        model = build_classifier(cfg.width, classes=len(names), channels=cfg.channels)
    else:
        model = build_classifier(cfg.width)
    model = model.to(run.device, memory_format=torch.channels_last)  # 3x the NCHW rate on a CPU
    loss_fn = make_classifier_loss(model, cfg.max_shift)
    total = cfg.epochs * (len(run.train.images) // cfg.batch_size)
    schedule = engine.cosine(cfg.lr, min(total, cfg.max_steps or total), cfg.warmup)
    optimizer = engine.adam(schedule, weight_decay=cfg.weight_decay, decoupled=True)
    step = engine.make_train_step(loss_fn, optimizer, run.options)
    evaluate = run.evaluator(loss_fn)
    panels = [("cross entropy", "ce"), ("accuracy", "accuracy")]
    title = f"CNN classifier width {cfg.width} on {cfg.dataset}"
    state = train(
        run,
        step,
        run.init_state(model, optimizer),
        run.loader({SHIFT_NOISE: (2,)} if cfg.max_shift else None),  # evaluation: no shift draws
        evaluate,
        lr=schedule,
        on_epoch_end=lambda s, _: plot_curves(
            read_metrics(run.run_dir), panels, run.run_dir / "loss.png", title
        ),
    )
    final = finish(run, state, evaluate)
    main = run.world.main  # torchrun: rank 0 reports and exports
    if main:
        print(f"test accuracy {100 * final['accuracy']:.2f}% on {cfg.dataset}")
    if cfg.target_accuracy and not final["accuracy"] >= cfg.target_accuracy:  # keep the old export
        if main:
            print(f"error: test accuracy {final['accuracy']:.4f} is below --target-accuracy", file=sys.stderr)
        raise SystemExit(1)
    if cfg.export and main:
        print(f"weights written to {export_weights(run, state, final['accuracy'], argv)}")
    return final


if __name__ == "__main__":
    main()

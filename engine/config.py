"""Run configuration: frozen dataclasses whose fields (type, default, help) generate the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from dataclasses import dataclass

from engine.amp import PRECISIONS


class UsageError(Exception):
    """Bad user input (flag, value, file); reported as one line with exit code 2."""


def option(default, help: str, choices=None):
    """A config field: its default, the help text shown by --help, and allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class RunConfig:
    """Flags shared by every experiment; experiments subclass it with their model's flags."""

    dataset: str = option("mnist", "data set", choices=("mnist", "fashion-mnist"))
    epochs: int = option(10, "passes over the training set")
    batch_size: int = option(128, "training batch size (the last partial batch is dropped)")
    lr: float = option(1e-3, "Adam learning rate")
    binarize: str = option(
        "none",
        "dynamic: a fresh Bernoulli draw of every pixel each time an image is "
        "used (the test set binarised once, fixed seed)",
        ("none", "dynamic"),
    )
    precision: str = option("fp32", "autocast policy; fp16 adds dynamic loss scaling", PRECISIONS)
    compile: bool = option(True, "wrap the whole train step in torch.compile")
    donate: bool = option(True, "let the step overwrite the previous state's storage")
    device: str = option("auto", "where tensors live", choices=("auto", "cpu", "cuda"))
    seed: int = option(0, "seed of the weights, the data order and the noise")
    run_dir: str = option("", "output folder; empty: runs/<experiment>-<dataset>-<arch>-z<dim>")
    resume: bool = option(False, "continue the run in --run-dir (or --resume DIR) from its checkpoint")
    max_steps: int = option(0, "stop after this many steps in total (0: run every epoch)")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: at the end of each epoch only)")
    keep: int = option(2, "checkpoints kept in run_dir/checkpoints, newest first (at least 1)")
    skip_nonfinite: bool = option(False, "skip and count updates with an inf/nan loss or gradient; off: stop")
    download: bool = option(False, "try torchvision's downloader when data files are missing")
    target_loss: float = option(0.0, "exit 1 if the final test loss is above this (0: no target)")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        for name in ("max_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.keep < 1:
            raise UsageError(f"--keep must be at least 1, got {self.keep}")
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) not in allowed:
                raise UsageError(f"--{f.name.replace('_', '-')} must be one of {', '.join(allowed)}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, instead of usage + message
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser(cls, prog: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field; unset flags stay absent."""
    parser = _Parser(prog=prog, argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        helptext = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if f.name == "resume":
            parser.add_argument(flag, nargs="?", const=True, metavar="RUN_DIR", help=helptext)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=helptext)
        else:
            parser.add_argument(flag, type=kind, choices=f.metadata.get("choices"), help=helptext)
    return parser


def parse_config(cls, argv=None, prog="purestep"):
    """(config, names of the flags given explicitly); `--resume DIR` also sets run_dir."""
    given = vars(build_parser(cls, prog).parse_args(argv))
    if isinstance(given.get("resume"), str):
        given["run_dir"], given["resume"] = given["resume"], True
    return cls(**given), set(given)


# Flags a resumed run may change; every other flag must match the saved config.
RESUMABLE = (
    "epochs",
    "max_steps",
    "checkpoint_every",
    "keep",
    "skip_nonfinite",
    "progress",
    "resume",
    "run_dir",
    "compile",
    "donate",
    "target_loss",
    "device",
    "download",
    "eval_samples",
    "target_fid",
)


def merge_resumed(cls, saved: dict, given: dict):
    """The saved run's config with the flags given now; changing a structural one is an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(saved) - names
    if unknown:
        raise UsageError(f"the saved config has fields this experiment lacks: {', '.join(sorted(unknown))}")
    for key, value in given.items():
        if key not in RESUMABLE and saved.get(key) != value:
            raise UsageError(
                f"--{key.replace('_', '-')} {value} differs from the run's {saved.get(key)};"
                " start a new --run-dir instead"
            )
    return cls(**{**saved, **given})

"""Configuration: frozen dataclasses whose fields (type, default, help, choices) generate every CLI."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
from dataclasses import dataclass
from typing import ClassVar

from engine import COMPILE_MODES, PRECISIONS
from harness.data import DATASETS

# Each choice list is declared once, here (or beside what it names) and used by every entry point.
DATASET_NAMES = tuple(DATASETS)
DEVICES = ("auto", "cpu", "cuda")
BINARIZE = ("none", "dynamic")
LR_DECAYS = ("constant", "cosine")  # --lr-decay: cosine falls to 0 over --epochs
COMPILE = ("auto", *COMPILE_MODES)  # auto: the per-device default


class UsageError(Exception):
    """Bad user input (flag, value, file); reported as one line with exit code 2."""


def _typed(name: str, kind, value):
    """value as a field of type `kind` takes it (an int for a float, a list for a tuple), or a
    UsageError: a config.json edited to "epochs": "5", null or 128.0 is refused in one line."""
    if typing.get_origin(kind) is tuple and isinstance(value, list | tuple):
        item = typing.get_args(kind)[0]
        return tuple(_typed(name, item, v) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):  # nan, inf, 1e400
        raise UsageError(f"{flag(name)} must be a finite number, got {value!r}")
    if kind is int and isinstance(value, int) and not -(2**63) <= value < 2**63:  # 2e19 in a config
        raise UsageError(f"{flag(name)} is out of range, got {value!r}")
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    shown = getattr(kind, "__name__", str(kind))
    raise UsageError(f"{flag(name)} must be {shown}, got {value!r}")


def option(default, help: str, choices=None, positional: bool = False):
    """A config field: its default, the help text shown by --help, allowed values, and whether it is
    a positional argument (required) rather than a --flag. A tuple[T, ...] field takes a
    comma-separated list, e.g. --beta 0.5,1,4."""
    meta = {"help": help, "choices": choices, "positional": positional}
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Config:
    """Base of every entry point's config: checks each field's choices (list fields: every item)."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # values from config.json or a checkpoint, not only flags
            object.__setattr__(self, f.name, _typed(f.name, hints[f.name], getattr(self, f.name)))
        for f in dataclasses.fields(self):
            allowed, value = f.metadata.get("choices"), getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if allowed and any(v not in allowed for v in values):
                raise UsageError(f"{flag(f.name)} must be one of {', '.join(map(str, allowed))}")

    def require(self, ok: bool, message: str) -> None:
        """Raise a one-line UsageError unless ok."""
        if not ok:
            raise UsageError(message)


@dataclass(frozen=True)
class DeviceFlags(Config):
    """The flag of every entry point that computes: where."""

    device: str = option("auto", "where tensors live", choices=DEVICES)


@dataclass(frozen=True)
class TrainingFlags(DeviceFlags):
    """Flags of every entry point that trains (a run, or several: compare, sweep, gan_losses)."""

    batch_size: int = option(128, "training batch size (the last partial batch is dropped)")
    compile: str = option(
        "auto",
        "torch.compile of the whole step: auto (compiled on CPU; on one GPU with CUDA graphs, plain "
        "compilation where a step cannot be captured), off, default, "
        "max-autotune, cudagraphs (CUDA graphs; reduce-overhead); --no-compile = off",
        COMPILE,
    )
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self):
        if isinstance(self.compile, bool):  # a config.json written when --compile was a switch
            object.__setattr__(self, "compile", "auto" if self.compile else "off")
        super().__post_init__()  # types and choices first: the checks below compare values
        self.require(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class RunFlags(TrainingFlags):
    """TrainingFlags and the seed: the shared flags of an entry point that trains with one seed."""

    seed: int = option(0, "seed of the weights, the data order and the noise")

    def __post_init__(self):
        super().__post_init__()
        self.require(0 <= self.seed < 2**63, f"--seed must be in [0, 2**63), got {self.seed}")


def forwarded(cfg, flags=RunFlags) -> list[str]:
    """cfg's values of the fields of `flags` (a flag group it inherits) as command-line arguments,
    for the runs an entry point launches with the flags it was given."""
    argv = []
    for f in dataclasses.fields(flags):
        value = getattr(cfg, f.name)
        if isinstance(value, bool):
            argv.append(flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
        else:
            argv += [flag(f.name), str(value)]
    return argv


@dataclass(frozen=True)
class RunConfig(RunFlags):
    """Flags shared by every training run; experiments subclass it with their model's flags."""

    # Flags a resumed run may change; every other flag must match the saved config.
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        "epochs", "max_steps", "checkpoint_every", "keep", "skip_nonfinite", "progress", "resume",
        "run_dir", "compile", "donate", "target_loss", "device", "download", "tf32", "compile_cache",
        "tensorboard", "deterministic",
    )  # fmt: skip
    # The value a flag added later had in runs saved before it existed (their config.json lacks it).
    BEFORE: ClassVar[dict] = {}

    dataset: str = option("mnist", "data set", choices=DATASET_NAMES)
    epochs: int = option(10, "passes over the training set")
    lr: float = option(1e-3, "Adam learning rate")
    binarize: str = option(
        "none",
        "dynamic: a fresh Bernoulli draw of every pixel each time an image is "
        "used (the test set binarised once, fixed seed)",
        BINARIZE,
    )
    precision: str = option(
        "auto", "autocast policy; fp16 adds dynamic loss scaling; auto: bf16 where the CPU or GPU has it in "
        "hardware (fp32 master weights and optimizer state), else fp32", (*PRECISIONS, "auto"),
    )  # fmt: skip
    tf32: bool = option(False, "CUDA: fp32 matmuls and convolutions on TF32 tensor cores (faster, inexact)")
    deterministic: bool = option(
        True, "CUDA: cuDNN's deterministic convolutions, so a resumed run equals an uninterrupted one bitwise"
    )
    donate: bool = option(True, "let the step overwrite the previous state's storage")
    run_dir: str = option("", "output folder; empty: runs/<experiment>-<dataset>-<model tag>")
    resume: bool = option(False, "continue the run in --run-dir (or --resume DIR) from its checkpoint")
    max_steps: int = option(0, "stop after this many steps in total (0: run every epoch)")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: at the end of each epoch only)")
    keep: int = option(2, "checkpoints kept in run_dir/checkpoints, newest first (at least 1)")
    skip_nonfinite: bool = option(False, "skip and count updates with an inf/nan loss or gradient; off: stop")
    download: bool = option(False, "try torchvision's downloader when data files are missing")
    target_loss: float = option(0.0, "exit 1 if the final test loss is above this (0: no target)")
    tensorboard: bool = option(True, "TensorBoard event files in run_dir/tensorboard (make tensorboard)")
    compile_cache: bool = option(
        True, "keep the compiled step on disk ($PURESTEP_CACHE, default ~/.cache/purestep): the next run "
        "of the same model and flags loads it instead of compiling again"
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        self.require(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        self.require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        for name in ("max_steps", "checkpoint_every"):
            value = getattr(self, name)
            self.require(value >= 0, f"{flag(name)} must be >= 0, got {value}")
        self.require(self.keep >= 1, f"--keep must be at least 1, got {self.keep}")
        for f in dataclasses.fields(self):  # --target-loss, --target-fid, ...: 0 is none
            if f.name.startswith("target_"):
                value = getattr(self, f.name)
                self.require(value >= 0, f"{flag(f.name)} must be >= 0 (0: no target), got {value}")

    def tag(self) -> str:
        """The model part of the default run directory's name."""
        return "run"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, instead of usage + message
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _list_of(item_type):
    """argparse type for a comma-separated list of item_type."""

    def parse(text: str) -> tuple:
        return tuple(item_type(v) for v in text.split(","))

    parse.__name__ = f"comma-separated {item_type.__name__}"
    return parse


def build_parser(cls, prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one argument per dataclass field; unset flags stay absent."""
    parser = _Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, meta = hints[f.name], f.metadata
        helptext = f"{meta.get('help', '')} (default: {f.default!r})"
        if meta.get("positional"):
            parser.add_argument(f.name, type=kind, help=meta.get("help", ""))
        elif f.name == "resume":
            parser.add_argument(flag(f.name), nargs="?", const=True, metavar="RUN_DIR", help=helptext)
        elif f.name == "compile" and kind is str:  # --compile MODE, bare --compile, --no-compile
            parser.add_argument(flag(f.name), nargs="?", const="auto", choices=meta["choices"], help=helptext)
            parser.add_argument("--no-compile", dest="compile", action="store_const", const="off", help="off")
        elif kind is bool:
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, help=helptext)
        elif typing.get_origin(kind) is tuple:  # checked item by item in Config.__post_init__
            parser.add_argument(flag(f.name), type=_list_of(typing.get_args(kind)[0]), help=helptext)
        else:
            parser.add_argument(flag(f.name), type=kind, choices=meta.get("choices"), help=helptext)
    return parser


def parse_config(cls, argv=None, prog="purestep", description=None):
    """(config, names of the arguments given explicitly); `--resume DIR` also sets run_dir."""
    given = vars(build_parser(cls, prog, description).parse_args(argv))
    if isinstance(given.get("resume"), str):
        given["run_dir"], given["resume"] = given["resume"], True
    return cls(**given), set(given)


def merge_resumed(cls, saved: dict, given: dict):
    """The saved run's config with the flags given now; changing a structural one is an error."""
    saved = {**cls.BEFORE, **saved}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(saved) - names
    if unknown:
        raise UsageError(f"the saved config has fields this experiment lacks: {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)  # typed as Config reads them: a JSON list is the flag's tuple
    saved = {k: _typed(k, hints[k], v) for k, v in saved.items()}
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731  (as typed)
    for key, value in given.items():
        if key not in cls.RESUMABLE and saved.get(key) != value:
            was = saved.get(key)
            raise UsageError(
                f"{flag(key)} {shown(value)} differs from the run's {shown(was)}; start a new --run-dir"
            )
    return cls(**{**saved, **given})

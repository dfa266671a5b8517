"""A training run, opened: `open_run` parses the flags, locks the run directory, merges a resumed
config, sets the device up and loads the data, each a small named function, into one frozen value."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import torch

from engine import StepOptions, atomic_write, init_state, mean_over_ranks, scaler_init
from harness.board import Board
from harness.config import RunConfig, UsageError, merge_resumed, parse_config
from harness.data import Dataset
from harness.device import resolve_precision, setup_device
from harness.evaluator import Evaluator, loss_evaluator
from harness.files import FileError, read_json
from harness.loader import Loader
from harness.rundir import LOCK, STALE_TEMPS, has_checkpoint, lock_run_dir
from harness.splits import Splits, load_run_data
from harness.stepcache import step_cache_path
from harness.timing import PHASES
from harness.world import World


@dataclass(frozen=True)
class RunContext:
    """One training run: its config, where it writes and computes, its data and how its steps are built."""

    config: RunConfig
    experiment: str  # the entry point's name: experiments.<experiment>, runs/<experiment>-...
    run_dir: Path
    device: torch.device
    world: World  # this process's rank among torchrun's (a single process: rank 0 of 1)
    data: Splits
    options: StepOptions  # from --precision, --compile, --donate, torchrun and the step cache
    board: Board  # TensorBoard on rank 0 (--tensorboard), opened when training starts

    @property
    def train(self) -> Dataset:
        return self.data.train

    @property
    def test(self) -> Dataset:
        return self.data.test

    @property
    def binarize(self) -> bool:
        """Fresh Bernoulli pixels each time an image is used (--binarize dynamic)."""
        return self.config.binarize == "dynamic"

    def loader(self, noise=None, batches: int = 1) -> Loader:
        """Training batches of --batch-size rows (times `batches`: a GAN step's n_disc batches)."""
        rows = batches * self.config.batch_size
        try:
            return Loader(self.train, rows, self.config.seed, noise, self.binarize, self.world, batches)
        except ValueError as e:
            raise UsageError(str(e)) from None

    def evaluator(self, loss_fn, noise=None, split: str = "test") -> Evaluator:
        """The means of the loss and its metrics over the test split (or split="val")."""
        data = self.data.val if split == "val" else self.test
        return loss_evaluator(loss_fn, data, self.options, self.world, noise, self.binarize, split)

    def init_state(self, model, optimizer):
        """Fresh state for the model (with a loss scaler under fp16)."""
        scaler = scaler_init(self.device) if self.config.precision == "fp16" else None
        return init_state(model, optimizer, scaler)


def open_run(config_cls, argv, experiment: str, description: str | None = None) -> RunContext:
    """Parse flags, lock the run directory, restore a resumed config, set the device up, seed, and
    load the data. The default run directory is runs/<experiment>-<dataset>-<config.tag()>."""
    PHASES.begin_run()
    cfg, given = parse_run_config(config_cls, argv, experiment, description)
    run_dir = claim_run_dir(cfg)  # locked before anything in it is read or written
    cfg = resumed_config(config_cls, cfg, given, experiment) if cfg.resume else new_config(cfg)
    device, world = setup_device(cfg)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))  # saved as resolved
    torch.manual_seed(cfg.seed)  # weight initialisation
    with PHASES("data"):
        data = load_run_data(cfg, device)
    options = step_options(cfg, experiment, world, device)
    board = Board(run_dir, enabled=cfg.tensorboard and world.main)
    return RunContext(cfg, experiment, run_dir, device, world, data, options, board)


def parse_run_config(config_cls, argv, experiment: str, description=None) -> tuple[RunConfig, set]:
    """(config, the flags given) from the command line, with the default run directory filled in."""
    prog = f"python -m experiments.{experiment}"
    cfg, given = parse_config(config_cls, argv, prog=prog, description=description)
    if cfg.resume and not cfg.run_dir:  # never the working directory by accident
        raise UsageError("--resume needs the run to continue: --resume RUN_DIR")
    if not cfg.run_dir and not cfg.resume:
        cfg = dataclasses.replace(cfg, run_dir=str(Path("runs") / f"{experiment}-{cfg.dataset}-{cfg.tag()}"))
    return cfg, given


def claim_run_dir(cfg: RunConfig) -> Path:
    """Check the run directory's name and take its lock (rank 0: the one process that writes)."""
    run_dir = Path(cfg.run_dir)
    try:
        str(run_dir).encode("utf-8")
    except UnicodeEncodeError:
        name = repr(run_dir)[len("PosixPath(") : -1]
        raise UsageError(f"the run directory {name} is not valid UTF-8; pick another --run-dir") from None
    if cfg.resume and not run_dir.is_dir():
        raise UsageError(f"--resume: {run_dir} holds no checkpoint (no such folder)")
    if not cfg.resume and _foreign_files(run_dir):  # e.g. --run-dir / or ~: nothing is written there
        raise UsageError(
            f"{run_dir} already holds other files and no run: a new run needs a new or empty --run-dir"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        lock_run_dir(run_dir)
    return run_dir


def _foreign_files(run_dir: Path) -> bool:
    """Whether run_dir exists and holds anything but a run's files, or what a start killed before its
    config.json was in place leaves: the lock and a temporary file never renamed in."""
    if not run_dir.is_dir() or has_checkpoint(run_dir) or (run_dir / "config.json").exists():
        return False
    left = lambda name: name == LOCK or any(fnmatch(name, p) for p in STALE_TEMPS)  # noqa: E731
    return not all(left(entry.name) for entry in run_dir.iterdir())


def new_config(cfg: RunConfig) -> RunConfig:
    """A new run's config, as given; a directory that already holds a run is refused."""
    if has_checkpoint(cfg.run_dir) or (Path(cfg.run_dir) / "config.json").exists():
        raise UsageError(
            f"{cfg.run_dir} already holds a run: add --resume to continue it, or pick another --run-dir"
        )
    return cfg


def resumed_config(config_cls, cfg: RunConfig, given: set, experiment: str) -> RunConfig:
    """The saved config of the run to resume with the flags given now (those it allows changed)."""
    path = Path(cfg.run_dir) / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: {cfg.run_dir} holds no checkpoint (no config.json)")
    try:
        saved = read_json(path)
    except (FileError, OSError) as e:
        raise UsageError(f"--resume: {e}; start a new --run-dir") from None
    if saved.pop("experiment", experiment) != experiment:
        raise UsageError(f"{cfg.run_dir} is not a {experiment} run")
    return merge_resumed(config_cls, saved, {k: getattr(cfg, k) for k in given})


def save_config(run_dir: Path, experiment: str, cfg: RunConfig) -> None:
    """run_dir/config.json: the experiment and every flag (atomic: never half written)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"experiment": experiment, **dataclasses.asdict(cfg)}, indent=2) + "\n"
    atomic_write(run_dir / "config.json", lambda tmp: tmp.write_text(text))


def step_options(cfg: RunConfig, experiment: str, world: World, device) -> StepOptions:
    """How the run's steps are built, from its flags: the gradient all-reduce under torchrun, and the
    compiled step's cache file."""
    return StepOptions(
        precision=cfg.precision,
        compile=cfg.compile,
        donate=cfg.donate,
        all_reduce=mean_over_ranks if world.parallel else None,
        cache=step_cache_path(cfg, experiment, world.size, device),
    )

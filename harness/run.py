"""Experiment plumbing: a run directory, its config, device, data, evaluation and clean CLI errors."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from engine import (
    CheckpointError,
    WriteError,
    init_state,
    make_eval_step,
    mean_over_ranks,
    save_weights,
    scaler_init,
)
from engine.checkpoint import atomic_write
from harness.board import Board
from harness.config import DEVICES, UsageError, merge_resumed, parse_config
from harness.data import DataError, Dataset, load_dataset
from harness.fit import LoopOptions, NonFiniteError, fit
from harness.loader import Loader, eval_batches, evaluate_mean
from harness.rundir import has_checkpoint, lock_run_dir, resume_state
from harness.timing import PHASES
from harness.world import World, barrier, broadcast_state, check_same_on_all_ranks, init_world

EVAL_BATCH = 1000
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # present where an NVIDIA kernel driver is loaded
TEST_SEED = 12345  # fixes the test set's binarisation and noise draws, the same for every run


def main_guard(main):
    """Every entry point's one error path: user-facing failures become one line on stderr; exit 2
    for bad input (1 for a missed target), 3 for a non-finite loss or gradient, 130 for a second
    Ctrl-C; warnings are one line too, and torch's CPU-only "No CUDA runtime" notice is silenced."""

    @functools.wraps(main)
    def wrapped(argv=None):
        if os.environ.get("PURESTEP_DEBUG"):  # developers: the full traceback, no translation
            return main(argv)
        old_term = signal.signal(signal.SIGTERM, _terminated)  # before the loop takes it over
        # torch.compile on a CPU-only machine logs "No CUDA runtime is found" from cpp_extension on
        # every run: nothing a user can act on (its errors still show)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return main(argv)
        except (UsageError, DataError, CheckpointError, WriteError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as e:  # any other file the run touches: one line, the path and the reason
            print(f"error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
            raise SystemExit(2) from None
        except _Terminated:
            line = "error: terminated (SIGTERM; the run directory keeps its last complete checkpoint, if any)"
            print(line, file=sys.stderr)
            raise SystemExit(143) from None
        except NonFiniteError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(3) from None
        except KeyboardInterrupt:  # before training starts, or a second Ctrl-C while checkpointing
            line = "error: interrupted (the run directory keeps its last complete checkpoint, if any)"
            print(line, file=sys.stderr)
            raise SystemExit(130) from None

        finally:
            signal.signal(signal.SIGTERM, old_term)

    return wrapped


class _Terminated(BaseException):
    """SIGTERM outside the training loop (whose own handler checkpoints first)."""


def _terminated(signum, frame):
    raise _Terminated


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _saved_config(run_dir: Path) -> dict:
    """The config.json of a run to resume; its absence or damage is a one-line UsageError."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: {run_dir} holds no checkpoint (no config.json)")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--resume: {path} is unreadable ({e}); start a new --run-dir") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--resume: {path} holds no config object; start a new --run-dir")
    return saved


def _claim(run_dir: Path, resume: bool) -> None:
    """Check the run directory's name and take its lock (rank 0: the one process that writes)."""
    try:
        str(run_dir).encode("utf-8")
    except UnicodeEncodeError:
        name = repr(run_dir)[len("PosixPath(") : -1]
        raise UsageError(f"the run directory {name} is not valid UTF-8; pick another --run-dir") from None
    if resume and not run_dir.is_dir():
        raise UsageError(f"--resume: {run_dir} holds no checkpoint (no such folder)")
    if int(os.environ.get("RANK", "0")) == 0:
        lock_run_dir(run_dir)


def unusable_gpu() -> str | None:
    """Why an NVIDIA GPU this machine has is out of torch's reach (None: there is none, or it works)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    if hidden or torch.cuda.is_available() or not NVIDIA_DRIVER.exists():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the driver (a driver too old?)"


def resolve_device(name: str) -> torch.device:
    """cpu or cuda (auto: cuda when present). CUDA asked for and not usable is a UsageError; auto
    falling back to the CPU beside an unusable GPU says so in one warning (rank 0 under torchrun)."""
    if name not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    reason = unusable_gpu()
    if name == "cuda" and not torch.cuda.is_available():
        why = f": {reason}" if reason else ""
        raise UsageError(f"--device cuda asked for, but no CUDA device is available{why}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if reason and int(os.environ.get("RANK", "0")) == 0:
            warnings.warn(f"an NVIDIA GPU is present but {reason}: running on the CPU", stacklevel=2)
    return torch.device(name)


HELD_OUT = 0.1  # share of an image folder kept out of training, to score against (at least one image)


def split_off(data: Dataset, n: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(the rest, n images) of a split: a fixed seeded shuffle, its last n held out."""
    perm = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed)).to(
        data.images.device
    )
    keep, held = perm[: len(perm) - n], perm[len(perm) - n :]
    return Dataset(data.images[keep], data.labels[keep]), Dataset(data.images[held], data.labels[held])


def held_out_split(data: Dataset, fraction: float = HELD_OUT, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, held out) of a folder's images: a fixed seeded shuffle, the last max(1, fraction * N)
    held out; a single image is both (nothing to hold out)."""
    if len(data.images) < 2:
        return data, data
    return split_off(data, max(1, int(len(data.images) * fraction)), seed)


def load_splits(cfg, device) -> tuple[Dataset, Dataset]:
    """(train, test) of cfg.dataset on device; an image folder's test split is its held-out tenth."""
    if cfg.dataset == "imagefolder":
        from harness.imagefolder import load_image_folder  # torchvision's image codecs: only when used

        if not cfg.image_folder:
            raise UsageError("--dataset imagefolder needs --image-folder PATH")
        images = load_image_folder(cfg.image_folder, cfg.image_size, cfg.channels, device, cfg.max_pixels)
        return held_out_split(images)
    splits = ("train", "test")
    return tuple(load_dataset(cfg.dataset, s, device=device, download=cfg.download) for s in splits)


@dataclass
class Run:
    """One training run: its config, where it writes, and its data on the device."""

    config: object
    run_dir: Path
    device: torch.device
    train: Dataset | None
    test: Dataset | None
    experiment: str
    world: World = World()
    board: Board = Board(None, enabled=False)  # TensorBoard, set up by fit (rank 0, --tensorboard)
    steps_done: int = 0  # steps taken when fit returned (the final scalars' and the projector's step)
    lr_schedule: object = None  # step -> learning rate, where the experiment decays it (TensorBoard's lr)

    @classmethod
    def start(cls, config_cls, argv, experiment: str, description: str | None = None) -> Run:
        """Parse flags, pick/restore the run directory and config, seed, and load the data.

        The default run directory is runs/<experiment>-<dataset>-<config.tag()>."""
        PHASES.begin_run()
        prog = f"python -m experiments.{experiment}"
        cfg, given = parse_config(config_cls, argv, prog=prog, description=description)
        if not cfg.run_dir and not cfg.resume:
            name = f"{experiment}-{cfg.dataset}-{cfg.tag()}"
            cfg = dataclasses.replace(cfg, run_dir=str(Path("runs") / name))
        _claim(Path(cfg.run_dir), cfg.resume)  # locked before anything in it is read or written
        if cfg.resume:
            saved = _saved_config(Path(cfg.run_dir))
            if saved.pop("experiment", experiment) != experiment:
                raise UsageError(f"{cfg.run_dir} is not a {experiment} run")
            cfg = merge_resumed(config_cls, saved, {k: getattr(cfg, k) for k in given})
        else:
            if has_checkpoint(cfg.run_dir) or (Path(cfg.run_dir) / "config.json").exists():
                raise UsageError(
                    f"{cfg.run_dir} already holds a run: add --resume to continue it, "
                    "or pick another --run-dir"
                )
        device = resolve_device(cfg.device)
        world = init_world(device.type)  # torchrun: join the process group
        if world.parallel and device.type == "cuda":  # the rank's own GPU (LOCAL_RANK)
            device = torch.device("cuda", world.local_rank)
        if device.type == "cuda":  # TF32 for fp32 matmuls/convolutions only when asked
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
            # cuDNN's default convolution backward may sum with atomics: two identical GAN runs on an
            # H100 differed by 0.3 in a weight after 300 steps; deterministic kernels make them bitwise equal
            torch.backends.cudnn.deterministic = cfg.deterministic
        run = cls(cfg, Path(cfg.run_dir), device, None, None, experiment, world)
        if not cfg.resume and world.main:  # from here on a killed run can be resumed (from step 0 at worst)
            run.save_config()
        torch.manual_seed(cfg.seed)  # weight initialisation
        with PHASES("data"):
            run.train, run.test = load_splits(cfg, run.device)
        return run

    @property
    def all_reduce(self):
        """The step's gradient all-reduce under torchrun (None in a single process)."""
        return mean_over_ranks if self.world.parallel else None

    def save_config(self) -> None:
        """run_dir/config.json: the experiment and every flag (atomic: never half written)."""
        if not self.world.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        saved = {"experiment": self.experiment, **dataclasses.asdict(self.config)}
        text = json.dumps(saved, indent=2) + "\n"
        atomic_write(self.run_dir / "config.json", lambda tmp: tmp.write_text(text))

    def step_cache(self, name: str = "step") -> Path | None:
        """The file for this run's compiled `name` step (engine.compile_step's cache), or None
        (--no-compile-cache, or PURESTEP_CACHE=off). Its name hashes everything the compiled code
        depends on: the experiment and every flag but those that only steer the loop (run
        directory, seed, ...), the data-parallel world size, the device, torch and Python, and the
        source of the project's engine, losses, models and experiments: any change compiles afresh."""
        cfg, where = self.config, os.environ.get("PURESTEP_CACHE", "")
        if not cfg.compile_cache or where == "off":
            return None
        loop_only = {"run_dir", "resume", "progress", "keep", "checkpoint_every", "download", "seed",
                     "compile_cache", "max_steps"}  # fmt: skip
        flags = {
            k: v
            for k, v in dataclasses.asdict(cfg).items()
            if k not in loop_only and not k.startswith("target")
        }
        salt = [
            self.experiment,
            name,
            flags,
            self.world.size,
            str(self.device),
            torch.__version__,
            sys.version,
        ]
        h = hashlib.sha256(json.dumps(salt, sort_keys=True, default=str).encode())
        root = Path(__file__).resolve().parent.parent
        for package in ("engine", "losses", "models", "experiments"):
            for source in sorted((root / package).glob("*.py")):
                h.update(source.read_bytes())
        base = Path(where or Path.home() / ".cache" / "purestep")
        return base / "steps" / f"{self.experiment}-{name}-{h.hexdigest()[:16]}.aot"

    def init_state(self, model, optimizer):
        """Fresh state for the model (with a loss scaler under fp16)."""
        scaler = scaler_init(self.device) if self.config.precision == "fp16" else None
        return init_state(model, optimizer, scaler)

    @property
    def dynamic_binarize(self) -> bool:
        return self.config.binarize == "dynamic"

    def loader(self, noise=None, batches: int = 1) -> Loader:
        """Training batches of --batch-size rows (times `batches`: a GAN step's n_disc batches)."""
        rows = batches * self.config.batch_size
        try:
            return Loader(
                self.train, rows, self.config.seed, noise, self.dynamic_binarize, self.world, batches
            )
        except ValueError as e:
            raise UsageError(str(e)) from None

    def evaluator(self, loss_fn, noise=None, data: Dataset | None = None, split: str = "test"):
        """evaluate(state) -> means of the loss and its metrics over `data` (the test split by
        default; fixed binarisation and noise each time); evaluate.split names it in metrics.jsonl."""
        eval_step = make_eval_step(loss_fn, precision=self.config.precision)

        def evaluate(state) -> dict[str, float]:
            images = self.test if data is None else data
            batches = eval_batches(images, EVAL_BATCH, TEST_SEED, noise, self.dynamic_binarize)
            return evaluate_mean(eval_step, state, batches, self.world)  # sharded over ranks

        evaluate.split = split
        return evaluate

    def fit(
        self, step, state, loader, evaluate, on_epoch_end=None, log_every: int = 50, summary=None, probe=None
    ):
        """harness.fit with this run's flags, continuing from the newest checkpoint when resuming;
        summary: the record keys printed after each epoch (LoopOptions' default if None)."""
        cfg, history = self.config, []
        config = dataclasses.asdict(cfg)
        if cfg.resume:  # rank 0 first: it sets damaged checkpoints aside before the others look
            for turn in (True, False):
                if self.world.main == turn:
                    with contextlib.redirect_stdout(sys.stdout if turn else io.StringIO()):  # say it once
                        state, history = resume_state(self.run_dir, state, loader, config, cfg.RESUMABLE)
                barrier()
            self.save_config()  # only now: a resume refused above leaves the directory as it was
        if self.world.parallel:  # identical start on every rank: rank 0's state, at the same step
            check_same_on_all_ranks(loader.steps_taken, "the step to resume from", self.device)
            state = broadcast_state(state)
        # TensorBoard on rank 0; a resume purges the steps a killed process logged past its checkpoint
        self.board = Board(self.run_dir, cfg.tensorboard and self.world.main, purge_step=loader.steps_taken)
        self.board.constants = {"lr": self.lr_schedule or cfg.lr}
        names = [f.name for f in dataclasses.fields(LoopOptions) if hasattr(cfg, f.name)]
        options = dataclasses.replace(
            LoopOptions(**{name: getattr(cfg, name) for name in names}),
            log_every=log_every,
            skip_nonfinite=cfg.skip_nonfinite or cfg.precision == "fp16",  # fp16: the loss scaler's job
            summary=summary or LoopOptions.summary,
        )
        state = fit(
            step, state, loader, self.run_dir, options, evaluate=evaluate, on_epoch_end=on_epoch_end,
            probe=probe, history=history, config=config, world=self.world, board=self.board,
        )  # fmt: skip
        self.steps_done = loader.steps_taken
        return state

    def finish(self, state, evaluate, weights=None, target_key: str = "loss") -> dict[str, float]:
        """Save plain weights ({file stem: (params, buffers)}; default model.safetensors), print the
        final test metrics, and enforce --target-<key> (exit 1 when the metric is above it)."""
        main = self.world.main
        with PHASES("checkpoints"):
            for stem, (params, buffers) in (weights or {"model": (state.params, state.buffers)}).items():
                if main:
                    save_weights(self.run_dir / f"{stem}.safetensors", params, buffers)
        with PHASES("evaluation"):
            final = evaluate(state)  # every rank: the evaluation may be sharded
        if main:
            (self.run_dir / "final.json").write_text(json.dumps(final, indent=2) + "\n")
            print(f"{self.run_dir}: final test " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
            self.board.scalars({f"final_test_{k}": v for k, v in final.items()}, self.steps_done)
            self.board.close()
            PHASES.write(self.run_dir)  # where this process's time went: timings.json
            print(PHASES.line(), flush=True)
        target = getattr(self.config, f"target_{target_key}")
        if target and not final[target_key] <= target:
            flag = f"--target-{target_key}"
            if main:
                print(
                    f"error: test {target_key} {final[target_key]:.4f} is above {flag} {target}",
                    file=sys.stderr,
                )
            raise SystemExit(1)
        return final

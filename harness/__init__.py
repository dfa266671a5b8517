"""The training harness around the engine: data sets and loaders, an opened run, the fit loop and its
periodic actions, run directories, checkpoint rotation and resume, configs and the CLI, data-parallel
ranks. Imports engine only."""

from harness.config import Config, RunConfig, UsageError, option, parse_config
from harness.data import DataError, Dataset, load_dataset, load_fashion_mnist, load_mnist, to_unit
from harness.device import resolve_device
from harness.evaluator import Evaluator
from harness.fit import LoopOptions, fit, steps
from harness.guard import main_guard
from harness.loader import TEST_SEED, Loader, eval_batches, evaluate_mean, fixed_images
from harness.periodic import Interrupted, NonFiniteError
from harness.run import RunContext, open_run
from harness.rundir import read_metrics, resume_state, write_checkpoint
from harness.splits import held_out_split, load_splits, split_off
from harness.timing import Throttled
from harness.train import finish, train
from harness.world import World, init_world

__all__ = [
    "Config",
    "RunConfig",
    "UsageError",
    "option",
    "parse_config",
    "DataError",
    "Dataset",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "to_unit",
    "resolve_device",
    "Evaluator",
    "Interrupted",
    "LoopOptions",
    "NonFiniteError",
    "fit",
    "steps",
    "main_guard",
    "TEST_SEED",
    "Loader",
    "eval_batches",
    "evaluate_mean",
    "fixed_images",
    "RunContext",
    "open_run",
    "read_metrics",
    "resume_state",
    "write_checkpoint",
    "held_out_split",
    "load_splits",
    "split_off",
    "Throttled",
    "finish",
    "train",
    "World",
    "init_world",
    "load_image_folder",
]


def __getattr__(name):  # torchvision's image codecs load only when an image folder is used
    if name == "load_image_folder":
        from harness.imagefolder import load_image_folder

        return load_image_folder
    raise AttributeError(f"module 'harness' has no attribute {name!r}")

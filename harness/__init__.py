"""The training harness around the engine: data sets and loaders, the fit loop, run directories,
checkpoint rotation and resume, configs and the CLI, data-parallel ranks. Imports engine only."""

from harness.config import Config, RunConfig, UsageError, option, parse_config
from harness.data import DataError, Dataset, load_dataset, load_fashion_mnist, load_mnist, to_unit
from harness.fit import Interrupted, LoopOptions, NonFiniteError, fit
from harness.loader import Loader, eval_batches, evaluate_mean, fixed_images
from harness.run import Run, main_guard, resolve_device
from harness.rundir import read_metrics, resume_state, write_checkpoint
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
    "Interrupted",
    "LoopOptions",
    "NonFiniteError",
    "fit",
    "Loader",
    "eval_batches",
    "evaluate_mean",
    "fixed_images",
    "read_metrics",
    "resume_state",
    "write_checkpoint",
    "Run",
    "main_guard",
    "resolve_device",
    "World",
    "init_world",
    "load_image_folder",
]


def __getattr__(name):  # torchvision's image codecs load only when an image folder is used
    if name == "load_image_folder":
        from harness.imagefolder import load_image_folder

        return load_image_folder
    raise AttributeError(f"module 'harness' has no attribute {name!r}")

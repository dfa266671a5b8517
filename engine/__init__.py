"""purestep engine: pure train steps over explicit state, functional optimizers, AMP, data, checkpoints."""

from engine.amp import PRECISIONS, ScalerConfig, autocast, scaler_init, scaler_update, unscale
from engine.checkpoint import (
    CheckpointError,
    CorruptCheckpoint,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from engine.checkpoints import write_checkpoint
from engine.data import DataError, Dataset, load_dataset, load_fashion_mnist, load_mnist
from engine.distributed import World, init_world, mean_over_ranks
from engine.functional import call_module, load_into
from engine.gan import GANState, init_gan_state, make_gan_step
from engine.imagefolder import load_image_folder
from engine.loader import Loader, eval_batches
from engine.loop import NonFiniteError, fit, read_metrics, resume_state
from engine.optim import Optimizer, adam, adamw, sgd
from engine.schedules import constant, cosine, linear_warmup
from engine.state import Aux, TrainState, clone_state, init_state
from engine.step import make_eval_step, make_train_step

__all__ = [
    "PRECISIONS",
    "ScalerConfig",
    "autocast",
    "scaler_init",
    "scaler_update",
    "unscale",
    "CheckpointError",
    "CorruptCheckpoint",
    "write_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "DataError",
    "Dataset",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "World",
    "init_world",
    "mean_over_ranks",
    "load_image_folder",
    "call_module",
    "load_into",
    "GANState",
    "init_gan_state",
    "make_gan_step",
    "Loader",
    "eval_batches",
    "NonFiniteError",
    "fit",
    "read_metrics",
    "resume_state",
    "Optimizer",
    "adam",
    "adamw",
    "sgd",
    "constant",
    "cosine",
    "linear_warmup",
    "Aux",
    "TrainState",
    "clone_state",
    "init_state",
    "make_eval_step",
    "make_train_step",
]

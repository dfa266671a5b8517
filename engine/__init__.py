"""purestep's core: pure train steps over explicit state, functional optimizers, AMP, in-step
collectives and the checkpoint format. It knows no model, metric name, CLI flag or run directory:
the harness (data, loops, runs) and the evaluation (FID, plots, reports) are packages of their own."""

from engine.amp import PRECISIONS, ScalerConfig, autocast, scaler_init, scaler_update, unscale
from engine.cache import UntrustedEntry, cache_key, fingerprint, read_signed
from engine.checkpoint import (
    FORMAT,
    CheckpointError,
    CorruptCheckpoint,
    WriteError,
    atomic_write,
    checkpoint_digest,
    fsync_dir,
    load_checkpoint,
    load_weights,
    read_metadata,
    save_checkpoint,
    save_weights,
    verify_checkpoint,
)
from engine.collectives import mean_over_ranks
from engine.functional import call_module, load_into
from engine.gan import GANState, init_gan_state, make_gan_step
from engine.optim import Optimizer, adam, adamw, flat, sgd, with_hyperparams
from engine.schedules import constant, cosine, linear_warmup
from engine.state import (
    Aux,
    TrainState,
    clone_state,
    flatten_state,
    init_state,
    stack_states,
    tree_map,
    unflatten_state,
    unstack_state,
)
from engine.step import (
    COMPILE_MODES,
    StepOptions,
    compile_mode,
    compile_step,
    make_eval_step,
    make_pure_train_step,
    make_pure_update,
    make_train_step,
    make_vmapped_train_step,
)

__all__ = [
    # state
    "TrainState",
    "Aux",
    "init_state",
    "clone_state",
    "tree_map",
    "flatten_state",
    "unflatten_state",
    "stack_states",
    "unstack_state",
    "call_module",
    "load_into",
    # optimizers and schedules
    "Optimizer",
    "adam",
    "flat",
    "adamw",
    "sgd",
    "with_hyperparams",
    "constant",
    "cosine",
    "linear_warmup",
    # precision
    "PRECISIONS",
    "ScalerConfig",
    "autocast",
    "scaler_init",
    "scaler_update",
    "unscale",
    # steps
    "StepOptions",
    "COMPILE_MODES",
    "compile_mode",
    "make_train_step",
    "make_pure_train_step",
    "make_pure_update",
    "make_vmapped_train_step",
    "make_eval_step",
    "compile_step",
    "GANState",
    "init_gan_state",
    "make_gan_step",
    "mean_over_ranks",
    # checkpoints
    "save_checkpoint",
    "verify_checkpoint",
    "checkpoint_digest",
    # the compiled-step cache's trust
    "UntrustedEntry",
    "cache_key",
    "fingerprint",
    "read_signed",
    "load_checkpoint",
    "load_weights",
    "read_metadata",
    "save_weights",
    "atomic_write",
    "fsync_dir",
    "FORMAT",
    "CheckpointError",
    "CorruptCheckpoint",
    "WriteError",
]

"""Where a run's compiled step is kept on disk: a file named by everything the compiled code depends on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

# flags that only steer the loop around the step and the scoring, never the compiled code
LOOP_ONLY = {"run_dir", "resume", "progress", "keep", "checkpoint_every", "download", "seed", "compile_cache",
             "max_steps", "tensorboard", "eval_samples", "probe_every", "probe_samples"}  # fmt: skip
COMPILED_PACKAGES = ("engine", "losses", "models")  # the code a step is traced from, beside the entry point


def _project_sources(entry_point: str | None) -> list[Path]:
    """The source files of the packages a step is built from, and the entry point's own file (a copied
    experiment anywhere on disk counts as much as one in experiments/)."""
    root = Path(__file__).resolve().parent.parent
    files = [f for package in COMPILED_PACKAGES for f in sorted((root / package).glob("*.py"))]
    return files + ([Path(entry_point)] if entry_point and Path(entry_point).is_file() else [])


def step_cache_path(cfg, experiment: str, world_size: int, device, name: str = "step") -> Path | None:
    """The file for a run's compiled `name` step (engine.compile_step's cache), or None
    (--no-compile-cache, or PURESTEP_CACHE=off). Its name hashes the experiment and every flag but
    those that only steer the loop, the data-parallel world size, the device, torch and Python, and
    the source of the engine, losses, models and of the config's own module: any change compiles
    afresh."""
    where = os.environ.get("PURESTEP_CACHE", "")
    if not cfg.compile_cache or where == "off":
        return None
    flags = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in LOOP_ONLY and not k.startswith("target")
    }
    salt = [experiment, name, flags, world_size, str(device), torch.__version__, sys.version]
    h = hashlib.sha256(json.dumps(salt, sort_keys=True, default=str).encode())
    entry_point = getattr(sys.modules.get(type(cfg).__module__), "__file__", None)
    for source in _project_sources(entry_point):
        h.update(source.read_bytes())
    base = Path(where or Path.home() / ".cache" / "purestep")
    return base / "steps" / f"{experiment}-{name}-{h.hexdigest()[:16]}.aot"

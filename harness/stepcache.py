"""Where a run's compiled steps are kept on disk: files named by the code they are traced from (here)
and by what each step closes over (engine.compile_step adds its fingerprint to the name)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

COMPILED_PACKAGES = ("engine", "losses", "models")  # the code a step is traced from, beside the entry point


def _project_sources(entry_point: str | None) -> list[Path]:
    """The source files of the packages a step is built from, and the entry point's own file (a copied
    experiment anywhere on disk counts as much as one in experiments/)."""
    root = Path(__file__).resolve().parent.parent
    files = [f for package in COMPILED_PACKAGES for f in sorted((root / package).glob("*.py"))]
    return files + ([Path(entry_point)] if entry_point and Path(entry_point).is_file() else [])


def cache_dir(kind: str) -> Path | None:
    """$PURESTEP_CACHE/kind (default ~/.cache/purestep/kind), or None where PURESTEP_CACHE=off."""
    where = os.environ.get("PURESTEP_CACHE", "")
    return None if where == "off" else Path(where or Path.home() / ".cache" / "purestep") / kind


def machine_salt(device) -> list:
    """What compiled or computed results depend on besides the code: the device (a GPU's compute
    capability, the CPU's vector extensions the kernels were built for) and torch's version."""
    device = torch.device(device)
    chip = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return [str(device), chip, torch.backends.cpu.get_cpu_capability(), torch.__version__]


def step_cache_path(cfg, experiment: str, world_size: int, device) -> Path | None:
    """The base name of a run's compiled-step files (engine.compile_step's cache), or None
    (--no-compile-cache, or PURESTEP_CACHE=off). Its name hashes the experiment, the data-parallel
    world size, the device (a GPU's compute capability, the CPU's vector extensions), torch and
    Python, and the source of the engine, losses, models and of the config's own module;
    engine.compile_step appends the step's fingerprint (the values it closes over: learning rate,
    shapes, precision, ...), so a flag that never reaches the step (the seed, the epochs without a
    schedule, the data set of the same shape) reuses the compiled step, and any change that does
    reach it compiles afresh."""
    steps = cache_dir("steps")
    if not cfg.compile_cache or steps is None:
        return None
    salt = [experiment, world_size, *machine_salt(device), sys.version]
    h = hashlib.sha256(json.dumps(salt, sort_keys=True, default=str).encode())
    entry_point = getattr(sys.modules.get(type(cfg).__module__), "__file__", None)
    for source in _project_sources(entry_point):
        h.update(source.read_bytes())
    return steps / f"{experiment}-step-{h.hexdigest()[:16]}.aot"

"""Checkpoints: the whole state in one safetensors file, config and versions in its metadata."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import safetensors
import torch
from safetensors.torch import load_file, save_file

from engine.state import flatten_state, unflatten_state

FORMAT = "purestep-checkpoint-1"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or does not fit the model; the message is one line."""


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "python": platform.python_version(), "format": FORMAT}


def atomic_write(path: Path, write) -> None:
    """write(tmp_path), fsync, then rename over `path`: a reader sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path, state, extra=None, config=None) -> None:
    """Write `state` (any nested NamedTuple/dict of tensors) plus `extra` tensors (loader cursor, RNG)."""
    flat = flatten_state(state)
    flat.update({f"extra/{k}": v for k, v in flatten_state(extra or {}).items()})
    # safetensors wants contiguous tensors that share no storage; CPU copies also free the device.
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in flat.items()}
    meta = {"format": FORMAT, "config": json.dumps(config or {}), "versions": json.dumps(versions())}
    atomic_write(Path(path), lambda tmp: save_file(flat, str(tmp), metadata=meta))


def read_metadata(path) -> dict:
    """The checkpoint's config and versions, without loading its tensors."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a purestep checkpoint (format {meta.get('format')!r})")
    return {"config": json.loads(meta["config"]), "versions": json.loads(meta["versions"])}


def load_checkpoint(path, template, extra_template=None, device="cpu"):
    """Load (state, extra, metadata) shaped like `template`; a mismatch is a CheckpointError."""
    meta = read_metadata(path)
    flat = load_file(str(path), device=str(device))
    expected = flatten_state(template)
    for key, ref in expected.items():
        got = flat.get(key)
        if got is None or got.shape != ref.shape or got.dtype != ref.dtype:
            found = "missing" if got is None else f"{tuple(got.shape)} {got.dtype}"
            raise CheckpointError(
                f"{path} does not fit this model: {key} is {found}, expected {tuple(ref.shape)} {ref.dtype}"
            )
    state = unflatten_state(flat, template)
    extra = {k[len("extra/") :]: v for k, v in flat.items() if k.startswith("extra/")}
    if extra_template is not None:
        extra = unflatten_state(extra, extra_template)
    return state, extra, meta


def save_weights(path, params: dict, buffers: dict) -> None:
    """Params and buffers under their plain state_dict names: loads with load_state_dict(strict=True)."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in {**params, **buffers}.items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={"format": "weights"}))

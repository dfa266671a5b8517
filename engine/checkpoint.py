"""Checkpoints: the whole state in one safetensors file; config, versions and a checksum in its metadata."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import stat
from pathlib import Path

import safetensors
import torch
from safetensors.torch import load_file, save_file

from engine.state import flatten_state, unflatten_state

FORMAT = "purestep-checkpoint-1"  # the format and its version: version 1 requires the sha256
MAX_METADATA = 1 << 20  # bytes of metadata text; ours is a few KB


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or does not fit the model; the message is one line."""


class CorruptCheckpoint(CheckpointError):
    """The file is truncated, not ours, or its tensors do not match its checksum: an older one may do."""


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "python": platform.python_version(), "format": FORMAT}


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a crash after it cannot bring the old entry back)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class WriteError(OSError):
    """A file could not be written (disk full, read-only, permission); the message is one line."""


def atomic_write(path: Path, write) -> None:
    """write(tmp_path), fsync, then rename over `path`: a reader sees the old file or the new one.
    Any failure is a WriteError naming `path`; the cleanup never hides it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except Exception as e:  # OSError, or safetensors' own error for a full disk
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise WriteError(f"cannot write {path}: {reason}") from None


def checkpoint_digest(flat: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """sha256 over the metadata (but the digest) and every CPU tensor's name, dtype, shape and bytes,
    in sorted name order: any changed byte of the file changes it (or makes it unparseable)."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(flat):
        t = flat[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, no copy
    return h.hexdigest()


def save_checkpoint(path, state, extra=None, config=None) -> None:
    """Write `state` (any nested NamedTuple/dict of tensors) plus `extra` tensors (loader cursor, RNG)."""
    flat = flatten_state(state)
    flat.update({f"extra/{k}": v for k, v in flatten_state(extra or {}).items()})
    # safetensors wants contiguous tensors that share no storage; CPU copies also free the device.
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in flat.items()}
    meta = {
        "format": FORMAT,
        "config": json.dumps(config or {}),
        "versions": json.dumps(versions()),
    }
    meta["sha256"] = checkpoint_digest(flat, meta)
    atomic_write(Path(path), lambda tmp: save_file(flat, str(tmp), metadata=meta))


def _raw_metadata(path) -> dict[str, str]:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open forever
            raise CorruptCheckpoint(f"{path} is not a regular file")
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except CorruptCheckpoint:
        raise
    except Exception as e:  # truncated, a pickle, random bytes: safetensors parses no code, only a header
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptCheckpoint(f"{path} is not a readable safetensors checkpoint ({reason})") from None
    if sum(len(v) for v in meta.values()) > MAX_METADATA:
        raise CorruptCheckpoint(f"{path} has metadata over {MAX_METADATA:,} bytes")
    return meta


def read_metadata(path) -> dict:
    """The checkpoint's config, versions and checksum, without loading its tensors."""
    return _parse_metadata(path, _raw_metadata(path))


def _parse_metadata(path, meta: dict[str, str]) -> dict:
    if meta.get("format") != FORMAT:
        raise CorruptCheckpoint(f"{path} is not a purestep checkpoint (format {meta.get('format')!r})")
    try:
        config, vers = json.loads(meta["config"]), json.loads(meta["versions"])
    except (KeyError, ValueError, RecursionError):  # RecursionError: nested too deep to be ours
        raise CorruptCheckpoint(f"{path} has damaged metadata (config/versions)") from None
    if not isinstance(config, dict) or not isinstance(vers, dict):
        raise CorruptCheckpoint(f"{path} has damaged metadata (config/versions are not objects)")
    if "sha256" not in meta:  # every checkpoint of this format carries one: without it, nothing is verified
        raise CorruptCheckpoint(f"{path} has no checksum in its metadata")
    return {"config": config, "versions": vers, "sha256": meta["sha256"]}


def verify_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(its tensors on the CPU, its metadata) once the file at path is read whole and matches its
    sha256; a damaged file raises CorruptCheckpoint."""
    raw = _raw_metadata(path)
    meta = _parse_metadata(path, raw)
    return _verified_tensors(path, raw), meta


def _verified_tensors(path, raw: dict[str, str]) -> dict[str, torch.Tensor]:
    """The file's tensors on the CPU, once they and its metadata `raw` match the sha256 in it."""
    try:
        flat = load_file(str(path), device="cpu")
    except Exception as e:
        raise CorruptCheckpoint(f"{path} is unreadable ({type(e).__name__}: {e})") from None
    if checkpoint_digest(flat, raw) != raw["sha256"]:
        raise CorruptCheckpoint(f"{path} is corrupt: its contents do not match the checksum in its metadata")
    return flat


def load_checkpoint(path, template, extra_template=None, device="cpu"):
    """Load (state, extra, metadata) shaped like `template`, the state on `device` and the extra
    tensors on the CPU; verifies the checksum first.

    A damaged file raises CorruptCheckpoint, a file of another model or shape CheckpointError."""
    flat, meta = verify_checkpoint(path)
    expected = flatten_state(template)
    for key, ref in expected.items():
        got = flat.get(key)
        if got is None or got.shape != ref.shape or got.dtype != ref.dtype:
            found = "missing" if got is None else f"{tuple(got.shape)} {got.dtype}"
            raise CheckpointError(
                f"{path} does not fit this model: {key} is {found}, expected {tuple(ref.shape)} {ref.dtype}"
            )
    # each tensor in its template's layout (a channels-last weight stays so): same strides, same kernels
    loaded = {
        k: torch.empty_like(expected[k], device=device).copy_(v) for k, v in flat.items() if k in expected
    }
    state = unflatten_state(loaded, template)
    # extras stay on the CPU: a generator's state (Generator.set_state) is a CPU byte tensor on any device
    extra = {k[len("extra/") :]: v for k, v in flat.items() if k.startswith("extra/")}
    if extra_template is not None:
        extra = unflatten_state(extra, extra_template)
    return state, extra, meta


def save_weights(path, params: dict, buffers: dict | None = None, metadata: dict | None = None) -> None:
    """Params and buffers under their plain state_dict names (loads with load_state_dict(strict=True)),
    with `metadata` strings and, as a checkpoint, the sha256 of it all."""
    both = {**params, **(buffers or {})}
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in both.items()}
    meta = {**(metadata or {}), "format": "weights"}
    meta["sha256"] = checkpoint_digest(tensors, meta)
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_weights(path, device="cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a save_weights file, read whole and checked against its sha256: a file
    that is not one, damaged or bit-flipped is a CorruptCheckpoint."""
    raw = _raw_metadata(path)
    if raw.get("format") != "weights" or "sha256" not in raw:
        raise CorruptCheckpoint(f"{path} is not a purestep weights file with a checksum")
    return {k: v.to(device) for k, v in _verified_tensors(path, raw).items()}, raw

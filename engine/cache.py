"""Trust in the compiled-step cache: torch loads an artifact by unpickling it, so an entry is read only
if this user wrote it. Each entry carries an HMAC-SHA256 (entry.sig) under a per-user key kept in the
cache folder (mode 0600); an entry of another owner, writable by others, or with a wrong or missing
signature is refused before torch sees a byte of it."""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import types
from pathlib import Path

import torch

KEY = "key"  # beside the entries
MAX_ENTRY = 1 << 30  # bytes of one compiled artifact


class UntrustedEntry(Exception):
    """A cache entry (or its key) this user cannot have written: not loaded; the message says why."""


def _read_own(path: Path, limit: int) -> bytes:
    """The bytes of a regular file this user owns and no one else may write (no final symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedEntry(f"{path} is not a regular file")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise UntrustedEntry(f"{path} is owned by another user or writable by others")
        if st.st_size > limit:
            raise UntrustedEntry(f"{path} holds more than {limit:,} bytes")
        return f.read(limit)


def cache_key(folder: Path) -> bytes:
    """This user's signing key for the cache in `folder`, created on first use (0600, written whole
    before it is linked into place, so a concurrent first run reads the same key or makes none)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / KEY
    if not os.path.lexists(path):
        tmp = folder / f".{KEY}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic: the first run's key wins
        tmp.unlink()
    key = _read_own(path, 64)
    if os.stat(path, follow_symlinks=False).st_mode & 0o077 or len(key) != 32:
        raise UntrustedEntry(f"{path} is readable by others or damaged: the cache is not used")
    return key


def _signature(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).hexdigest().encode()


def read_signed(path: Path) -> bytes | None:
    """The entry's bytes once its owner, mode and signature check out; None if there is no entry.
    An entry that fails is an UntrustedEntry (the caller removes it)."""
    if not os.path.lexists(path):
        return None
    key = cache_key(path.parent)
    data = _read_own(path, MAX_ENTRY)
    try:
        signature = _read_own(_sig_path(path), 128)
    except FileNotFoundError:
        raise UntrustedEntry(f"{path} has no signature") from None
    if not hmac.compare_digest(signature, _signature(key, data)):
        raise UntrustedEntry(f"{path} does not match its signature")
    return data


def sign(path: Path) -> None:
    """Sign the entry just written at path (its bytes read back under the same checks)."""
    data = _read_own(path, MAX_ENTRY)
    sig, tmp = _sig_path(path), path.with_name(f".{path.name}.sig.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_signature(cache_key(path.parent), data))
    os.replace(tmp, sig)


def remove_entry(path: Path) -> None:
    """Delete an entry and its signature (what cannot be deleted stays refused at every load)."""
    for p in (path, _sig_path(path)):
        with contextlib.suppress(OSError):
            p.unlink()


def _sig_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def fingerprint(fn, inputs=()) -> str:
    """16 hex digits naming what a traced step bakes in, reached from fn through closures, defaults,
    bound objects, containers and attributes: each function's code, every value it closes over, the
    modules' classes and their instance and class attributes, the layouts of their parameters and
    buffers and of the inputs (their values come in at each call, they are not constants), any other
    tensor whole, and the torch settings that change lowering (inductor's and AOTAutograd's config
    included). Globals are not followed: the caller's file name covers the source (harness.stepcache
    hashes it). Two builds of the same step give the same digest, whatever flags around it differ;
    a value it cannot read raises (the caller compiles without a file)."""
    h, index, alive = hashlib.sha256(), {}, []

    def put(*parts):
        h.update(repr(parts).encode())

    def visit(obj, values=True):  # values=False: a tensor's layout only (weights, inputs)
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
            return put(type(obj).__name__, obj)
        if isinstance(obj, os.PathLike):  # by its text (a Path caches parts of itself lazily)
            return put("path", os.fspath(obj))
        if (id(obj), values) in index:  # shared or cyclic: a back-reference by first-visit order
            return put("ref", index[id(obj), values])
        index[id(obj), values] = len(index)
        alive.append(obj)  # no id reused by a later object while this runs
        kind = type(obj)
        put(kind.__module__, kind.__qualname__)
        if isinstance(obj, torch.Tensor):
            put(tuple(obj.shape), tuple(obj.stride()), obj.dtype, obj.device.type, obj.requires_grad)
            if values:
                h.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif kind.__module__ == "numpy" and hasattr(obj, "tobytes"):
            put(getattr(obj, "shape", ()), str(getattr(obj, "dtype", ""))), h.update(obj.tobytes())
        elif isinstance(obj, types.CodeType):
            put(obj.co_code, obj.co_names, obj.co_varnames)
            for const in obj.co_consts:
                visit(const)
        elif isinstance(obj, types.FunctionType):
            put(obj.__module__, obj.__qualname__)
            for part in (obj.__code__, obj.__defaults__, obj.__kwdefaults__):
                visit(part)
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents)
                except ValueError:  # an empty cell (a name not yet bound)
                    put("empty")
        elif isinstance(obj, types.MethodType | types.BuiltinMethodType):
            put(getattr(obj, "__qualname__", "")), visit(getattr(obj, "__func__", None)), visit(obj.__self__)
        elif isinstance(obj, functools.partial):
            visit(obj.func), visit(obj.args), visit(obj.keywords)
        elif isinstance(obj, enum.Enum):
            put(obj.name), visit(obj.value)
        elif isinstance(obj, type):
            put(obj.__module__, obj.__qualname__), visit(_class_values(obj))
        elif isinstance(obj, types.ModuleType):
            put(obj.__name__)
        elif isinstance(obj, torch.nn.Module):
            visit(_class_values(kind))
            for key, value in vars(obj).items():
                put(key), visit(value, values=key not in ("_parameters", "_buffers"))
        elif isinstance(obj, dict):
            for key, value in obj.items():
                visit(key), visit(value, values)
        elif isinstance(obj, list | tuple):
            for item in obj:
                visit(item, values)
        elif isinstance(obj, set | frozenset):
            put(sorted(_text(item) for item in obj))
        elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__"):
            visit(_class_values(kind))
            visit(getattr(obj, "__dict__", {}), values)
            visit([getattr(obj, name, None) for name in _slots(kind)], values)
        else:
            put(_text(obj))

    visit(fn), visit(inputs, values=False)
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config  # loaded by any compilation anyway

    # the configs torch's own graph caches key on (dynamo's steers tracing and checks, not the code)
    settings = [functorch_config.save_config_portable(), inductor_config.save_config_portable()]
    put(torch.__version__, torch.get_float32_matmul_precision(), torch.get_default_dtype(),
        torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic)  # fmt: skip
    put(_text(json.dumps(settings, sort_keys=True, default=_unordered)))
    return h.hexdigest()[:16]


def _text(obj) -> str:
    """repr without memory addresses (they differ from process to process)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", obj if isinstance(obj, str) else repr(obj))


def _unordered(obj):
    """json's fallback: a set in a fixed order, anything else by its repr."""
    return sorted(map(_text, obj)) if isinstance(obj, set | frozenset) else _text(obj)


def _class_values(cls: type) -> dict:
    """The plain values of a class and its bases (what `self.x` reads when no instance has x), by
    name; methods, descriptors and dunders are left to the source hash."""
    found = {}
    for base in reversed(cls.__mro__[:-1]):  # object's own are torch's and Python's
        for name, value in vars(base).items():
            skip = name.startswith("__") or callable(value) or hasattr(value, "__get__")
            if not skip:
                found[name] = value
    return found


def _slots(cls: type) -> list[str]:
    """Every __slots__ name of a class and its bases, as getattr needs it (private names mangled)."""
    names = []
    for base in cls.__mro__:
        slots = getattr(base, "__slots__", ())
        for name in [slots] if isinstance(slots, str) else slots:
            private = name.startswith("__") and not name.endswith("__")
            names.append(f"_{base.__name__.lstrip('_')}{name}" if private else name)
    return names

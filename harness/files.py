"""The one way the project reads back a file it or a user wrote: a regular file (never a FIFO, a device
or, as the last part of the path, a symlink), at most a bounded size, parsed into one-line errors."""

from __future__ import annotations

import json
import math
import os
import stat

from engine import CheckpointError

MAX_TEXT = 64 << 20  # bytes of a JSON or JSON-lines file: a long run's steps.jsonl is a few MB


class FileError(CheckpointError):
    """A file read back is missing, not a regular file, too large or not what it should hold: one line."""


def open_regular(path, flags: int = os.O_RDONLY, mode: int = 0o644, follow: bool = False) -> int:
    """A descriptor of the regular file at path, opened without blocking on a FIFO (the descriptor is
    made blocking again) and, unless `follow` (data a user links in), without following a final
    symlink; anything else is a FileError."""
    nofollow = 0 if follow else os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | nofollow | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == 40:  # ELOOP: the last component is a symlink
            raise FileError(f"{path} is a symbolic link: refused (a run's files are never links)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_text(path) -> str:
    """The whole regular file at path as UTF-8 text, refused above MAX_TEXT bytes."""
    with os.fdopen(open_regular(path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_TEXT:
            raise FileError(f"{path} holds {size:,} bytes, more than the {MAX_TEXT:,} expected")
        data = f.read(MAX_TEXT)
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise FileError(f"{path} is not UTF-8 text") from None


def parse_json(text: str, where) -> object:
    """JSON text as Python values; damaged, NaN-holding or absurdly nested text is a FileError."""

    def no_constant(name):
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise FileError(f"{where} is nested too deeply to be a purestep file") from None
    except ValueError as e:
        raise FileError(f"{where} is not valid JSON ({str(e).splitlines()[0]})") from None


def read_json(path) -> dict:
    """The JSON object in the file at path (any other JSON value is a FileError)."""
    value = parse_json(read_text(path), path)
    if not isinstance(value, dict):
        raise FileError(f"{path} holds a JSON {type(value).__name__}, not the dict expected")
    return value


def json_text(value, indent: int | None = 2) -> str:
    """value as strict JSON text, one line per record without indent; a NaN or an infinity becomes
    null (the token NaN is not JSON: no other reader could parse the file)."""
    return json.dumps(finite(value), indent=indent, allow_nan=False) + "\n"


def finite(value):
    """value with every NaN or infinity inside it (dicts, lists) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def append_line(path, line: str) -> None:
    """One line at the end of the regular file at path (created if missing; a link refused)."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a") as f:
        f.write(line if line.endswith("\n") else line + "\n")

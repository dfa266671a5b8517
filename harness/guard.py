"""Every entry point's one error path: a user-facing failure is one line on stderr and an exit code."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import warnings

from engine import CheckpointError, WriteError
from harness.config import UsageError
from harness.data import DataError
from harness.periodic import NonFiniteError


def main_guard(main):
    """Every entry point's one error path: user-facing failures become one line on stderr; exit 2
    for bad input (1 for a missed target), 3 for a non-finite loss or gradient, 130 for a second
    Ctrl-C; warnings are one line too, and torch's CPU-only "No CUDA runtime" notice is silenced."""

    @functools.wraps(main)
    def wrapped(argv=None):
        if os.environ.get("PURESTEP_DEBUG"):  # developers: the full traceback, no translation
            return main(argv)
        old_term = signal.signal(signal.SIGTERM, _terminated)  # before the loop takes it over
        # torch.compile on a CPU-only machine logs "No CUDA runtime is found" from cpp_extension on
        # every run: nothing a user can act on (its errors still show)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                return main(argv)
        except (UsageError, DataError, CheckpointError, WriteError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as e:  # any other file the run touches: one line, the path and the reason
            print(f"error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
            raise SystemExit(2) from None
        except _Terminated:
            line = "error: terminated (SIGTERM; the run directory keeps its last complete checkpoint, if any)"
            print(line, file=sys.stderr)
            raise SystemExit(143) from None
        except NonFiniteError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(3) from None
        except KeyboardInterrupt:  # before training starts, or a second Ctrl-C while checkpointing
            line = "error: interrupted (the run directory keeps its last complete checkpoint, if any)"
            print(line, file=sys.stderr)
            raise SystemExit(130) from None

        finally:
            signal.signal(signal.SIGTERM, old_term)

    return wrapped


class _Terminated(BaseException):
    """SIGTERM outside the training loop (whose own handler checkpoints first)."""


def _terminated(signum, frame):
    raise _Terminated


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)

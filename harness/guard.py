"""Every entry point's one error path: a user-facing failure is one line on stderr and an exit code."""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import sys
import warnings

from engine import CheckpointError, WriteError
from harness.config import UsageError
from harness.data import DataError
from harness.periodic import NonFiniteError, StopFlag
from harness.world import leave_together


def main_guard(main):
    """Every entry point's one error path: user-facing failures become one line on stderr; exit 2
    for bad input (1 for a missed target), 3 for a non-finite loss or gradient, 130 for a second
    Ctrl-C; warnings are one line too, and torch's CPU-only "No CUDA runtime" notice is silenced."""

    @functools.wraps(main)
    def wrapped(argv=None):
        if os.environ.get("PURESTEP_DEBUG"):  # developers: the full traceback, no translation
            return main(argv)
        old_term = signal.signal(signal.SIGTERM, _terminated)  # before the loop takes it over
        old_hook = sys.unraisablehook
        sys.unraisablehook = functools.partial(_quiet_unraisable, old_hook)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # experiments' start-up handler ends here
        # torch.compile on a CPU-only machine logs "No CUDA runtime is found" from cpp_extension on
        # every run: nothing a user can act on (its errors still show)
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        try:
            StopFlag.pending = None
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning
                result = main(argv)
            if StopFlag.pending is not None:  # a SIGTERM whose exception a library swallowed
                raise _Terminated
            leave_together()
            return result
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
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError too
            if not _out_of_memory(e):
                raise
            line = "error: out of memory: the sizes asked for (--batch-size, --latent-dim, --width, ...) "
            print(line + f"do not fit this machine ({_first_line(e)})", file=sys.stderr)
            raise SystemExit(2) from None
        except NonFiniteError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(3) from None
        except KeyboardInterrupt:  # before training starts, or a second Ctrl-C while checkpointing
            line = "error: interrupted (the run directory keeps its last complete checkpoint, if any)"
            print(line, file=sys.stderr)
            raise SystemExit(130) from None

        finally:
            signal.signal(signal.SIGTERM, old_term)
            sys.unraisablehook = old_hook
            if argv is None:  # a command line's run, about to exit: its objects need no collecting
                gc.freeze()  # (the interpreter's last collection would walk all of torch: ~1 s)

    return wrapped


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text


def _first_line(e: BaseException) -> str:
    """The allocator's own words, without its C++ source location."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text[text.find("DefaultCPUAllocator") :] if "DefaultCPUAllocator" in text else text[:200]


class _Terminated(BaseException):
    """SIGTERM outside the training loop (whose own handler checkpoints first)."""


def _terminated(signum, frame):
    """Raise _Terminated, and remember the signal: where the exception is swallowed (a library's
    `except BaseException`, or a finalizer the signal landed in, which Python only prints) the
    training loop stops after its first step (StopFlag.pending) and the command still exits 143."""
    StopFlag.pending = signum
    raise _Terminated


def _quiet_unraisable(hook, unraisable):
    """A SIGTERM that landed in a finalizer (an import lock's weakref callback) is swallowed there and
    would print as "Exception ignored in ... Traceback"; StopFlag.pending still stops the command with
    its one line, so say nothing here. Every other unraisable exception goes to the previous hook."""
    if not isinstance(unraisable.exc_value, _Terminated):
        hook(unraisable)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)

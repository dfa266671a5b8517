"""Entry points a user copies: `python -m experiments.<name>`."""

import signal
import sys


def _interrupted_while_starting(signum, frame):
    """Ctrl-C while the entry point still imports torch: one line, not a traceback (main_guard takes
    over from there)."""
    print("error: interrupted (while starting up; nothing was written)", file=sys.stderr)
    raise SystemExit(130)


if sys.argv[:1] == ["-m"]:  # `python -m experiments.x` is importing this package: a command is starting
    signal.signal(signal.SIGINT, _interrupted_while_starting)

"""Progress bars on a terminal only: a run in the background (`nohup ... > log`) gets plain lines."""

from __future__ import annotations

import sys

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether stderr (where tqdm draws) is a terminal someone watches."""
    return sys.stderr.isatty()


def bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """tqdm with an ETA, drawn only when `enabled` and stderr is a terminal (a disabled bar still
    iterates, silently)."""
    return tqdm(iterable, disable=not (enabled and on_terminal()), dynamic_ncols=True, **kwargs)


def say(line: str) -> None:
    """One line to stdout that does not tear a bar being drawn; flushed, so a log shows it at once."""
    if on_terminal():
        tqdm.write(line)
    else:
        print(line, flush=True)

"""Prepare the compiled steps of the default commands on this machine (`make setup` runs it once), so
the first `make train-vae`, `make train-gan`, `make train-ae` and the parity command start from a
warm compile cache: each command runs its first steps into a scratch folder, with exactly its flags
(only flags that never reach the compiled step differ: the run directory, steps, scoring), and the
step it compiles stays in $PURESTEP_CACHE. `python -m experiments.warm [--only vae,gan]`."""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from experiments import ae, gan, vae
from harness import main_guard, option, parse_config
from harness.config import Config

PARITY = ["--arch", "mlp", "--epochs", "10", "--batch-size", "128", "--lr", "1e-3"]  # vs vae/main.py
# name: (entry point, its flags, what only the loop and scoring read: never part of the compiled step)
COMMANDS = {
    "vae": (vae.main, [], ["--max-steps", "1"]),
    "parity": (vae.main, PARITY, ["--max-steps", "1"]),
    "ae": (ae.main, [], ["--max-steps", "1"]),
    "gan": (gan.main, [], ["--max-steps", "2", "--eval-samples", "0", "--probe-every", "0"]),  # both steps
}


@dataclass(frozen=True)
class WarmConfig(Config):
    only: tuple[str, ...] = option(tuple(COMMANDS), "the commands to prepare", tuple(COMMANDS))


@main_guard
def main(argv=None):
    args, _ = parse_config(WarmConfig, argv, "python -m experiments.warm", __doc__)
    with tempfile.TemporaryDirectory(prefix="purestep-warm-") as scratch:
        for name in args.only:
            entry, flags, loop = COMMANDS[name]
            argv = [
                *flags,
                *loop,
                "--run-dir",
                str(Path(scratch) / name),
                "--no-progress",
                "--no-tensorboard",
            ]
            t0 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the scratch run's own lines
                    entry(argv)
            except SystemExit as e:  # main_guard has said why in one line (no data yet, ...)
                if e.code:
                    print(f"warm: {name}: not prepared (exit {e.code})", file=sys.stderr)
                    continue
            what = " ".join(flags) or "defaults"
            print(f"warm: {name} ({what}): compiled step ready, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

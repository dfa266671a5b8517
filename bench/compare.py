"""Compare two saved bench runs case by case: `python -m bench.compare OLD.json NEW.json` (1: regressed)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import NamedTuple

THRESHOLD = 0.10  # a case more than this much slower (in samples/s) is a regression


class CompareError(Exception):
    """A results file is missing or unreadable; the message is one line."""


class Change(NamedTuple):
    name: str  # the test name, e.g. test_throughput[mlp_vae-cpu-fp32-compiled-128]
    old: float  # samples/s
    new: float

    @property
    def change(self) -> float:
        """Relative change of samples/s: -0.15 is 15% slower."""
        return self.new / self.old - 1


def load_rates(path: str) -> dict[str, float]:
    """Test name -> samples/s of every case in a pytest-benchmark JSON written by this suite."""
    try:
        with open(path) as f:
            benchmarks = json.load(f)["benchmarks"]
        return {
            b["name"]: float(b["extra_info"]["samples_per_s"])
            for b in benchmarks
            if "samples_per_s" in b.get("extra_info", {})
        }
    except OSError as e:
        raise CompareError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CompareError(f"{path} is not a bench results JSON ({type(e).__name__}: {e})") from None


def compare(old: dict[str, float], new: dict[str, float]) -> tuple[list[Change], list[str], list[str]]:
    """(changes of the cases in both runs, names only in old, names only in new)."""
    changes = [Change(name, old[name], new[name]) for name in old if name in new]
    return changes, [n for n in old if n not in new], [n for n in new if n not in old]


def regressions(changes: list[Change], threshold: float = THRESHOLD) -> list[Change]:
    return [c for c in changes if c.change < -threshold]


def render(changes, only_old, only_new, threshold: float = THRESHOLD) -> str:
    """A markdown table of old/new samples/s and the change, slower-than-threshold cases flagged."""
    lines = ["| case | old samples/s | new samples/s | change | |", "|---|---|---|---|---|"]
    for c in changes:
        flag = f"SLOWER (> {threshold:.0%})" if c.change < -threshold else ""
        lines.append(f"| {c.name} | {c.old:,.0f} | {c.new:,.0f} | {c.change:+.1%} | {flag} |")
    lines += [f"only in old: {n}" for n in only_old] + [f"only in new: {n}" for n in only_new]
    slow = regressions(changes, threshold)
    lines.append(f"\n{len(slow)} of {len(changes)} cases more than {threshold:.0%} slower")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("old", help="earlier run (e.g. bench/results/previous.json)")
    parser.add_argument("new", help="later run (e.g. bench/results/latest.json)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="slowdown flagged (0.10: 10%%)")
    args = parser.parse_args(argv)
    try:
        old, new = load_rates(args.old), load_rates(args.new)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    changes, only_old, only_new = compare(old, new)
    print(render(changes, only_old, only_new, args.threshold))
    return 1 if regressions(changes, args.threshold) else 0


if __name__ == "__main__":
    sys.exit(main())

"""bench.compare: cases matched by test name, >10% slowdowns flagged, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json

import pytest

from bench.compare import main


def _results(tmp_path, name: str, rates: dict[str, float]) -> str:
    """A pytest-benchmark JSON holding only what compare reads."""
    benchmarks = [{"name": n, "extra_info": {"samples_per_s": r}} for n, r in rates.items()]
    path = tmp_path / name
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return str(path)


def test_small_changes_pass(tmp_path, capsys):
    old = _results(tmp_path, "old.json", {"a": 1000.0, "b": 2000.0})
    new = _results(tmp_path, "new.json", {"a": 910.0, "b": 2600.0})  # -9%, +30%
    assert main([old, new]) == 0
    out = capsys.readouterr().out
    assert "SLOWER" not in out and "-9.0%" in out and "+30.0%" in out


def test_a_case_more_than_10_percent_slower_is_flagged_and_fails(tmp_path, capsys):
    old = _results(tmp_path, "old.json", {"a": 1000.0, "b": 2000.0})
    new = _results(tmp_path, "new.json", {"a": 880.0, "b": 2000.0})  # a: -12%
    assert main([old, new]) == 1
    flagged = [line for line in capsys.readouterr().out.splitlines() if "SLOWER" in line]
    assert len(flagged) == 1 and flagged[0].startswith("| a |")


def test_cases_in_one_run_only_are_listed_not_failed(tmp_path, capsys):
    old = _results(tmp_path, "old.json", {"a": 1000.0, "gone": 5.0})
    new = _results(tmp_path, "new.json", {"a": 1000.0, "added": 5.0})
    assert main([old, new]) == 0
    out = capsys.readouterr().out
    assert "only in old: gone" in out and "only in new: added" in out


def test_threshold_is_configurable(tmp_path):
    old = _results(tmp_path, "old.json", {"a": 1000.0})
    new = _results(tmp_path, "new.json", {"a": 940.0})
    assert main([old, new, "--threshold", "0.05"]) == 1


@pytest.mark.parametrize("content", [None, "not json", '{"no": "benchmarks"}'])
def test_missing_or_unreadable_file_exits_2_with_one_line(tmp_path, capsys, content):
    good = _results(tmp_path, "good.json", {"a": 1.0})
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert main([good, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "bad.json" in err

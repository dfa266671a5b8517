"""Shared fixtures: the data folder, the repository root, and small models for contract tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# no compiled-step cache in ~/.cache (here and in the commands tests launch): a test's run never
# reads or leaves one behind; the cache's own tests name their folders
os.environ["PURESTEP_CACHE"] = "off"
# the real images' classifier outputs (evaluation.fidelity) are shared by the session's processes, in
# a folder of its own: the first command that scores against MNIST's test split embeds it, the rest read it
if "PURESTEP_FEATURES" not in os.environ:  # set once, by the first process (xdist's workers inherit it)
    os.environ["PURESTEP_FEATURES"] = tempfile.mkdtemp(prefix="purestep-features-")
    atexit.register(shutil.rmtree, os.environ["PURESTEP_FEATURES"], ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on the 2 cores: a thread each,
    os.environ["OMP_NUM_THREADS"] = "1"  # in the commands they launch too
    torch.set_num_threads(1)

# module fixtures that train a run for several tests: their tests share one xdist worker, so the run
# is trained once (make test: -n 2 --dist loadgroup)
SHARED_RUNS = ("mlp_gan_run", "short_runs", "reference", "straight_run", "single_run")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """$DATA_DIR (CI: ../shared/data); the tests that use it need the real MNIST files."""
    root = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "data"))
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(), (
        f"MNIST not found under {root}: set DATA_DIR to the folder holding MNIST/raw"
    )
    return root


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip, with the reason, where no usable CUDA device is present; tests of a
    shared trained run go to one worker (xdist_group)."""
    for item in items:
        shared = [name for name in SHARED_RUNS if name in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch, so recompile checks see only their own graphs."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run_cli(module: str, args, data_root, expect: int = 0, timeout: int = 600, cuda: bool = False):
    """Run `python -m module args` from the repository root; assert its exit code. Without cuda=True
    the GPUs are hidden, so `--device auto` (and torchrun's ranks) run on the CPU on any machine."""
    import subprocess
    import sys

    env = {**os.environ, "DATA_DIR": str(data_root)}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def run_main(module: str, args, data_root, expect: int = 2):
    """`python -m module args` in this process: the same main() behind the same guard, for commands
    that must stop at their flags with one line and an exit code, without a new interpreter's ~3 s of
    importing torch (6 s beside a second test worker); run_cli for whatever runs further. Returns
    what run_cli does: .returncode, .stdout, .stderr."""
    import contextlib
    import importlib
    import io
    import subprocess

    out, err, old = io.StringIO(), io.StringIO(), os.environ.get("DATA_DIR")
    os.environ["DATA_DIR"] = str(data_root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                importlib.import_module(module).main([str(a) for a in args])
                code = 0
            except SystemExit as e:
                code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    finally:
        if old is None:
            del os.environ["DATA_DIR"]
        else:
            os.environ["DATA_DIR"] = old
    proc = subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())
    assert code == expect, f"exit {code}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc

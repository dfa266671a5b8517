"""Data-parallel training under torchrun: 2 gloo processes on loopback against one process."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from harness.config import UsageError
from harness.data import load_mnist
from harness.guard import main_guard
from harness.loader import Loader
from harness.world import World
from models import build_vae
from tests.conftest import run_cli

# fp32: bf16 (the default where the CPU has it) rounds each rank's half-batch gradient apart
FLAGS = ["--arch", "mlp", "--no-compile", "--no-progress", "--batch-size", "64", "--checkpoint-every", "10",
         "--precision", "fp32"]  # fmt: skip
TORCHRUN = ["--standalone", "--nproc-per-node", "2", "-m", "experiments.vae"]
# Sums in another order (two half-batch means, then their mean, versus one mean) change the last
# bits of a gradient; 60 Adam steps carried that to 8.8e-7 at most (weights up to 0.25) when measured.
TOLERANCE = {"rtol": 0, "atol": 1e-5}

# Imported by every Python process started with this folder on PYTHONPATH: logs each file a torchrun
# worker creates, writes, renames, links or removes under $AUDIT_DIR to $AUDIT_LOG<rank>.
AUDIT = """
import os, sys
rank, watched = os.environ.get("RANK"), os.environ.get("AUDIT_DIR")
if rank is not None and watched:
    fd = os.open(os.environ["AUDIT_LOG"] + rank, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    EVENTS = {"os.rename": 2, "os.remove": 1, "os.symlink": 2, "os.mkdir": 1, "os.unlink": 1}

    def hook(event, args):
        paths = []
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1] or "", args[2] or 0
            if any(c in mode for c in "wax+") or flags & WRITE:
                paths = [args[0]]
        elif event in EVENTS:
            paths = list(args[: EVENTS[event]])
        for p in paths:
            if isinstance(p, (str, os.PathLike)) and os.fspath(p).startswith(watched):
                os.write(fd, f"{event} {os.fspath(p)}\\n".encode())

    sys.addaudithook(hook)
"""


def test_a_rank_takes_its_disjoint_slice_of_the_single_process_batch(data_root):
    train = load_mnist(data_root)
    noise = {"eps": (4,)}
    single = Loader(train, 64, 3, noise, dynamic_binarize=True)
    ranks = [Loader(train, 64, 3, noise, True, World(r, 2)) for r in range(2)]
    for step, (whole, *shards) in enumerate(zip(single, *ranks)):
        for key in whole:
            torch.testing.assert_close(torch.cat([s[key] for s in shards]), whole[key], rtol=0, atol=0)
        if step == 5:
            break
    assert all(r.state_dict()["batch"] == single.state_dict()["batch"] for r in ranks)
    with pytest.raises(ValueError, match="not divisible"):
        Loader(train, 63, 3, world=World(0, 2))
    # a GAN step's n_disc = 2 batches of 32: each rank takes its rows of each of the two
    whole = next(iter(Loader(train, 64, 3)))["x"]
    shards = [next(iter(Loader(train, 64, 3, world=World(r, 2), chunks=2)))["x"] for r in range(2)]
    for part in range(2):
        expected = whole[32 * part : 32 * (part + 1)]
        got = torch.cat([s[16 * part : 16 * (part + 1)] for s in shards])
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.fixture(scope="module")
def single_run(data_root, tmp_path_factory):
    """60 steps of the mlp VAE in one process, global batch 64."""
    run = tmp_path_factory.mktemp("single") / "run"
    run_cli("experiments.vae", [*FLAGS, "--max-steps", "60", "--run-dir", run], data_root)
    return run


def _torchrun(args, data_root, audit_dir, tmp_path, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(AUDIT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    monkeypatch.setenv("AUDIT_DIR", str(audit_dir))
    monkeypatch.setenv("AUDIT_LOG", str(tmp_path / "writes-rank"))
    return run_cli("torch.distributed.run", [*TORCHRUN, *args], data_root)


def _assert_same_weights(a, b):
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], **TOLERANCE, msg=key)
    torch.manual_seed(0)  # the runs' --seed: their initial weights
    init = build_vae("mlp", 20).state_dict()  # a run that trained nothing would match too
    assert (wa["encoder.fc1.weight"] - init["encoder.fc1.weight"]).abs().max() > 100 * TOLERANCE["atol"]


def test_two_gloo_ranks_train_like_one_process_and_only_rank_0_writes(
    data_root, single_run, tmp_path, monkeypatch
):
    ddp = tmp_path / "ddp"
    _torchrun([*FLAGS, "--max-steps", "60", "--run-dir", ddp], data_root, ddp, tmp_path, monkeypatch)
    _assert_same_weights(single_run, ddp)
    steps = [
        [json.loads(line) for line in (r / "steps.jsonl").read_text().splitlines()] for r in (single_run, ddp)
    ]
    assert [s["step"] for s in steps[1]] == [s["step"] for s in steps[0]] == [50]  # logged once
    for one, two in zip(*steps):  # the logged metrics are the global batch's, not rank 0's shard's
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    final = [json.loads((run / "final.json").read_text()) for run in (single_run, ddp)]
    assert final[1]["loss"] == pytest.approx(final[0]["loss"], rel=1e-5)  # sharded evaluation
    rank0 = (tmp_path / "writes-rank0").read_text()
    assert "steps.jsonl" in rank0 and "model.safetensors" in rank0 and "checkpoint" in rank0
    assert (tmp_path / "writes-rank1").read_text() == ""


def test_two_compiled_ranks_train_like_one_compiled_process(data_root, tmp_path, monkeypatch):
    """The all-reduce inside the compiled step. (Compiled and eager runs differ by up to 4e-5 after
    30 steps, compile's rounding alone, so compiled is compared with compiled.)"""
    args = [*FLAGS, "--compile", "--max-steps", "30"]  # --compile overrides FLAGS' --no-compile
    run_cli("experiments.vae", [*args, "--run-dir", tmp_path / "one"], data_root)
    _torchrun([*args, "--run-dir", tmp_path / "two"], data_root, tmp_path / "two", tmp_path, monkeypatch)
    _assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_a_two_rank_checkpoint_resumes_in_one_process(data_root, single_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _torchrun([*FLAGS, "--max-steps", "30", "--run-dir", run], data_root, run, tmp_path, monkeypatch)
    monkeypatch.delenv("AUDIT_DIR")
    run_cli("experiments.vae", ["--resume", run, "--max-steps", "60", "--no-progress"], data_root)
    _assert_same_weights(single_run, run)


def test_ranks_leave_together_after_a_normal_end_and_not_after_an_error(monkeypatch):
    """The barrier before the process group goes (harness.world.leave_together), called by every entry
    point's guard: after main returns, so a rank with nothing left to write waits for rank 0; never on
    an error path, where it would wait for peers stuck in a step."""
    calls = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: calls.append("barrier"))

    @main_guard
    def done(argv):
        calls.append("main")
        return 0

    @main_guard
    def fails(argv):
        calls.append("main")
        raise UsageError("bad flag")

    assert done([]) == 0 and calls == ["main", "barrier"]
    calls.clear()
    with pytest.raises(SystemExit) as exit_info:
        fails([])
    assert exit_info.value.code == 2 and calls == ["main"]


def test_a_sweep_under_torchrun_is_refused_in_one_line(data_root, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: the sweep would run twice over
    proc = run_cli("experiments.sweep", ["--epochs", "1"], data_root, expect=2)
    assert proc.stderr.strip() == "error: a sweep runs in one process; launch it without torchrun"


def test_a_one_process_checkpoint_resumes_on_two_ranks(data_root, single_run, tmp_path, monkeypatch):
    """The other way round: rank 0 loads first (setting damaged files aside), then rank 1, then the
    ranks check they stand at the same step; the result is the one-process run's."""
    run = tmp_path / "run"
    run_cli("experiments.vae", [*FLAGS, "--max-steps", "30", "--run-dir", run], data_root)
    _torchrun(["--resume", run, "--max-steps", "60", "--no-progress"], data_root, run, tmp_path, monkeypatch)
    _assert_same_weights(single_run, run)
    assert (tmp_path / "writes-rank1").read_text() == ""

"""Checkpoints: safetensors only, atomic, loadable into plain modules, and exact resume."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import engine
from engine.checkpoint import FORMAT, CheckpointError, save_weights
from engine.state import flatten_state
from harness.rundir import list_checkpoints, write_checkpoint
from models import build_ae, build_vae
from tests.conftest import run_cli


def _state(precision="fp32"):
    torch.manual_seed(0)
    model = build_vae("conv", 4)
    opt = engine.adam(1e-3)
    scaler = engine.scaler_init("cpu") if precision == "fp16" else None
    return model, engine.init_state(model, opt, scaler)


def test_round_trip_keeps_every_tensor_and_the_config(tmp_path):
    _, state = _state("fp16")
    extra = {"loader": {"epoch": torch.tensor(3), "rng": torch.Generator().manual_seed(5).get_state()}}
    path = tmp_path / "c.safetensors"
    engine.save_checkpoint(path, state, extra, config={"lr": 1e-3, "arch": "conv"})
    loaded, got_extra, meta = engine.load_checkpoint(path, state, extra)
    a, b = flatten_state(state), flatten_state(loaded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {"params/encoder.conv1.weight", "opt/mu/decoder.fc1.bias", "step", "scaler/scale"} <= a.keys()
    assert torch.equal(got_extra["loader"]["rng"], extra["loader"]["rng"])
    assert meta["config"] == {"lr": 1e-3, "arch": "conv"}
    assert meta["versions"]["torch"] == torch.__version__
    assert len(meta["sha256"]) == 64  # sha256 of the tensors and the metadata, checked on every load
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left behind


def test_params_and_buffers_load_into_a_plain_module(tmp_path):
    model, state = _state()
    engine.save_checkpoint(tmp_path / "c.safetensors", state)
    tensors = load_file(str(tmp_path / "c.safetensors"))
    plain = build_vae("conv", 4)
    prefixes = ("params/", "buffers/")
    weights = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(prefixes)}
    plain.load_state_dict(weights, strict=True)
    save_weights(tmp_path / "model.safetensors", state.params, state.buffers)
    fresh = build_vae("conv", 4)
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(plain.state_dict()[k], v) and torch.equal(fresh.state_dict()[k], v)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    _, state = _state()
    engine.save_checkpoint(tmp_path / "c.safetensors", state)
    other = engine.init_state(build_vae("conv", 8), engine.adam())
    with pytest.raises(CheckpointError, match="does not fit"):
        engine.load_checkpoint(tmp_path / "c.safetensors", other)
    ae = engine.init_state(build_ae("mlp", 4), engine.adam())
    with pytest.raises(CheckpointError, match="does not fit"):
        engine.load_checkpoint(tmp_path / "c.safetensors", ae)


def test_pickle_posing_as_a_checkpoint_is_refused(tmp_path):
    _, state = _state()
    path = tmp_path / "c.safetensors"
    with open(path, "wb") as f:
        pickle.dump({"params": state.params}, f)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        engine.load_checkpoint(path, state)


def test_save_replaces_the_file_atomically(tmp_path, monkeypatch):
    _, state = _state()
    path = tmp_path / "c.safetensors"
    engine.save_checkpoint(path, state, config={"n": 1})
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        engine.save_checkpoint(path, state, config={"n": 2})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_rotation_keeps_the_newest_k_and_links_the_latest(tmp_path):
    _, state = _state()
    for step in (7, 14, 21, 28):
        write_checkpoint(tmp_path, step, state, {}, {"n": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000028.safetensors",
        "step-00000021.safetensors",
    ]
    latest = tmp_path / "checkpoint.safetensors"
    assert os.readlink(latest) == "checkpoints/step-00000028.safetensors"  # relative: the folder can move
    assert engine.read_metadata(latest)["config"] == {"n": 28}
    assert not list(tmp_path.rglob(".*"))  # no temporary files or links left behind


def test_a_checkpoint_without_a_checksum_is_refused_as_corrupt(tmp_path):
    _, state = _state()
    flat = {k: v.contiguous() for k, v in flatten_state(state).items()}
    meta = {"format": FORMAT, "config": "{}", "versions": "{}"}
    save_file(flat, str(tmp_path / "old.safetensors"), metadata=meta)
    with pytest.raises(engine.CorruptCheckpoint, match="no checksum"):
        engine.load_checkpoint(tmp_path / "old.safetensors", state)


def _train(data_root, run_dir, max_steps, resume=False):
    args = [
        "--arch",
        "mlp",
        "--latent-dim",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--no-compile",
        "--no-progress",
        "--max-steps",
        max_steps,
    ]
    args += ["--resume", run_dir] if resume else ["--run-dir", run_dir]
    run_cli("experiments.vae", args, data_root)


N = 380  # steps in all; 234 steps per epoch at batch 256


@pytest.fixture(scope="module")
def straight_run(data_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    _train(data_root, run_dir, N)
    return run_dir


@pytest.mark.parametrize("k", [100, 234])  # mid-epoch 1, the epoch boundary
def test_resume_in_a_new_process_is_bitwise_exact(data_root, tmp_path, straight_run, k):
    _train(data_root, tmp_path / "split", k)
    _train(data_root, tmp_path / "split", N, resume=True)
    a = load_file(str(straight_run / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differing, differing
    assert int(a["step"]) == N
    records = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]

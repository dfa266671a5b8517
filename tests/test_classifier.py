"""The committed feature classifiers: they load strictly, reach their accuracy, and train with the engine."""

import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import engine
import harness
from engine.checkpoint import CheckpointError
from evaluation.features import classifier_outputs, load_classifier
from evaluation.quality import compare_features
from harness.data import to_unit
from losses.classify import SHIFT_NOISE, make_classifier_loss, random_shift
from models.classifier import FEATURES, build_classifier, weights_path

TARGETS = {"mnist": 0.993, "fashion-mnist": 0.91}  # test accuracy the shipped weights must reach


def _metadata(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


@pytest.mark.parametrize("dataset", TARGETS)
def test_committed_weights_load_and_reach_their_accuracy(dataset, data_root):
    path = weights_path(dataset)
    assert path.stat().st_size < 2_000_000
    meta = _metadata(path)
    assert meta["command"].startswith("python -m experiments.classifier") and meta["torch"]
    build_classifier(int(meta["width"])).load_state_dict(load_file(str(path)), strict=True)
    model = load_classifier(dataset)
    assert not model.training
    test = harness.load_dataset(dataset, "test", root=data_root)
    feats, logits = classifier_outputs(model, to_unit(test.images))
    assert feats.shape == (10_000, FEATURES) and logits.shape == (10_000, 10)
    accuracy = (logits.argmax(1) == test.labels).double().mean().item()
    assert accuracy >= TARGETS[dataset]
    exported = float(meta["test_accuracy"])
    assert accuracy == pytest.approx(exported, abs=3e-4)  # as exported, give or take 3 images


def test_real_images_score_well_and_noise_badly(data_root):
    model = load_classifier("mnist")
    images = to_unit(harness.load_dataset("mnist", "test", root=data_root).images)  # (10000, 1, 28, 28)
    # A random split: MNIST's first and last 5000 test images come from different writers (FID 144).
    order = torch.randperm(10_000, generator=torch.Generator().manual_seed(0))
    real, held_out = images[order[:2000]], images[order[2000:4000]]
    noise = torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    real_f, _ = classifier_outputs(model, real)
    same = compare_features(real_f, *classifier_outputs(model, held_out))
    bad = compare_features(real_f, *classifier_outputs(model, noise))
    assert same["fid"] < 0.05 * bad["fid"]
    # Measured: FID 14 vs 3944, IS 9.5, precision/recall 0.89/0.90 vs 0/0.
    assert same["is"] > 9.0 and same["precision"] > 0.8 and same["recall"] > 0.8
    assert bad["precision"] == 0.0


def test_missing_weights_are_a_one_line_checkpoint_error(monkeypatch, tmp_path):
    import models.classifier

    monkeypatch.setattr(models.classifier, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="make train-classifier") as err:
        load_classifier("mnist")
    assert "\n" not in str(err.value)


def test_classifier_step_lowers_the_loss_on_a_real_batch(data_root):
    torch.manual_seed(0)
    train = harness.load_dataset("mnist", "train", root=data_root)
    batch = {"x": to_unit(train.images[:256]), "y": train.labels[:256]}
    model = build_classifier().to(memory_format=torch.channels_last)  # as experiments.classifier trains it
    loss_fn = make_classifier_loss(model)
    optimizer = engine.adam(1e-3)
    step = engine.make_train_step(loss_fn, optimizer, engine.StepOptions(compile=False))
    state = engine.init_state(model, optimizer)
    assert state.buffers == {}  # no BatchNorm: nothing for the step to carry besides params
    first = None
    for _ in range(25):
        state, metrics = step(state, batch)
        first = metrics if first is None else first
    assert {"loss", "accuracy", "ce"} <= set(metrics) and metrics["ce"].dim() == 0
    assert metrics["loss"] < 0.5 * first["loss"] and metrics["accuracy"] > first["accuracy"]


def test_random_shift_matches_padding_and_slicing():
    x, noise = torch.rand(64, 1, 28, 28), torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    out = random_shift(x, noise, 2)
    offsets = (torch.special.ndtr(noise) * 5).floor().long().clamp(0, 4)  # (64, 2) in [0, 4]
    assert set(offsets.flatten().tolist()) == {0, 1, 2, 3, 4}
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for image, shifted, (dy, dx) in zip(padded, out, offsets.tolist()):
        assert torch.equal(shifted, image[:, dy : dy + 28, dx : dx + 28])
    assert torch.equal(random_shift(x, torch.zeros(64, 2), 2), x)  # the middle offset: no move


def test_shift_only_applies_to_batches_that_carry_draws():
    model = build_classifier()
    params, batch = dict(model.named_parameters()), {"x": torch.rand(8, 1, 28, 28), "y": torch.arange(8)}
    plain, _ = make_classifier_loss(model)(params, {}, batch)
    unshifted, _ = make_classifier_loss(model, max_shift=2)(params, {}, batch)
    shifted, _ = make_classifier_loss(model, max_shift=2)(
        params, {}, {**batch, SHIFT_NOISE: torch.ones(8, 2)}
    )
    assert torch.equal(plain, unshifted) and not torch.equal(plain, shifted)


def test_experiment_trains_and_exports_plain_weights(data_root, tmp_path, monkeypatch):
    import experiments.classifier as script
    import models.classifier

    monkeypatch.setenv("DATA_DIR", str(data_root))
    monkeypatch.setattr(models.classifier, "WEIGHTS_DIR", tmp_path / "weights")
    args = [
        "--device",
        "cpu",
        "--max-steps",
        "30",
        "--warmup",
        "0",
        "--no-compile",
        "--no-progress",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    final = script.main(args)
    path = tmp_path / "weights" / "classifier-mnist.safetensors"
    meta = _metadata(path)
    assert meta["command"] == "python -m experiments.classifier " + " ".join(args)
    assert float(meta["test_accuracy"]) == pytest.approx(final["accuracy"], abs=1e-4) and meta["torch"]
    build_classifier().load_state_dict(load_file(str(path)), strict=True)
    assert final["accuracy"] > 0.5  # 30 steps of 128 images already classify most digits
    with pytest.raises(SystemExit) as exit_:
        script.main([*args[:-1], str(tmp_path / "run2"), "--max-steps", "1", "--target-accuracy", "0.99"])
    assert exit_.value.code == 1


def test_weights_ship_in_the_wheel_and_load_from_it_in_any_working_directory(tmp_path):
    import subprocess
    import sys
    import zipfile

    from tests.conftest import ROOT

    # Build the wheel `pip install .` would install (nothing is installed), then import from it alone.
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "."]
    subprocess.run([*build, str(ROOT)], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("purestep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"models/weights/classifier-{d}.safetensors" for d in TARGETS} <= set(names)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import models, evaluation.features as f; m = f.load_classifier('mnist'); "
        "print(models.__file__); print(f.weights_path('mnist'))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    package, weights = out.stdout.split()
    assert package.startswith(str(tmp_path / "site")) and weights.startswith(str(tmp_path / "site"))

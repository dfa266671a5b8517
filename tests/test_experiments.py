"""The experiment scripts end to end on real MNIST: learning, outputs, and one-line errors."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from models import build_ae, build_vae
from tests.conftest import ROOT, run_cli, run_main

FAST = ["--no-compile", "--no-progress", "--batch-size", "256"]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_vae_learns_and_writes_its_run_directory(data_root, tmp_path):
    run = tmp_path / "vae"
    proc = run_cli(
        "experiments.vae",
        [*FAST, "--arch", "mlp", "--epochs", "2", "--run-dir", run, "--target-loss", "135"],
        data_root,
    )
    # not on a terminal (as under nohup): one plain line per epoch, no progress bar redraws
    assert "\r" not in proc.stdout + proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("epoch")] == [
        "epoch 1",
        "epoch 2",
    ]
    timings = json.loads((run / "timings.json").read_text())  # where the command's time went
    phases = {k: v for k, v in timings.items() if k not in ("total", "to_first_step")}
    assert {"start-up (imports)", "data", "train steps", "evaluation", "epoch-end plots"} <= phases.keys()
    assert sum(phases.values()) == pytest.approx(timings["total"], abs=0.05)
    assert 0 < timings["to_first_step"] < timings["total"]
    assert any(line.startswith("wall ") and "train steps" in line for line in proc.stdout.splitlines())
    r1, r2 = _records(run)
    assert r2["train_loss"] < r1["train_loss"] and r2["test_loss"] < r1["test_loss"] < 160
    assert r2["test_neg_elbo"] == pytest.approx(r2["test_recon"] + r2["test_kl"], rel=1e-5)
    assert {"epoch_time_s", "samples_per_s", "train_kl", "test_mse", "step"} <= r2.keys()
    for name in ("loss.png", "kl.png", "reconstructions.png", "samples.png"):
        assert _is_png(run / name), name
    assert json.loads((run / "config.json").read_text())["arch"] == "mlp"
    build_vae("mlp", 20).load_state_dict(load_file(str(run / "model.safetensors")), strict=True)


def test_ae_learns_and_misses_an_impossible_target(data_root, tmp_path):
    run = tmp_path / "ae"
    proc = run_cli(
        "experiments.ae",
        [
            *FAST,
            "--arch",
            "mlp",
            "--latent-dim",
            "8",
            "--epochs",
            "2",
            "--run-dir",
            run,
            "--target-loss",
            "1",
        ],
        data_root,
        expect=1,
    )
    assert "above --target-loss" in proc.stderr
    r1, r2 = _records(run)
    assert r2["test_bce"] < r1["test_bce"] and r2["test_mse"] < 0.05
    assert _is_png(run / "loss.png") and _is_png(run / "reconstructions.png")
    build_ae("mlp", 8).load_state_dict(load_file(str(run / "model.safetensors")), strict=True)


def test_fashion_mnist_and_dynamic_binarization_run_end_to_end(data_root, tmp_path):
    run = tmp_path / "fashion"
    args = [
        *FAST,
        "--arch",
        "mlp",
        "--dataset",
        "fashion-mnist",
        "--binarize",
        "dynamic",
        "--epochs",
        "1",
        "--run-dir",
        run,
    ]
    run_cli("experiments.vae", args, data_root)
    (record,) = _records(run)
    assert 150 < record["test_neg_elbo"] < 400  # binarised Fashion-MNIST: a different scale from MNIST
    assert json.loads((run / "config.json").read_text())["dataset"] == "fashion-mnist"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_runs_on_cpu(data_root, tmp_path, precision):
    run = tmp_path / precision
    run_cli(
        "experiments.vae",
        [*FAST, "--arch", "mlp", "--max-steps", "20", "--precision", precision, "--run-dir", run],
        data_root,
    )
    state = load_file(str(run / "checkpoint.safetensors"))
    assert int(state["step"]) == 20 and all(
        torch.isfinite(v).all() for k, v in state.items() if k.startswith("params/")
    )
    assert ("scaler/scale" in state) == (precision == "fp16")


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args,words",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--arch", "transformer"], "invalid choice"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--bogus"], "unrecognized arguments"),
        (["--batch-size", "100000"], "exceeds the 60000 training images"),
        (["--resume", "/nonexistent/run"], "holds no checkpoint"),
        (["--keep", "0"], "--keep must be at least 1"),
        (["--checkpoint-every", "-5"], "--checkpoint-every must be >= 0"),
        (["--val-split", "60000"], "--val-split 60000 leaves no training images"),
    ],
)
def test_bad_flags_end_in_one_line_and_exit_2(data_root, tmp_path, args, words):
    proc = run_main("experiments.vae", [*FAST, "--run-dir", tmp_path / "r", *args], data_root)
    assert words in _one_error_line(proc)


def test_missing_data_ends_in_one_line_naming_data_dir(tmp_path):
    proc = run_cli("experiments.vae", [*FAST, "--run-dir", tmp_path / "r"], tmp_path / "empty", expect=2)
    line = _one_error_line(proc)
    assert "DATA_DIR" in line and "train-images-idx3-ubyte" in line


def test_existing_runs_are_never_overwritten(data_root, tmp_path):
    run = tmp_path / "r"
    run_cli("experiments.vae", [*FAST, "--arch", "mlp", "--max-steps", "5", "--run-dir", run], data_root)
    before = (run / "checkpoint.safetensors").read_bytes()
    proc = run_cli("experiments.vae", [*FAST, "--arch", "mlp", "--run-dir", run], data_root, expect=2)
    assert "already holds a run" in _one_error_line(proc)
    proc = run_cli("experiments.vae", [*FAST, "--latent-dim", "3", "--resume", run], data_root, expect=2)
    assert "differs from the run's" in _one_error_line(proc)
    assert (run / "checkpoint.safetensors").read_bytes() == before


def test_sigint_checkpoints_and_exits_130(data_root, tmp_path):
    run = tmp_path / "r"
    cmd = [
        sys.executable,
        "-m",
        "experiments.vae",
        *FAST,
        "--arch",
        "mlp",
        "--batch-size",
        "512",
        "--epochs",
        "50",
        "--run-dir",
        str(run),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**__import__("os").environ, "DATA_DIR": str(data_root), "CUDA_VISIBLE_DEVICES": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline:  # wait for epoch 1
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in out
    state = load_file(str(run / "checkpoint.safetensors"))
    assert int(state["step"]) >= 117  # epoch 1 is 117 steps at batch 512
    run_cli("experiments.vae", ["--no-progress", "--epochs", "2", "--resume", run], data_root)
    assert [r["epoch"] for r in _records(run)] == [1, 2]


@pytest.mark.parametrize(
    "args,words",
    [
        (["--k", "5"], "--k and --dreg need --objective iwae"),
        (["--dreg"], "--k and --dreg need --objective iwae"),
        (["--objective", "iwae", "--k", "0"], "--k must be at least 1"),
        (["--objective", "iwae", "--beta", "2"], "--beta, --kl-warmup and --free-bits are for"),
        (["--objective", "iwae", "--free-bits", "1"], "are for --objective elbo"),
        (["--prior", "vamp", "--free-bits", "0.5"], "--free-bits needs --prior normal"),
        (["--prior", "vamp", "--objective", "iwae", "--dreg"], "--dreg needs --prior normal"),
        (["--prior", "vamp", "--pseudo-inputs", "0"], "--pseudo-inputs must be at least 1"),
        (["--val-split", "-1"], "--val-split must be >= 0"),
    ],
)
def test_objective_flags_are_checked(args, words):
    from experiments.vae import VAEConfig
    from harness import UsageError, parse_config

    with pytest.raises(UsageError, match=words):
        parse_config(VAEConfig, args, "vae")


def test_val_split_scores_epochs_on_validation_and_the_test_split_once_for_the_selected_epoch(
    data_root, tmp_path
):
    run_dir = tmp_path / "run"
    args = ["--arch", "mlp", "--latent-dim", "4", "--objective", "iwae", "--k", "3", "--dreg"]
    args += ["--val-split", "59000", "--epochs", "3", "--batch-size", "100", "--lr", "3e-3"]
    out = run_cli("experiments.vae", [*args, "--no-progress", "--run-dir", run_dir], data_root).stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("val_loss" in r and not any(k.startswith("test_") for k in r) for r in records)
    best = min(records, key=lambda r: r["val_neg_iwae"])  # selected on the bound itself
    chosen = json.loads((run_dir / "best.json").read_text())
    assert (chosen["epoch"], chosen["val_neg_iwae"]) == (best["epoch"], best["val_neg_iwae"])
    assert f"selected epoch {best['epoch']}" in out
    model, kept = load_file(str(run_dir / "model.safetensors")), load_file(str(run_dir / "best.safetensors"))
    assert model.keys() == kept.keys() and all(torch.equal(model[k], kept[k]) for k in model)
    final = json.loads((run_dir / "final.json").read_text())  # the test split, scored once at the end
    assert final["loss"] == final["neg_iwae"] and final["neg_elbo"] > final["neg_iwae"] > 50


def test_keep_if_best_keeps_the_lowest_validation_bound_not_the_weighted_loss(tmp_path):
    from engine import adam, init_state
    from harness.selection import keep_if_best, selected

    model = build_vae("mlp", 2)
    state = init_state(model, adam(1e-3))
    # val_loss: a free-bits (or beta, warm-up) surrogate, lowest at epoch 2; the -ELBO, lowest at 3
    for epoch, (loss, bound) in enumerate([(5.0, 6.0), (3.0, 7.0), (4.0, 5.5)], start=1):
        marked = state._replace(params={k: torch.full_like(v, epoch) for k, v in state.params.items()})
        record = {"epoch": epoch, "step": 10 * epoch, "val_loss": loss, "val_neg_elbo": bound}
        keep_if_best(tmp_path, marked, record, "val_neg_elbo")
    kept = json.loads((tmp_path / "best.json").read_text())
    assert kept == {"epoch": 3, "step": 30, "val_loss": 4.0, "val_neg_elbo": 5.5}
    chosen = selected(tmp_path, state)
    assert all(torch.equal(v, torch.full_like(v, 3)) for v in chosen.params.values())
    assert chosen.opt is state.opt and chosen.step is state.step


def test_vamp_prior_run_resumes_bitwise_and_is_scored_with_its_prior(data_root, tmp_path):
    args = [*FAST, "--arch", "mlp", "--latent-dim", "4", "--prior", "vamp", "--pseudo-inputs", "20"]
    args += ["--val-split", "50000"]  # 10,000 training images: short epochs
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_cli("experiments.vae", [*args, "--epochs", "2", "--run-dir", straight], data_root)
    run_cli("experiments.vae", [*args, "--epochs", "1", "--run-dir", resumed], data_root)
    run_cli("experiments.vae", [*args, "--epochs", "2", "--resume", resumed], data_root)
    a, b = (load_file(str(r / "model.safetensors")) for r in (straight, resumed))
    assert "pseudo_logits" in a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r1, r2 = _records(straight)
    assert r2["val_neg_elbo"] < r1["val_neg_elbo"] < 300  # 39 steps an epoch: learning, not converged
    proc = run_cli("experiments.evaluate", [straight, "--iwae-k", "50", "--iwae-images", "200"], data_root)
    scored, final = (json.loads((straight / f).read_text()) for f in ("eval.json", "final.json"))
    # the evaluation's ELBO uses the mixture prior, as training did: the two one-draw estimates over
    # the 10,000 test images agree to their Monte Carlo error (the N(0, I) KL would be nats away)
    assert scored["neg_elbo"] == pytest.approx(final["neg_elbo"], abs=0.5)
    assert scored["nll"] < scored["neg_elbo"] and "NLL" in proc.stdout and "kl_per_dim" not in scored
    assert _is_png(straight / "eval_samples.png")


def test_cosine_lr_decay_reaches_the_optimizer_and_tensorboard(data_root, tmp_path):
    from engine import cosine
    from tests.test_timing import _scalars

    args = [*FAST, "--arch", "mlp", "--latent-dim", "4", "--val-split", "50000", "--epochs", "2"]
    args += ["--batch-size", "100"]  # 200 steps: the steps' log every 50
    runs = {d: tmp_path / d for d in ("constant", "cosine")}
    for decay, run in runs.items():
        run_cli("experiments.vae", [*args, "--lr-decay", decay, "--run-dir", run], data_root)
    series, _ = _scalars(runs["cosine"] / "tensorboard")
    want = cosine(1e-3, 200)
    assert [step for step, _ in series["lr"]] == [50, 100, 150, 200]
    for step, lr in series["lr"]:  # the logged lr is the schedule's, falling towards 0 at the end
        assert lr == pytest.approx(float(want(torch.tensor(step))), rel=1e-6)
    assert series["lr"][-1][1] < 1e-9
    flat, _ = _scalars(runs["constant"] / "tensorboard")
    assert all(lr == pytest.approx(1e-3) for _, lr in flat["lr"])
    a, b = (load_file(str(r / "model.safetensors")) for r in runs.values())
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)  # the optimizer used it

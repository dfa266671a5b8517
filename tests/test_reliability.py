"""Faults and bad inputs: SIGKILL/SIGINT/SIGTERM, damaged checkpoints and data, inf/nan, one-line errors."""

import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torchvision.io import write_png

import engine
import harness
from engine.checkpoint import CorruptCheckpoint
from harness import LoopOptions, NonFiniteError
from harness.loader import evaluate_mean
from harness.rundir import LOCK, list_checkpoints, read_metrics, step_path
from losses import gan as G
from losses import make_elbo_loss
from models import build_gan, build_vae
from tests.conftest import ROOT, run_main

STEPS, EVERY = 60, 7  # the subprocess runs: 60 steps of the mlp VAE, a checkpoint every 7
VAE = ["--arch", "mlp", "--latent-dim", "4", "--no-compile", "--no-progress", "--batch-size", "256"]
ARGS = [*VAE, "--checkpoint-every", EVERY, "--max-steps", STEPS]


# ---- subprocess helpers ----------------------------------------------------------------------------


def _start(data_root, args, module="experiments.vae"):
    # one thread: fast on a shared 2-core machine, and the same thread count in every run compared
    env = {**os.environ, "DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(data_root, args, expect=0, module="experiments.vae"):
    proc = _start(data_root, args, module)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    return out, err


def _error_line(err: str) -> str:
    """The one line a failure ends in (warnings may come before it), never a traceback."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    assert all(line.startswith(("warning: ", "error: ")) for line in lines), err
    return lines[-1]


def _wait_for(path: Path, proc, timeout=120.0) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)


def _same_tensors(a: Path, b: Path) -> list[str]:
    """Names of the tensors that differ (bitwise) between two checkpoints; [] when identical."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    return [k for k in ta if not torch.equal(ta[k], tb[k])]


def _snapshot(run_dir: Path) -> dict[str, str]:
    """Every entry of a run directory (links as their targets) with a hash of its bytes; the lock
    file, which only names the process that last held the directory, is left out."""
    out = {}
    for p in sorted(run_dir.rglob("*")):
        if p.name == LOCK:
            continue
        if p.is_symlink():
            out[str(p.relative_to(run_dir))] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[str(p.relative_to(run_dir))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """An uninterrupted run, and how long its training took (first to last checkpoint)."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = _start(data_root, [*ARGS, "--run-dir", run_dir])
    _wait_for(run_dir / "checkpoints", proc)
    t0 = time.time()
    _wait_for(step_path(run_dir, STEPS), proc)
    train_s = time.time() - t0
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return run_dir, train_s


# ---- interruption --------------------------------------------------------------------------------


def test_sigkill_at_random_moments_then_resume_equals_the_uninterrupted_run(data_root, tmp_path, reference):
    ref, train_s = reference
    rng, killed_at = random.Random(0), []
    for trial in range(6):
        run_dir = tmp_path / f"trial{trial}"
        proc = _start(data_root, [*ARGS, "--run-dir", run_dir])
        if trial < 2:  # the first two trials die anywhere from start-up on
            time.sleep(rng.uniform(0, 3.0))
        else:  # the rest during training: just after a random checkpoint (timed by the run itself,
            # so a busy machine, e.g. a second test worker, does not move the kill out of training)
            _wait_for(step_path(run_dir, EVERY * rng.randint(1, STEPS // EVERY - 1)), proc)
            time.sleep(rng.uniform(0, 0.2 * train_s * EVERY / STEPS))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        saved = list_checkpoints(run_dir)
        killed_at.append(saved[0].name if saved else None)
        if (run_dir / "config.json").exists():
            out, _ = _run(data_root, ["--no-progress", "--resume", run_dir])
        else:  # killed before the run wrote anything: it simply starts again
            out, _ = _run(data_root, [*ARGS, "--run-dir", run_dir])
        assert not _same_tensors(ref / "checkpoint.safetensors", run_dir / "checkpoint.safetensors"), trial
        assert (run_dir / "steps.jsonl").read_text() == (ref / "steps.jsonl").read_text(), trial
        assert (run_dir / "final.json").read_text() == (ref / "final.json").read_text(), trial
        assert len(list_checkpoints(run_dir)) <= 2 and not list(run_dir.rglob(".*tmp*"))
    mid_training = [n for n in killed_at if n and n != step_path(ref, STEPS).name]
    assert len(mid_training) >= 3, killed_at  # most kills did land inside training


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_finish_the_step_checkpoint_and_say_how_to_resume(
    data_root, tmp_path, reference, signum, code
):
    run_dir = tmp_path / "run"
    proc = _start(data_root, [*ARGS, "--run-dir", run_dir])
    _wait_for(run_dir / "checkpoints", proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    line = out.strip().splitlines()[-1]
    step = int(line.split()[3].rstrip(";"))  # "interrupted at step N; checkpoint saved as ...; continue ..."
    assert EVERY <= step < STEPS and line.endswith(f"continue with --resume {run_dir}")
    assert str(step_path(run_dir, step)) in line
    assert int(load_file(str(run_dir / "checkpoint.safetensors"))["step"]) == step
    _run(data_root, ["--no-progress", "--resume", run_dir])
    assert not _same_tensors(reference[0] / "checkpoint.safetensors", run_dir / "checkpoint.safetensors")


# ---- damaged checkpoints -------------------------------------------------------------------------


def _flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def test_every_flipped_byte_and_truncation_is_caught(tmp_path):
    torch.manual_seed(0)
    model, opt = build_vae("mlp", 2), engine.adam()
    state = engine.init_state(model, opt)
    good = tmp_path / "good.safetensors"
    engine.save_checkpoint(good, state, {"loader": {"epoch": torch.tensor(1)}}, config={"lr": 0.001})
    size, header = good.stat().st_size, 8 + int.from_bytes(good.read_bytes()[:8], "little")
    rng = random.Random(0)
    offsets = [0, 7, 8, header - 1, header, size - 1] + [rng.randrange(8, header) for _ in range(20)]
    offsets += [rng.randrange(header, size) for _ in range(20)]
    bad = tmp_path / "bad.safetensors"
    for offset in offsets:
        for mask in (0x01, 0xFF):  # a single bit, and a whole byte
            shutil.copy(good, bad)
            _flip(bad, offset, mask)
            with pytest.raises(CorruptCheckpoint) as e:
                engine.load_checkpoint(bad, state)
            assert "\n" not in str(e.value)
    for length in (0, 4, 8, header - 1, header + 10, size - 1):
        bad.write_bytes(good.read_bytes()[:length])
        with pytest.raises(CorruptCheckpoint, match="not a readable safetensors"):
            engine.load_checkpoint(bad, state)
    engine.load_checkpoint(good, state)  # the original still loads


def _damage(run_dir: Path) -> list[Path]:
    """Flip a byte inside the newest checkpoint's tensors and truncate the one before it."""
    newest, older = list_checkpoints(run_dir)[:2]
    _flip(newest, newest.stat().st_size - 100)
    older.write_bytes(older.read_bytes()[:1000])
    return [newest, older]


def test_resume_falls_back_past_damaged_checkpoints(data_root, tmp_path, reference):
    run_dir = tmp_path / "run"
    args = ["--checkpoint-every", EVERY, "--max-steps", 3 * EVERY, "--keep", 3, "--run-dir", run_dir]
    _run(data_root, [*VAE, *args])
    newest, older = _damage(run_dir)
    out, err = _run(data_root, ["--no-progress", "--max-steps", STEPS, "--resume", run_dir])
    warnings = err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") for w in warnings), err
    assert f"{newest} is corrupt: its contents do not match the checksum" in warnings[0]
    assert f"{older} is not a readable safetensors checkpoint" in warnings[1]
    assert f"resuming {run_dir} from checkpoints/step-{EVERY:08d}.safetensors" in out
    assert newest.with_name(newest.name + ".corrupt").exists()  # set aside, out of the rotation
    assert not older.exists() and (run_dir / "checkpoint.safetensors").exists()
    assert not _same_tensors(reference[0] / "checkpoint.safetensors", run_dir / "checkpoint.safetensors")


def test_no_intact_checkpoint_is_one_line_exit_2_and_changes_nothing(data_root, tmp_path):
    run_dir = tmp_path / "run"
    _run(data_root, [*VAE, "--checkpoint-every", EVERY, "--max-steps", 2 * EVERY, "--run-dir", run_dir])
    _damage(run_dir)
    before = _snapshot(run_dir)
    _, err = _run(data_root, ["--no-progress", "--resume", run_dir], expect=2)
    assert _error_line(err) == (
        f"error: no intact checkpoint in {run_dir}: all 2 are damaged "
        f"(step-{2 * EVERY:08d}.safetensors, step-{EVERY:08d}.safetensors)"
    )
    assert _snapshot(run_dir) == before


class _Payload:
    """Unpickling this would create a file: proof that a loader ran code from the checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ---- in-process runs on a tiny synthetic data set ----------------------------------------------------


def _tiny(precision="fp32", poison_at=None, grad_nan=False):
    """(step, state, loader, evaluate) of the mlp VAE on 640 random images: 10 steps per epoch."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (640, 28, 28), dtype=torch.uint8)
    data = harness.Dataset(images, torch.zeros(640, dtype=torch.int64))
    model, opt = build_vae("mlp", 2), engine.adam(1e-3)
    elbo = make_elbo_loss(model)

    def loss_fn(params, buffers, batch):
        loss, aux = elbo(params, buffers, batch)
        if poison_at is not None:  # an inf/nan loss at one step (its gradient stays finite)
            loss = torch.where(batch["step"] == poison_at, torch.full_like(loss, float("nan")), loss)
        if grad_nan:  # d/dw sqrt(0 * w) = 0 * inf: a nan gradient under a finite loss
            loss = loss + torch.sqrt(0 * params["encoder.fc1.bias"].sum())
        return loss, aux

    step = engine.make_train_step(loss_fn, opt, engine.StepOptions(precision=precision, compile=False))
    loader = harness.Loader(data, 64, seed=0, noise={"eps": (2,)})
    eval_step = engine.make_eval_step(elbo)
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    batch = {"x": x, "eps": torch.zeros(64, 2)}
    return step, engine.init_state(model, opt), loader, lambda s: evaluate_mean(eval_step, s, [batch])


def _fit(run_dir, tiny, history=None, **kw):
    step, state, loader, evaluate = tiny
    options = LoopOptions(**{"epochs": 2, "checkpoint_every": 3, "log_every": 4, "progress": False, **kw})
    return harness.fit(step, state, loader, run_dir, options, evaluate=evaluate, history=history)


def _without_times(records):
    return [{k: v for k, v in r.items() if k not in ("epoch_time_s", "samples_per_s")} for r in records]


def test_resume_mid_epoch_after_torn_logs_rewrites_them_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _fit(a, _tiny())
    _fit(b, _tiny(), max_steps=14)  # epoch 1 recorded, checkpoints at 12 and 14
    with open(b / "metrics.jsonl", "a") as f:  # what a process killed after step 14 may leave behind
        f.write(json.dumps({"epoch": 2, "step": 20, "train_loss": 1.0}) + '\n{"epoch": 3, "st')
    with open(b / "steps.jsonl", "a") as f:
        f.write('{"step": 16, "loss": 1.0}\n{"step": 2')
    step, state, loader, evaluate = _tiny()
    state, history = harness.resume_state(b, state, loader)
    assert len(history) == 4 and (loader.epoch, loader.batch) == (1, 4)
    _fit(b, (step, state, loader, evaluate), history=history)
    assert _without_times(read_metrics(b)) == _without_times(read_metrics(a))
    assert (b / "steps.jsonl").read_text() == (a / "steps.jsonl").read_text()
    assert not _same_tensors(a / "checkpoint.safetensors", b / "checkpoint.safetensors")


def test_a_pickle_posing_as_the_newest_checkpoint_is_never_unpickled(tmp_path):
    _fit(tmp_path, _tiny(), max_steps=6)
    marker, fake = tmp_path / "code-ran", step_path(tmp_path, 99)
    fake.write_bytes(pickle.dumps(_Payload(marker)))
    step, state, loader, _ = _tiny()
    harness.resume_state(tmp_path, state, loader)
    assert not marker.exists() and (loader.epoch, loader.batch) == (0, 6)
    assert fake.with_name(fake.name + ".corrupt").exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_nonfinite_loss_stops_the_run_naming_step_metric_and_last_checkpoint(tmp_path, precision):
    with pytest.raises(NonFiniteError) as e:
        _fit(tmp_path, _tiny(precision, poison_at=4))  # the 5th update; checked at step 6
    assert str(e.value).startswith("step 5: non-finite loss=nan; that update was not applied")
    assert f"last good checkpoint: {step_path(tmp_path, 3)}" in str(e.value)
    assert [p.name for p in list_checkpoints(tmp_path)] == [step_path(tmp_path, 3).name]
    with pytest.raises(NonFiniteError, match=r"^step 1: non-finite gradient \(loss finite\)"):
        _fit(tmp_path / "grad", _tiny(precision, grad_nan=True))


def test_skip_nonfinite_skips_the_update_and_counts_it(tmp_path):
    final = _fit(tmp_path, _tiny(poison_at=4), skip_nonfinite=True)
    first, second = read_metrics(tmp_path)
    assert first["skipped_nonfinite"] == 1 and second["skipped_nonfinite"] == 0
    assert all(v == v for v in first.values())  # the skipped step's nan is left out of the means
    assert int(final.step) == 20 and int(final.opt["count"]) == 19  # Adam saw 19 updates
    saved = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())


def test_a_nonfinite_state_is_never_checkpointed(tmp_path):
    step, state, loader, evaluate = _tiny()
    state.params["decoder.fc4.bias"][0] = float("inf")
    with pytest.raises(NonFiniteError, match="params/decoder.fc4.bias"):
        _fit(tmp_path, (step, state, loader, evaluate), skip_nonfinite=True)
    assert not list_checkpoints(tmp_path)


def test_gan_step_reports_each_players_skipped_update():
    torch.manual_seed(0)
    gen, disc = build_gan("mlp", (1, 28, 28), 16, 8)
    g_opt, d_opt = engine.adam(2e-4), engine.adam(2e-4)
    state = engine.init_gan_state(gen, disc, g_opt, d_opt)
    step = engine.make_gan_step(
        *G.make_gan_loss(gen, disc, "nonsaturating"), g_opt, d_opt, engine.StepOptions(compile=False)
    )
    x = torch.rand(8, 1, 28, 28)
    x[0, 0, 0, 0] = float("nan")  # a corrupt real image poisons the discriminator's loss only
    new, metrics = step(state, {"x": x, "z": torch.randn(8, 16)})
    assert float(metrics["d_skipped"]) == 1 and float(metrics["g_skipped"]) == 0
    assert all(torch.equal(new.disc.params[k], v) for k, v in state.disc.params.items())
    assert not torch.equal(new.gen.params["net.0.weight"], state.gen.params["net.0.weight"])


# ---- bad inputs on the command line --------------------------------------------------------------


def test_a_nonfinite_run_ends_in_one_line_and_exit_3(data_root, tmp_path):
    _, err = _run(data_root, [*VAE, "--lr", "1e30", "--checkpoint-every", 1, "--run-dir", tmp_path], expect=3)
    line = _error_line(err)
    assert line.startswith("error: step 2: non-finite loss=nan")
    assert f"last good checkpoint: {step_path(tmp_path, 1)}" in line


@pytest.mark.parametrize("damage,words", [("truncate", "header promises"), ("magic", "is not an IDX file")])
def test_damaged_idx_files_end_in_one_line_and_exit_2(data_root, tmp_path, damage, words):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for src in (data_root / "MNIST" / "raw").iterdir():
        (raw / src.name).symlink_to(src)
    target = raw / "t10k-images-idx3-ubyte"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[:-1000] if damage == "truncate" else b"\x00\x00\x08\x01" + data[4:])
    _, err = _run(tmp_path / "data", [*VAE, "--run-dir", tmp_path / "run"], expect=2)
    line = _error_line(err)
    assert str(target) in line and words in line


def test_resume_refuses_a_checkpoint_of_another_model_or_config(data_root, tmp_path, reference):
    for key, value, words in [
        ("latent_dim", 8, "does not fit this model: params/"),
        ("beta", 2.0, "was written with beta=1.0, but this run has beta=2.0"),
    ]:
        run_dir = tmp_path / key
        shutil.copytree(reference[0], run_dir, symlinks=True)
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**config, key: value}))
        before = _snapshot(run_dir)
        _, err = _run(data_root, ["--no-progress", "--max-steps", 2 * STEPS, "--resume", run_dir], expect=2)
        assert words in _error_line(err)
        assert _snapshot(run_dir) == before


def test_unreadable_images_are_one_warning_and_the_run_goes_on(data_root, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        write_png(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8), str(folder / f"{i}.png"))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ["--dataset", "imagefolder", "--image-folder", folder, "--image-size", 28, "--channels", 1]
    args += ["--arch", "mlp", "--batch-size", 4, "--max-steps", 1, "--no-compile", "--no-progress"]
    _, err = _run(data_root, [*args, "--run-dir", tmp_path / "run"], module="experiments.gan")
    ours = [line for line in err.splitlines() if not line.startswith("libpng")]  # libpng's own stderr line
    assert ours == [f"warning: skipped 1 unreadable image file(s) under {folder}: broken.png"], err


# ---- issue 14: runs that cannot be trampled --------------------------------------------------------


def test_a_second_process_on_a_live_run_directory_is_refused_naming_it(data_root, tmp_path):
    run_dir = tmp_path / "run"
    first = _start(data_root, [*VAE, "--epochs", 50, "--run-dir", run_dir])
    try:
        _wait_for(run_dir / "config.json", first)
        for args in (["--run-dir", run_dir], ["--resume", run_dir]):  # a new run or a resume: both refused
            _, err = _run(data_root, [*VAE, "--max-steps", 2, *args], expect=2)
            assert f"is in use by another run (pid {first.pid})" in _error_line(err)
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock
        first.communicate()
    out, _ = _run(data_root, [*VAE, "--max-steps", 2, "--resume", run_dir])
    assert "resuming" in out or "starting from step 0" in out


def _run_with_config(tmp_path, **changes) -> Path:
    """A run directory holding only a config.json (a run killed before its first checkpoint), edited."""
    from experiments.vae import VAEConfig

    run_dir = tmp_path / "edited"
    run_dir.mkdir()
    config = {"experiment": "vae", **VAEConfig(arch="mlp", latent_dim=4).__dict__, **changes}
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"epochs": "5"}, "--epochs must be int, got '5'"),
        ({"epochs": None}, "--epochs must be int, got None"),
        ({"lr": "abc"}, "--lr must be float, got 'abc'"),
        ({"batch_size": 128.0}, "--batch-size must be int, got 128.0"),
        ({"latent_dim": -1}, "--latent-dim must be at least 1, got -1"),
    ],
)
def test_a_config_json_of_the_wrong_type_or_range_is_one_line(data_root, tmp_path, changes, words):
    run_dir = _run_with_config(tmp_path, **changes)
    err = run_main("experiments.vae", ["--resume", run_dir], data_root).stderr
    assert words in _error_line(err)


@pytest.mark.parametrize(
    "args,words,module",
    [
        (["--latent-dim", 0], "--latent-dim must be at least 1", "experiments.vae"),
        (["--seed", "99999999999999999999"], "--seed is out of range", "experiments.vae"),
        (["--image-size", 0], "--image-size must be at least 1", "experiments.gan"),
    ],
)
def test_out_of_range_flags_are_one_line_and_leave_nothing(data_root, tmp_path, args, words, module):
    err = run_main(module, [*args, "--run-dir", tmp_path / "run"], data_root).stderr
    assert words in _error_line(err) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "side,count,words", [(27, 60000, "60000 images of 27x27 pixels"), (28, 0, "0 images")]
)
def test_idx_files_the_models_cannot_take_are_a_data_error(data_root, tmp_path, side, count, words):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for src in (data_root / "MNIST" / "raw").iterdir():
        (raw / src.name).symlink_to(src)
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (count, side, side))
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte").write_bytes(header + bytes(count * side * side))
    if count == 0:
        (raw / "train-labels-idx1-ubyte").unlink()
        (raw / "train-labels-idx1-ubyte").write_bytes((2049).to_bytes(4, "big") + bytes(4))
    with pytest.raises(harness.DataError, match=words):
        harness.load_dataset("mnist", "train", root=tmp_path)


def _with_metadata(tmp_path, **meta) -> Path:
    from safetensors.torch import save_file

    from engine.checkpoint import FORMAT

    path = tmp_path / "c.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "versions": "{}", **meta})
    return path


@pytest.mark.parametrize(
    "config", ['["not", "a", "dict"]', "[" * 200_000 + "]" * 200_000, "{}" + " " * (2 << 20)]
)
def test_checkpoint_metadata_not_of_our_shape_is_corrupt(tmp_path, config):
    path = _with_metadata(tmp_path, config=config, sha256="0" * 64)
    with pytest.raises(CorruptCheckpoint):
        engine.read_metadata(path)


def test_a_fifo_named_like_a_checkpoint_is_set_aside_without_blocking(tmp_path):
    _fit(tmp_path, _tiny(), max_steps=6)
    fifo = step_path(tmp_path, 99)
    os.mkfifo(fifo)
    step, state, loader, _ = _tiny()
    harness.resume_state(tmp_path, state, loader)  # would block forever opening the FIFO
    assert (loader.epoch, loader.batch) == (0, 6) and fifo.with_name(fifo.name + ".corrupt").exists()


def test_an_unreadable_checkpoint_says_permission_denied(tmp_path, monkeypatch):
    import safetensors

    _fit(tmp_path, _tiny(), max_steps=6)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(safetensors, "safe_open", denied)
    with pytest.raises(engine.CheckpointError, match="permission denied") as err:
        engine.load_checkpoint(list_checkpoints(tmp_path)[0], _tiny()[1])
    assert not isinstance(err.value, CorruptCheckpoint)  # not set aside as damaged


def test_a_run_directory_name_that_is_not_utf8_is_refused_up_front(data_root, tmp_path):
    bad = os.fsencode(tmp_path) + b"/run-\xff"
    env = {**os.environ, "DATA_DIR": str(data_root), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "experiments.vae", *VAE, "--run-dir", bad]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is not valid UTF-8" in _error_line(proc.stderr)
    assert not os.path.exists(bad)


def test_sigterm_before_the_first_step_prints_its_line(data_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(data_root, ["--arch", "mlp", "--no-progress", "--run-dir", run_dir])  # compiled: slow start
    _wait_for(run_dir / "config.json", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    assert _error_line(err).startswith("error: terminated") or "interrupted at step" in out


def test_a_sigterm_landing_in_a_finalizer_is_still_one_line_and_exit_143():
    # the signal's exception raised inside a weakref callback (as in an import lock's): Python
    # swallows it and would print "Exception ignored ... Traceback"; the command still ends in one line
    script = (
        "import gc, signal, weakref\n"
        "from harness.guard import main_guard\n"
        "class A: pass\n"
        "@main_guard\n"
        "def main(argv=None):\n"
        "    a = A()\n"
        "    r = weakref.ref(a, lambda _: signal.raise_signal(signal.SIGTERM))\n"
        "    del a; gc.collect()\n"
        "main()\n"
    )
    cmd = [sys.executable, "-c", script]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert _error_line(proc.stderr).startswith("error: terminated")


def test_a_failed_write_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path):
    import errno

    from engine.checkpoint import WriteError, atomic_write

    def full_disk(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError, match=r"cannot write .*config.json: No space left on device") as err:
        atomic_write(tmp_path / "config.json", full_disk)
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_an_image_over_the_pixel_limit_is_skipped_unread(tmp_path):
    from harness.imagefolder import load_image_folder

    for i in range(3):
        write_png(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8), str(tmp_path / f"{i}.png"))
    write_png(torch.zeros(1, 1200, 1000, dtype=torch.uint8), str(tmp_path / "huge.png"))
    with pytest.warns(
        UserWarning, match="skipped 1 image file\\(s\\) over 1,000,000 pixels under .*: huge.png"
    ):
        data = load_image_folder(tmp_path, 28, channels=1, max_pixels=1_000_000)
    assert len(data.images) == 3


def test_a_sigterm_whose_exception_a_library_swallows_still_stops_the_command(monkeypatch, capsys):
    # the signal may land where its exception cannot propagate (a finalizer, a catch-all in a library):
    # main_guard remembers it, the training loop stops at its first step, and the command exits 143
    from harness.guard import main_guard
    from harness.periodic import StopFlag
    from harness.world import World

    monkeypatch.delenv("PURESTEP_DEBUG", raising=False)
    monkeypatch.setattr(StopFlag, "pending", None)
    stopped = []

    @main_guard
    def main(argv=None):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2)  # the handler runs here and raises
        except BaseException:  # what a catch-all does with it
            pass
        with StopFlag(World(), 50, "cpu") as stop:  # a loop that starts after it: stops at once
            stopped.append(stop(1))
        return 0

    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 143 and stopped == [True]
    assert capsys.readouterr().err.startswith("error: terminated (SIGTERM")
    StopFlag.pending = None  # the next command starts clean
    with StopFlag(World(), 50, "cpu") as stop:
        assert not stop(1)

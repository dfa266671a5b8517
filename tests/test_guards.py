"""Issue 31's probes: every entry point as guarded as training (the compile cache, the pages, the lock,
resumes on other data, final weights, logs and configs read back). Each test failed before its fix."""

import json
import os
import pickle
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.io import write_png

import engine
from engine import UntrustedEntry, cache_key, checkpoint_digest, read_signed
from engine.checkpoint import CorruptCheckpoint
from harness.data import Dataset
from harness.files import FileError, json_text, read_json
from harness.loader import Loader
from harness.rundir import LOCK, append_record, lock_run_dir, resume_state, trim_logs, write_checkpoint
from tests.conftest import ROOT, run_main
from tests.test_reliability import VAE, _error_line, _run
from tests.test_timing import _build
from tests.test_timing import _run as _steps

# ---- 1. the compile cache never unpickles what this user did not write -----------------------------


class _Payload:
    """Unpickling this touches a marker file: what a planted cache entry could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_in_the_compile_cache_is_refused_removed_and_never_run(tmp_path, capsys):
    ref, _ = _steps(*_build(None))
    marker, base = tmp_path / "ran", tmp_path / "steps" / "net.aot"
    _steps(*_build(base))  # the step's file: net-<its fingerprint>.aot
    [path] = (tmp_path / "steps").glob("net-*.aot")
    path.with_name(path.name + ".sig").unlink()
    path.write_bytes(pickle.dumps(_Payload(marker)))  # planted under the name the step looks up
    torch._dynamo.reset()
    got, _ = _steps(*_build(base))  # compiled afresh, saved and signed over the planted file
    assert not marker.exists()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert "refused and removed" in capsys.readouterr().err
    assert read_signed(path) is not None  # the new entry, ours
    key = path.parent / "key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(cache_key(path.parent)) == 32
    # the same payload under a copied signature file, or a signed entry made writable by others
    sig = path.with_name(path.name + ".sig")
    planted = pickle.dumps(_Payload(marker))
    path.write_bytes(planted)
    assert pytest.raises(UntrustedEntry, read_signed, path).match("does not match its signature")
    path.unlink()
    torch._dynamo.reset()
    _steps(*_build(base))  # a genuine entry again
    os.chmod(path, 0o666)
    assert pytest.raises(UntrustedEntry, read_signed, path).match("writable by others")
    sig.unlink()
    os.chmod(path, 0o644)
    assert pytest.raises(UntrustedEntry, read_signed, path).match("no signature")
    assert not marker.exists()


# ---- 2. explore.html: nothing from a run's files becomes script ------------------------------------


def test_the_explorer_page_escapes_every_value_it_embeds(tmp_path):
    from evaluation.explore import _write, script_json

    hostile = "</script><script>document.title='owned'</script>\u2028&"
    text = script_json({hostile: [hostile, 1.5, float("nan")]})
    assert not any(c in text for c in "<>&\u2028") and json.loads(text) == {hostile: [hostile, 1.5, None]}
    template = (ROOT / "evaluation" / "pages" / "gan.html").read_text()
    data = {
        "title": hostile,
        "numbers": {hostile: hostile},
        "neighbours": 1,
        "radius": 1,
        "size": 1,
        "epochs": [],
    }
    page = _write(tmp_path, "gan", data, {"SPRITE": "%GRIDS%", "GRIDS": script_json([hostile])}).read_text()
    assert page.count("<script") == template.count("<script") and "owned" in page
    assert "</script><script>document" not in page


# ---- 3. a planted link is never followed ----------------------------------------------------------


def test_a_lock_or_log_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK).symlink_to(target)
    with pytest.raises(FileError, match="symbolic link"):
        lock_run_dir(run_dir)
    (run_dir / "metrics.jsonl").symlink_to(target)
    with pytest.raises(FileError, match="symbolic link"):
        append_record(run_dir / "metrics.jsonl", {"step": 1})
    assert target.read_text() == "keep me\n"


# ---- 4 and 8. a cursor that cannot be this data's, or none, is one line; nothing is pruned --------


def _data(n: int) -> Dataset:
    return Dataset(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.zeros(n, dtype=torch.long))


def _checkpointed(tmp_path, extra=None, images=640, step=3):
    """A run directory with one checkpoint at `step` of a loader over `images` (batch 64)."""
    loader = Loader(_data(images), 64, seed=0)
    while loader.steps_taken < step:
        next(iter(loader))
    state = {"w": torch.ones(3)}
    extra = {"loader": loader.state_dict()} if extra is None else extra
    write_checkpoint(tmp_path, step, state, extra, {}, keep=2)
    return state


@pytest.mark.parametrize(
    "case,words",
    [
        ("smaller data", "not step 12 of this data: resumed on other data"),
        ("forged epoch", "not step 3 of this data"),
        ("batch past the end", "outside this data's 10 batches per epoch"),
        ("no cursor", "holds no loader cursor"),
        ("bad rng", "generator state"),
    ],
)
def test_a_cursor_that_cannot_belong_to_this_data_is_one_line_and_prunes_nothing(tmp_path, case, words):
    loader = Loader(_data(640), 64, seed=0)
    for _ in zip(range(3), loader):  # the cursor of step 3
        pass
    extra = {"loader": loader.state_dict()}
    if case == "forged epoch":
        extra["loader"]["epoch"] = torch.tensor(99_999_999)
    elif case == "batch past the end":
        extra["loader"]["batch"] = torch.tensor(12)
    elif case == "no cursor":
        extra = {"history": {}}
    elif case == "bad rng":
        extra["loader"]["rng"] = torch.zeros(7, dtype=torch.uint8)
    if case == "smaller data":  # step 12 of 640 images is epoch 1, batch 2; of 200 it would be step 5
        state = _checkpointed(tmp_path, step=12)
    else:  # a forged cursor under a valid checksum
        state = _checkpointed(tmp_path, step=3)
        _rewrite_checkpoint(tmp_path / "checkpoints" / "step-00000003.safetensors", extra)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    resumed = Loader(_data(200 if case == "smaller data" else 640), 64, seed=0)
    with pytest.raises(engine.CheckpointError, match=words):
        resume_state(tmp_path, state, resumed)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert resumed.epoch == 0 and resumed.batch == 0


def _rewrite_checkpoint(path, extra) -> None:
    """The checkpoint at path with its loader extras replaced and a valid checksum (a forgery)."""
    flat = {k: v for k, v in load_file(str(path)).items() if not k.startswith("extra/")}
    flat.update({f"extra/{k}": v for k, v in engine.flatten_state(extra).items()})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
    meta["sha256"] = checkpoint_digest(flat, meta)
    save_file(flat, str(path), metadata=meta)


def test_an_empty_epoch_raises_instead_of_spinning():
    loader = Loader(_data(640), 64, seed=0)
    loader.batch = 10  # a cursor past the end, set by hand
    with pytest.raises(ValueError, match="outside the epoch"):
        next(iter(loader))


def test_a_checkpoint_that_does_not_read_back_keeps_the_older_ones(tmp_path, monkeypatch):
    _checkpointed(tmp_path, step=3)
    _checkpointed(tmp_path, step=4)
    import harness.rundir as rundir

    def damaged(path):
        raise CorruptCheckpoint(f"{path} is corrupt")

    monkeypatch.setattr(rundir, "verify_checkpoint", damaged)
    with pytest.raises(CorruptCheckpoint):
        _checkpointed(tmp_path, step=5)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert {"step-00000003.safetensors", "step-00000004.safetensors"} <= set(names)


# ---- 6. final weights carry a checksum every loader checks -----------------------------------------


def test_a_bit_flipped_weights_file_is_refused_by_its_checksum(tmp_path):
    path = tmp_path / "model.safetensors"
    engine.save_weights(path, {"w": torch.arange(64.0)}, {"n": torch.tensor(3)})
    weights, meta = engine.load_weights(path)
    assert torch.equal(weights["w"], torch.arange(64.0)) and meta["format"] == "weights"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01  # one bit of the last tensor's bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpoint, match="do not match the checksum"):
        engine.load_weights(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "weights"})  # no checksum
    with pytest.raises(CorruptCheckpoint, match="with a checksum"):
        engine.load_weights(path)


def test_every_committed_weights_file_carries_a_checksum_that_holds():
    files = subprocess.check_output(["git", "ls-files", "*.safetensors"], cwd=ROOT, text=True).split()
    assert len(files) >= 10
    for name in files:
        engine.load_weights(ROOT / name)


def test_evaluate_refuses_a_bit_flipped_model(data_root, tmp_path):
    run = tmp_path / "run"
    _run(data_root, [*VAE, "--max-steps", 2, "--run-dir", run])
    model = run / "model.safetensors"
    raw = bytearray(model.read_bytes())
    raw[-3] ^= 0x10
    model.write_bytes(bytes(raw))
    _, err = _run(
        data_root, [run, "--iwae-k", 2, "--iwae-images", 10], expect=2, module="experiments.evaluate"
    )
    assert "do not match the checksum" in _error_line(err)


# ---- 7. a run that cannot start writes nothing a retry would trip on ------------------------------


@pytest.mark.parametrize("cause", ["data folder", "batch"])
def test_a_run_that_fails_before_training_leaves_no_config_and_the_retry_starts(data_root, tmp_path, cause):
    run = tmp_path / "run"
    bad = {"data folder": (tmp_path / "nowhere", []), "batch": (data_root, ["--batch-size", 100_000])}
    where, extra = bad[cause]
    _, err = _run(where, [*VAE, "--max-steps", 2, "--run-dir", run, *extra], expect=2)
    _error_line(err)
    assert not (run / "config.json").exists()
    _run(data_root, [*VAE, "--max-steps", 2, "--run-dir", run])


# ---- 10. logs and configs read back: one line, never a hang or a traceback -------------------------


@pytest.mark.parametrize("line", ["[1, 2]", '{"step": "x"}'])
def test_a_log_line_that_is_not_a_record_is_one_line(tmp_path, line):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n' + line + '\n{"step": 2}\n')
    with pytest.raises(FileError, match="line 2"):
        trim_logs(tmp_path, 1)


def test_a_fifo_log_or_config_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "metrics.jsonl")
    with pytest.raises(FileError, match="not a regular file"):
        trim_logs(tmp_path, 1)
    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(FileError, match="not a regular file"):
        read_json(tmp_path / "config.json")


def test_a_deeply_nested_or_non_object_config_is_one_line_on_resume(data_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for text, words in (("[" * 200_000 + "]" * 200_000, "nested too deeply"), ("[1, 2]", "not the dict")):
        (run / "config.json").write_text(text)
        _, err = _run(data_root, ["--resume", run], expect=2)
        assert words in _error_line(err)


def test_json_written_by_the_project_is_strict_json():
    text = json_text({"loss": float("nan"), "ok": [1.0, float("inf")]})
    assert json.loads(text) == {"loss": None, "ok": [1.0, None]} and "NaN" not in text


def test_runs_with_a_lock_symlink_end_in_one_line(data_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "target"
    target.write_text("x")
    (run / LOCK).symlink_to(target)
    _, err = _run(data_root, [*VAE, "--max-steps", 2, "--run-dir", run], expect=2)
    assert "symbolic link" in _error_line(err) and target.read_text() == "x"


# ---- 5. every writer takes the run-dir lock -------------------------------------------------------


def test_a_sweep_into_a_live_run_directory_is_refused_and_writes_nothing(data_root, tmp_path):
    from tests.test_reliability import _start, _wait_for

    run = tmp_path / "run"
    live = _start(data_root, [*VAE, "--epochs", 50, "--run-dir", run])
    try:
        _wait_for(run / "config.json", live)
        _, err = _run(data_root, ["--out", run, "--max-steps", 1], expect=2, module="experiments.sweep")
        assert "holds a training run" in _error_line(err) or "in use by another run" in _error_line(err)
        assert not (run / "summary.json").exists() and not (run / "summary.md").exists()
    finally:
        live.kill()
        live.communicate()


# ---- 9, 14, 15, 16: sizes and values refused up front, in one line --------------------------------


@pytest.mark.parametrize(
    "module,args,words",
    [
        ("experiments.vae", ["--latent-dim", 1_000_000_000], "out of memory"),
        ("experiments.vae", ["--target-loss", "nan"], "--target-loss must be a finite number"),
        ("experiments.gan", ["--max-pixels", 0], "--max-pixels must be at least 1"),
        (
            "experiments.gan",
            ["--eval-samples", 1],
            "--eval-samples must be 0 (no final score) or at least 10",
        ),
        ("experiments.sweep", ["--batch-size", 0], "--batch-size must be at least 1"),
        ("experiments.sweep", ["--batch-size", 100_000], "exceeds the 60000 training images"),
        ("experiments.sweep", ["--batch-size", -7], "--batch-size must be at least 1"),
        ("experiments.sweep", ["--max-steps", -1], "--max-steps and --iwae-images must be at least 0"),
        ("experiments.sweep", ["--seed", "1e20"], "invalid int value"),
        ("experiments.sweep", ["--iwae-k", 0], "--iwae-k at least 1"),
    ],
)
def test_sizes_and_values_that_cannot_work_are_one_line(data_root, tmp_path, module, args, words):
    where = ["--out", tmp_path / "out"] if module == "experiments.sweep" else ["--run-dir", tmp_path / "run"]
    if words == "out of memory":  # a real allocation that fails: in a process of its own
        _, err = _run(data_root, [*args, *where, "--no-progress"], expect=2, module=module)
    else:
        err = run_main(module, [*args, *where, "--no-progress"], data_root).stderr
    lines = err.strip().splitlines()  # ours start "error: ", argparse's "python -m ...: error: "
    assert "Traceback" not in err and "error: " in lines[-1] and words in lines[-1], err
    assert all(line.startswith("warning: ") for line in lines[:-1]), err
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    "value,words",
    [("1e400", "--lr must be a finite number"), ("20000000000000000000", "--epochs is out of range")],
)
def test_config_values_past_the_number_range_are_one_line(data_root, tmp_path, value, words):
    from experiments.vae import VAEConfig

    run = tmp_path / "run"
    run.mkdir()
    config = {"experiment": "vae", **VAEConfig(arch="mlp", latent_dim=4).__dict__}
    key = "lr" if "lr" in words else "epochs"
    text = json.dumps({**config, key: "PLACEHOLDER"}).replace('"PLACEHOLDER"', value)
    (run / "config.json").write_text(text)
    err = run_main("experiments.vae", ["--resume", run], data_root).stderr
    assert words in _error_line(err)


def test_a_diverged_run_under_skip_nonfinite_exits_3_with_strict_json(data_root, tmp_path):
    run = tmp_path / "run"
    _, err = _run(
        data_root, [*VAE, "--max-steps", 3, "--lr", "1e9", "--skip-nonfinite", "--run-dir", run], expect=3
    )
    assert "the run diverged" in _error_line(err)
    json.loads((run / "final.json").read_text())  # null, never the token NaN


@pytest.mark.parametrize("args", [["--run-dir", "/"], ["--resume"]])
def test_a_run_dir_that_is_not_a_run_is_refused_and_left_untouched(data_root, tmp_path, args):
    env = {**os.environ, "DATA_DIR": str(data_root), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "experiments.vae", *VAE, "--max-steps", 1, *args]
    proc = subprocess.run(list(map(str, cmd)), cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    _error_line(proc.stderr)
    assert not (tmp_path / LOCK).exists() and not os.path.lexists("/" + LOCK)


def test_a_start_killed_before_its_config_landed_can_be_started_again(data_root, tmp_path):
    # what a SIGKILL between writing config.json's temporary file and renaming it in leaves: the
    # lock and the temporary file; starting the same command again is a fresh run, not a refusal
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text("12345\n")
    (run / ".config.json.tmp12345").write_text("{")
    _run(data_root, [*VAE, "--max-steps", 1, "--run-dir", run])
    assert (run / "config.json").exists() and not (run / ".config.json.tmp12345").exists()
    other = tmp_path / "other"  # a file of someone else's beside a lock is still refused
    other.mkdir()
    (other / LOCK).write_text("12345\n")
    (other / "notes.txt").write_text("mine")
    _, err = _run(data_root, [*VAE, "--max-steps", 1, "--run-dir", other], expect=2)
    assert "already holds other files" in _error_line(err)


def test_ctrl_c_while_the_entry_point_imports_is_one_line(data_root):
    import signal
    import time

    env = {**os.environ, "DATA_DIR": str(data_root), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.vae", "--help"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(0.3)  # importing torch takes seconds
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # imports finished first on a fast machine: nothing to see
        pytest.skip("the imports finished before the signal")
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().startswith("error: interrupted")


# ---- 11. IDX files: regular files of the size their header says -----------------------------------


def _mnist_copy(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for src in (data_root / "MNIST" / "raw").iterdir():
        (raw / src.name).symlink_to(src)
    target = raw / "train-images-idx3-ubyte"
    target.unlink()
    return target


@pytest.mark.parametrize("kind", ["overflowing dims", "fifo", "/dev/zero"])
def test_idx_files_that_are_not_what_their_header_says_are_one_line(data_root, tmp_path, kind):
    import harness

    target = _mnist_copy(data_root, tmp_path)
    if kind == "overflowing dims":  # 2^32-1 cubed: past int64 in torch.Size.numel()
        target.write_bytes((2051).to_bytes(4, "big") + b"\xff" * 12 + bytes(100))
        words = "its header promises"
    elif kind == "fifo":
        os.mkfifo(target)
        words = "not a regular file"
    else:
        target.symlink_to("/dev/zero")
        words = "not a regular file"
    with pytest.raises(harness.DataError, match=words):
        harness.load_dataset("mnist", "train", root=tmp_path)


# ---- 12. image folders: one frame decoded, PIL's bomb check as the pixel line, no C++ noise --------


def test_an_animated_gif_is_decoded_one_frame_at_a_time(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    a = Image.new("P", (3000, 3000), 0)
    b = a.copy()
    b.putpixel((0, 0), 1)
    a.save(folder / "anim.gif", save_all=True, append_images=[b, a] * 50)  # 101 frames, a few KB
    assert (folder / "anim.gif").stat().st_size < 100_000
    code = (  # VmHWM: this process's peak resident memory (ru_maxrss would count the parent's at fork)
        "from harness.imagefolder import load_image_folder; "
        f"d = load_image_folder({str(folder)!r}, 64); "
        "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM')); "
        "print(len(d.images), int(hwm.split()[1]) // 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    count, peak_mb = map(int, out.stdout.split())
    assert count == 1 and peak_mb < 1500, out  # all 101 frames would be 2.7 GB


def _png_header(width: int, height: int) -> bytes:
    """A PNG of that size as far as its header goes (PIL reads no further to tell the size)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_reported_as_over_the_pixel_limit(tmp_path):
    from harness.imagefolder import load_image_folder

    (tmp_path / "bomb.png").write_bytes(_png_header(20_000, 20_000))  # PIL's own limit: an error
    write_png(torch.zeros(1, 8, 8, dtype=torch.uint8), str(tmp_path / "ok.png"))
    with pytest.warns(UserWarning, match="over 40,000,000 pixels under .*: bomb.png"):
        data = load_image_folder(tmp_path, 8, channels=1)
    assert len(data.images) == 1


def test_a_grey_webp_decodes_without_a_cpp_warning(tmp_path, capfd):
    from PIL import Image

    from harness.imagefolder import load_image_folder

    Image.new("L", (16, 16), 128).save(tmp_path / "grey.webp")
    data = load_image_folder(tmp_path, 16, channels=1)
    assert data.images.shape == (1, 1, 16, 16)
    assert "Warning" not in capfd.readouterr().err


# ---- 13. evaluation entry points on damaged runs: one line each -----------------------------------


@pytest.fixture(scope="module")
def finished_runs(data_root, tmp_path_factory):
    """A finished mlp VAE run and a finished tiny mlp GAN run, copied per test."""
    root = tmp_path_factory.mktemp("finished")
    _run(data_root, [*VAE, "--max-steps", 2, "--run-dir", root / "vae"])
    gan = ["--arch", "mlp", "--max-steps", 2, "--eval-samples", 0, "--probe-every", 0, "--no-compile"]
    _run(data_root, [*gan, "--no-progress", "--run-dir", root / "gan"], module="experiments.gan")
    return root


def _copy(finished_runs, name, tmp_path):
    import shutil

    shutil.copytree(finished_runs / name, tmp_path / name, ignore=shutil.ignore_patterns(LOCK))
    return tmp_path / name


@pytest.mark.parametrize(
    "module,run,damage,words",
    [
        ("experiments.evaluate", "vae", "truncate model", "not a readable safetensors"),
        ("experiments.evaluate", "vae", "other shape", "does not fit this run's model"),
        ("experiments.explore", "vae", "list config", "is not a finished"),
        ("experiments.explore", "vae", "garbage config", "is not a finished"),
        ("experiments.eval_gan", "gan", "truncate generator", "not a readable safetensors"),
    ],
)
def test_damaged_finished_runs_are_one_line_in_every_evaluator(
    finished_runs, data_root, tmp_path, module, run, damage, words
):
    run_dir = _copy(finished_runs, run, tmp_path)
    config = run_dir / "config.json"
    if damage.startswith("truncate"):
        path = run_dir / ("model.safetensors" if run == "vae" else "generator.safetensors")
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "other shape":
        saved = json.loads(config.read_text())
        config.write_text(json.dumps({**saved, "latent_dim": saved["latent_dim"] + 1}))
    elif damage == "list config":
        config.write_text("[1, 2]")
    elif damage == "garbage config":
        config.write_bytes(b"\xff\x00garbage")
    args = [run_dir] + (["--iwae-k", 2, "--iwae-images", 10] if module == "experiments.evaluate" else [])
    args += ["--samples", 100] if module == "experiments.eval_gan" else []
    assert words in _error_line(run_main(module, args, data_root).stderr)


def test_eval_gan_reads_the_keys_it_needs_and_ignores_an_unknown_one(finished_runs, data_root, tmp_path):
    run_dir = _copy(finished_runs, "gan", tmp_path)
    config = run_dir / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "bogus_flag": 1}))
    _run(data_root, [run_dir, "--samples", 100], module="experiments.eval_gan")
    assert json.loads((run_dir / "eval.json").read_text())["samples"] == 100


def test_compare_with_a_torn_config_trains_afresh_or_says_so_in_one_line(finished_runs, data_root, tmp_path):
    from experiments.compare import _same_config

    run_dir = _copy(finished_runs, "vae", tmp_path)
    (run_dir / "config.json").write_text('{"arch": "ml')  # torn mid-write
    assert _same_config(run_dir, {"arch": "mlp"}) is False


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))

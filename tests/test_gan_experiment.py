"""The GAN experiment and its evaluation end to end: real MNIST, image folders, resume, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torchvision.io import write_png

from evaluation.fidelity import RealReference
from evaluation.sampling import Sampler, sample_images
from harness.data import load_dataset
from losses.gan import make_gan_loss
from models.gan import build_gan
from tests.conftest import run_cli, run_main

FAST = ["--no-compile", "--no-progress", "--batch-size", "256"]


def _records(run_dir, name="metrics.jsonl"):
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def mlp_gan_run(data_root, tmp_path_factory):
    """One epoch (937 steps of 64) of the MLP GAN on MNIST, scored on 2,000 samples."""
    run = tmp_path_factory.mktemp("gan") / "run"
    args = ["--no-compile", "--no-progress", "--arch", "mlp", "--batch-size", "64", "--lr", "1e-3"]
    args += [
        "--r1-gamma",
        "0",
        "--b1",
        "0.5",
        "--b2",
        "0.999",
    ]  # the recipe the numbers below were measured on
    args += ["--epochs", "1", "--eval-samples", "2000", "--run-dir", run, "--target-fid", "1e6"]
    args += ["--probe-every", "400", "--probe-samples", "500"]
    run_cli("experiments.gan", args, data_root)
    return run


def test_gan_learns_on_mnist_and_writes_its_run_directory(data_root, mlp_gan_run):
    run = mlp_gan_run
    (record,) = _records(run)
    assert {
        "train_d_loss",
        "train_g_loss",
        "train_d_real",
        "train_d_fake",
        "test_fid",
        "test_is",
    } <= record.keys()
    steps = _records(run, "steps.jsonl")
    assert [s["step"] for s in steps] == list(range(10, 937 + 1, 10))
    # the trained generator is far closer to the test set than the same network untrained
    # (measured: FID 1147 against 3308, IS 4.1 against 1.0)
    reference = RealReference("mnist", load_dataset("mnist", "test", root=data_root))
    torch.manual_seed(0)  # the run's --seed: its initial weights
    gen, disc = build_gan("mlp", (1, 28, 28), 100, 64)  # experiments.gan defaults
    untrained = reference.score(
        sample_images(Sampler(make_gan_loss(gen, disc).generate, *_tensors(gen), 100), 2000, 0)
    )
    final = json.loads((run / "final.json").read_text())
    assert final["fid"] < 0.5 * untrained["fid"] and final["is"] > untrained["is"] + 1
    assert 0 <= final["precision"] <= 1 and 0 <= final["recall"] <= 1
    for name in ("losses_per_step.png", "losses_per_epoch.png", "fid_is.png", "samples_vs_real.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG", name
    assert (run / "progress.gif").read_bytes()[:3] == b"GIF"
    probes = _records(run, "probes.jsonl")  # the quality-against-time curve: every 400 steps
    assert [(p["step"], p["images"]) for p in probes] == [(400, 400 * 64), (800, 800 * 64)]
    assert probes[0]["wall_s"] < probes[1]["wall_s"] and probes[1]["fid"] < probes[0]["fid"]
    assert {"fid", "is", "precision", "recall"} <= probes[0].keys()
    assert (run / "quality_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    gen.load_state_dict(load_file(str(run / "generator.safetensors")), strict=True)


def _tensors(module):
    return dict(module.named_parameters()), dict(module.named_buffers())


def test_eval_gan_writes_the_table_with_floor_and_vae_rows(data_root, mlp_gan_run, tmp_path):
    vae = tmp_path / "vae"
    run_cli("experiments.vae", [*FAST, "--arch", "mlp", "--max-steps", "30", "--run-dir", vae], data_root)
    proc = run_cli("experiments.eval_gan", [mlp_gan_run, "--vae-run", vae, "--samples", "1000"], data_root)
    result = json.loads((mlp_gan_run / "eval.json").read_text())
    rows = result["rows"]
    floor = rows["real training images (the floor)"]
    gan = next(r for name, r in rows.items() if name.startswith("GAN"))
    assert 0 < floor["fid"] < gan["fid"] and floor["precision"] > 0.5 and floor["recall"] > 0.5
    assert any(name.startswith("VAE samples") for name in rows)
    assert rows["real test images (vs themselves)"]["is"] > 9.0
    report = (mlp_gan_run / "report.md").read_text()
    assert "| real training images (the floor) |" in report and "nearest_neighbours.png" in report
    assert (mlp_gan_run / "nearest_neighbours.png").exists() and "report.md" in proc.stdout


RESUMED = {  # WGAN-GP with two critic steps per generator step; the R1 recipe, conditional, mode-seeking,
    # with both players' learning rates on a cosine decay
    "wgan-gp": ["--loss", "wgan-gp", "--r1-gamma", "0", "--n-disc", "2"],
    "r1-conditional": ["--conditional", "--mode-seeking", "1", "--n-disc", "2", "--lr-decay", "cosine"],
}


def _train(data_root, run_dir, max_steps, resume=False, recipe="wgan-gp"):
    args = [*FAST, "--arch", "mlp", *RESUMED[recipe], "--epochs", "2", "--batch-size", "128"]
    args += ["--eval-samples", "0", "--probe-every", "0", "--max-steps", max_steps]
    args += ["--resume", run_dir] if resume else ["--run-dir", run_dir]
    run_cli("experiments.gan", args, data_root)


@pytest.mark.parametrize("recipe", RESUMED)
def test_gan_resume_in_a_new_process_is_bitwise_exact(data_root, tmp_path, recipe):
    """Interrupted mid-epoch, continued in a new process: the same state, bit for bit."""
    n, k = 40, 15
    _train(data_root, tmp_path / "straight", n, recipe=recipe)
    _train(data_root, tmp_path / "split", k, recipe=recipe)
    _train(data_root, tmp_path / "split", n, resume=True, recipe=recipe)
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and {"gen/step", "disc/step", "ema/net.0.weight"} <= a.keys()
    bits = lambda t: t.reshape(-1).view(torch.uint8)  # noqa: E731  (nan == nan: a lazy R1's unmeasured steps)
    assert not [key for key in a if not torch.equal(bits(a[key]), bits(b[key]))]
    assert int(a["gen/step"]) == n and int(a["disc/step"]) == 2 * n
    if recipe == "r1-conditional":  # lazy R1 (every 16th step): steps 0, 16 and 32 of the 40 measured it
        assert torch.isfinite(a["extra/history/d_r1"]).nonzero().flatten().tolist() == [0, 16, 32]
        from engine import cosine
        from tests.test_timing import _scalars

        # the generator's rate, logged every 10 steps, is the cosine over 2 epochs of 60,000 // 256 steps
        series, _ = _scalars(tmp_path / "straight" / "tensorboard")
        want = cosine(5e-4, 2 * (60_000 // 256))
        assert [s for s, _ in series["lr"]] == [10, 20, 30, 40]
        expected = [float(want(torch.tensor(s))) for s in (10, 20, 30, 40)]
        assert [lr for _, lr in series["lr"]] == pytest.approx(expected)
        assert series["lr"][-1][1] < 5e-4 * 0.99


def test_eval_gan_reports_per_class_agreement_and_the_classification_accuracy_score(data_root, tmp_path):
    run = tmp_path / "cond"
    _train(data_root, run, 40, recipe="r1-conditional")
    proc = run_cli("experiments.eval_gan", [run, "--samples", "1000", "--cas-samples", "2000"], data_root)
    result = json.loads((run / "eval.json").read_text())
    per_class = result["per_class_agreement"]  # 100 images asked for each class
    assert len(per_class) == 10 and sum(per_class) / 10 == pytest.approx(result["label_agreement"])
    cas = result["cas"]  # 40 steps of an mlp GAN teach a classifier less than 2,000 real digits do
    assert 0 <= cas["generated"] < cas["real"] and cas["real"] > 0.5
    assert "classification accuracy score" in proc.stdout
    assert "| agreement |" in (run / "report.md").read_text()


def test_compare_generators_scores_every_kind_of_run_in_one_table(data_root, mlp_gan_run, tmp_path):
    ae, vae = tmp_path / "ae", tmp_path / "vae"
    run_cli("experiments.ae", [*FAST, "--arch", "mlp", "--max-steps", "30", "--run-dir", ae], data_root)
    run_cli("experiments.vae", [*FAST, "--arch", "mlp", "--max-steps", "30", "--run-dir", vae], data_root)
    out = tmp_path / "generators.md"
    args = [
        "--ae-run",
        ae,
        "--vae-run",
        vae,
        "--vamp-run",
        "",
        "--gan-run",
        mlp_gan_run,
        "--cond-gan-run",
        "",
    ]
    flags = [*args, "--samples", "500", "--components", "3", "--out", out]  # 3 Gaussians: a third of the EM
    proc = run_cli("experiments.compare_generators", flags, data_root)
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| AE", "| VAE", "| GAN"))]
    assert [r.split(" ")[1] for r in rows] == ["AE", "VAE", "GAN"], table
    assert "3 Gaussians on 60,000 training codes" in rows[0] and "N(0, I) prior" in rows[1]
    floor = float(table.split("real training images: **")[1].split("**")[0])
    fids = [float(r.split("|")[2]) for r in rows]
    assert all(fid > floor > 0 for fid in fids)  # 30 steps of each are far from real digits
    assert out.with_suffix(".png").exists() and "wrote" in proc.stdout
    proc = run_cli("experiments.compare_generators", ["--ae-run", vae, "--out", out], data_root, expect=2)
    assert "is not an AE run" in proc.stderr


def _art(folder, n=40):
    """n random RGB images of assorted sizes in `folder`."""
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        h, w = 60 + 7 * (i % 5), 80 - 5 * (i % 4)
        write_png((torch.rand(3, h, w, generator=g) * 255).to(torch.uint8), str(folder / f"img{i:02d}.png"))
    return folder


def test_image_folder_trains_a_64px_rgb_dcgan(tmp_path, data_root):
    folder = _art(tmp_path / "art")
    (folder / "broken.png").write_bytes(b"not a png")
    run = tmp_path / "run"
    args = ["--no-compile", "--no-progress", "--dataset", "imagefolder", "--image-folder", folder]
    args += ["--arch", "dcgan", "--augment", "none", "--r2-gamma", "0"]  # the digits' recipe on a folder
    args += ["--batch-size", "16", "--width", "8", "--epochs", "1", "--run-dir", run]
    proc = run_cli("experiments.gan", args, data_root)
    assert "broken.png" in proc.stderr
    (record,) = _records(run)
    assert (run / "progress.gif").exists() and (run / "swd.png").exists()
    # scored by SWD against the 4 held-out images (a tenth of 40); the floor: 4 training images
    assert record["test_swd"] > 0 and record["test_swd_floor"] > 0 and "test_swd_64px" in record
    weights = load_file(str(run / "generator.safetensors"))
    assert weights["net.12.weight"].shape == (8, 3, 4, 4)  # the last transposed conv: 64x64 RGB out
    last = load_file(str(run / "discriminator.safetensors"))["net.9.weight"]
    # --mbstd 4, the folder default: D's last conv reads the spread channel too
    assert last.shape == (1, 8 * 8 + 1, 4, 4)
    run_cli("experiments.eval_gan", [run, "--rejection"], data_root)  # D rebuilt with it from config.json
    result = json.loads((run / "eval.json").read_text())
    assert result["metric"] == "swd" and result["samples"] == 4
    floor, gan = result["rows"]["training images (the floor)"], next(iter(result["rows"].values()))
    assert gan["swd"] > floor["swd"] > 0  # one epoch of 2 steps is far from the real photos
    assert "| training images (the floor) |" in (run / "report.md").read_text()


def test_the_folder_recipe_resumes_bitwise_and_watches_for_collapse(tmp_path, data_root):
    """--image-folder alone (and --arch resnet, --color-p 0.5): DiffAugment of what D sees (colour on
    half of it), R1 + R2 (lazy, every 4th step here); interrupted and resumed in a new process, the
    same state bit for bit; every probe logs the samples' diversity beside the real images', and
    the grids include the nearest training image of each sample. (Eager: a compiled residual pair's
    double backward takes minutes to compile on 2 cores; the compiled GAN step's resume is tested
    on MNIST.)"""
    folder = _art(tmp_path / "art")

    def train(run, steps, resume=False):
        args = ["--no-compile", "--no-progress", "--image-folder", folder, "--arch", "resnet", "--width", "4"]
        args += ["--batch-size", "8", "--epochs", "4", "--r1-every", "4", "--probe-every", "5"]
        args += ["--color-p", "0.5"]
        args += ["--max-steps", steps, *(["--resume", run] if resume else ["--run-dir", run])]
        return run_cli("experiments.gan", args, data_root)

    train(tmp_path / "straight", 14)  # 4 steps an epoch (36 training images): mid-epoch 4
    train(tmp_path / "split", 7)
    train(tmp_path / "split", 14, resume=True)
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    recipe = [config[k] for k in ("dataset", "arch", "r2_gamma", "mbstd", "color_p")]
    assert recipe == ["imagefolder", "resnet", 0.1, 4, 0.5]
    assert config["augment"] == ["color", "translation", "cutout"]
    a, b = (load_file(str(tmp_path / r / "checkpoint.safetensors")) for r in ("straight", "split"))
    bits = lambda t: t.reshape(-1).view(torch.uint8)  # noqa: E731
    assert a.keys() == b.keys() and not [k for k in a if not torch.equal(bits(a[k]), bits(b[k]))]
    assert torch.isfinite(a["extra/history/d_r2"]).tolist() == [True, False]  # steps 12 (penalised) and 13
    probes = _records(tmp_path / "straight", "probes.jsonl")
    assert [p["step"] for p in probes] == [5, 10]
    assert all(0 <= p["diversity"] and p["diversity_real"] > 0.5 for p in probes)
    assert (tmp_path / "straight" / "nearest_neighbours.png").exists()


@pytest.mark.parametrize(
    "args,words",
    [
        (["--dataset", "imagefolder"], "needs --image-folder"),
        (["--dataset", "imagefolder", "--image-folder", "/nonexistent/dir"], "/nonexistent/dir"),
        (["--dataset", "imagefolder", "--image-folder", ".", "--target-fid", "5"], "--target-fid needs"),
        (["--loss", "minimax"], "invalid choice"),
        (["--n-disc", "0"], "--n-disc and --r1-every must be"),
        (["--disc-norm"], "--disc-norm: a gradient penalty"),
        (["--r1-gamma", "-1"], "--r1-gamma"),
        (["--mode-seeking", "-0.5"], "--mode-seeking"),
        (["--g-class-weight", "-0.5"], "--g-class-weight must be >= 0"),
        (["--disc-width", "-1"], "--disc-width and --mbstd at least 0"),
        (["--mbstd", "-2"], "--disc-width and --mbstd at least 0"),
        (["--arch", "mlp", "--mbstd", "4"], "needs a conv D"),
        (["--augment", "color,flip"], "--augment must be one of"),
        (["--augment", "none,color"], "--augment: none, or names"),
        (["--r2-gamma", "-2"], "--r2-gamma"),
        (
            ["--top-k", "0.5", "--loss", "relativistic"],
            "--top-k must be in (0, 1] (1 with --loss relativistic)",
        ),
        (["--conditional", "--dataset", "imagefolder", "--image-folder", "."], "--conditional needs"),
        (
            [
                "--arch",
                "dcgan",
                "--dataset",
                "imagefolder",
                "--image-folder",
                "{empty}",
                "--image-size",
                "32",
            ],
            "",
        ),
    ],
)
def test_bad_gan_flags_end_in_one_line_and_exit_2(data_root, tmp_path, args, words):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in args]
    proc = run_main("experiments.gan", [*FAST, "--run-dir", tmp_path / "r", *args], data_root)
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr


def test_eval_gan_refuses_a_run_that_is_not_a_gan(data_root, tmp_path):
    proc = run_main("experiments.eval_gan", [tmp_path], data_root)
    assert "not a finished GAN run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_gan_loss_comparison_writes_mean_and_std_per_loss_and_reuses_finished_runs(data_root, tmp_path):
    table, out = tmp_path / "losses.md", tmp_path / "runs"
    args = ["--args", "--arch mlp --width 8 --no-compile --batch-size 32", "--steps", "3", "--seeds", "0,1"]
    args += ["--eval-samples", "50", "--out", out, "--table", table, "--losses", "hinge,wgan-gp,default"]
    run_cli("experiments.gan_losses", args, data_root)
    text = table.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "±" in line]
    assert [r.split(" | ")[0] for r in rows] == ["| hinge", "| WGAN-GP", "| default: non-saturating + R1"]
    assert sorted(p.name for p in out.iterdir()) == [
        f"{n}-seed{s}" for n in ("default", "hinge", "wgan-gp") for s in (0, 1)
    ]
    scores = json.loads((out / "wgan-gp-seed1" / "comparison.json").read_text())
    assert {"fid", "precision", "recall", "is", "wall_s"} <= scores.keys()
    assert json.loads((out / "wgan-gp-seed1" / "config.json").read_text())["loss"] == "wgan-gp"
    assert json.loads((out / "default-seed0" / "config.json").read_text())["r1_gamma"] > 0
    fid = [json.loads((out / f"hinge-seed{s}" / "comparison.json").read_text())["fid"] for s in (0, 1)]
    mean = sum(fid) / 2
    assert f"| hinge | {mean:.2f} ± {abs(fid[0] - fid[1]) / 2**0.5:.2f} |" in text
    before = {p: p.stat().st_mtime_ns for p in out.rglob("generator.safetensors")}
    run_cli("experiments.gan_losses", args, data_root)  # every run finished: nothing retrains
    assert {p: p.stat().st_mtime_ns for p in out.rglob("generator.safetensors")} == before


def test_loss_comparison_refuses_an_unknown_loss():
    from experiments.gan_losses import GANLossesConfig
    from harness.config import UsageError, parse_config

    with pytest.raises(UsageError, match="--losses: unknown minimax; choose from non-saturating, hinge"):
        parse_config(GANLossesConfig, ["--losses", "hinge,minimax"], "gan_losses")


def test_exported_fp16_generator_scores_like_the_run_and_the_baseline_curve_is_drawn(
    data_root, mlp_gan_run, tmp_path
):
    out = tmp_path / "committed"
    args = [mlp_gan_run, "--samples", "1000", "--export", out, "--baseline-run", mlp_gan_run]
    run_cli("experiments.eval_gan", args, data_root)
    for name in ("generator", "discriminator"):  # D too: --rejection samples with it
        weights = load_file(str(out / f"{name}.safetensors"))
        assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    assert (out / "config.json").exists() and (out / "quality_vs_baseline.png").exists()
    exported = json.loads((out / "eval.json").read_text())
    run_cli("experiments.eval_gan", [mlp_gan_run, "--samples", "1000"], data_root)
    original = json.loads((mlp_gan_run / "eval.json").read_text())
    name = next(n for n in original["rows"] if n.startswith("GAN"))
    fid_a, fid_b = exported["rows"][name]["fid"], original["rows"][name]["fid"]
    assert abs(fid_a - fid_b) < 0.01 * fid_b  # fp16 weights: the same samples up to rounding
    cov = original["coverage"]  # mode coverage of every report
    assert len(cov["class_shares"]) == 10 and abs(sum(cov["class_shares"]) - 1) < 1e-9
    assert "## Mode coverage" in (mlp_gan_run / "report.md").read_text()
    # discriminator rejection sampling with the exported D: one more row (other images: another
    # score), the plain one unchanged; a run without its D is one clear line
    run_cli("experiments.eval_gan", [out, "--samples", "1000", "--rejection"], data_root)
    rows = json.loads((out / "eval.json").read_text())["rows"]
    kept = rows[next(n for n in rows if "rejection" in n)]
    assert rows[name] == exported["rows"][name] and kept["fid"] != rows[name]["fid"]
    assert "discriminator rejection sampling" in (out / "report.md").read_text()
    (out / "discriminator.safetensors").unlink()
    proc = run_cli("experiments.eval_gan", [out, "--rejection"], data_root, expect=2)
    assert "has no discriminator.safetensors" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_compiled_cpu_run_prints_no_cuda_runtime_notice(data_root, tmp_path):
    """torch.compile on a machine without CUDA logs 'No CUDA runtime is found' from cpp_extension:
    nothing a user can act on, so the entry points silence it (and only it)."""
    args = ["--arch", "mlp", "--max-steps", "2", "--no-progress", "--run-dir", tmp_path / "r"]
    proc = run_cli("experiments.vae", args, data_root)  # --compile auto: compiled on the CPU
    assert "No CUDA runtime" not in proc.stderr and "CUDA_HOME" not in proc.stderr

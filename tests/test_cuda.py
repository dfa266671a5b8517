"""Ready for a GPU: the faults a first CUDA run would hit, shown where a CPU can show them, and the
CUDA paths themselves (marked `cuda`: they skip, with the reason, without a usable GPU)."""

import subprocess
import sys

import pytest
import torch

import engine
import harness
import harness.device
from harness.config import UsageError
from harness.world import init_world
from losses import make_elbo_loss
from models import build_vae
from tests.conftest import ROOT


def test_checkpoint_extras_stay_on_the_cpu_whatever_the_state_device(tmp_path):
    # Generator.set_state takes a CPU byte tensor, on CUDA too: the loader's RNG state must not move
    model, opt = build_vae("mlp", 2), engine.adam()
    state = engine.init_state(model, opt)
    loader = harness.Loader(
        harness.Dataset(torch.zeros(64, 28, 28, dtype=torch.uint8), torch.zeros(64)), 16, 0
    )
    engine.save_checkpoint(tmp_path / "c.safetensors", state, {"loader": loader.state_dict()})
    loaded, extra, _ = engine.load_checkpoint(tmp_path / "c.safetensors", state, device="meta")
    assert loaded.params["encoder.fc1.weight"].device.type == "meta"  # the state went where asked
    assert extra["loader/rng"].device.type == "cpu" and extra["loader/rng"].dtype == torch.uint8
    loader.load_state_dict({k[len("loader/") :]: v for k, v in extra.items()})


def test_more_ranks_than_gpus_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageError, match=r"2 processes on this machine but it has 1 GPU\(s\)"):
        init_world("cuda")


def test_cuda_asked_for_without_one_is_a_usage_error_and_auto_names_an_unusable_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    driver = tmp_path / "version"
    driver.write_text("NVRM version: 999")
    monkeypatch.setattr(harness.device, "NVIDIA_DRIVER", driver)
    with pytest.raises(UsageError, match="no CUDA device is available: torch .* (cannot use|CPU-only)"):
        harness.resolve_device("cuda")
    with pytest.warns(UserWarning, match="an NVIDIA GPU is present but torch"):
        assert harness.resolve_device("auto").type == "cpu"
    driver.unlink()  # no GPU at all: auto is quietly the CPU
    assert harness.device.unusable_gpu() is None and harness.resolve_device("auto").type == "cpu"


def test_compile_flag_takes_a_mode_and_keeps_the_switches():
    from experiments.vae import VAEConfig

    def parsed(*argv):
        return harness.parse_config(VAEConfig, list(argv))[0].compile

    assert parsed() == "auto" and parsed("--compile") == "auto" and parsed("--no-compile") == "off"
    assert parsed("--compile", "cudagraphs") == "cudagraphs"
    assert (
        VAEConfig(compile=True).compile == "auto" and VAEConfig(compile=False).compile == "off"
    )  # old configs
    with pytest.raises(SystemExit):
        parsed("--compile", "fast")


def test_smoke_gpu_without_cuda_exits_2_with_one_line():
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.smoke_gpu"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: smoke-gpu needs a CUDA device")
    assert len(proc.stderr.strip().splitlines()) == 1


def _mlp_vae_steps(device, compile, precision="fp32", donate=True, steps=5):
    torch.manual_seed(0)
    model = build_vae("mlp", 8).to(device)
    opt = engine.adam(1e-3)
    step = engine.make_train_step(
        make_elbo_loss(model), opt, engine.StepOptions(precision=precision, compile=compile, donate=donate)
    )
    state = engine.init_state(model, opt, engine.scaler_init(device) if precision == "fp16" else None)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        batch = {"x": torch.rand(32, 1, 28, 28, generator=g), "eps": torch.randn(32, 8, generator=g)}
        state, metrics = step(state, {k: v.to(device) for k, v in batch.items()})
        losses.append(metrics["loss"].cpu())
    return state, torch.stack(losses)


@pytest.mark.cuda
@pytest.mark.parametrize("donate", [True, False])
def test_cuda_graph_steps_equal_eager_ones(donate):
    eager, eager_losses = _mlp_vae_steps("cuda", False)
    graphed, losses = _mlp_vae_steps("cuda", "cudagraphs", donate=donate)
    torch.testing.assert_close(losses, eager_losses, rtol=1e-3, atol=1e-3)
    for k, v in eager.params.items():
        torch.testing.assert_close(graphed.params[k], v, rtol=1e-3, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_steps_stay_finite(precision):
    _, losses = _mlp_vae_steps("cuda", True, precision, steps=20)
    assert torch.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean()


@pytest.mark.cuda
def test_cuda_loader_resumes_its_generator(tmp_path):
    data = harness.Dataset(
        torch.zeros(64, 28, 28, dtype=torch.uint8, device="cuda"), torch.zeros(64, device="cuda")
    )
    a = harness.Loader(data, 16, 0, {"eps": (2,)})
    next(iter(a))
    state = {
        k: v.cuda() if k == "rng" else v for k, v in a.state_dict().items()
    }  # as an old checkpoint held it
    b = harness.Loader(data, 16, 0, {"eps": (2,)})
    b.load_state_dict(state)
    assert torch.equal(next(iter(a))["eps"], next(iter(b))["eps"])


@pytest.mark.cuda
def test_cuda_graph_gan_run_resumes_bitwise(tmp_path, data_root):
    """The R1 DCGAN under CUDA graphs: cuDNN's default convolution backward made two identical runs
    differ by 0.3 after 300 steps on an H100; --deterministic (the default) makes a resume exact."""
    from safetensors.torch import load_file

    from tests.conftest import run_cli

    flags = "--device cuda --compile cudagraphs --eval-samples 0 --probe-every 0 --no-progress"
    flags = [*flags.split(), "--checkpoint-every", 20]
    for run_dir, extra in (("a", [40]), ("b", [20]), ("b", [40, "--resume"])):
        args = [*flags, "--run-dir", tmp_path / run_dir, "--max-steps", *extra]
        run_cli("experiments.gan", args, data_root, cuda=True)
    for name in ("generator", "discriminator"):
        a, b = (load_file(str(tmp_path / d / f"{name}.safetensors")) for d in ("a", "b"))
        assert all(torch.equal(a[k], b[k]) for k in a), name

"""make smoke-gpu: the first thing to run on a GPU machine (docs/performance.md: how long it took where).
It asserts CUDA is there, then checks the compiled, CUDA-graph and fp16/bf16 mlp-VAE steps against eager ones,
a donated CUDA-graph run with a checkpoint and a resume against an uninterrupted run, a GAN step,
and the CUDA bench rows; any failure ends it with exit 1, no CUDA with exit 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import engine
import harness
from harness.device import unusable_gpu
from losses import make_elbo_loss, make_gan_loss
from models import build_gan, build_vae

ROOT = Path(__file__).resolve().parents[1]
LATENT = 20


def _vae_steps(compile, precision="fp32", steps=30):
    """Params after `steps` donated mlp-VAE steps on the first MNIST batches, and the losses."""
    torch.manual_seed(0)
    model = build_vae("mlp", LATENT).cuda()
    opt = engine.adam(1e-3)
    step = engine.make_train_step(
        make_elbo_loss(model), opt, engine.StepOptions(precision=precision, compile=compile, donate=True)
    )
    state = engine.init_state(model, opt, engine.scaler_init("cuda") if precision == "fp16" else None)
    loader = harness.Loader(harness.load_mnist(split="train", device="cuda"), 128, 0, {"eps": (LATENT,)})
    losses = []
    for _, batch in zip(range(steps), loader):
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])  # kept across replays: compile_step copies metrics out
    return state, torch.stack(losses).cpu()


def check_steps() -> str:
    eager, eager_losses = _vae_steps(False)
    for mode in ("default", "cudagraphs"):
        state, losses = _vae_steps(mode)
        for k, v in eager.params.items():  # compiled kernels reassociate sums: close, not bitwise
            torch.testing.assert_close(state.params[k], v, rtol=1e-3, atol=1e-4, msg=f"{mode}: {k}")
        torch.testing.assert_close(losses, eager_losses, rtol=1e-3, atol=1e-2, msg=f"{mode}: losses")
    for precision in ("bf16", "fp16"):
        _, losses = _vae_steps("cudagraphs", precision)
        assert torch.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean(), (precision, losses)
    return "compiled and CUDA-graph fp32 steps match eager; bf16 and fp16 losses fall"


def _vae_cli(run_dir: Path, *args) -> None:
    flags = "--arch mlp --device cuda --compile cudagraphs --no-progress --checkpoint-every 20"
    cmd = [sys.executable, "-m", "experiments.vae", *flags.split(), "--run-dir", str(run_dir), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}"


def check_resume() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        whole, split = Path(tmp) / "whole", Path(tmp) / "split"
        _vae_cli(whole, "--max-steps", "80", "--epochs", "1")
        _vae_cli(split, "--max-steps", "40", "--epochs", "1")
        _vae_cli(split, "--resume", "--max-steps", "80")
        a, b = (load_file(str(d / "model.safetensors")) for d in (whole, split))
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert worst <= 1e-5, f"a resumed CUDA-graph run differs from an uninterrupted one by {worst}"
    return f"donated CUDA-graph run: checkpoint at 40, resume to 80 = uninterrupted (max diff {worst:.1e})"


def check_gan() -> str:
    torch.manual_seed(0)
    gen, disc = (m.cuda() for m in build_gan("dcgan", (1, 28, 28), 100, 32))
    g_opt, d_opt = engine.adam(2e-4, b1=0.5), engine.adam(2e-4, b1=0.5)
    step = engine.make_gan_step(
        *make_gan_loss(gen, disc), g_opt, d_opt, engine.StepOptions(compile="cudagraphs", donate=True)
    )
    state = engine.init_gan_state(gen, disc, g_opt, d_opt)
    loader = harness.Loader(harness.load_mnist(split="train", device="cuda"), 64, 0, {"z": (100,)})
    for _, batch in zip(range(10), loader):
        state, metrics = step(state, batch)
    assert all(torch.isfinite(v) for v in metrics.values()), metrics
    return "DCGAN step under CUDA graphs, donated: 10 steps, finite metrics"


def check_bench(out: Path | None = None) -> str:
    out = out or Path(tempfile.mkdtemp()) / "cuda.json"
    cmd = [sys.executable, "-m", "pytest", "bench/test_throughput.py", "-q", "-p", "no:cacheprovider",
           "-k", "cuda and mlp_vae and 128", f"--benchmark-json={out}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return f"CUDA bench rows of the mlp VAE at batch 128: {out}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smoke_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--bench-json", type=Path, help="where the bench rows' pytest-benchmark JSON goes")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"error: smoke-gpu needs a CUDA device: {unusable_gpu() or 'none found'}", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, DATA_DIR={os.environ.get('DATA_DIR')}")
    failed = 0
    checks = {"check_steps": check_steps, "check_resume": check_resume, "check_gan": check_gan,
              "check_bench": lambda: check_bench(args.bench_json)}  # fmt: skip
    for name, check in checks.items():
        t0 = time.perf_counter()
        try:
            print(f"ok   {name}: {check()} ({time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as e:  # every check runs; each failure is reported loudly
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    print("smoke-gpu: " + (f"{failed} check(s) FAILED" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

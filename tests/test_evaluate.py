"""The VAE's likelihood estimates, and evaluation reports of real (short) runs."""

import json

import pytest
import torch

from evaluation.likelihood import iwae_bound
from losses import elbo, log_importance_weights
from models import build_vae
from tests.conftest import run_cli, run_main


@pytest.fixture(scope="module")
def vae_and_data():
    torch.manual_seed(0)
    model = build_vae("mlp", 4).eval()
    x = torch.bernoulli(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    return model, x


@torch.no_grad()
def test_iwae_with_one_sample_is_the_elbo_in_expectation(vae_and_data):
    model, x = vae_and_data
    eps = torch.randn(4000, 8, 4, generator=torch.Generator().manual_seed(2))
    lw = log_importance_weights(model, x, eps)  # (8, 4000): each column a k=1 bound
    mu, logvar = model.encode(x)
    # the ELBO with the analytic KL, on the same reparameterised draws
    elbos = torch.stack(
        [-elbo(model.decode(mu + e * torch.exp(0.5 * logvar)), x, mu, logvar)[0] for e in eps[:400]]
    )
    diff = lw[:, :400].mean(0) - elbos  # mean zero: E_q[log p(z) - log q(z|x)] = -KL
    assert abs(diff.mean()) < 4 * diff.std() / 20 + 1e-3


@torch.no_grad()
def test_iwae_bound_tightens_as_k_grows(vae_and_data):
    model, x = vae_and_data
    eps = torch.randn(1000, 8, 4, generator=torch.Generator().manual_seed(3))
    lw = log_importance_weights(model, x, eps)
    bounds = [
        float(iwae_bound(lw[:, : k * (1000 // k)].reshape(8, -1, k).flatten(0, 1)).mean())
        for k in (1, 10, 100, 1000)
    ]
    assert bounds == sorted(bounds) and bounds[-1] > bounds[0] + 1.0


def _compare_args(out, iwae_k: int, iwae_images: int) -> list:
    return [
        "--arch",
        "mlp",
        "--latent-dim",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--iwae-k",
        iwae_k,
        "--iwae-images",
        iwae_images,
        "--out",
        out,
        "--no-progress",
        "--no-compile",
    ]


@pytest.fixture(scope="module")
def short_runs(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    args = _compare_args(out, iwae_k=20, iwae_images=300)
    proc = run_cli("experiments.compare", args, data_root)
    return out, proc


def test_compare_writes_a_report_from_measured_numbers(short_runs):
    out, proc = short_runs
    ae, vae = (json.loads((out / k / "eval.json").read_text()) for k in ("ae", "vae"))
    assert ae["pca_mse"] == pytest.approx(0.0557, abs=5e-4)  # PCA at 2 dims on MNIST (issue 3)
    assert vae["nll"] <= vae["neg_elbo"] + 0.5  # the IWAE bound is at least as tight as the ELBO
    assert vae["active_units"] <= 2 and len(vae["kl_per_dim"]) == 2
    assert (vae["iwae_k"], vae["iwae_images"]) == (20, 300) and vae["nll_wall_s"] > 0
    assert 0.3 < vae["nll_se"] < 5  # per-image NLLs spread by tens of nats: s.e. = std / sqrt(300)
    assert f"NLL {vae['nll']:.2f} +- {vae['nll_se']:.2f}" in proc.stdout
    assert 0.3 < ae["knn_acc"] <= 1 and 0.3 < vae["knn_acc"] <= 1
    report = (out / "report.md").read_text()
    assert f"{ae['mse']:.4f}" in report and f"{vae['nll']:.2f}" in report
    assert report.count("\n- ") == 3  # the three-line conclusion
    for name in (
        "latents_ae_vs_vae.png",
        "samples_ae_vs_vae.png",
        "vae/manifold.png",
        "vae/kl_per_dim.png",
        "ae/interpolations.png",
    ):
        assert (out / name).stat().st_size > 5000, name


def test_compare_reuses_finished_runs(short_runs, data_root):
    out, _ = short_runs
    before = (out / "vae" / "model.safetensors").read_bytes()
    args = _compare_args(out, iwae_k=5, iwae_images=100)
    proc = run_cli("experiments.compare", args, data_root)
    assert proc.stdout.count("reusing") == 2
    assert (out / "vae" / "model.safetensors").read_bytes() == before


def test_eval_of_a_missing_run_is_one_line(tmp_path, data_root):
    proc = run_main("experiments.evaluate", [tmp_path], data_root)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_full_asks_for_the_papers_protocol_and_the_default_is_a_quick_subset(monkeypatch, tmp_path):
    from experiments import evaluate

    asked = []

    def fake(run_dir, k, images, device):
        asked.append((k, images))
        raise SystemExit(0)

    monkeypatch.setattr(evaluate, "evaluate_run", fake)
    for argv in ([str(tmp_path)], [str(tmp_path), "--full"]):
        with pytest.raises(SystemExit):
            evaluate.main(argv)
    assert asked == [(1000, 500), (5000, 0)]


def test_nll_blocks_resume_and_wait_for_a_claim_that_drops(vae_and_data, tmp_path):
    import fcntl
    import threading
    import time

    from evaluation.likelihood import iwae_bounds, scored_seconds

    model, _ = vae_and_data
    x = torch.bernoulli(torch.rand(25, 1, 28, 28, generator=torch.Generator().manual_seed(5)))
    args = (model, x, 4, 30, 7)
    want = iwae_bounds(*args, images_per_pass=10, k_per_pass=8)  # 3 blocks, not saved
    blocks = tmp_path / "nll"
    torch.testing.assert_close(iwae_bounds(*args, 10, 8, blocks_dir=blocks), want, rtol=0, atol=0)
    saved = sorted(blocks.glob("block-*.safetensors"))
    assert len(saved) == 3 and scored_seconds(blocks) > 0
    # a run killed after block 0: blocks 1 and 2 are scored again, block 0 is read back
    for p in saved[1:]:
        p.unlink()
    first = saved[0].stat().st_mtime_ns
    # block 1 claimed by another process that then dies without saving it: the scorer waits, then
    # takes the block over once the claim drops
    claim = open(blocks / ".block-00001.lock", "a")
    fcntl.flock(claim, fcntl.LOCK_EX)
    threading.Timer(1.0, claim.close).start()  # closing the file drops the flock, as dying does
    t0 = time.monotonic()
    again = iwae_bounds(*args, 10, 8, blocks_dir=blocks)
    assert time.monotonic() - t0 >= 1.0  # it waited for the claim rather than scoring block 1 twice
    torch.testing.assert_close(again, want, rtol=0, atol=0)
    assert saved[0].stat().st_mtime_ns == first and all(p.exists() for p in saved)


def test_the_report_says_how_long_the_run_trained():
    from evaluation.report import _settings

    cfg = {"dataset": "mnist", "arch": "conv", "latent_dim": 32, "epochs": 140, "max_steps": 0}
    assert ", 140 epochs, binarize `none`." in _settings(cfg, {})
    stopped = _settings({**cfg, "max_steps": 7800}, {})  # --max-steps: 20 epochs of the 140's schedule
    assert "7,800 steps (of a 140-epoch schedule)" in stopped and "140 epochs" not in stopped

"""Loss functions against references computed another way."""

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from losses import bernoulli_nll, elbo, gaussian_kl, reconstruction_loss, squared_error


def _classic_vae_loss(recon_x, x, mu, logvar):
    """pytorch/examples vae/main.py's loss_function, on probabilities, summed over the batch."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def test_elbo_equals_the_classic_example_per_image():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 1, 28, 28, generator=g) * 3
    x = torch.rand(32, 1, 28, 28, generator=g)
    mu, logvar = torch.randn(32, 20, generator=g), torch.randn(32, 20, generator=g)
    loss, metrics = elbo(logits, x, mu, logvar)
    want = _classic_vae_loss(torch.sigmoid(logits).view(32, 784), x, mu, logvar) / 32
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(metrics["neg_elbo"], want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(metrics["recon"] + metrics["kl"], metrics["neg_elbo"])


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    want = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl(mu, logvar), want)
    assert torch.equal(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3, 4))


def test_beta_and_kl_weight_scale_only_the_kl_term():
    g = torch.Generator().manual_seed(2)
    logits, x = torch.randn(8, 1, 28, 28, generator=g), torch.rand(8, 1, 28, 28, generator=g)
    mu, logvar = torch.randn(8, 3, generator=g), torch.zeros(8, 3)
    full, m = elbo(logits, x, mu, logvar, 1.0)
    half, _ = elbo(logits, x, mu, logvar, 0.5)
    # losses are ~550 nats, where one fp32 ulp is 6e-5: compare the difference to a few ulps
    torch.testing.assert_close(full - half, 0.5 * m["kl"], rtol=0, atol=2.5e-4)
    zero, _ = elbo(logits, x, mu, logvar, 0.0)
    torch.testing.assert_close(zero, m["recon"])


def test_reconstruction_errors():
    g = torch.Generator().manual_seed(3)
    logits, x = torch.randn(4, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g)
    p = torch.sigmoid(logits)
    want_bce = F.binary_cross_entropy(p, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), want_bce, rtol=1e-5, atol=1e-3)
    want_mse = F.mse_loss(p, x, reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(squared_error(logits, x), want_mse)
    loss, metrics = reconstruction_loss(logits, x, "mse")
    torch.testing.assert_close(loss, F.mse_loss(p, x))
    assert metrics.keys() == {"bce", "mse"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_stay_finite_for_extreme_low_precision_logits(dtype):
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]]).view(1, 1, 2, 2)
    logits = torch.tensor([[200.0, -200.0, 60000.0, -60000.0]], dtype=dtype).view(1, 1, 2, 2)
    mu = torch.full((1, 2), 100.0, dtype=dtype)
    logvar = torch.full((1, 2), 30.0, dtype=dtype).clamp(-30, 20)
    loss, metrics = elbo(logits, x, mu, logvar)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in metrics.values())
    assert metrics["recon"].item() == pytest.approx(2 * 200 + 2 * 60000, rel=1e-2)  # confidently wrong

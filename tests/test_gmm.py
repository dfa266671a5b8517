"""The Gaussian mixture behind the AE's post-hoc sampler, against torch.distributions and known data."""

from __future__ import annotations

import torch
from torch import distributions as D

from evaluation.gmm import GMM, fit_gmm, log_likelihoods, mean_log_likelihood, sample_gmm


def _mixture(gmm: GMM) -> D.MixtureSameFamily:
    return D.MixtureSameFamily(
        D.Categorical(gmm.weights), D.MultivariateNormal(gmm.means, scale_tril=gmm.scale_tril)
    )


def _known(seed=0) -> GMM:
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, -6.0, 4.0]], dtype=torch.float64)
    a = torch.randn(3, 3, 3, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) / 3 + 0.2 * torch.eye(3, dtype=torch.float64)
    return GMM(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), means, torch.linalg.cholesky(covs))


def test_log_likelihoods_match_torch_distributions():
    gmm = _known()
    x = torch.randn(50, 3, dtype=torch.float64) * 3
    ours = torch.logsumexp(log_likelihoods(gmm, x), 1)
    torch.testing.assert_close(ours, _mixture(gmm).log_prob(x))


def test_em_recovers_a_known_mixture_and_never_lowers_the_likelihood():
    truth = _known()
    x = sample_gmm(truth, 6000, torch.Generator().manual_seed(1)).double()
    fits = [mean_log_likelihood(fit_gmm(x, 3, iters=i, seed=0, tol=-1), x) for i in (1, 2, 4, 8, 16)]
    assert all(b >= a - 1e-9 for a, b in zip(fits, fits[1:]))
    fitted = fit_gmm(x, 3, seed=0)
    nearest = torch.cdist(truth.means, fitted.means).argmin(1)  # each true component's fitted one
    assert sorted(nearest.tolist()) == [0, 1, 2]
    torch.testing.assert_close(fitted.means[nearest], truth.means, atol=0.15, rtol=0)
    torch.testing.assert_close(fitted.weights[nearest], truth.weights, atol=0.03, rtol=0)
    assert mean_log_likelihood(fitted, x) >= float(_mixture(truth).log_prob(x).mean()) - 0.01


def test_samples_have_the_mixtures_mean_and_covariance():
    gmm = _known(2)
    x = sample_gmm(gmm, 200_000, torch.Generator().manual_seed(0)).double()
    mean = gmm.weights @ gmm.means
    covs = gmm.scale_tril @ gmm.scale_tril.transpose(1, 2)
    second = (gmm.weights[:, None, None] * (covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    torch.testing.assert_close(x.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), second - mean[:, None] * mean[None], atol=0.1, rtol=0.02)

"""A Gaussian mixture fitted by EM: the post-hoc sampler that makes an autoencoder generate (fit it on
the training codes, draw codes from it, decode; Ghosh et al. 2020, pythae's GaussianMixtureSampler)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class GMM(NamedTuple):
    weights: torch.Tensor  # (K,) mixing proportions, summing to 1
    means: torch.Tensor  # (K, D)
    scale_tril: torch.Tensor  # (K, D, D) lower Cholesky factors of the covariances


def log_likelihoods(gmm: GMM, x: torch.Tensor) -> torch.Tensor:
    """(N, K): log w_k + log N(x_n | mu_k, Sigma_k)."""
    d = x.shape[1]
    diff = (x[None] - gmm.means[:, None]).transpose(1, 2)  # (K, D, N)
    white = torch.linalg.solve_triangular(gmm.scale_tril, diff, upper=False)  # (K, D, N): L_k^-1 (x - mu_k)
    log_det = gmm.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,): half log |Sigma_k|
    per_k = gmm.weights.log() - log_det - 0.5 * d * math.log(2 * math.pi)  # (K,)
    return per_k - 0.5 * white.square().sum(1).T  # (N, K)


def mean_log_likelihood(gmm: GMM, x: torch.Tensor) -> float:
    return float(torch.logsumexp(log_likelihoods(gmm, x), 1).mean())


def fit_gmm(
    x: torch.Tensor, k: int = 10, iters: int = 100, seed: int = 0, reg: float = 1e-4, tol=1e-6
) -> GMM:
    """Full-covariance mixture of k Gaussians by expectation-maximisation, from k distinct data points
    drawn with `seed` as the first means and the data's covariance for all; reg * I is added to each
    covariance (as scikit-learn's reg_covar) so none collapses onto a few points. In float64."""
    x = x.double()
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randperm(n, generator=g)[:k].to(x.device)]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    cov = torch.cov(x.T).reshape(d, d) + reg * eye
    gmm = GMM(torch.full((k,), 1 / k, dtype=x.dtype, device=x.device), means,
              torch.linalg.cholesky(cov).expand(k, d, d).clone())  # fmt: skip
    last = -math.inf
    for _ in range(iters):
        joint = log_likelihoods(gmm, x)  # E step: responsibilities
        resp = torch.softmax(joint, 1)  # (N, K)
        counts = resp.sum(0) + 1e-10  # (K,)
        means = resp.T @ x / counts[:, None]  # M step
        diff = x[:, None, :] - means[None]  # (N, K, D)
        covs = torch.einsum("nk,nkd,nke->kde", resp, diff, diff) / counts[:, None, None] + reg * eye
        gmm = GMM(counts / n, means, torch.linalg.cholesky(covs))
        now = float(torch.logsumexp(joint, 1).mean())  # of the parameters before this M step
        if now - last < tol:
            break
        last = now
    return gmm


def sample_gmm(gmm: GMM, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws (N, D) in float32: a component by its weight, then mean + L eps."""
    device = gmm.means.device
    comp = torch.multinomial(gmm.weights.float().cpu(), n, replacement=True, generator=generator).to(device)
    eps = torch.randn(n, gmm.means.shape[1], 1, generator=generator, dtype=gmm.means.dtype).to(device)
    return (gmm.means[comp] + (gmm.scale_tril[comp] @ eps).squeeze(-1)).float()

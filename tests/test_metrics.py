"""Evaluation metrics against references computed another way on small inputs."""

import math

import pytest
import torch

from evaluation.latents import (
    active_units,
    knn_accuracy,
    linear_probe_accuracy,
    pca_fit,
    pca_project,
    pca_reconstruction_mse,
    silhouette_score,
)
from evaluation.likelihood import iwae_bound


def test_iwae_bound_is_a_log_mean_exp():
    lw = torch.log(torch.tensor([[1.0, 2.0, 3.0, 6.0]]))
    assert iwae_bound(lw).item() == pytest.approx(math.log(3.0))
    assert torch.equal(iwae_bound(lw[:, :1]), lw[:, 0])  # k = 1 is the single-sample ELBO term
    # Jensen: log-mean-exp >= mean of the logs, equality only for equal weights
    lw = torch.randn(100, 50, generator=torch.Generator().manual_seed(0))
    assert (iwae_bound(lw) >= lw.mean(1)).all()
    assert torch.allclose(iwae_bound(torch.full((3, 7), -2.0)), torch.full((3,), -2.0))


def test_active_units_counts_dimensions_whose_mean_varies():
    g = torch.Generator().manual_seed(0)
    mu = torch.cat(
        [
            torch.randn(1000, 3, generator=g),
            0.05 * torch.randn(1000, 2, generator=g),
            torch.full((1000, 1), 4.0),
        ],
        1,
    )
    assert active_units(mu) == 3  # variance 1 (x3) counts; 0.0025 and 0 do not


def _brute_silhouette(z, y):
    n, total = len(z), 0.0
    d = torch.cdist(z, z)
    for i in range(n):
        same = (y == y[i]) & (torch.arange(n) != i)
        if same.sum() == 0:
            continue
        a = d[i, same].mean()
        b = min(d[i, y == c].mean() for c in y.unique() if c != y[i])
        total += float((b - a) / max(a, b))
    return total / n


def test_silhouette_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(60, 3, generator=g)
    y = torch.randint(0, 4, (60,), generator=g)
    y[0] = 7  # a singleton class scores 0
    assert silhouette_score(z, y) == pytest.approx(_brute_silhouette(z, y), abs=1e-5)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    tight = centres.repeat_interleave(20, 0) + 0.01 * torch.randn(40, 2, generator=g)
    assert silhouette_score(tight, torch.arange(2).repeat_interleave(20)) > 0.99


def _separable(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    return centres[y] + 0.5 * torch.randn(n, 2, generator=g), y


def test_knn_and_linear_probe_are_perfect_on_separable_data():
    (ztr, ytr), (zte, yte) = _separable(seed=0), _separable(seed=1)
    assert knn_accuracy(ztr, ytr, zte, yte, k=5, chunk=64) == 1.0
    assert linear_probe_accuracy(ztr, ytr, zte, yte) == 1.0
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(2))]
    assert knn_accuracy(ztr, shuffled, zte, yte) < 0.6  # labels unrelated to codes: near chance


def test_linear_probe_fits_what_autograd_and_torch_optim_fit():
    from evaluation.latents import linear_probe

    g = torch.Generator().manual_seed(4)
    z, y = torch.randn(3000, 5, generator=g), torch.randint(0, 4, (3000,), generator=g)
    z[:, 0] += 2 * y  # partly separable
    probe = linear_probe(z, y, 4, steps=100)
    x = (z - z.mean(0)) / z.std(0)
    w, b = torch.zeros(5, 4, requires_grad=True), torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x @ w + b, y).backward()
        opt.step()
    torch.testing.assert_close(probe["w"], w.detach().T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probe["b"][:, 0], b.detach(), atol=1e-5, rtol=1e-4)


def test_pca_baseline_equals_svd_reconstruction():
    g = torch.Generator().manual_seed(3)
    basis = torch.randn(4, 20, generator=g)
    train = torch.randn(500, 4, generator=g) @ basis + 0.1 * torch.randn(500, 20, generator=g)
    test = torch.randn(100, 4, generator=g) @ basis + 0.1 * torch.randn(100, 20, generator=g)
    mean = train.mean(0)
    u, s, vh = torch.linalg.svd(train - mean, full_matrices=False)
    for k in (1, 4, 10):
        want = ((((test - mean) @ vh[:k].T) @ vh[:k] + mean - test) ** 2).mean()
        assert pca_reconstruction_mse(train, test, k) == pytest.approx(float(want), rel=1e-5)
    # train-set error of the rank-k fit is the discarded spectrum, and it falls with k
    for k in (1, 4):
        m, comps = pca_fit(train, k)
        recon = pca_project(train, m, comps) @ comps + m
        assert float(((recon - train) ** 2).sum()) == pytest.approx(float((s[k:] ** 2).sum()), rel=1e-4)
    assert pca_reconstruction_mse(train, test, 10) < pca_reconstruction_mse(train, test, 4)
    assert pca_reconstruction_mse(train, test, 4) < pca_reconstruction_mse(train, test, 1)

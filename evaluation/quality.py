"""Generated-vs-real quality metrics on feature vectors: FID, Inception Score, precision/recall, kNN."""

from __future__ import annotations

import torch

_PAIRS_PER_CHUNK = 8_000_000  # float64 distances held at once (64 MB): 800 x 10,000 rows at a time


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of feats (N, F), in float64."""
    if feats.dim() != 2 or len(feats) < 2:
        raise ValueError(f"need a (N >= 2, F) feature matrix, got {tuple(feats.shape)}")
    x = feats.to(torch.float64)
    return x.mean(0), torch.cov(x.T)


def _sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    vals, vecs = torch.linalg.eigh(sigma)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu_a, sigma_a) and N(mu_b, sigma_b):
    ||mu_a - mu_b||^2 + tr(Sa) + tr(Sb) - 2 tr((Sa^1/2 Sb Sa^1/2)^1/2), in float64."""
    mu_a, mu_b, sigma_a, sigma_b = (t.to(torch.float64) for t in (mu_a, mu_b, sigma_a, sigma_b))
    root_a = _sqrt_psd(sigma_a)
    middle = root_a @ sigma_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + sigma_a.trace() + sigma_b.trace() - 2 * cross
    return float(fd)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """FID between Gaussians fitted to two feature sets (N_a, F) and (N_b, F)."""
    return frechet_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` equal parts of exp(E_x KL(p(y|x) || p(y))), p(y) the part's mean
    prediction (Salimans et al. 2016; the compare_gan protocol). 1 = no information, max = #classes."""
    if len(logits) < splits:
        raise ValueError(f"need at least {splits} predictions for {splits} splits, got {len(logits)}")
    log_p = torch.log_softmax(logits.to(torch.float64), dim=1)  # (N, C)
    scores = []
    for part in torch.tensor_split(log_p, splits):
        p = part.exp()
        log_py = p.mean(0).log()  # (C,)
        kl = torch.where(p > 0, p * (part - log_py), 0.0).sum(1)  # (n,) KL per image
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def _chunk_rows(n_cols: int) -> int:
    return max(1, _PAIRS_PER_CHUNK // max(n_cols, 1))


def _knn_distances(query: torch.Tensor, reference: torch.Tensor, k: int):
    """(distances, indices), each (Q, k), of the k nearest reference rows to each query row."""
    q, r = query.to(torch.float64), reference.to(torch.float64)
    if k > len(r):
        raise ValueError(f"k={k} exceeds the {len(r)} reference points")
    dists, idxs = [], []
    for chunk in q.split(_chunk_rows(len(r))):
        d, i = torch.cdist(chunk, r).topk(k, dim=1, largest=False)  # sorted, nearest first
        dists.append(d)
        idxs.append(i)
    return torch.cat(dists), torch.cat(idxs)


def nearest_neighbours(query_feats: torch.Tensor, reference_feats: torch.Tensor, k: int = 1):
    """Indices (Q, k) of the k nearest reference rows (Euclidean) to each query row, nearest first."""
    return _knn_distances(query_feats, reference_feats, k)[1]


def _knn_radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (the row itself, at 0, is skipped)."""
    return _knn_distances(feats, feats, k + 1)[0][:, k]


def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN hyperspheres.

    precision: the fraction of fake samples inside some real sample's ball (radius: distance to its
    k-th nearest real neighbour); recall: the fraction of real samples inside some fake sample's ball.
    """
    real, fake = real_feats.to(torch.float64), fake_feats.to(torch.float64)
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    fake_in_real = torch.zeros(len(fake), dtype=torch.bool)
    real_in_fake = torch.zeros(len(real), dtype=torch.bool)
    step = _chunk_rows(len(real))
    for start in range(0, len(fake), step):
        d = torch.cdist(fake[start : start + step], real)  # (c, N_real)
        fake_in_real[start : start + step] = (d <= r_real).any(1)
        real_in_fake |= (d <= r_fake[start : start + step, None]).any(0)
    return float(fake_in_real.double().mean()), float(real_in_fake.double().mean())


def compare_features(real_feats, fake_feats, fake_logits, recall: bool = True) -> dict[str, float]:
    """FID of the fake features against the real ones, IS of the fake logits, and (optionally) k=3
    precision and recall: the generated-vs-real table row."""
    is_mean, is_std = inception_score(fake_logits)
    out = {"fid": frechet_distance(real_feats, fake_feats), "is": is_mean, "is_std": is_std}
    if recall:
        out["precision"], out["recall"] = precision_recall(real_feats, fake_feats, k=3)
    return out

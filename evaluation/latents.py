"""Latent-space metrics on codes: active units, k-NN and linear-probe accuracy, silhouette, a PCA baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine import adam


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Burda et al. (2015): latent dims whose posterior mean varies over the data, Var_x E[z|x] > 0.01."""
    return int((mu.float().var(dim=0) > threshold).sum())


def knn_accuracy(train_z, train_y, test_z, test_y, k: int = 5, chunk: int = 1000) -> float:
    """Accuracy of a k-nearest-neighbour majority vote (Euclidean) fit on train, scored on test."""
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for start in range(0, len(test_z), chunk):  # (chunk, N_train) distances at a time: bounded memory
        d = torch.cdist(test_z[start : start + chunk].float(), train_z.float())
        idx = d.topk(k, dim=1, largest=False).indices  # (chunk, k)
        votes = F.one_hot(train_y[idx], n_classes).sum(1)  # (chunk, classes)
        correct += int((votes.argmax(1) == test_y[start : start + chunk]).sum())
    return correct / len(test_z)


def linear_probe(train_z, train_y, classes: int, steps: int = 500, lr: float = 0.05) -> dict:
    """Multinomial logistic regression on standardised codes: full-batch Adam on the mean cross-entropy,
    its gradient written out with the classes along the rows (a softmax over 10 columns of 60,000 rows
    is the slow part of autograd's version on a CPU). {"mean", "std", "w" (C, Z), "b" (C, 1)}."""
    mean, std = train_z.float().mean(0), train_z.float().std(0).clamp_min(1e-6)
    x = (train_z.float() - mean) / std  # (N, Z)
    x_t, target = x.T.contiguous(), F.one_hot(train_y, classes).T.float()  # (Z, N), (C, N)
    params = {"w": x.new_zeros(classes, x.shape[1]), "b": x.new_zeros(classes, 1)}
    opt = adam(lr)
    state = opt.init(params)
    for _ in range(steps):
        g = (torch.softmax(params["w"] @ x_t + params["b"], 0) - target) / len(x)  # d loss / d logits
        params, state = opt.update({"w": g @ x, "b": g.sum(1, keepdim=True)}, state, params)
    return {"mean": mean, "std": std, **params}


def linear_probe_accuracy(train_z, train_y, test_z, test_y, steps: int = 500, lr: float = 0.05) -> float:
    """Test accuracy of the linear probe fitted on train (linear_probe)."""
    probe = linear_probe(train_z, train_y, int(max(train_y.max(), test_y.max())) + 1, steps, lr)
    x = (test_z.float() - probe["mean"]) / probe["std"]
    pred = (x @ probe["w"].T + probe["b"].T).argmax(1)
    return float((pred == test_y).float().mean())


def silhouette_score(z: torch.Tensor, labels: torch.Tensor, max_n: int = 5000, seed: int = 0) -> float:
    """Mean silhouette (Rousseeuw 1987) by class; on a fixed random subset of max_n points if larger."""
    if len(z) > max_n:
        g = torch.Generator(device="cpu").manual_seed(seed)
        keep = torch.randperm(len(z), generator=g)[:max_n].to(z.device)
        z, labels = z[keep], labels[keep]
    d = torch.cdist(z.float(), z.float())  # (n, n)
    classes, index = labels.unique(return_inverse=True)  # index: (n,) class of each point
    onehot = F.one_hot(index, len(classes)).float()  # (n, C)
    sums = d @ onehot  # (n, C): summed distance from each point to each class
    counts = onehot.sum(0)  # (C,)
    own = counts[index]  # (n,) size of each point's class
    a = sums.gather(1, index[:, None])[:, 0] / (own - 1).clamp_min(1)  # mean distance within its class
    b = (sums / counts).masked_fill(onehot.bool(), float("inf")).min(1).values  # nearest other class
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
    return float(torch.where(own > 1, s, 0.0).mean())  # a singleton's silhouette is 0, as in sklearn


def pca_fit(x: torch.Tensor, k: int):
    """(mean (D,), components (k, D)) of flattened data x (N, D): the top eigenvectors of its scatter
    matrix, decomposed in float64 (the right singular vectors of the centred data, as an SVD would
    give them, for a fraction of its time on 60,000 images)."""
    x = x.float().flatten(1)
    mean = x.mean(0)
    centred = x - mean
    _, vectors = torch.linalg.eigh((centred.T @ centred).double())  # ascending eigenvalues
    return mean, vectors[:, -k:].flip(1).T.to(x.dtype).contiguous()


def pca_project(x: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Codes of x in the PCA basis: (N, D) -> (N, k)."""
    return (x.float().flatten(1) - mean) @ components.T


def pca_reconstruction_mse(train_x, test_x, k: int) -> float:
    """Per-pixel MSE on test of the rank-k PCA fit on train: the linear baseline for a k-dim code."""
    mean, comps = pca_fit(train_x, k)
    recon = pca_project(test_x, mean, comps) @ comps + mean
    return float((recon - test_x.float().flatten(1)).square().mean())

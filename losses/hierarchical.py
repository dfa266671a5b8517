"""The two-layer VAE's bounds, z2 -> z1 -> x: the ELBO (per-layer KL, free bits per layer) and the
IWAE bound, written once over the model's forward dict (models.hierarchical)."""

from __future__ import annotations

import math

import torch

from engine import Aux, call_module
from losses.reconstruction import bernoulli_nll, squared_error

LOG_2PI = math.log(2 * math.pi)


def gaussian_pair_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) per dimension, in float32: (..., Z)."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).square()) * torch.exp(-logvar_p) - 1)


def _log_normal(z, mu, logvar):
    """log N(z; mu, exp(logvar)) in float32, summed over the last dimension: (..., Z) -> (...)."""
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + LOG_2PI + logvar).sum(-1)


def _log_q_eps(eps, logvar):
    """log q(z|.) at z = mu + sigma * eps, from eps and the log-variance (mu cancels): (..., Z) -> (...)."""
    return -0.5 * (eps.float().square() + LOG_2PI + logvar.float()).sum(-1)


def layer_terms(out: dict, x, eps) -> dict[str, torch.Tensor]:
    """Each term of log w = log p(x|z1,z2) + log p(z1|z2) + log p(z2) - log q(z1|x,z2) - log q(z2|x)
    for the draws the forward dict `out` came from: eps (..., B, 2Z), each term (..., B), float32."""
    lead = eps.shape[:-1]
    eps1, eps2 = eps.split(eps.shape[-1] // 2, -1)
    logvar1, (mu1_p, logvar1_p) = out["q1"][1], out["p1"]
    xs = x.expand(*lead[:-1], *x.shape).reshape(-1, *x.shape[1:])  # the images under each draw
    return {
        "log_px": -bernoulli_nll(out["logits"], xs).view(lead),
        "log_p1": _log_normal(out["z1"], mu1_p, logvar1_p),
        "log_p2": out["log_pz2"],
        "log_q1": _log_q_eps(eps1, logvar1),
        "log_q2": _log_q_eps(eps2, out["q2"][1]),
    }


def log_weights(terms: dict) -> torch.Tensor:
    """log p(x, z1, z2) - log q(z1, z2 | x) per draw, from layer_terms."""
    return terms["log_px"] + terms["log_p1"] + terms["log_p2"] - terms["log_q1"] - terms["log_q2"]


def hierarchical_elbo(out: dict, x, eps, kl_weight=1.0, free_bits: float = 0.0, vamp: bool = False):
    """(loss, metrics) of one draw per image (eps (B, 2Z)): recon + kl_weight * (KL1 + KL2), batch
    mean, nats per image; metrics report the true -ELBO and each layer's KL.

    KL1 = KL(q(z1|x,z2) || p(z1|z2)) in closed form at the drawn z2; KL2 = KL(q(z2|x) || N(0, I)) in
    closed form, or for the VampPrior the one-draw log q(z2|x) - log p(z2). free_bits: each layer's
    batch-mean KL counts as at least free_bits nats per unit of that layer in the loss (per layer, as
    the VampPrior's KL has no per-unit form); the reported figures stay the true ones."""
    recon = bernoulli_nll(out["logits"], x)  # (B,)
    kl1 = gaussian_pair_kl(*out["q1"], *out["p1"]).sum(-1)  # (B,)
    if vamp:
        eps2 = eps.split(eps.shape[-1] // 2, -1)[1]
        kl2 = _log_q_eps(eps2, out["q2"][1]) - out["log_pz2"]
    else:
        mu2, logvar2 = out["q2"]
        kl2 = gaussian_pair_kl(mu2, logvar2, torch.zeros_like(mu2), torch.zeros_like(logvar2)).sum(-1)
    if free_bits:
        floor = free_bits * out["q2"][0].shape[-1]
        kl_loss = kl1.mean().clamp(min=floor) + kl2.mean().clamp(min=floor)
    else:
        kl_loss = (kl1 + kl2).mean()
    loss = recon.mean() + kl_weight * kl_loss
    metrics = {
        "neg_elbo": (recon + kl1 + kl2).mean().detach(),
        "recon": recon.mean().detach(),
        "kl": (kl1 + kl2).mean().detach(),
        "kl1": kl1.mean().detach(),
        "kl2": kl2.mean().detach(),
        "mse": squared_error(out["logits"], x).mean().detach(),
    }
    return loss, metrics


def make_hierarchical_loss(
    model, objective: str = "elbo", beta: float = 1.0, kl_warmup_steps: int = 0, free_bits: float = 0.0
):
    """loss_fn(params, buffers, batch) for a two-layer VAE. objective `elbo`: batch holds x, eps (B, 2Z)
    and step; the KL weight beta ramps from 0 over kl_warmup_steps (as make_elbo_loss). `iwae`: eps
    (B, K, 2Z), the loss -log (1/K) sum_k w_k, batch mean."""
    vamp = model.pseudo_logits is not None

    def loss_fn(params, buffers, batch):
        x = batch["x"]
        eps = batch["eps"] if objective == "elbo" else batch["eps"].transpose(0, 1)  # IWAE: (K, B, 2Z)
        out, buffers = call_module(model, params, buffers, x, eps)
        if objective == "elbo":
            ramp = (batch["step"].float() / kl_warmup_steps).clamp(max=1.0) if kl_warmup_steps else 1.0
            loss, metrics = hierarchical_elbo(out, x, eps, batch.get("beta", beta) * ramp, free_bits, vamp)
            return loss, Aux(metrics, buffers)
        terms = layer_terms(out, x, eps)
        log_w = log_weights(terms)  # (K, B)
        bound = torch.logsumexp(log_w, 0) - math.log(len(eps))
        metrics = {
            "neg_iwae": -bound.mean().detach(),
            "neg_elbo": -log_w.mean().detach(),
            "recon": -terms["log_px"].mean().detach(),
            "kl": (terms["log_q1"] + terms["log_q2"] - terms["log_p1"] - terms["log_p2"]).mean().detach(),
        }
        return -bound.mean(), Aux(metrics, buffers)

    return loss_fn

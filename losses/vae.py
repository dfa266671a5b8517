"""VAE objective: the negative ELBO with a Bernoulli decoder and an analytic Gaussian KL."""

from __future__ import annotations

import math

import torch

from engine.functional import call_module
from engine.state import Aux
from losses.reconstruction import bernoulli_nll, squared_error


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension: (B, Z) -> (B, Z), in nats."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def elbo(logits, x, mu, logvar, kl_weight=1.0):
    """Loss = recon + kl_weight * KL, batch-mean nats per image; metrics report the true -ELBO."""
    recon = bernoulli_nll(logits, x)  # (B,)
    kl = gaussian_kl(mu, logvar).sum(1)  # (B,)
    loss = (recon + kl_weight * kl).mean()
    metrics = {
        "neg_elbo": (recon + kl).mean().detach(),
        "recon": recon.mean().detach(),
        "kl": kl.mean().detach(),
        "mse": squared_error(logits, x).mean().detach(),
    }
    return loss, metrics


def make_elbo_loss(model, beta: float = 1.0, kl_warmup_steps: int = 0):
    """loss_fn(params, buffers, batch) for a VAE; batch holds x (B,1,H,W), eps (B,Z) and step.

    The KL weight is beta (or batch["beta"] where a sweep supplies one per model), ramped linearly
    from 0 over the first kl_warmup_steps steps; it is a tensor function of batch["step"], so the
    compiled step never recompiles as it changes.
    """

    def loss_fn(params, buffers, batch):
        (logits, mu, logvar), buffers = call_module(model, params, buffers, batch["x"], batch["eps"])
        ramp = (batch["step"].float() / kl_warmup_steps).clamp(max=1.0) if kl_warmup_steps else 1.0
        loss, metrics = elbo(logits, batch["x"], mu, logvar, batch.get("beta", beta) * ramp)
        return loss, Aux(metrics, buffers)

    return loss_fn


def log_importance_weights(model, x, eps):
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps: x (B,1,H,W), eps (K,B,Z) -> (B,K).

    The IWAE bound is logmeanexp over K of these (evaluation.likelihood.iwae_bound); K=1 is the ELBO.
    """
    mu, logvar = model.encode(x)  # (B, Z) each
    mu, logvar = mu.float(), logvar.float()
    z = mu + eps * torch.exp(0.5 * logvar)  # (K, B, Z)
    logits = model.decode(z.flatten(0, 1))  # (K*B, 1, H, W)
    log_px = -bernoulli_nll(logits, x.expand(len(eps), *x.shape).flatten(0, 1)).view(len(eps), -1)
    log2pi = math.log(2 * math.pi)
    log_pz = -0.5 * (z.square() + log2pi).sum(-1)  # (K, B)
    log_qz = -0.5 * (eps.square() + log2pi + logvar).sum(-1)  # (K, B)
    return (log_px + log_pz - log_qz).T

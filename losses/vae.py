"""VAE objective: the negative ELBO with a Bernoulli decoder and an analytic Gaussian KL."""

from __future__ import annotations

import math

import torch

from engine import Aux, call_module
from losses.hierarchical import layer_terms, log_weights
from losses.reconstruction import bernoulli_nll, squared_error

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension: (B, Z) -> (B, Z), in nats."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def elbo(logits, x, mu, logvar, kl_weight=1.0, free_bits: float = 0.0, kl=None):
    """Loss = recon + kl_weight * KL, batch-mean nats per image; metrics report the true -ELBO.

    kl: per-image KL (B,) for a prior other than N(0, I) (a one-draw Monte Carlo estimate, log q(z|x)
    - log p(z)); otherwise the analytic Gaussian KL. free_bits (Kingma et al. 2016): each latent
    dimension's batch-mean KL counts as at least this many nats in the loss, so no dimension is
    pushed to the prior for free; the reported -ELBO and KL stay the true ones.
    """
    recon = bernoulli_nll(logits, x)  # (B,)
    kl_dims = gaussian_kl(mu, logvar) if kl is None else None  # (B, Z)
    kl = kl_dims.sum(1) if kl is None else kl  # (B,)
    if free_bits:
        loss = recon.mean() + kl_weight * kl_dims.mean(0).clamp(min=free_bits).sum()
    else:
        loss = (recon + kl_weight * kl).mean()
    metrics = {
        "neg_elbo": (recon + kl).mean().detach(),
        "recon": recon.mean().detach(),
        "kl": kl.mean().detach(),
        "mse": squared_error(logits, x).mean().detach(),
    }
    return loss, metrics


def one_draw_kl(eps, logvar, log_pz):
    """log q(z|x) - log p(z) at z = mu + sigma * eps, per image: the KL's one-draw Monte Carlo
    estimate, for a prior without a closed-form KL (q's density in eps form: mu cancels)."""
    return -0.5 * (eps.float().square() + LOG_2PI + logvar.float()).sum(-1) - log_pz


def make_elbo_loss(model, beta: float = 1.0, kl_warmup_steps: int = 0, free_bits: float = 0.0):
    """loss_fn(params, buffers, batch) for a VAE; batch holds x (B,1,H,W), eps (B,Z) and step.

    The KL weight is beta (or batch["beta"] where a sweep supplies one per model), ramped linearly
    from 0 over the first kl_warmup_steps steps; it is a tensor function of batch["step"], so the
    compiled step never recompiles as it changes. A VampPrior model's KL is the one-draw estimate
    log q(z|x) - log p(z) (no closed form); free_bits needs the N(0, I) prior's closed form.
    """
    vamp = getattr(model, "pseudo_logits", None) is not None
    if vamp and free_bits:
        raise ValueError("free bits need the N(0, I) prior's per-dimension KL")

    def loss_fn(params, buffers, batch):
        x, eps = batch["x"], batch["eps"]
        out, buffers = call_module(model, params, buffers, x, eps, with_prior=vamp)
        kl = None
        if vamp:
            logits, mu, logvar, log_pz = out
            kl = one_draw_kl(eps, logvar, log_pz)
        else:
            logits, mu, logvar = out
        ramp = (batch["step"].float() / kl_warmup_steps).clamp(max=1.0) if kl_warmup_steps else 1.0
        loss, metrics = elbo(logits, x, mu, logvar, batch.get("beta", beta) * ramp, free_bits, kl)
        return loss, Aux(metrics, buffers)

    return loss_fn


def _log_px(logits, x, k: int):
    """log p(x|z) of K draws per image: logits (K*B, C, H, W), x (B, C, H, W) -> (K, B)."""
    return -bernoulli_nll(logits, x.expand(k, *x.shape).flatten(0, 1)).view(k, -1)


def _log_terms(logits, x, mu, logvar, eps, log_pz, q_fixed: bool = False):
    """(log p(x|z), log p(z), log q(z|x)), each (K, B), of the K draws z = mu + sigma * eps
    (eps (K, B, Z)) that the decoder turned into logits (K*B, C, H, W), given the prior's log p(z)
    (K, B). q_fixed: q's density with mu and logvar held fixed, so the encoder reaches it through z
    only (DReG); otherwise in eps form."""
    mu, logvar, eps = mu.float(), logvar.float(), eps.float()
    log_px = _log_px(logits, x, len(eps))
    if q_fixed:
        z = mu + eps * torch.exp(0.5 * logvar)
        mu, logvar = mu.detach(), logvar.detach()
        log_qz = -0.5 * ((z - mu).square() / logvar.exp() + LOG_2PI + logvar).sum(-1)
    else:
        log_qz = -0.5 * (eps.square() + LOG_2PI + logvar).sum(-1)
    return log_px, log_pz, log_qz


def log_importance_weights(model, x, eps):
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps: x (B,1,H,W), eps (K,B,Z) -> (B,K).

    The IWAE bound is logmeanexp over K of these (evaluation.likelihood.iwae_bound); K=1 is the ELBO.
    A two-layer model (model.layers == 2) takes eps (K, B, 2Z), its weights from losses.hierarchical.
    """
    if getattr(model, "layers", 1) == 2:
        return log_weights(layer_terms(model(x, eps), x, eps)).T
    logits, mu, logvar, log_pz = model(x, eps, with_prior=True)  # K draws decoded as (K*B, 1, H, W)
    log_px, log_pz, log_qz = _log_terms(logits, x, mu, logvar, eps, log_pz)
    return (log_px + log_pz - log_qz).T


def _detached(params: dict, prefix: str) -> dict:
    """params with the entries under `prefix` (e.g. "decoder.") cut from the graph."""
    return {k: (v.detach() if k.startswith(prefix) else v) for k, v in params.items()}


def _decoder(params: dict) -> dict:
    """A VAE's decoder params, named as the decoder module names them."""
    return {k.removeprefix("decoder."): v for k, v in params.items() if k.startswith("decoder.")}


def make_iwae_loss(model, dreg: bool = False):
    """loss_fn(params, buffers, batch) for the IWAE bound (Burda et al. 2015) with K = batch["eps"]'s
    second dimension (B, K, Z); the loss value is -log (1/K) sum_k w_k, batch mean, nats per image.

    dreg: the doubly-reparameterised gradient (Tucker et al. 2018) for the encoder, sum_k w~_k^2
    d log w_k / dz_k dz_k/dphi with q's density held fixed (w~: normalised weights), which removes
    the score term whose variance grows with K; the decoder keeps the IWAE gradient sum_k w~_k
    d log p(x, z_k). The two come from two decoder passes (z held fixed in the second), so a DReG
    step costs one extra decoder forward and backward. K=1 without dreg is the ELBO's gradient.
    model: a VAE whose forward(x, eps, with_prior=True) takes eps (K, B, Z) and returns (logits
    (K*B, ...), mu, logvar, log p(z) (K, B)). DReG assumes the prior's parameters are not the
    encoder's, so it is refused for the VampPrior (whose pseudo-inputs go through the encoder).
    """
    if dreg and getattr(model, "pseudo_logits", None) is not None:
        raise ValueError("DReG needs a prior that does not share the encoder (not the VampPrior)")

    def loss_fn(params, buffers, batch):
        x, eps = batch["x"], batch["eps"].transpose(0, 1)  # eps: (K, B, Z)
        forward_params = _detached(params, "decoder.") if dreg else params  # DReG: the encoder's pass
        (logits, mu, logvar, log_pz), buffers = call_module(
            model, forward_params, buffers, x, eps, with_prior=True
        )
        log_px, log_pz, log_qz = _log_terms(logits, x, mu, logvar, eps, log_pz, q_fixed=dreg)
        log_w = log_px + log_pz - log_qz  # (K, B)
        bound = torch.logsumexp(log_w, 0) - math.log(len(eps))  # (B,)
        loss = -bound.mean()
        if dreg:
            w = torch.softmax(log_w.detach(), 0)  # normalised weights, (K, B)
            encoder_part = -(w.square() * log_w).sum(0).mean()  # decoder held fixed above
            z = (mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)).detach()  # the decoder's pass: theta only
            logits_fixed, _ = call_module(model.decoder, _decoder(params), {}, z.flatten(0, 1))
            decoder_part = -(w * _log_px(logits_fixed, x, len(z))).sum(0).mean()
            surrogate = encoder_part + decoder_part
            loss = surrogate - surrogate.detach() + loss.detach()  # the bound's value, DReG's gradient
        metrics = {
            "neg_iwae": -bound.mean().detach(),
            "neg_elbo": -log_w.mean().detach(),  # K draws' average of the one-sample ELBO
            "recon": -log_px.mean().detach(),
            "kl": (log_qz - log_pz).mean().detach(),  # Monte Carlo
        }
        return loss, Aux(metrics, buffers)

    return loss_fn

"""Auto-encoder objective: reconstruction error of decoder(encoder(x))."""

from __future__ import annotations

from engine import Aux, call_module
from losses.reconstruction import bernoulli_nll, squared_error

RECONSTRUCTIONS = ("bce", "mse")


def reconstruction_loss(logits, x, kind: str = "bce"):
    """Batch-mean loss and metrics: BCE in nats per image and MSE per pixel, both always reported."""
    bce, mse = bernoulli_nll(logits, x), squared_error(logits, x)  # (B,) each
    loss = bce.mean() if kind == "bce" else mse.mean()
    return loss, {"bce": bce.mean().detach(), "mse": mse.mean().detach()}


def make_ae_loss(model, kind: str = "bce"):
    """loss_fn(params, buffers, batch) for an AE trained on `kind` reconstruction error."""
    if kind not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {kind!r}")

    def loss_fn(params, buffers, batch):
        (logits, _), buffers = call_module(model, params, buffers, batch["x"])
        loss, metrics = reconstruction_loss(logits, batch["x"], kind)
        return loss, Aux(metrics, buffers)

    return loss_fn

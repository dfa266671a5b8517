"""Classifier objective: mean cross entropy of logits against labels, with accuracy as a metric."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine import Aux, call_module

SHIFT_NOISE = "shift"  # batch key of the (B, 2) standard-normal draws that pick each image's translation


def random_shift(x: torch.Tensor, noise: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image of x (B, C, H, W) by whole pixels (dy, dx), each uniform in
    [-max_shift, max_shift], filling with 0 (background). noise (B, 2) ~ N(0, 1) from the loader
    picks the offsets, so the augmentation is a pure function of the batch."""
    b, c, h, w = x.shape
    span = 2 * max_shift + 1
    offsets = (torch.special.ndtr(noise) * span).floor().long().clamp(0, span - 1)  # (B, 2) in [0, 2S]
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, H + 2S, W + 2S)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
    padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * max_shift))  # (B, C, H, W+2S)
    return padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)


def make_classifier_loss(model, max_shift: int = 0):
    """loss_fn(params, buffers, batch) -> (mean cross entropy, Aux({accuracy, ce}, buffers)).

    batch["x"]: (B, 1, 28, 28) floats in [0, 1]; batch["y"]: (B,) int64 class labels. When the batch
    carries batch["shift"] (training batches, drawn by the loader) and max_shift > 0, each image is
    first moved by up to max_shift pixels; evaluation batches carry no such draws and stay put.
    """

    def loss_fn(params, buffers, batch):
        x = batch["x"]
        if max_shift and SHIFT_NOISE in batch:  # decided when the step is traced, not per value
            x = random_shift(x, batch[SHIFT_NOISE], max_shift)
        logits, buffers = call_module(model, params, buffers, x)  # (B, 10)
        ce = F.cross_entropy(logits.float(), batch["y"])
        accuracy = (logits.argmax(-1) == batch["y"]).float().mean()
        return ce, Aux({"accuracy": accuracy.detach(), "ce": ce.detach()}, buffers)

    return loss_fn

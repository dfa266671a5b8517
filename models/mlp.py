"""Fully connected encoder and decoder for 28x28 grey images (the classic 784-400-Z VAE)."""

from __future__ import annotations

from einops import rearrange
from torch import nn

PIXELS = 28 * 28


class MLPEncoder(nn.Module):
    """(B, 1, 28, 28) -> (B, out_dim) through one hidden ReLU layer."""

    def __init__(self, out_dim: int, hidden: int = 400):
        super().__init__()
        self.fc1 = nn.Linear(PIXELS, hidden)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x):
        h = self.fc1(rearrange(x, "b c h w -> b (c h w)")).relu()  # (B, hidden)
        return self.head(h)


class MLPDecoder(nn.Module):
    """(B, latent) -> (B, 1, 28, 28) pixel logits."""

    def __init__(self, latent_dim: int, hidden: int = 400):
        super().__init__()
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, PIXELS)

    def forward(self, z):
        logits = self.fc4(self.fc3(z).relu())  # (B, 784)
        return rearrange(logits, "b (c h w) -> b c h w", c=1, h=28)

"""Convolutional encoder and decoder for 28x28 grey images: two stride-2 stages each way."""

from __future__ import annotations

from einops import rearrange
from torch import nn


class ConvEncoder(nn.Module):
    """(B, 1, 28, 28) -> 14x14x32 -> 7x7x64 -> 256 -> (B, out_dim)."""

    def __init__(self, out_dim: int, width: int = 32, hidden: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, hidden)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x):
        h = self.conv2(self.conv1(x).relu()).relu()  # (B, 2W, 7, 7)
        h = self.fc(rearrange(h, "b c h w -> b (c h w)")).relu()  # (B, hidden)
        return self.head(h)


class ConvDecoder(nn.Module):
    """(B, latent) -> 256 -> 7x7x64 -> 14x14x32 -> (B, 1, 28, 28) pixel logits."""

    def __init__(self, latent_dim: int, width: int = 32, hidden: int = 256):
        super().__init__()
        self.width = width
        self.fc1 = nn.Linear(latent_dim, hidden)
        self.fc2 = nn.Linear(hidden, 2 * width * 7 * 7)
        self.deconv1 = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1)

    def forward(self, z):
        h = self.fc2(self.fc1(z).relu()).relu()
        h = rearrange(h, "b (c h w) -> b c h w", c=2 * self.width, h=7)  # (B, 2W, 7, 7)
        return self.deconv2(self.deconv1(h).relu())  # (B, 1, 28, 28)

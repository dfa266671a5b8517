"""Residual convolutional encoder and decoder for 28x28 grey images: the conv pair's two stride-2
stages with a pre-activation residual block (He et al. 2016) after each, for depth at the same size."""

from __future__ import annotations

from einops import rearrange
from torch import nn


class ResBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))): shape kept, (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(self.conv1(x.relu()).relu())


class ResEncoder(nn.Module):
    """(B, 1, 28, 28) -> 14x14xW -> block -> 7x7x2W -> block -> 256 -> (B, out_dim)."""

    def __init__(self, out_dim: int, width: int = 32, hidden: int = 256):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 4, stride=2, padding=1)
        self.block1 = ResBlock(width)
        self.down = nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)
        self.block2 = ResBlock(2 * width)
        self.fc = nn.Linear(2 * width * 7 * 7, hidden)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x):
        h = self.block2(self.down(self.block1(self.stem(x)).relu()))  # (B, 2W, 7, 7)
        h = self.fc(rearrange(h.relu(), "b c h w -> b (c h w)")).relu()  # (B, hidden)
        return self.head(h)


class ResDecoder(nn.Module):
    """(B, latent) -> 256 -> 7x7x2W -> block -> 14x14xW -> block -> (B, 1, 28, 28) pixel logits."""

    def __init__(self, latent_dim: int, width: int = 32, hidden: int = 256):
        super().__init__()
        self.width = width
        self.fc1 = nn.Linear(latent_dim, hidden)
        self.fc2 = nn.Linear(hidden, 2 * width * 7 * 7)
        self.block1 = ResBlock(2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.block2 = ResBlock(width)
        self.out = nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1)

    def forward(self, z):
        h = self.fc2(self.fc1(z).relu())
        h = self.block1(rearrange(h, "b (c h w) -> b c h w", c=2 * self.width, h=7))  # (B, 2W, 7, 7)
        h = self.block2(self.up(h.relu()))  # (B, W, 14, 14)
        return self.out(h.relu())  # (B, 1, 28, 28)

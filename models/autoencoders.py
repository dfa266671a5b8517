"""AE (deterministic code) and VAE (Gaussian code, reparameterised) around an encoder/decoder pair."""

from __future__ import annotations

import torch
from torch import nn

from models.conv import ConvDecoder, ConvEncoder
from models.mlp import MLPDecoder, MLPEncoder
from models.resnet import ResDecoder, ResEncoder

ARCHS = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
    "resnet": (ResEncoder, ResDecoder),
}
LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in fp16/bf16


class AE(nn.Module):
    """x -> z = encoder(x) -> decoder(z) logits."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x):
        return self.encoder(x)  # (B, Z)

    def decode(self, z):
        return self.decoder(z)  # (B, 1, 28, 28) logits

    def forward(self, x):
        z = self.encode(x)
        return self.decode(z), z


class VAE(nn.Module):
    """q(z|x) = N(mu, exp(logvar)); forward(x, eps) reparameterises with the given N(0, I) noise."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def encode(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)  # (B, Z) each
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x, eps):
        """eps (B, Z): one draw per image; (K, B, Z): K draws each, decoded as (K*B, C, H, W) logits."""
        mu, logvar = self.encode(x)
        z = mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)
        return self.decode(z.flatten(0, -2)), mu, logvar


def _pair(arch: str, out_dim: int, latent_dim: int):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    if latent_dim < 1:
        raise ValueError(f"latent size must be at least 1, got {latent_dim}")
    enc, dec = ARCHS[arch]
    return enc(out_dim), dec(latent_dim)


def build_ae(arch: str, latent_dim: int) -> AE:
    """`mlp`: 784-400-Z; `conv`: two stride-2 conv stages and a 256-unit layer each way; `resnet`: the
    conv pair with a residual block after each stage."""
    return AE(*_pair(arch, latent_dim, latent_dim))


def build_vae(arch: str, latent_dim: int) -> VAE:
    """Same networks as build_ae; the encoder emits mean and log-variance (2Z outputs)."""
    return VAE(*_pair(arch, 2 * latent_dim, latent_dim))

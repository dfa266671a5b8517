"""AE (deterministic code) and VAE (Gaussian code, reparameterised) around an encoder/decoder pair."""

from __future__ import annotations

import math

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
PRIORS = ("normal", "vamp")
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z, mu, logvar):
    """log N(z; mu, exp(logvar)) summed over the last dimension, broadcasting: (..., Z) -> (...)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + LOG_2PI + logvar).sum(-1)


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
    """q(z|x) = N(mu, exp(logvar)); forward(x, eps) reparameterises with the given N(0, I) noise.

    The prior p(z) is N(0, I), or with pseudo_inputs=K the VampPrior (Tomczak and Welling 2018): the
    mixture (1/K) sum_k q(z|u_k) of the posteriors of K learned pseudo-images u_k = sigmoid(logits_k).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, pseudo_inputs: int = 0):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim
        if pseudo_inputs:  # near-black at first, like Tomczak and Welling's N(0.05, 0.01) pixels
            shape = (pseudo_inputs, 1, 28, 28)
            self.pseudo_logits = nn.Parameter(math.log(0.05 / 0.95) + 0.2 * torch.randn(shape))
        else:
            self.pseudo_logits = None

    def log_prior(self, z):
        """log p(z): (..., Z) -> (...), in float32."""
        z = z.float()
        if self.pseudo_logits is None:
            return -0.5 * (z.square() + LOG_2PI).sum(-1)
        mu, logvar = (t.float() for t in self.encode(torch.sigmoid(self.pseudo_logits)))  # (K, Z) each
        log_q = gaussian_log_density(z[..., None, :], mu, logvar)  # (..., K)
        return torch.logsumexp(log_q, -1) - math.log(len(mu))

    def sample_prior(self, n: int, generator: torch.Generator | None = None, device=None):
        """n draws z ~ p(z), (n, Z), from the seeded generator."""
        dev = device or next(self.parameters()).device
        eps = torch.randn(n, self.latent_dim, generator=generator, device=dev)
        if self.pseudo_logits is None:
            return eps
        pick = torch.randint(len(self.pseudo_logits), (n,), generator=generator, device=dev)
        mu, logvar = self.encode(torch.sigmoid(self.pseudo_logits[pick]))
        return mu + eps * torch.exp(0.5 * logvar)

    def encode(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)  # (B, Z) each
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x, eps, with_prior: bool = False):
        """eps (B, Z): one draw per image; (K, B, Z): K draws each, decoded as (K*B, C, H, W) logits.
        Returns (logits, mu, logvar), and log p(z) of the draws, (B,) or (K, B), with_prior (so a
        functional call reaches the prior's parameters too)."""
        mu, logvar = self.encode(x)
        z = mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)
        out = self.decode(z.flatten(0, -2)), mu, logvar
        if not with_prior:
            return out
        if z.dtype != torch.float32:  # under autocast: log p(z) of an fp32 z
            z = mu.float() + eps.float() * torch.exp(0.5 * logvar.float())
        return (*out, self.log_prior(z))


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


def build_vae(arch: str, latent_dim: int, prior: str = "normal", pseudo_inputs: int = 500) -> VAE:
    """Same networks as build_ae; the encoder emits mean and log-variance (2Z outputs). prior `vamp`:
    the VampPrior with `pseudo_inputs` learned pseudo-images."""
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
    return VAE(*_pair(arch, 2 * latent_dim, latent_dim), latent_dim, pseudo_inputs if prior == "vamp" else 0)

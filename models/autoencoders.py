"""AE (deterministic code) and VAE (Gaussian code, reparameterised) around an encoder/decoder pair."""

from __future__ import annotations

import torch
from torch import nn

from models.conv import ConvDecoder, ConvEncoder
from models.gaussian import prior_log_density, pseudo_images, split_gaussian
from models.hierarchical import HierarchicalVAE
from models.mlp import MLPDecoder, MLPEncoder
from models.resnet import ResDecoder, ResEncoder

ARCHS = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
    "resnet": (ResEncoder, ResDecoder),
}
PRIORS = ("normal", "vamp")


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
        self.pseudo_logits = pseudo_images(pseudo_inputs)

    def log_prior(self, z):
        """log p(z): (..., Z) -> (...), in float32."""
        pseudo = self.pseudo_logits
        return prior_log_density(z, None if pseudo is None else self.encode(torch.sigmoid(pseudo)))

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
        return split_gaussian(self.encoder(x))  # (B, Z) each

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


def build_vae(
    arch: str, latent_dim: int, prior: str = "normal", pseudo_inputs: int = 500, layers: int = 1
) -> VAE | HierarchicalVAE:
    """Same networks as build_ae; the encoder emits mean and log-variance (2Z outputs). prior `vamp`:
    the VampPrior with `pseudo_inputs` learned pseudo-images (on the top layer). layers=2: the
    hierarchical VAE z2 -> z1 -> x, latent_dim units in each layer."""
    if prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
    if layers not in (1, 2):
        raise ValueError(f"layers must be 1 or 2, got {layers}")
    k = pseudo_inputs if prior == "vamp" else 0
    if layers == 2:
        _pair(arch, 1, latent_dim)  # the same checks
        return HierarchicalVAE(ARCHS[arch], latent_dim, k)
    return VAE(*_pair(arch, 2 * latent_dim, latent_dim), latent_dim, k)

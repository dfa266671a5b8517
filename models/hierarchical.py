"""A two-layer VAE, z2 -> z1 -> x (the hierarchical VAE of Tomczak and Welling 2018).

Generative side: p(z2) (N(0, I) or the VampPrior), p(z1|z2) Gaussian, p(x|z1, z2) Bernoulli.
Inference side: q(z2|x), then q(z1|x, z2) given the drawn z2. A code is the two layers side by side,
[z1, z2], so the loader's noise, the decoder's input and the evaluation's draws are one (..., 2Z)
tensor, as for the one-layer VAE; encode / decode / sample_prior / log_prior keep its meaning.
"""

from __future__ import annotations

import torch
from torch import nn

from models.gaussian import gaussian_log_density, prior_log_density, pseudo_images, split_gaussian


def _gaussian_head(in_dim: int, out_dim: int, hidden: int) -> nn.Sequential:
    """in_dim -> hidden -> (mean, log-variance) of out_dim, as one 2*out_dim output."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * out_dim))


class HierarchicalVAE(nn.Module):
    """encoder2: x -> q(z2|x); encoder1: x -> features, joined with z2 in join1 -> q(z1|x, z2);
    prior1: z2 -> p(z1|z2); decoder: [z1, z2] -> pixel logits. pseudo_inputs=K: the VampPrior on
    z2, the mixture of q(z2|u_k) over K learned pseudo-images u_k."""

    layers = 2

    def __init__(self, pair, latent_dim: int, pseudo_inputs: int = 0, hidden: int = 256):
        super().__init__()
        enc, dec = pair
        self.z_dim = latent_dim  # per layer
        self.latent_dim = 2 * latent_dim  # the code [z1, z2]
        self.encoder2 = enc(2 * latent_dim)
        self.encoder1 = enc(hidden)
        self.join1 = _gaussian_head(hidden + latent_dim, latent_dim, hidden)
        self.prior1 = _gaussian_head(latent_dim, latent_dim, hidden)
        self.decoder = dec(2 * latent_dim)
        self.pseudo_logits = pseudo_images(pseudo_inputs)

    # ---- each layer's distributions ----------------------------------------------------------

    def q2(self, x):
        """q(z2|x): (mean, log-variance), (B, Z) each."""
        return split_gaussian(self.encoder2(x))

    def q1(self, x, z2):
        """q(z1|x, z2) for z2 (..., B, Z) drawn per image: (mean, log-variance) shaped like z2."""
        h = self.encoder1(x).relu()  # (B, hidden)
        return split_gaussian(self.join1(torch.cat([h.expand(*z2.shape[:-1], -1), z2], -1)))

    def p1(self, z2):
        """p(z1|z2): (mean, log-variance) shaped like z2."""
        return split_gaussian(self.prior1(z2))

    def log_prior2(self, z2):
        """log p(z2): (..., Z) -> (...), in float32."""
        pseudo = self.pseudo_logits
        return prior_log_density(z2, None if pseudo is None else self.q2(torch.sigmoid(pseudo)))

    # ---- the one-layer VAE's interface, on codes [z1, z2] ------------------------------------

    def encode(self, x):
        """The posterior's means path: z2's mean, then q(z1|x, z2 = that mean); ([mu1, mu2],
        [logvar1, logvar2]), (B, 2Z) each."""
        mu2, logvar2 = self.q2(x)
        mu1, logvar1 = self.q1(x, mu2)
        return torch.cat([mu1, mu2], -1), torch.cat([logvar1, logvar2], -1)

    def decode(self, z):
        """Pixel logits of codes [z1, z2], (N, 2Z) -> (N, 1, 28, 28)."""
        return self.decoder(z)

    def log_prior(self, z):
        """log p(z1|z2) + log p(z2) of codes [z1, z2], (..., 2Z) -> (...), in float32."""
        z1, z2 = z.float().split(self.z_dim, -1)
        mu1, logvar1 = self.p1(z2)
        return gaussian_log_density(z1, mu1.float(), logvar1.float()) + self.log_prior2(z2)

    def sample_prior(self, n: int, generator: torch.Generator | None = None, device=None, z2=None):
        """n codes [z1, z2] from p(z2) p(z1|z2), from the seeded generator; z2 (n, Z) given: held
        fixed, only z1 drawn (what the lower layer adds)."""
        dev = device or next(self.parameters()).device
        eps = torch.randn(n, 2, self.z_dim, generator=generator, device=dev)
        if z2 is None:
            z2 = eps[:, 1]
            if self.pseudo_logits is not None:
                pick = torch.randint(len(self.pseudo_logits), (n,), generator=generator, device=dev)
                mu, logvar = self.q2(torch.sigmoid(self.pseudo_logits[pick]))
                z2 = mu + z2 * torch.exp(0.5 * logvar)
        mu1, logvar1 = self.p1(z2)
        return torch.cat([mu1 + eps[:, 0] * torch.exp(0.5 * logvar1), z2], -1)

    def forward(self, x, eps):
        """eps (B, 2Z) or (K, B, 2Z): [eps1, eps2] per draw. A dict of the draws' pieces: logits
        (B or K*B, 1, 28, 28); z1 and z2 shaped like the draws; q1 and p1, (mean, log-variance) of
        q(z1|x, z2) and p(z1|z2) at the drawn z2; q2 of q(z2|x), (B, Z) each; log_pz2, log p(z2)."""
        eps1, eps2 = eps.split(self.z_dim, -1)
        mu2, logvar2 = self.q2(x)
        z2 = mu2 + eps2.to(mu2.dtype) * torch.exp(0.5 * logvar2)
        mu1, logvar1 = self.q1(x, z2)
        z1 = mu1 + eps1.to(mu1.dtype) * torch.exp(0.5 * logvar1)
        return {
            "logits": self.decode(torch.cat([z1, z2], -1).flatten(0, -2)),
            "z1": z1,
            "z2": z2,
            "q1": (mu1, logvar1),
            "p1": self.p1(z2),
            "q2": (mu2, logvar2),
            "log_pz2": self.log_prior2(z2),
        }

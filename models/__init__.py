"""Networks: MLP and convolutional encoder/decoder pairs, AE and VAE wrappers."""

from models.autoencoders import AE, ARCHS, PRIORS, VAE, build_ae, build_vae
from models.gan import GAN_ARCHS, Discriminator, Generator, build_gan

__all__ = [
    "AE",
    "VAE",
    "ARCHS",
    "PRIORS",
    "build_ae",
    "build_vae",
    "GAN_ARCHS",
    "Generator",
    "Discriminator",
    "build_gan",
]

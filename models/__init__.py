"""Networks: MLP and convolutional encoder/decoder pairs, AE and VAE wrappers."""

from models.autoencoders import AE, ARCHS, VAE, build_ae, build_vae

__all__ = ["AE", "VAE", "ARCHS", "build_ae", "build_vae"]

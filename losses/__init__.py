"""Pure loss functions returning (loss, metrics); factories bind a module into loss_fn form."""

from losses.ae import make_ae_loss, reconstruction_loss
from losses.gan import GAN_LOSSES, GANLoss, gradient_penalty, make_gan_loss
from losses.hierarchical import hierarchical_elbo, make_hierarchical_loss
from losses.reconstruction import bernoulli_nll, squared_error
from losses.vae import (
    elbo,
    gaussian_kl,
    log_importance_weights,
    make_elbo_loss,
    make_iwae_loss,
    one_draw_kl,
)

__all__ = [
    "bernoulli_nll",
    "squared_error",
    "reconstruction_loss",
    "make_ae_loss",
    "gaussian_kl",
    "elbo",
    "one_draw_kl",
    "make_elbo_loss",
    "make_iwae_loss",
    "log_importance_weights",
    "make_hierarchical_loss",
    "hierarchical_elbo",
    "GAN_LOSSES",
    "GANLoss",
    "gradient_penalty",
    "make_gan_loss",
]

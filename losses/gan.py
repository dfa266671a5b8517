"""GAN objectives on discriminator logits (non-saturating, hinge, least-squares, WGAN-GP, relativistic
pairing), the zero-centred R1 and R2 gradient penalties, and DiffAugment on what D sees."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from engine import Aux, call_module
from losses.augment import diff_augment, mirror

GAN_LOSSES = ("nonsaturating", "hinge", "lsgan", "wgan-gp", "relativistic")


def _d_metrics(loss, real, fake, prob: bool) -> dict:
    """D(x) and D(G(z)) as the batch mean of the discriminator's output: a probability for the
    logistic losses, the raw score for the others."""
    out = torch.sigmoid if prob else (lambda t: t)
    return {"d_loss": loss.detach(), "d_real": out(real).mean().detach(), "d_fake": out(fake).mean().detach()}


def nonsaturating_d(real, fake):
    """-log D(x) - log(1 - D(G(z))), from logits: softplus(-r) + softplus(f)."""
    loss = F.softplus(-real).mean() + F.softplus(fake).mean()
    return loss, _d_metrics(loss, real, fake, prob=True)


def _mean(values, weight=None):
    """The mean of values, or their weighted mean (top-k training: weights 1 for the kept images, 0 else)."""
    return values.mean() if weight is None else (values * weight).sum() / weight.sum()


def nonsaturating_g(fake, weight=None):
    """Goodfellow et al. (2014)'s non-saturating generator loss -log D(G(z)) = softplus(-f)."""
    loss = _mean(F.softplus(-fake), weight)
    return loss, {"g_loss": loss.detach()}


def hinge_d(real, fake):
    """Lim & Ye (2017): max(0, 1 - r) + max(0, 1 + f)."""
    loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return loss, _d_metrics(loss, real, fake, prob=False)


def critic_g(fake, weight=None):
    """-f: the generator side of the hinge and Wasserstein losses."""
    loss = _mean(-fake, weight)
    return loss, {"g_loss": loss.detach()}


def lsgan_d(real, fake):
    """Mao et al. (2017), a=0, b=c=1: (r - 1)^2 / 2 + f^2 / 2."""
    loss = 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()
    return loss, _d_metrics(loss, real, fake, prob=False)


def lsgan_g(fake, weight=None):
    loss = 0.5 * _mean((fake - 1).square(), weight)
    return loss, {"g_loss": loss.detach()}


def wasserstein_d(real, fake):
    """Arjovsky et al. (2017)'s critic loss f - r (the gradient penalty is added by the caller)."""
    loss = fake.mean() - real.mean()
    return loss, _d_metrics(loss, real, fake, prob=False)


def relativistic_d(real, fake):
    """Jolicoeur-Martineau (2019), the pairing of R3GAN (Huang et al. 2024): softplus(f - r), each
    real image against the fake drawn beside it."""
    loss = F.softplus(fake - real).mean()
    return loss, _d_metrics(loss, real, fake, prob=False)


def relativistic_g(fake, real):
    """The generator's side of the pairing: softplus(r - f)."""
    loss = F.softplus(real - fake).mean()
    return loss, {"g_loss": loss.detach()}


PAIRS = {
    "nonsaturating": (nonsaturating_d, nonsaturating_g),
    "hinge": (hinge_d, critic_g),
    "lsgan": (lsgan_d, lsgan_g),
    "wgan-gp": (wasserstein_d, critic_g),
    "relativistic": (relativistic_d, relativistic_g),
}
PAIRED = ("relativistic",)  # generator losses that also see the real images' logits


def top_k_share(step: torch.Tensor, least: float, steps: int) -> torch.Tensor:
    """The share of the batch top-k training keeps at `step` (a tensor, so the compiled step needs no
    recompiling as it moves): 1 at step 0, falling linearly to `least` at `steps`, then `least`."""
    done = (step.float() / max(steps, 1)).clamp(max=1.0)
    return 1 - (1 - least) * done


def top_k_weights(scores: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Sinha et al. (2020)'s top-k training: weight 1 for the ceil(share * B) generated images the
    discriminator scores highest, 0 for the rest, so the generator learns only from its best ones.
    (B,) scores -> (B,) weights in the scores' dtype; ties broken by position."""
    k = torch.ceil(share * len(scores)).clamp(min=1)
    rank = scores.detach().argsort(descending=True, stable=True).argsort()  # 0: the highest score
    return (rank < k).to(scores.dtype)


def uniform_from_normal(n: torch.Tensor) -> torch.Tensor:
    """Phi(n): standard-normal draws mapped to U(0, 1) (the loader draws only normal noise)."""
    return 0.5 * (1 + torch.erf(n / math.sqrt(2)))


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (autocast outputs) in float32; float32/float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def gradient_penalty(critic, real, fake, u):
    """Gulrajani et al. (2017): E[(||grad_x critic(x_hat)||_2 - 1)^2] at x_hat = u x + (1 - u) G(z).

    The input gradient comes from torch.func.grad, so the penalty is itself differentiable with
    respect to the critic's parameters when an outer torch.func.grad asks for them.
    """
    x_hat = u * real + (1 - u) * fake  # (B, C, H, W)
    grads = torch.func.grad(lambda x: _wide(critic(x)).sum())(x_hat)
    norms = torch.sqrt(_wide(grads).flatten(1).square().sum(1) + 1e-12)  # (B,); eps: finite at 0
    return (norms - 1).square().mean()


def r1_penalty(disc, real):
    """Mescheder et al. (2018): E ||grad_x D(x)||^2 at real x, the zero-centred penalty that makes
    the non-saturating GAN converge locally. Through torch.func.grad, so the outer gradient with
    respect to the discriminator's parameters sees it (a double backward inside the one step).
    At generated images instead of real ones it is R2 (R3GAN, Huang et al. 2024, uses both)."""
    grads = torch.func.grad(lambda x: _wide(disc(x)).sum())(real)
    return _wide(grads).flatten(1).square().sum(1).mean()


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (the loader's scale) -> [-1, 1] (the generator's tanh range)."""
    return x * 2 - 1


def mode_seeking(fake, z, y=None, eps: float = 1e-5):
    """Mao et al. (2019)'s mode-seeking term 1 / (mean d(G(z1), G(z2)) / d(z1, z2) + eps), over the
    pairs of the batch drawn for the same label (every pair when y is None), d the mean absolute
    difference. A generator that ignores z makes it large. Zero when no two images share a label.
    The distances come from cdist (p=1) rather than a (B, B, D) difference tensor: at 64 images of
    64x64 RGB that tensor is 200 MB and made the step 2.7x slower."""
    f, zz = fake.flatten(1).float(), z.flatten(1).float()
    d_img = torch.cdist(f[None], f[None], p=1)[0] / f.shape[1]  # (B, B) mean absolute differences
    d_z = torch.cdist(zz[None], zz[None], p=1)[0] / zz.shape[1]
    pairs = 1 - torch.eye(len(f), device=f.device)
    if y is not None:
        pairs = pairs * (y[:, None] == y[None]).float()
    ratio = (pairs * d_img / (d_z + eps)).sum() / pairs.sum().clamp_min(1)
    return pairs.sum().clamp_max(1) / (ratio + eps)


class GANLoss(NamedTuple):
    """The three pure pieces engine.make_gan_step takes: the generator, and each player's loss (the
    discriminator's in the engine's loss_fn form; the generator's of its images, as the step
    differentiates it there and pulls the gradient back through the generator's forward)."""

    generate: object  # (gen_params, gen_buffers, z, y) -> (images in [-1, 1], gen_buffers)
    disc_loss: object  # (disc_params, disc_buffers, {"x", "y", "fake", ["u"]}) -> (loss, Aux)
    gen_loss: object  # (images, {"z", "y", "x", "disc_params", "disc_buffers"}) -> (loss, Aux)


def make_gan_loss(
    gen,
    disc,
    kind: str = "nonsaturating",
    gp_weight: float = 10.0,
    r1_gamma: float = 0.0,
    r1_batch: int = 0,
    mode_seeking_weight: float = 0.0,
    class_weight: float = 0.0,
    gen_class_weight: float | None = None,
    r2_gamma: float = 0.0,
    augment: tuple[str, ...] = (),
    mirrored: bool = False,
    color_p: float = 1.0,
    top_k: float = 1.0,
    top_k_steps: int = 0,
) -> GANLoss:
    """Bind a generator and discriminator module into the pure functions of `kind`.

    r1_gamma > 0 adds gamma / 2 * R1 to the discriminator's loss, estimated on the first r1_batch
    real images of the batch (0: all of them): an unbiased estimate of the same expectation at a
    fraction of the double backward's cost (the role lazy regularisation plays in StyleGAN2).
    y (labels) reaches both networks; an unconditional network ignores it. mode_seeking_weight > 0
    adds that multiple of `mode_seeking` to the generator's loss. On a step where the engine's lazy
    regularisation passes batch["regularize"] = k, the penalty counts k times (k = 0: skipped).

    class_weight > 0 (a conditional discriminator built with classify=True): ACGAN's auxiliary
    classifier loss. The discriminator learns to classify the real images (cross-entropy with their
    labels: real ones only, so it never learns the classes of bad fakes), and the generator is
    pushed to make images that classifier puts in the class they were asked for, with weight
    gen_class_weight (None: class_weight; 0: D still learns the classes, G is not pushed by them).

    r2_gamma > 0: gamma / 2 * R2, the same penalty at the (detached) generated images, on the same
    images and steps as R1. augment (names from losses.augment.AUGMENTS): every image D sees, real
    and generated, in both players' losses, goes through diff_augment with the batch's draws
    batch["aug"] (B, 2, DRAWS) standard normal: [:, 0] for the real images, [:, 1] for the fakes
    (B, 2, DRAWS + 1) with color_p < 1: the colour transform on that share of the images).
    mirrored: the real images x-flipped where batch["mirror"] (B,) is positive (losses.augment.mirror),
    in every term that reads them (R1 included).
    top_k < 1 (not with the relativistic pairing): the adversarial term of the generator's loss
    averages over its top-k images only (top_k_weights), the share kept falling from 1 to top_k over
    the first top_k_steps steps (top_k_share of batch["step"]).
    """
    if kind not in PAIRS:
        raise ValueError(f"GAN loss must be one of {', '.join(GAN_LOSSES)}, got {kind!r}")
    d_fn, g_fn = PAIRS[kind]
    if top_k < 1 and kind in PAIRED:
        raise ValueError(f"top-k training weighs each generated image's own loss; {kind!r} pairs them")
    g_class = class_weight if gen_class_weight is None else gen_class_weight

    def generate(params, buffers, z, y=None):
        return call_module(gen, params, buffers, z, y)

    def real_images(batch):
        """The batch's real images in [-1, 1], their mirror images where batch["mirror"] says so."""
        x = to_signed(batch["x"])
        return mirror(x, batch["mirror"]) if mirrored else x

    def seen(images, batch, which: int):
        """What D sees of `images`: augmented with the batch's draws (real: 0, fake: 1), or as they are."""
        if not augment:
            return images
        return diff_augment(images, uniform_from_normal(batch["aug"][:, which]), augment, color_p)

    def disc_loss(params, buffers, batch):
        x, fake, y = real_images(batch), batch["fake"].to(batch["x"].dtype), batch.get("y")
        real, fake = seen(x, batch, 0), seen(fake, batch, 1)
        # real and fake in separate passes: a BatchNorm discriminator normalises each batch on its own
        if class_weight > 0:
            (real_logits, classes), buffers = call_module(disc, params, buffers, real, y, classify=True)
        else:
            real_logits, buffers = call_module(disc, params, buffers, real, y)
        fake_logits, buffers = call_module(disc, params, buffers, fake, y)
        loss, metrics = d_fn(real_logits.float(), fake_logits.float())
        if class_weight > 0:
            ce = F.cross_entropy(classes.float(), y)
            loss = loss + class_weight * ce
            accuracy = (classes.argmax(1) == y).float().mean()
            metrics.update(d_loss=loss.detach(), class_ce=ce.detach(), class_acc=accuracy.detach())
        if kind == "wgan-gp":
            u = uniform_from_normal(batch["u"]).view(-1, *[1] * (real.dim() - 1))  # (B, 1, 1, 1)
            gp = gradient_penalty(lambda x: call_module(disc, params, buffers, x, y)[0], real, fake, u)
            loss = loss + gp_weight * gp
            metrics.update(d_loss=loss.detach(), gp=gp.detach())
        every = batch.get("regularize", 1)  # lazy R1 (engine.make_gan_step's reg_every): 0 on most steps
        for name, gamma, images in (("r1", r1_gamma, real), ("r2", r2_gamma, fake)):
            if gamma > 0 and every:
                n = r1_batch or len(images)
                y_n = None if y is None else y[:n]
                critic = lambda x, y_n=y_n: call_module(disc, params, buffers, x, y_n)[0]  # noqa: E731
                penalty = r1_penalty(critic, images[:n])
                loss = loss + every * gamma / 2 * penalty
                metrics.update({"d_loss": loss.detach(), name: penalty.detach()})
            elif gamma > 0:  # not measured on this step: nan, which the loop's averages leave out
                metrics[name] = torch.full((), math.nan, device=loss.device)
        return loss, Aux(metrics, buffers)

    def gen_loss(fake, batch):
        y = batch.get("y")
        d_params, d_buffers = batch["disc_params"], batch["disc_buffers"]
        shown = seen(fake, batch, 1)
        if class_weight > 0:
            (logits, classes), _ = call_module(disc, d_params, d_buffers, shown, y, classify=True)
        else:
            logits, _ = call_module(disc, d_params, d_buffers, shown, y)
        if kind in PAIRED:
            real = seen(real_images(batch), batch, 0)
            real_logits, _ = call_module(disc, d_params, d_buffers, real, y)
            loss, metrics = g_fn(logits.float(), real_logits.float().detach())
        elif top_k < 1:
            weight = top_k_weights(logits.float(), top_k_share(batch["step"], top_k, top_k_steps))
            loss, metrics = g_fn(logits.float(), weight)
        else:
            loss, metrics = g_fn(logits.float())
        if mode_seeking_weight > 0:
            ms = mode_seeking(fake, batch["z"], y)
            loss = loss + mode_seeking_weight * ms
            metrics.update(g_loss=loss.detach(), g_ms=ms.detach())
        if class_weight > 0:  # the fakes in the class asked for, as D's classifier of real images sees them
            ce = F.cross_entropy(classes.float(), y)
            loss = loss + g_class * ce
            metrics.update(g_loss=loss.detach(), class_ce=ce.detach())
        return loss, Aux(metrics, {})

    return GANLoss(generate, disc_loss, gen_loss)

"""GAN networks: DCGAN generator/discriminator for 28x28 grey and 64x64 RGB images, a residual pair for
both sizes (no normalisation in its discriminator), and an MLP GAN."""

from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
from torch import nn

GAN_ARCHS = ("dcgan", "resnet", "mlp")


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. (2016): conv/linear weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _up(c_in: int, c_out: int, kernel=4, stride=2, padding=1) -> list[nn.Module]:
    """Transposed conv (no bias: BatchNorm follows), BatchNorm, ReLU."""
    return [
        nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


def _down(c_in: int, c_out: int, norm: bool = False) -> list[nn.Module]:
    """Strided conv, BatchNorm if `norm` (DCGAN; off for WGAN-GP: its penalty is per sample), LeakyReLU."""
    conv = nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm)
    return [conv, nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)] if norm else [conv, nn.LeakyReLU(0.2)]


class Generator(nn.Module):
    """z (B, Z) [and labels y (B,)] -> images (B, C, H, W) in [-1, 1] (tanh).

    classes > 0: conditional; the label's learned embedding (Z numbers) is concatenated to z, so the
    first layer reads 2Z inputs (Miyato and Koyama 2018 feed it through conditional BatchNorm; an input
    embedding is the smallest form). Added to z or concatenated, the MNIST runs ignored z and drew one
    image per class until the generator's loss gained losses.gan.mode_seeking.
    Unconditional: y is ignored.
    """

    def __init__(self, net: nn.Sequential, latent_dim: int, image_shape: tuple[int, int, int], classes=0):
        super().__init__()
        self.net, self.latent_dim, self.image_shape = net, latent_dim, tuple(image_shape)
        self.embed = nn.Embedding(classes, latent_dim) if classes else None

    def forward(self, z, y=None):
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)
        if len(self.net) and isinstance(self.net[0], nn.ConvTranspose2d):
            z = rearrange(z, "b z -> b z 1 1")
        out = self.net(z)
        c, h, w = self.image_shape
        return rearrange(out, "b (c h w) -> b c h w", c=c, h=h) if out.dim() == 2 else out


class Discriminator(nn.Module):
    """images (B, C, H, W) in [-1, 1] [and labels y (B,)] -> one logit (or critic score) per image
    (B,); no sigmoid.

    classes > 0: a projection discriminator (Miyato and Koyama 2018): the last layer's input h (the
    features), summed over positions as in the paper, adds <embed(y), sum h> to the unconditional
    logit. (A first version projected the whole feature map.) The per-class collapse conditional runs
    showed comes from the generator ignoring z, not from this head: see losses.gan.mode_seeking.
    Unconditional: y is ignored.
    """

    def __init__(self, net: nn.Sequential, classes: int = 0, features: int = 0, flat: int = 0):
        super().__init__()
        self.net = net
        self.embed = nn.Embedding(classes, features) if classes else None
        self.classifier = nn.Linear(flat, classes) if classes and flat else None

    def forward(self, x, y=None, classify: bool = False):
        """The logit (B,); classify=True (a discriminator built with an auxiliary classifier): also
        the class logits (B, classes) of ACGAN's head, one linear layer on the flattened features.
        (Pooled over positions, as the projection reads them, the head learned the classes of real
        digits far more slowly: 23% after 150 steps where the flattened features gave 95%.)"""
        if self.embed is None:
            return self.net(x).flatten(1)[:, 0]  # (B,)
        h = self.net[:-1](x)  # the features the last layer reads
        pooled = h.sum((2, 3)) if h.dim() == 4 else h  # (B, C): summed over positions, as in the paper
        logit = self.net[-1](h).flatten(1)[:, 0] + (self.embed(y) * pooled).sum(1)
        return (logit, self.classifier(h.flatten(1))) if classify else logit


class MinibatchStd(nn.Module):
    """Karras et al. (2018)'s minibatch standard deviation: (B, C, H, W) -> (B, C + 1, H, W), the added
    channel the mean over features and positions of each feature's standard deviation within the
    image's group (`group` consecutive images of the batch; fewer where the batch does not divide),
    so the discriminator sees how varied a batch is and a collapsed generator's batches stand out.
    Groups are consecutive so real and generated images, passed to D apart, never share one."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x):
        g = math.gcd(self.group, len(x))  # a group size that divides the batch (the last batch may be short)
        wide = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 / fp16 features: in float32
        grouped = rearrange(wide, "(n g) c h w -> n g c h w", g=g)
        std = (grouped.var(1, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (n,)
        channel = repeat(std, "n -> (n g) 1 h w", g=g, h=x.shape[2], w=x.shape[3]).to(x.dtype)
        return torch.cat([x, channel], 1)


def _std_channel(group: int) -> list[nn.Module]:
    """MinibatchStd(group) before a discriminator's last layer, or nothing (group 0)."""
    return [MinibatchStd(group)] if group else []


def dcgan28(latent_dim: int, channels=1, width=64, norm=True, mbstd=0) -> tuple[nn.Sequential, nn.Sequential]:
    """28x28: z -> 7x7x2W -> 14x14xW -> 28x28xC, and 28 -> 14x14xW -> 7x7x2W -> logit (mbstd > 0: the
    minibatch standard deviation of groups of that many images as one more channel before it)."""
    gen = nn.Sequential(
        *_up(latent_dim, 2 * width, kernel=7, stride=1, padding=0),  # (B, 2W, 7, 7)
        *_up(2 * width, width),  # (B, W, 14, 14)
        nn.ConvTranspose2d(width, channels, 4, 2, 1),  # (B, C, 28, 28)
        nn.Tanh(),
    )
    disc = nn.Sequential(
        *_down(channels, width),  # (B, W, 14, 14)
        *_down(width, 2 * width, norm),  # (B, 2W, 7, 7)
        *_std_channel(mbstd),
        nn.Conv2d(2 * width + bool(mbstd), 1, 7),  # (B, 1, 1, 1)
    )
    return gen, disc


def dcgan64(latent_dim: int, channels=3, width=64, norm=True, mbstd=0) -> tuple[nn.Sequential, nn.Sequential]:
    """64x64, the DCGAN paper's layout: z -> 4x4x8W -> 8x8x4W -> 16x16x2W -> 32x32xW -> 64x64xC."""
    gen = nn.Sequential(
        *_up(latent_dim, 8 * width, stride=1, padding=0),  # (B, 8W, 4, 4)
        *_up(8 * width, 4 * width),
        *_up(4 * width, 2 * width),
        *_up(2 * width, width),  # (B, W, 32, 32)
        nn.ConvTranspose2d(width, channels, 4, 2, 1),
        nn.Tanh(),
    )
    disc = nn.Sequential(
        *_down(channels, width),  # (B, W, 32, 32): no BatchNorm on the input layer (DCGAN)
        *_down(width, 2 * width, norm),
        *_down(2 * width, 4 * width, norm),
        *_down(4 * width, 8 * width, norm),  # (B, 8W, 4, 4)
        *_std_channel(mbstd),
        nn.Conv2d(8 * width + bool(mbstd), 1, 4),
    )
    return gen, disc


class UpBlock(nn.Module):
    """BigGAN's generator block without its conditioning: BN, ReLU, 2x nearest upsampling, 3x3 conv,
    BN, ReLU, 3x3 conv, plus the upsampled input through a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), nn.Upsample(scale_factor=2.0),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1),
        )  # fmt: skip
        self.skip = nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x):
        return self.main(x) + self.skip(x)


class DownBlock(nn.Module):
    """A discriminator block with no normalisation (a penalty is per image): [LeakyReLU,] 3x3 conv,
    LeakyReLU, 3x3 conv, 2x2 average pooling, plus the pooled input through a 1x1 conv; the first
    block skips the leading activation (it would clip the image)."""

    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        self.main = nn.Sequential(
            *([] if first else [nn.LeakyReLU(0.2)]),
            nn.Conv2d(c_in, c_out, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c_out, c_out, 3, 1, 1),
            nn.AvgPool2d(2),
        )  # fmt: skip
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x):
        return self.main(x) + self.skip(x)


class SumPool(nn.Module):
    """(B, C, H, W) -> (B, C): the sum over positions (SN-GAN's and BigGAN's discriminator head)."""

    def forward(self, x):
        return x.sum((2, 3))


# the residual pairs' layouts by image size: the generator's first grid, its channel multiples of
# --width from that grid up (one UpBlock per doubling), and the discriminator's, one DownBlock each
RESNET_LAYOUTS = {64: (4, (8, 8, 4, 2, 1), (1, 2, 4, 8)), 28: (7, (2, 1, 1), (1, 2))}


def resnet(latent_dim: int, channels=3, width=32, mbstd=0, size=64) -> tuple[nn.Sequential, nn.Sequential]:
    """Residual pair (SN-GAN / BigGAN layout), 64x64: z -> 4x4x8W -> four UpBlocks -> 64x64xC, and
    64x64 -> four DownBlocks -> 4x4x8W -> ReLU, sum over positions -> linear logit; 28x28: z -> 7x7x2W
    -> two UpBlocks -> 28x28xC, and two DownBlocks -> 7x7x2W -> the same head."""
    start, mults, downs = RESNET_LAYOUTS[size]
    gen = nn.Sequential(
        nn.Linear(latent_dim, start * start * mults[0] * width),
        nn.Unflatten(1, (mults[0] * width, start, start)),
        *(UpBlock(a * width, b * width) for a, b in zip(mults, mults[1:])),  # (B, W, size, size)
        nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh(),
    )  # fmt: skip
    disc = nn.Sequential(
        DownBlock(channels, width, first=True),
        *(DownBlock(a * width, b * width) for a, b in zip(downs, downs[1:])),  # (B, 8W, 4, 4) at 64
        *_std_channel(mbstd), nn.LeakyReLU(0.2), SumPool(), nn.Linear(downs[-1] * width + bool(mbstd), 1),
    )  # fmt: skip
    return gen, disc


def mlp_gan(latent_dim: int, image_shape, width: int = 256) -> tuple[nn.Sequential, nn.Sequential]:
    """The smallest case: z -> W -> 2W -> pixels, and pixels -> 2W -> W -> logit."""
    pixels = math.prod(image_shape)
    gen = nn.Sequential(
        nn.Linear(latent_dim, width),
        nn.ReLU(),
        nn.Linear(width, 2 * width),
        nn.ReLU(),
        nn.Linear(2 * width, pixels),
        nn.Tanh(),
    )
    disc = nn.Sequential(
        nn.Flatten(),
        nn.Linear(pixels, 2 * width),
        nn.LeakyReLU(0.2),
        nn.Linear(2 * width, width),
        nn.LeakyReLU(0.2),
        nn.Linear(width, 1),
    )
    return gen, disc


def build_gan(
    arch: str,
    image_shape,
    latent_dim: int = 100,
    width: int = 64,
    disc_norm: bool = True,
    classes: int = 0,
    classify: bool = False,
    disc_width: int = 0,
    mbstd: int = 0,
):
    """(Generator, Discriminator) for images of shape (C, H, W), DCGAN-initialised; disc_width: the
    discriminator's own width (0: width), the generator's unchanged; disc_norm=False
    drops the discriminator's BatchNorm (needed by gradient penalties); classes > 0: conditional
    (a label embedding in the generator, a projection discriminator), and with classify=True an
    auxiliary classifier head in the discriminator (ACGAN, Odena et al. 2017); mbstd > 0: a
    MinibatchStd channel over groups of that many images before D's last layer (conv networks)."""
    c, h, w = image_shape
    inputs = 2 * latent_dim if classes else latent_dim  # the generator reads [z, embed(y)] when conditional
    if arch == "mlp" and mbstd:
        raise ValueError("the minibatch standard deviation channel needs a conv D: dcgan or resnet")
    if arch == "mlp":
        nets = lambda width: mlp_gan(inputs, image_shape, 4 * width)  # noqa: E731
    elif arch == "dcgan" and h == w == 28:
        nets = lambda width: dcgan28(inputs, c, width, disc_norm, mbstd)  # noqa: E731
    elif arch == "dcgan" and h == w == 64:
        nets = lambda width: dcgan64(inputs, c, width, disc_norm, mbstd)  # noqa: E731
    elif arch == "resnet" and h == w and h in RESNET_LAYOUTS:
        nets = lambda width: resnet(inputs, c, width, mbstd, h)  # noqa: E731
    else:
        raise ValueError(
            f"no {arch!r} GAN for {h}x{w} images; dcgan and resnet take 28x28 or 64x64, mlp any size"
        )
    gen, disc = nets(width)
    if disc_width and disc_width != width:
        with torch.random.fork_rng(devices=[]):  # dcgan_init below draws every weight: G's as before
            disc = nets(disc_width)[1]
    h = disc[:-1](torch.zeros(2, *image_shape)) if classes else None  # what the last layer reads
    features = h.shape[1] if classes else 0  # channels the projection weighs
    flat = h[0].numel() if classes and classify else 0  # inputs of the auxiliary classifier
    pair = Generator(gen, latent_dim, image_shape, classes), Discriminator(disc, classes, features, flat)
    for m in pair:
        dcgan_init(m)
    if classes:
        nn.init.normal_(pair[1].embed.weight, 0.0, 0.02)  # the projection starts near the unconditional D
    return pair

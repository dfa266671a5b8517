"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of every image a discriminator sees:
colour, translation and cutout, each a pure function of the images and uniform draws the caller
passes in (the loader's noise), so a step stays one compiled region and resumes bitwise."""

from __future__ import annotations

import torch

AUGMENTS = ("color", "translation", "cutout")  # applied in this order, as in the paper
DRAWS = 7  # uniforms per image: brightness, saturation, contrast, shift y and x, cutout centre y and x
TRANSLATE = 1 / 8  # the largest shift, as a share of the side (the paper's ratio)
CUTOUT = 1 / 2  # the side of the cut square, as a share of the image's


def color(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), saturation x U(0, 2) about the pixel's channel mean, contrast
    x U(0.5, 1.5) about the image's mean; x (B, C, H, W) in [-1, 1], u (B, 3) in [0, 1)."""
    b, s, c = (u[:, i].view(-1, 1, 1, 1).to(x.dtype) for i in range(3))
    x = x + (b - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (2 * s) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (c + 0.5) + mean


def translation(x: torch.Tensor, u: torch.Tensor, ratio: float = TRANSLATE) -> torch.Tensor:
    """Each image shifted by whole pixels, up to ratio x its side each way, zeros (mid-grey in
    [-1, 1]: the paper pads with 0 too) shifted in; u (B, 2) in [0, 1) picks the shifts (y, x)."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (u[:, 0] * (2 * sy + 1)).long().clamp(max=2 * sy)  # (B,) in 0 .. 2 sy: pad offset of row 0
    dx = (u[:, 1] * (2 * sx + 1)).long().clamp(max=2 * sx)
    padded = torch.nn.functional.pad(x, (sx, sx, sy, sy))  # (B, C, H + 2 sy, W + 2 sx)
    rows = (torch.arange(h, device=x.device) + dy[:, None])[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w, device=x.device) + dx[:, None])[:, None, :]  # (B, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: torch.Tensor, u: torch.Tensor, ratio: float = CUTOUT) -> torch.Tensor:
    """A square of ratio x the side set to 0 in each image, its centre anywhere on the image (the
    square clipped at the border); u (B, 2) in [0, 1) picks the centre (y, x)."""
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (u[:, 0] * (h + 1 - ch % 2)).long()[:, None]  # (B, 1): the paper's centre range
    cx = (u[:, 1] * (w + 1 - cw % 2)).long()[:, None]
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_y = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch)  # (B, H)
    inside_x = (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)  # (B, W)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def mirror(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The data set's mirror images: each image of x (B, C, H, W) flipped left to right where its
    draw n (B,) is positive, so half of them on average (StyleGAN's --mirror, the x-flips of ADA's
    paper). It changes the real data, not only what D sees: the generator learns the flipped images
    as images of the set, which leaks nothing where a mirrored image is as plausible as the image."""
    return torch.where(n.view(-1, 1, 1, 1) > 0, x.flip(-1), x)


def diff_augment(
    x: torch.Tensor, u: torch.Tensor, policy: tuple[str, ...] = AUGMENTS, color_p: float = 1.0
) -> torch.Tensor:
    """x (B, C, H, W) in [-1, 1] through the augmentations named in policy, in AUGMENTS order;
    u (B, DRAWS) uniforms in [0, 1): columns 0-2 colour, 3-4 translation, 5-6 cutout. Differentiable
    in x (the generator learns through it); an empty policy returns x. color_p < 1: the colour
    transform on an image only where its extra draw u[:, DRAWS] (u then (B, DRAWS + 1)) is below
    color_p, the rest keep their colours (ADA's probability p, Karras et al. 2020, for one transform)."""
    unknown = set(policy) - set(AUGMENTS)
    if unknown:
        raise ValueError(
            f"augmentations must be among {', '.join(AUGMENTS)}, got {', '.join(sorted(unknown))}"
        )
    if "color" in policy:
        coloured = color(x, u[:, 0:3])
        x = coloured if color_p >= 1 else torch.where((u[:, DRAWS] < color_p).view(-1, 1, 1, 1), coloured, x)
    if "translation" in policy:
        x = translation(x, u[:, 3:5])
    if "cutout" in policy:
        x = cutout(x, u[:, 5:7])
    return x

"""Multi-scale sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, "Progressive
growing of GANs", section 5): a generated-vs-real score that needs no trained network, so it works on
any folder of images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from evaluation.fidelity import random_subset
from evaluation.sampling import Sampler, sample_images
from harness.data import Dataset, to_unit

PATCH = 7  # descriptor: a 7x7 neighbourhood of one pyramid level, all channels
PER_IMAGE = 128  # descriptors drawn per image and level
DIRECTIONS = 512  # random projections per repeat
REPEATS = 4
MIN_SIZE = 8  # the pyramid stops before a level would be smaller than this
DIVERSITY_IMAGES = 1000  # images the diversity score compares pairwise (at most)

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    """The 5x5 binomial (Gaussian) filter of Burt and Adelson's pyramid, per channel, reflect-padded."""
    c = x.shape[1]
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x)  # (5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(c, 1, 5, 5), groups=c)


def laplacian_pyramid(images: torch.Tensor) -> list[torch.Tensor]:
    """Band-pass levels of (N, C, H, W) images, finest first, then the low-pass residual: each level
    minus the upsampled blur of the next, while the next stays at least MIN_SIZE pixels."""
    levels, x = [], images
    while min(x.shape[-2:]) // 2 >= MIN_SIZE:
        small = _blur(x)[..., ::2, ::2]
        up = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        levels.append(x - up)
        x = small
    return levels + [x]


def patch_descriptors(
    level: torch.Tensor, generator: torch.Generator, per_image: int = PER_IMAGE
) -> torch.Tensor:
    """per_image random PATCH x PATCH neighbourhoods of every image of one level, flattened:
    (N * per_image, C * PATCH * PATCH)."""
    n, c, h, w = level.shape
    if h < PATCH or w < PATCH:
        raise ValueError(f"pyramid level {h}x{w} is smaller than the {PATCH}x{PATCH} patch")
    ys = torch.randint(0, h - PATCH + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - PATCH + 1, (n, per_image), generator=generator)
    offsets = torch.arange(PATCH)
    rows = (ys[..., None] + offsets)[..., :, None].expand(n, per_image, PATCH, PATCH)  # (N, P, 7, 7)
    cols = (xs[..., None] + offsets)[..., None, :].expand(n, per_image, PATCH, PATCH)
    idx = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[idx, rows, cols]  # (N, P, 7, 7, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(n * per_image, c * PATCH * PATCH)


def _normalise(desc: torch.Tensor, channels: int) -> torch.Tensor:
    """A descriptor set standardised per colour channel (over descriptors and positions), as Karras
    et al.'s finalize_descriptors does, so every level and channel weighs alike."""
    d = desc.view(len(desc), channels, -1)
    d = (d - d.mean((0, 2), keepdim=True)) / d.std((0, 2), keepdim=True).clamp(min=1e-8)
    return d.reshape(len(desc), -1)


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, repeats: int = REPEATS
) -> float:
    """Mean over repeats x DIRECTIONS random unit directions of the 1-D Wasserstein-1 distance between
    the projections of two equally sized descriptor sets (N, D): sort both, mean |difference|."""
    if a.shape != b.shape:
        raise ValueError(
            f"descriptor sets must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], DIRECTIONS, generator=generator, dtype=a.dtype)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # (DIRECTIONS, N): each projection contiguous, which sorts 2x faster than along dim 0
        pa, pb = (dirs.T @ a.T).sort(-1).values, (dirs.T @ b.T).sort(-1).values
        total += float((pa - pb).abs().mean())
    return total / repeats


@torch.no_grad()
def multiscale_swd(
    real: torch.Tensor, fake: torch.Tensor, seed: int = 0, quick: bool = False
) -> dict[str, float]:
    """SWD x 1e3 per pyramid level (swd_<size>px, finest first) and their mean (swd), between two
    equally many images (N, C, H, W) in [0, 1]; Karras et al.'s protocol with fewer images. quick:
    a quarter of the descriptors and one repeat (16x less sorting, for the probes: compare it with
    a floor measured the same way, as SWDReference does)."""
    if real.shape[1:] != fake.shape[1:] or len(real) != len(fake):
        raise ValueError(
            f"need equally many images of one shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (lr, lf) in enumerate(
        zip(laplacian_pyramid(real.float().cpu()), laplacian_pyramid(fake.float().cpu()))
    ):
        c = lr.shape[1]
        # both sets' patches at the same positions (image i of each at the same places): a coupled
        # estimate, exactly 0 for two equal sets
        where = [torch.Generator().manual_seed(seed * 1000 + i) for _ in range(2)]
        per_image = PER_IMAGE // 4 if quick else PER_IMAGE
        pairs = ((lr, where[0]), (lf, where[1]))
        da, db = (_normalise(patch_descriptors(lv, w, per_image), c) for lv, w in pairs)
        out[f"swd_{lr.shape[-1]}px"] = 1e3 * sliced_wasserstein(da, db, g, 1 if quick else REPEATS)
    out["swd"] = sum(out.values()) / len(out)
    return out


def level_scales(images: torch.Tensor) -> list[float]:
    """The standard deviation of each pyramid level of (N, C, H, W) images: the units diversity() uses."""
    return [float(level.std().clamp(min=1e-8)) for level in laplacian_pyramid(images.float())]


@torch.no_grad()
def diversity(images: torch.Tensor, scales: list[float], n: int = DIVERSITY_IMAGES) -> float:
    """How unlike one another n images (N, C, H, W) in [0, 1] are: the mean over pyramid levels of
    the mean distance between two different images' levels, each level in units of `scales` (the
    real images' level_scales) and divided by the square root of its size. Identical images score
    0; independent images with the real levels' spread about sqrt(2). Fewer than two images: nan
    (a folder small enough to hold out one image)."""
    levels = laplacian_pyramid(images[:n].float().cpu())
    m = len(levels[0])
    if m < 2:
        return math.nan
    total = 0.0
    for level, scale in zip(levels, scales):
        flat = level.flatten(1) / scale
        distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5  # (m, m), 0 on the diagonal
        total += float(distances.sum()) / (m * (m - 1))
    return total / len(levels)


class SWDReference:
    """An image folder's held-out images as the SWD compares against, and its floor: as many training
    images against them (what a generator that reproduced the training set would score), in the
    full protocol and the probes' quick one; and the held-out images' own diversity."""

    def __init__(self, held_out: Dataset, train: Dataset, seed: int = 0):
        self.real = to_unit(held_out.images).cpu()  # (N, C, H, W) in [0, 1]
        self.seed = seed
        n = min(len(self.real), len(train.images))
        self.real = self.real[:n]
        self.copies = random_subset(train, n, seed).cpu()  # the floor's stand-in for the generator
        self.floors: dict[bool, dict[str, float]] = {}
        self.scales = level_scales(self.real)
        self.diversity = diversity(self.real, self.scales)

    def __len__(self) -> int:
        return len(self.real)

    def copies_diversity(self) -> float:
        """The diversity of the training images the floor is measured on."""
        return diversity(self.copies, self.scales)

    def floor(self, quick: bool = False) -> dict[str, float]:
        """multiscale_swd of the training images against the held-out ones (measured once per protocol)."""
        if quick not in self.floors:
            self.floors[quick] = multiscale_swd(self.real, self.copies, self.seed, quick)
        return self.floors[quick]

    def score(self, images: torch.Tensor, quick: bool = False) -> dict[str, float]:
        """multiscale_swd of len(self) images against the held-out ones, the floor's mean (swd_floor),
        and the images' diversity beside the held-out images' (diversity_real)."""
        images = images[: len(self.real)].cpu()
        return {
            **multiscale_swd(self.real, images, self.seed, quick),
            "swd_floor": self.floor(quick)["swd"],
            "diversity": diversity(images, self.scales),
            "diversity_real": self.diversity,
        }

    def score_generator(
        self, sampler: Sampler, n: int, seed: int, recall=True, world=None, quick: bool = False
    ) -> dict:
        """score() of as many images as the folder holds out, drawn with `seed` (n, recall and the
        ranks do not apply: the SWD runs whole on every rank)."""
        return self.score(sample_images(sampler, len(self), seed), quick)


class LabelledFolderReference(SWDReference):
    """A labelled folder with a shipped classifier trained on its classes (the emoji groups): the SWD
    and diversity of SWDReference, and in that classifier's features against the held-out images
    FID, IS, precision and recall, the FID floor (as many training images) and, in a full score,
    the mode coverage over the classes."""

    def __init__(self, held_out: Dataset, train: Dataset, seed: int, classifier: str, device="cpu"):
        from evaluation.fidelity import RealReference

        super().__init__(held_out, train, seed)
        self.labelled, self.train, self.labels = (
            RealReference(classifier, held_out, device),
            train,
            held_out.labels,
        )

    def classified(self, sampler, n: int, seed: int, recall=True, coverage: bool = False) -> dict:
        """n samples drawn with `seed` in the classifier's features against the held-out images: FID,
        IS, precision (and recall), the FID floor; coverage: also the classes the samples fall in
        against the held-out images' own. Sampled and embedded once, whole on every rank (as the SWD)."""
        from evaluation.fidelity import class_coverage
        from evaluation.quality import compare_features

        feats, logits = self.labelled.embed(sample_images(sampler, n, seed))
        scores = compare_features(self.labelled.features, feats, logits, recall)
        scores["fid_floor"] = self.labelled.floor_fid(self.train, n, seed)
        if coverage:
            found = class_coverage(logits, self.labels, logits.shape[1])
            shares = torch.tensor(found["class_shares"])
            scores.update(class_kl=found["class_kl"], rarest_share=found["rarest_share"],
                          classes_found=int((shares > 0).sum()), classes=len(shares))  # fmt: skip
        return scores

    def score_generator(
        self, sampler, n: int, seed: int, recall=True, world=None, quick: bool = False
    ) -> dict:
        """SWDReference's scores and classified() (the class coverage in a full score only)."""
        swd = super().score_generator(sampler, n, seed, quick=quick)
        return {**swd, **self.classified(sampler, n, seed, recall, coverage=not quick)}

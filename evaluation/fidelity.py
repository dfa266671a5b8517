"""Generated-vs-real scores: sample a generator, embed with the project's classifier, compare with test."""

from __future__ import annotations

import torch

from evaluation.features import classifier_outputs, load_classifier
from evaluation.quality import compare_features
from harness.data import Dataset, to_unit
from harness.world import World, gather_rows

SAMPLE_BATCH = 500  # generator batch when sampling for scores (BatchNorm runs on batch statistics)


@torch.no_grad()
def sample_images(
    generate, params, buffers, n: int, latent_dim: int, seed: int, batch: int = SAMPLE_BATCH, rows=None
):
    """n images in [0, 1], (n, C, H, W), from z ~ N(0, I) drawn with `seed` (only z[rows] if given).

    generate(params, buffers, z) -> (images in [-1, 1], buffers). BatchNorm runs on batch statistics,
    as pytorch/examples' DCGAN samples; the returned buffers are dropped, so nothing is mutated.
    """
    device = next(iter(params.values())).device
    z = torch.randn(n, latent_dim, generator=torch.Generator(device=device).manual_seed(seed), device=device)
    z = z if rows is None else z[rows]
    n = len(z)
    out = [generate(params, buffers, z[i : i + batch])[0].float() for i in range(0, n, batch)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def random_subset(data: Dataset, n: int, seed: int) -> torch.Tensor:
    """n images of a split in [0, 1], (n, 1, H, W), chosen without replacement with `seed`."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randperm(len(data.images), generator=g)[:n].to(data.images.device)
    return to_unit(data.images[idx])


class RealReference:
    """The test split as the project's classifier sees it: features and logits computed once."""

    def __init__(self, dataset: str, test: Dataset, device="cpu"):
        self.classifier = load_classifier(dataset, device)
        self.features, self.logits = classifier_outputs(self.classifier, to_unit(test.images))

    def embed(self, images: torch.Tensor):
        """(features (N, F), logits (N, 10)) of images (N, 1, H, W) in [0, 1]."""
        return classifier_outputs(self.classifier, images)

    def score(self, images: torch.Tensor, recall: bool = True) -> dict[str, float]:
        """FID against the test split, classifier IS, and (optionally) k=3 precision and recall."""
        feats, logits = self.embed(images)
        return compare_features(self.features, feats, logits, recall)

    def score_generator(self, generate, params, buffers, n, latent_dim, seed, recall=True, world=World()):
        """score() of n images sampled with `seed`. Data parallel: each rank samples and embeds its
        own 1/size of them, and the features and logits are gathered onto every rank."""
        chunks = -(-n // SAMPLE_BATCH)  # whole sampling batches per rank: BatchNorm sees the same ones
        first, last = (chunks * r // world.size * SAMPLE_BATCH for r in (world.rank, world.rank + 1))
        rows = slice(first, min(last, n))
        if rows.start < rows.stop:
            images = sample_images(generate, params, buffers, n, latent_dim, seed, rows=rows)
            feats, logits = self.embed(images)
        else:  # more ranks than sampling batches
            feats, logits = self.features[:0], self.logits[:0]
        if world.parallel:
            feats, logits = gather_rows(feats), gather_rows(logits)
        return compare_features(self.features, feats, logits, recall)

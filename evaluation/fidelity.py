"""Generated-vs-real scores: sample a generator, embed with the project's classifier, compare with test."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import evaluation.features
import models.classifier
from evaluation.features import classifier_outputs, load_classifier
from evaluation.quality import compare_features
from evaluation.sampling import SAMPLE_BATCH, Sampler, sample_images
from harness.data import Dataset, to_unit
from harness.stepcache import cache_dir, machine_salt
from harness.world import World, gather_rows
from models.classifier import weights_path


def random_subset(data: Dataset, n: int, seed: int) -> torch.Tensor:
    """n images of a split in [0, 1], (n, 1, H, W), chosen without replacement with `seed`."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randperm(len(data.images), generator=g)[:n].to(data.images.device)
    return to_unit(data.images[idx])


def features_dir() -> Path | None:
    """Where real images' classifier outputs are kept between processes: $PURESTEP_FEATURES, else
    $PURESTEP_CACHE/features (default ~/.cache/purestep/features); None where PURESTEP_CACHE=off."""
    where = os.environ.get("PURESTEP_FEATURES")
    return Path(where) if where else cache_dir("features")


class RealReference:
    """The test split as the project's classifier sees it: features and logits computed at first use
    (a run that scores nothing never pays for them), once per process for the same classifier file
    and images (make compare-gan-losses builds one a run), and kept on disk (features_dir) for the
    next process: named by the classifier's weights and code, the images, the device and torch."""

    _outputs: dict = {}  # (dataset, device, weights' mtime and size, images' digest) -> (features, logits)

    def __init__(self, dataset: str, test: Dataset, device="cpu"):
        self.classifier = load_classifier(dataset, device)
        stat = weights_path(dataset).stat()
        digest = hashlib.sha1(test.images.cpu().contiguous().numpy().tobytes()).hexdigest()
        self._key, self._images = (dataset, str(device), stat.st_mtime_ns, stat.st_size, digest), test.images
        self._dataset, self._digest, self._device = dataset, digest, device

    def _file(self) -> Path | None:
        """The outputs' file in features_dir(), or None where there is none."""
        folder = features_dir()
        if folder is None:
            return None
        h = hashlib.sha1(weights_path(self._dataset).read_bytes())
        for source in (models.classifier.__file__, evaluation.features.__file__):
            h.update(Path(source).read_bytes())
        h.update(repr([self._digest, *machine_salt(self._device)]).encode())
        return folder / f"{self._dataset}-{h.hexdigest()[:20]}.safetensors"

    def _real(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._key not in self._outputs:
            self._outputs[self._key] = self._load_or_compute()
        return self._outputs[self._key]

    def _load_or_compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        path = self._file()
        if path is not None and path.exists():
            try:
                saved = load_file(str(path))
                return saved["features"], saved["logits"]
            except Exception:  # a damaged or foreign file: computed again and rewritten below
                pass
        feats, logits = classifier_outputs(self.classifier, to_unit(self._images))
        if path is not None:
            part = path.with_name(f"{path.name}.{os.getpid()}.part")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"features": feats.contiguous(), "logits": logits.contiguous()}, str(part))
                os.replace(part, path)  # whole or absent, with several processes writing it at once
            except Exception:  # a read-only or full cache is only slower
                part.unlink(missing_ok=True)
        return feats, logits

    @property
    def features(self) -> torch.Tensor:
        return self._real()[0]

    @property
    def logits(self) -> torch.Tensor:
        return self._real()[1]

    def embed(self, images: torch.Tensor):
        """(features (N, F), logits (N, 10)) of images (N, 1, H, W) in [0, 1]."""
        return classifier_outputs(self.classifier, images)

    def score(self, images: torch.Tensor, recall: bool = True) -> dict[str, float]:
        """FID against the test split, classifier IS, and (optionally) k=3 precision and recall."""
        feats, logits = self.embed(images)
        return compare_features(self.features, feats, logits, recall)

    def floor_fid(self, train: Dataset, n: int, seed: int) -> float:
        """FID of n training images against the test split: what a perfect generator would score with
        n samples (the bias of FID grows as n shrinks); computed once per (n, seed)."""
        floors = self.__dict__.setdefault("_floors", {})
        if (n, seed) not in floors:
            floors[n, seed] = self.score(random_subset(train, n, seed), recall=False)["fid"]
        return floors[n, seed]

    def score_generator(self, sampler: Sampler, n: int, seed: int, recall=True, world=World()):
        """score() of n images the sampler draws with `seed` (a conditional sampler's also with the
        label agreement, `agreement`). Data parallel: each rank samples and embeds its
        own 1/size of them, and the features and logits are gathered onto every rank."""
        chunks = -(-n // SAMPLE_BATCH)  # whole sampling batches per rank: BatchNorm sees the same ones
        first, last = (chunks * r // world.size * SAMPLE_BATCH for r in (world.rank, world.rank + 1))
        rows = slice(first, min(last, n))
        if rows.start < rows.stop:
            images = sample_images(sampler, n, seed, rows=rows)
            feats, logits = self.embed(images)
        else:  # more ranks than sampling batches
            feats, logits = self.features[:0], self.logits[:0]
        if world.parallel:
            feats, logits = gather_rows(feats), gather_rows(logits)
        scores = compare_features(self.features, feats, logits, recall)
        if sampler.classes:  # a conditional generator: how often it drew the class it was asked for
            scores["agreement"] = label_agreement(logits, sampler.labels(n))
        return scores


def class_coverage(logits: torch.Tensor, real_labels: torch.Tensor, classes: int = 10) -> dict:
    """Mode coverage of generated images from the classifier's logits (N, classes): the share of
    each predicted class, KL(generated || real) of those shares against the real labels' class
    frequencies (0 when they match; log(classes / k) when k equally used classes remain), and the
    rarest class with its share (0: a missing mode)."""
    gen = torch.bincount(logits.argmax(1).cpu(), minlength=classes).double() / len(logits)
    real = torch.bincount(real_labels.cpu().long(), minlength=classes).double() / len(real_labels)
    kl = torch.where(gen > 0, gen * (gen / real).log(), 0.0).sum()
    rarest = int(gen.argmin())
    return {
        "class_shares": gen.tolist(), "real_shares": real.tolist(), "class_kl": float(kl),
        "rarest_class": rarest, "rarest_share": float(gen[rarest]),
    }  # fmt: skip


def label_agreement(logits: torch.Tensor, requested: torch.Tensor) -> float:
    """How often the classifier's prediction equals the label a conditional generator was asked for."""
    return float((logits.argmax(1).cpu() == requested.cpu()).double().mean())

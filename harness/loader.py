"""Batches from device-resident data: training batches with a resumable cursor; test batches, their means."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from harness.data import Dataset, binarize, epoch_permutation, to_unit
from harness.world import sum_over_ranks

TEST_SEED = 12345  # fixes the test set's binarisation and noise draws, the same for every run


def _make_batch(images, labels, gen, noise: dict, dynamic_binarize: bool) -> dict:
    """Scale (and binarise) a gathered uint8 batch and draw the step's noise, all on device."""
    x = to_unit(images)  # (B, C, H, W) float32 in [0, 1]
    if dynamic_binarize:
        x = binarize(x, gen)
    batch = {"x": x, "y": labels}
    for name, shape in noise.items():
        batch[name] = torch.randn((len(images), *shape), generator=gen, device=images.device)
    return batch


class Loader:
    """Training batches: a seeded permutation per epoch, index gathers, last partial batch dropped.

    All randomness of a batch (binarisation, named noise such as a VAE's `eps`) comes from one
    generator whose state, with the (epoch, batch) cursor, is part of every checkpoint, so a resumed
    run sees exactly the batches an uninterrupted one would.

    Data parallel (world.size > 1): batch_size is the global batch. Every rank draws the same global
    batch, noise included, and keeps its own contiguous slice of batch_size / world.size rows (of
    each of `chunks` equal parts of it: a GAN step's n_disc batches), so the ranks' shards are
    disjoint, together they are the single-process batch, and the cursor and generator state (hence
    a checkpoint) are the same on every rank and for any rank count.
    """

    def __init__(
        self,
        data: Dataset,
        batch_size: int,
        seed: int,
        noise=None,
        dynamic_binarize=False,
        world=None,
        chunks=1,
    ):
        if batch_size > len(data.images):
            raise ValueError(f"batch size {batch_size} exceeds the {len(data.images)} training images")
        rank, size = (world.rank, world.size) if world is not None else (0, 1)
        if batch_size % (size * chunks):
            raise ValueError(f"batch size {batch_size} is not divisible by the {size} ranks x {chunks} parts")
        part = batch_size // chunks
        self.chunks = chunks
        self.shard = slice(rank * part // size, (rank + 1) * part // size) if size > 1 else None
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.noise, self.dynamic_binarize = dict(noise or {}), dynamic_binarize
        self.device = data.images.device
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.steps_per_epoch = len(data.images) // batch_size
        self.epoch, self.batch = 0, 0  # cursor: the next batch to yield

    def __iter__(self) -> Iterator[dict]:
        """The rest of the current epoch. The cursor already points past a batch when it is yielded,
        so a checkpoint taken after the step on that batch resumes with the next one."""
        epoch, start = self.epoch, self.batch
        if not 0 <= start < self.steps_per_epoch:  # never an empty pass a loop would spin on
            raise ValueError(f"loader cursor batch {start} is outside the epoch's {self.steps_per_epoch}")
        perm = epoch_permutation(len(self.data.images), self.seed, epoch, self.device)
        for i in range(start, self.steps_per_epoch):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            # index_select, not images[idx]: the same rows, gathered 5-9x faster on CPU
            images, labels = self.data.images.index_select(0, idx), self.data.labels.index_select(0, idx)
            batch = _make_batch(images, labels, self.gen, self.noise, self.dynamic_binarize)
            if self.shard is not None:  # this rank's rows of (each part of) the global batch
                batch = {
                    k: v.unflatten(0, (self.chunks, -1))[:, self.shard].flatten(0, 1)
                    for k, v in batch.items()
                }
            last = i + 1 == self.steps_per_epoch
            self.epoch, self.batch = (epoch + 1, 0) if last else (epoch, i + 1)
            yield batch

    @property
    def steps_taken(self) -> int:
        """Batches yielded so far over all epochs: the step count of a run that used this loader."""
        return self.epoch * self.steps_per_epoch + self.batch

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The cursor and generator state as tensors, for the checkpoint."""
        return {
            "epoch": torch.tensor(self.epoch),
            "batch": torch.tensor(self.batch),
            "rng": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor], step: int | None = None) -> None:
        """Restore the cursor and generator; one that cannot belong to this data (a batch past the
        epoch's end, a generator state of another size) or, given `step`, does not point at that
        many steps of this data (resumed on a smaller data set, a forged cursor) is a ValueError."""
        if {"epoch", "batch", "rng"} - set(state):
            raise ValueError("it holds no loader cursor (epoch, batch, rng)")
        try:
            epoch, batch = int(state["epoch"]), int(state["batch"])
        except (RuntimeError, ValueError, TypeError):
            raise ValueError("its loader cursor is not two integers") from None
        if epoch < 0 or not 0 <= batch < self.steps_per_epoch:
            raise ValueError(f"its loader cursor (epoch {epoch}, batch {batch}) is outside this data's "
                             f"{self.steps_per_epoch} batches per epoch")  # fmt: skip
        if step is not None and epoch * self.steps_per_epoch + batch != step:
            raise ValueError(
                f"its loader cursor (epoch {epoch}, batch {batch} of {self.steps_per_epoch}) is not step "
                f"{step} of this data: resumed on other data (or --batch-size), or a forged checkpoint"
            )
        rng, own = state["rng"], self.gen.get_state()
        if rng.dtype != torch.uint8 or rng.shape != own.shape:
            found = f"{rng.dtype} {tuple(rng.shape)}"
            raise ValueError(f"its generator state is {found}, not {tuple(own.shape)} bytes")
        try:
            self.gen.set_state(rng.cpu())  # a CPU byte tensor, for a CUDA generator too
        except RuntimeError as e:
            raise ValueError(f"its generator state is invalid ({str(e).splitlines()[0]})") from None
        self.epoch, self.batch = epoch, batch


def fixed_images(data: Dataset, seed: int, dynamic_binarize=False) -> torch.Tensor:
    """The whole split as (N, C, H, W) floats in [0, 1], binarised once with `seed` when asked:
    the evaluation set, identical for every model evaluated on it."""
    x = to_unit(data.images)
    if dynamic_binarize:
        x = binarize(x, torch.Generator(device=x.device).manual_seed(seed))
    return x


def eval_batches(data: Dataset, batch_size: int, seed: int, noise=None, dynamic_binarize=False):
    """Test batches in order (the last one may be short) over fixed_images(data, seed); noise from
    its own generator seeded with seed + 1, so every evaluation sees the same images and draws."""
    images = fixed_images(data, seed, dynamic_binarize)
    gen = torch.Generator(device=images.device).manual_seed(seed + 1)
    for start in range(0, len(images), batch_size):
        batch = {"x": images[start : start + batch_size], "y": data.labels[start : start + batch_size]}
        for name, shape in (noise or {}).items():
            batch[name] = torch.randn((len(batch["x"]), *shape), generator=gen, device=images.device)
        yield batch


def evaluate_mean(eval_step, state, batches, world=None) -> dict[str, float]:
    """Per-example means of eval_step's metrics over batches (weighted by batch size); one host sync.

    Data parallel (world.size > 1): rank r evaluates batches r, r + size, ... and the totals are
    summed over the ranks, so every rank returns the means over all batches."""
    rank, size = (world.rank, world.size) if world is not None else (0, 1)
    totals, n, first = None, 0, None
    for i, batch in enumerate(batches):
        first = batch if first is None else first
        if i % size != rank:
            continue
        metrics = eval_step(state, batch)
        values = torch.stack([v.float() for v in metrics.values()]) * len(batch["x"])
        totals, n = (values if totals is None else totals + values), n + len(batch["x"])
    if totals is None:  # more ranks than batches: this one adds nothing, but in the same shape
        metrics = eval_step(state, first)
        totals = torch.zeros(len(metrics), device=state.step.device)
    if size > 1:
        summed = sum_over_ranks(torch.cat([totals, totals.new_tensor([n])]))
        totals, n = summed[:-1], summed[-1]
    return dict(zip(metrics, (totals / n).tolist()))

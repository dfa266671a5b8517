"""Likelihood of a VAE: the IWAE bound (Burda et al. 2015) on log p(x), exact or streamed over k."""

from __future__ import annotations

import fcntl
import math
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.checkpoint import atomic_write
from harness.progress import bar, on_terminal, say
from losses import log_importance_weights


def streamed_iwae_bound(log_weight_chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """log (1/k) sum_i w_i per row, from (N, k_j) chunks of log importance weights whose k_j add up
    to k: one logsumexp per chunk, combined with logaddexp, so memory stays one chunk's whatever k."""
    lse, k = None, 0
    for chunk in log_weight_chunks:
        part = torch.logsumexp(chunk, dim=1)
        lse, k = (part if lse is None else torch.logaddexp(lse, part)), k + chunk.shape[1]
    return lse - math.log(k)


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/k) sum_i w_i per row of (N, k) log importance weights: the IWAE lower bound on log p(x)."""
    return streamed_iwae_bound([log_weights])


COMPILE_ABOVE = 2_000_000  # image-samples: past this the decoder pass is compiled (it pays for its compile)


def _block_seed(seed: int, block: int) -> int:
    """Each block of images draws its own noise, so any block can be scored alone, in any order."""
    return seed * 1_000_003 + block


@torch.no_grad()
def iwae_bounds(
    model, x, z_dim: int, k: int, seed: int, images_per_pass=100, k_per_pass=100, blocks_dir=None
) -> torch.Tensor:
    """(N,) IWAE bounds on log p(x) with k samples, per image, streamed over k in chunks (memory ~
    images_per_pass * k_per_pass * 784 floats, whatever k is); a progress bar with an ETA on a
    terminal, a line per 10% in a log.

    blocks_dir: each block of images_per_pass images is saved there once scored, so a killed run
    resumes where it stopped, and processes started on the same directory share the work (each
    block is claimed with an flock, which the kernel drops if its holder dies)."""
    long = k * len(x) >= COMPILE_ABOVE
    log_w = torch.compile(log_importance_weights, dynamic=False) if long else log_importance_weights

    def score(b):  # (images,) bounds of block b
        xb = x[b * images_per_pass : (b + 1) * images_per_pass]
        gen = torch.Generator(device=x.device).manual_seed(_block_seed(seed, b))

        def chunks():  # (images, kc) log weights, kc <= k_per_pass, drawn in order
            for j in range(0, k, k_per_pass):
                eps = torch.randn(min(k_per_pass, k - j), len(xb), z_dim, generator=gen, device=x.device)
                yield log_w(model, xb, eps)

        return streamed_iwae_bound(chunks())

    n_blocks = -(-len(x) // images_per_pass)
    store = _Blocks(blocks_dir) if blocks_dir is not None else None
    bounds: dict[int, torch.Tensor] = {}
    with bar(total=len(x), desc=f"NLL (IWAE k={k})", unit="img", leave=False) as shown:
        while len(bounds) < n_blocks:
            claimed_elsewhere = 0
            for b in range(n_blocks):
                if b in bounds:
                    continue
                got = score(b) if store is None else store.get(b, score)
                if got is None:  # another process is scoring it
                    claimed_elsewhere += 1
                    continue
                bounds[b] = got
                shown.update(len(bounds[b]))
                if long and not on_terminal() and len(bounds) % max(1, n_blocks // 10) == 0:
                    say(f"NLL (IWAE k={k}): {len(bounds)} of {n_blocks} blocks of {images_per_pass} images")
            if claimed_elsewhere:
                time.sleep(2.0)  # wait for the other process's blocks (or for its claim to drop)
    return torch.cat([bounds[b] for b in range(n_blocks)]).to(x.device)


class _Blocks:
    """Scored blocks as files (block-00042.safetensors), each claimed by an flock while it is scored."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, b: int, score):
        """Block b's bounds: read if saved, else scored here and saved; None if another holds it."""
        path = self.dir / f"block-{b:05d}.safetensors"
        if path.exists():
            return load_file(str(path))["bounds"]
        with open(self.dir / f".block-{b:05d}.lock", "a") as claim:
            try:
                fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            except OSError:  # a file system without flock: scored here, unshared
                pass
            if path.exists():  # saved between the check above and the claim
                return load_file(str(path))["bounds"]
            t0 = time.perf_counter()
            bounds = score(b).float().cpu().contiguous()
            meta = {"seconds": f"{time.perf_counter() - t0:.3f}"}
            atomic_write(path, lambda tmp: save_file({"bounds": bounds}, str(tmp), metadata=meta))
            return bounds


def scored_seconds(blocks_dir) -> float:
    """Compute time summed over the blocks saved in blocks_dir, whichever process scored them."""
    total = 0.0
    for path in Path(blocks_dir).glob("block-*.safetensors"):
        with safe_open(str(path), "pt") as f:
            total += float((f.metadata() or {}).get("seconds", 0.0))
    return total


def iwae_nll(model, x, z_dim: int, k: int, seed: int, images_per_pass=100, k_per_pass=100) -> float:
    """Mean -log p(x) over x estimated by the IWAE bound with k samples (iwae_bounds' mean)."""
    return -float(iwae_bounds(model, x, z_dim, k, seed, images_per_pass, k_per_pass).mean())


def standard_error(values: torch.Tensor) -> float:
    """The standard error of values' mean (0 for a single value): how far the mean over a subset of
    test images may sit from the mean over all of them."""
    return float(values.double().std() / math.sqrt(len(values))) if len(values) > 1 else 0.0


def nll_subset(x: torch.Tensor, n: int) -> torch.Tensor:
    """n images of x for the (costly) NLL: a seeded random subset, not the first n (MNIST's test set
    is ordered by writer group); all of x when n is 0 or larger than x."""
    if not n or n >= len(x):
        return x
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n]
    return x[keep.to(x.device)]

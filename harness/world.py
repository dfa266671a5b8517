"""Data parallelism outside the step: this process's rank under torchrun, the process group, and the
eager collectives of the loop (state broadcast, evaluation sums, stop flags, row gathers)."""

from __future__ import annotations

import atexit
import os
from typing import NamedTuple

import torch
import torch.distributed as dist

from engine.checkpoint import CheckpointError
from engine.state import flatten_state
from harness.config import UsageError


class World(NamedTuple):
    """This process's place among the data-parallel ranks (rank 0 of size 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """Join torchrun's process group (its WORLD_SIZE/RANK/LOCAL_RANK and rendezvous variables):
    NCCL on CUDA, gloo on CPU; World() when not launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        gpus, per_node = torch.cuda.device_count(), os.environ.get("LOCAL_WORLD_SIZE", "?")
        if world.local_rank >= gpus:  # two ranks on one GPU would deadlock NCCL or run out of memory
            raise UsageError(
                f"torchrun started {per_node} processes on this machine but it has {gpus} GPU(s): "
                f"launch one per GPU (make train-*-ddp NPROC={gpus}), or --device cpu"
            )
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return world


def leave_together() -> None:
    """On a run's normal end under torchrun, wait for every rank before the process group goes: a
    rank that has nothing left to write would otherwise tear down its gloo pairs while rank 0 still
    writes, and that can abort it at exit (SIGABRT, "terminate called without an active exception").
    Not on an error path: a rank that failed mid-step would wait here for peers stuck in the step."""
    if dist.is_initialized():
        dist.barrier()


def broadcast_state(state, src: int = 0):
    """Overwrite every tensor of `state` with rank src's (in place), so all ranks start identical."""
    for tensor in flatten_state(state).values():
        dist.broadcast(tensor, src)
    return state


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over the ranks (eager; evaluation totals)."""
    out = values.clone()
    dist.all_reduce(out)
    return out


def any_rank(flag: bool, device) -> bool:
    """True on every rank when it is True on any (a signal seen by one rank stops them all together)."""
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())  # sync point


def check_same_on_all_ranks(value: int, what: str, device) -> None:
    """Raise CheckpointError unless every rank holds the same value (e.g. the step a resume starts at:
    ranks that disagree would pair up the wrong collectives and hang)."""
    t = torch.tensor([value, -value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, low = int(t[0]), -int(t[1])  # sync point
    if high != low:
        raise CheckpointError(
            f"the ranks disagree on {what} ({low} to {high}): under torchrun on several machines "
            "the run directory must be on a filesystem they all share"
        )


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of t (dim 0; counts may differ) concatenated in rank order, on every rank,
    on t's device. NCCL moves only CUDA tensors: CPU rows travel through this rank's GPU."""
    home = t.device
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        t = t.to(torch.device("cuda", torch.cuda.current_device()))
    return _gather_rows(t).to(home)


def _gather_rows(t: torch.Tensor) -> torch.Tensor:
    size = dist.get_world_size()
    counts = [torch.zeros(1, dtype=torch.int64, device=t.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([len(t)], device=t.device))
    counts = [int(c) for c in counts]  # sync point
    padded = t.new_zeros((max(counts), *t.shape[1:]))
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)])

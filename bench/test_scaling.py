"""Data-parallel scaling on CPU: the mlp VAE step at global batch 128 and 1024 in 1 and 2 gloo processes.

Each process runs one torch thread (as torchrun sets OMP_NUM_THREADS=1), so 2 processes use the
2 cores that one process with 1 thread leaves idle; scaling efficiency = 2-process samples/s over
twice the 1-process samples/s. The workers stay up between rounds: a round is "run n steps" sent
down a pipe to every rank and their replies, timed by pytest-benchmark in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import socket

import pytest
import torch

from bench.report import SCALING
from bench.timing import ROUNDS, calibrate

LATENT = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, conn, compile: bool, batch_size: int) -> None:
    """One rank: build the step, answer each n received with n steps done, stop on None."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    import torch.distributed as dist

    import engine
    import harness
    from engine import mean_over_ranks
    from harness.world import World
    from losses import make_elbo_loss
    from models import build_vae

    dist.init_process_group("gloo", rank=rank, world_size=size)
    torch.manual_seed(0)
    model = build_vae("mlp", LATENT)
    opt = engine.adam(1e-3)
    reduce = mean_over_ranks if size > 1 else None
    step = engine.make_train_step(
        make_elbo_loss(model), opt, engine.StepOptions(compile=compile, donate=True, all_reduce=reduce)
    )
    state = engine.init_state(model, opt)
    data = harness.load_mnist(os.environ.get("DATA_DIR"), "train")
    loader = harness.Loader(data, batch_size, 0, {"eps": (LATENT,)}, world=World(rank, size))
    batches = iter(())
    n = 1  # the first step compiles: done before "ready"
    while n is not None:
        for _ in range(n):
            batch = next(batches, None)
            if batch is None:
                batches = iter(loader)
                batch = next(batches)
            state, _ = step(state, batch)
        conn.send(n)
        n = conn.recv()
    dist.destroy_process_group()


def _reply(pipe, worker, timeout_s: float = 300) -> None:
    """The worker's answer; a worker that died or hangs fails the case instead of blocking it."""
    if not pipe.poll(timeout_s):
        raise RuntimeError(
            f"bench worker {worker.pid} gave no answer in {timeout_s} s (exit {worker.exitcode})"
        )
    pipe.recv()


@pytest.mark.parametrize("batch", [128, 1024])
@pytest.mark.parametrize("compile", ["eager", "compiled"])
@pytest.mark.parametrize("processes", [1, 2])
def test_data_parallel_scaling(benchmark, processes, compile, batch):
    ctx = multiprocessing.get_context("spawn")
    port, pipes, workers = _free_port(), [], []
    try:
        for rank in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(rank, processes, port, child, compile == "compiled", batch))
            p.start()
            child.close()  # the worker's end lives in the worker: its death reads as EOF here
            pipes.append(parent)
            workers.append(p)
        for pipe, p in zip(pipes, workers):
            _reply(pipe, p)  # ready: compiled and one step done

        def advance(n: int) -> None:
            for pipe in pipes:
                pipe.send(n)
            for pipe, p in zip(pipes, workers):
                _reply(pipe, p)

        steps = calibrate(advance, "cpu")
        benchmark.pedantic(lambda: advance(steps), rounds=ROUNDS, warmup_rounds=1, iterations=1)
    finally:
        for pipe in pipes:
            try:
                pipe.send(None)
            except OSError:  # that worker is gone already
                pass
        for p in workers:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    step_s = benchmark.stats.stats.median / steps
    row = {"case": "mlp_vae", "compile": compile, "processes": processes, "threads_per_process": 1}
    row.update(batch=batch, ms_per_step=step_s * 1e3, samples_per_s=batch / step_s, steps_per_round=steps)
    benchmark.extra_info.update(row)
    SCALING.append(row)

"""The GAN step of `make train-gan`, before and after its speed-ups, alternated in one run.

"before" is the step experiments.gan took by default until issue 29: the R1 penalty on every step,
the convolutions in the default (NCHW) layout, and the generator run forward twice per step on the
same z (without gradient for D's update, then again for G's; emulated here by a generator that
runs once more without gradient). "after" is today's default: R1 every 16th step, weighted 16 times
(lazy regularisation), channels-last weights, one generator forward per step, in fp32; "after-bf16" is the
same step under bf16 autocast (fp32 master weights and optimizer state), which `--precision auto`
picks where the CPU computes bf16 natively (AVX-512 BF16 or AMX; elsewhere the case is skipped:
emulated bf16 is about 20x slower). Each fp32 speed-up is also timed alone. The recipe is otherwise
experiments.gan's: DCGAN width 64, z 100, batch 64, non-saturating loss, R1 weight 0.1 on 16 real
images, Adam(5e-4, 0.5, 0.99), an EMA of 0.999; compiled, donated. Rounds are whole multiples of the
lazy interval, so each holds its share of penalised steps.
"""

from __future__ import annotations

import statistics

import pytest
import torch

import engine
import harness
from bench.conftest import RESULTS
from bench.report import machine
from bench.timing import QUICK, sync
from harness.device import native_bf16
from losses import make_gan_loss
from models import build_gan

BATCH, LATENT, WIDTH = 64, 100, 64
INTERVAL = 16  # the lazy R1 interval
STEPS = INTERVAL if QUICK else 2 * INTERVAL  # per timed round
ROUNDS = 2 if QUICK else 5
RECIPES = {  # name: (R1 every N steps, channels-last, precision, generator forwards per step)
    "before": (1, False, "fp32", 2),
    "after": (INTERVAL, True, "fp32", 1),
    "after-bf16": (INTERVAL, True, "bf16", 1),
    "lazy-r1": (INTERVAL, False, "fp32", 2),
    "channels-last": (1, True, "fp32", 2),
    "one-forward": (1, False, "fp32", 1),
}
# before, after and after-bf16 alternate twice; the single speed-ups once
ORDER = ["before", "after", "after-bf16", "lazy-r1", "channels-last", "one-forward", "before", "after",
         "after-bf16"]  # fmt: skip
NATIVE_BF16 = native_bf16(torch.device("cpu"))
TIMES: dict[str, list[float]] = {}


def _workload(recipe: str, data):
    every, channels_last, precision, forwards = RECIPES[recipe]
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    gen, disc = (m.to(memory_format=layout) for m in build_gan("dcgan", (1, 28, 28), LATENT, WIDTH, False))
    g_opt, d_opt = (engine.adam(5e-4, b1=0.5, b2=0.99) for _ in range(2))
    gan = make_gan_loss(gen, disc, "nonsaturating", r1_gamma=0.1, r1_batch=16)
    if forwards == 2:  # issue 15's step: one more forward, without gradient, for D's fakes
        gan = gan._replace(generate=_twice(gan.generate))
    options = engine.StepOptions(precision=precision, compile=True, donate=True)
    step = engine.make_gan_step(*gan, g_opt, d_opt, options, ema_decay=0.999, reg_every=every)
    box = {"state": engine.init_gan_state(gen, disc, g_opt, d_opt, precision)}
    loader = harness.Loader(data, BATCH, seed=0, noise={"z": (LATENT,)})
    batches = iter(loader)

    def advance(n: int) -> None:
        state = box["state"]
        for _ in range(n):
            state, _ = step(state, next(batches))
        box["state"] = state

    return advance


def _twice(generate):
    def both(params, buffers, z, y=None):
        with torch.no_grad():
            _, buffers = generate(params, buffers, z, y)
        return generate(params, buffers, z, y)

    return both


@pytest.mark.parametrize("run", [f"{name}-{ORDER[: i + 1].count(name)}" for i, name in enumerate(ORDER)])
def test_gan_step(benchmark, mnist, run):
    recipe = run.rsplit("-", 1)[0]
    if RECIPES[recipe][2] == "bf16" and not NATIVE_BF16:
        pytest.skip("no bf16 in this CPU's hardware (avx512_bf16 or amx_bf16): emulated bf16 is ~20x slower")
    advance = _workload(recipe, mnist("cpu"))
    advance(2 * INTERVAL)  # compiles both kinds of step, then settles
    benchmark.pedantic(lambda: advance(STEPS), setup=lambda: sync("cpu"), rounds=ROUNDS, warmup_rounds=0,
                       iterations=1)  # fmt: skip
    ms = benchmark.stats.stats.median / STEPS * 1e3
    benchmark.extra_info.update(recipe=recipe, ms_per_step=ms, samples_per_s=BATCH / ms * 1e3)
    TIMES.setdefault(recipe, []).append(ms)
    _write_table()  # after every case, so the table holds whatever ran (the last write is the whole run)


def _write_table() -> None:
    before = statistics.median(TIMES["before"])
    lines = [
        "# The GAN step of `make train-gan`: before and after (bench/test_gan_step.py)",
        "",
        f"Machine: {machine()}. Batch {BATCH}, compiled; {ROUNDS} rounds of {STEPS} steps per run,",
        "the median round; each recipe's runs alternate with the others' in one session.",
        "",
        "| recipe | R1 every | channels-last | precision | G forwards | ms per step (each run) | median "
        "| speed-up |",
        "|---|---:|---|---|---:|---|---:|---:|",
    ]
    for recipe, (every, cl, precision, forwards) in RECIPES.items():
        runs = TIMES.get(recipe, [])
        if runs:
            mid = statistics.median(runs)
            each = ", ".join(f"{t:.1f}" for t in runs)
            lines.append(
                f"| {recipe} | {every} | {'yes' if cl else 'no'} | {precision} | {forwards} | {each} "
                f"| {mid:.1f} | {before / mid:.2f}x |"
            )
    if not QUICK:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "gan_step.md").write_text("\n".join(lines) + "\n")

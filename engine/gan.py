"""Two-player state and step: n_disc discriminator updates and one generator update, one pure function."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch

from engine.amp import autocast, scaler_init
from engine.optim import Optimizer
from engine.state import Tensors, TrainState, init_state, write_state
from engine.step import StepOptions, compile_step, make_pure_train_step, make_pure_update, scaled_objective


class GANState(NamedTuple):
    """The generator's and the discriminator's TrainStates, and an EMA of the generator's params
    (used for samples and evaluation). A NamedTuple of NamedTuples: a pytree, and the checkpoint."""

    gen: TrainState
    disc: TrainState
    ema: Tensors

    @property
    def step(self) -> torch.Tensor:
        """Steps taken (one generator update each)."""
        return self.gen.step


def init_gan_state(gen, disc, gen_opt: Optimizer, disc_opt: Optimizer, precision="fp32") -> GANState:
    """Fresh state: both players' params, buffers and optimizer states (and fp16 loss scales)."""
    device = next(gen.parameters()).device
    scalers = [scaler_init(device) if precision == "fp16" else None for _ in range(2)]
    g, d = init_state(gen, gen_opt, scalers[0]), init_state(disc, disc_opt, scalers[1])
    return GANState(g, d, {k: v.clone() for k, v in g.params.items()})


def _prefixed(prefix: str, metrics: dict) -> dict:
    """One player's step metrics under its own names (its loss is already called d_loss / g_loss)."""
    return {(k if k.startswith(prefix) else prefix + k): v for k, v in metrics.items() if k != "loss"}


def make_gan_step(
    generate: Callable,  # (gen_params, gen_buffers, z, y or None) -> (images, gen_buffers)
    disc_loss: Callable,  # (disc_params, disc_buffers, {"x", "fake", ...}) -> (loss, Aux)
    gen_loss: Callable,  # (fake, {"z", "x", ..., "disc_params", "disc_buffers"}) -> (loss, Aux)
    gen_opt: Optimizer,
    disc_opt: Optimizer,
    options: StepOptions = StepOptions(),
    *,
    n_disc: int = 1,
    ema_decay: float = 0.999,
    reg_every: int = 1,
) -> Callable[[GANState, dict], tuple[GANState, dict]]:
    """Build `step(state, batch) -> (state, metrics)` for a GAN.

    batch["x"] holds n_disc * B real images in [0, 1] and batch["z"] n_disc * B latent draws
    (batch["y"], labels, and batch["u"] for WGAN-GP too). Discriminator update i sees real chunk i
    against generate(z chunk i, y chunk i): fakes are asked for the real chunk's labels, so a
    conditional GAN sees them at the data's class frequencies. The generator update reuses the last
    chunk (z, y and x) and its fakes, as pytorch/examples' DCGAN does: the generator runs forward
    once per chunk, and for the last one under torch.func.vjp, so its update pulls gen_loss's
    gradient at the fakes (judged by the just-updated discriminator) back through that same forward
    instead of running it again. Each player's update is the single-model update of engine.step
    (fp16 loss scaling, the non-finite skip, optimizer), so both share the options (precision,
    donation, all_reduce once per player update); the whole thing is one compiled region, compiled
    and cached as the options say.

    Lazy regularisation (Karras et al. 2020), reg_every > 1: the discriminator's updates see
    batch["regularize"], a Python int: in the last update of every reg_every-th step (counted from
    0) the interval in discriminator updates, reg_every * n_disc; 0 everywhere else. disc_loss
    multiplies its penalty by it (0: not computed); with reg_every=1 the key is absent and the
    penalty is always on. The two kinds of step are two
    compiled functions (the key is a constant of each, not an input); which one runs follows
    state.step, read from the state once and then counted on the host, so a resumed run takes the
    same steps as an unbroken one.
    """
    if n_disc < 1 or reg_every < 1:
        raise ValueError(f"n_disc and reg_every must be at least 1, got {n_disc} and {reg_every}")
    precision, donate = options.precision, options.donate
    d_update = make_pure_train_step(disc_loss, disc_opt, options)
    g_update = make_pure_update(gen_opt, options)

    def step(state: GANState, batch: dict, regularize: bool) -> tuple[GANState, dict]:
        gen, disc = state.gen, state.disc
        device_type = gen.step.device.type
        taken = state.gen.step.clone()  # steps before this one (a donated update overwrites gen.step)
        chunks = {k: v.chunk(n_disc) for k, v in batch.items()}
        for i in range(n_disc):
            part = {k: v[i] for k, v in chunks.items()}
            make = partial(_images, generate, buffers=gen.buffers, z=part["z"], y=part.get("y"))
            if i < n_disc - 1:
                with torch.no_grad(), autocast(precision, device_type):
                    fake, gen_buffers = make(gen.params)
                # BatchNorm statistics come back out (donated: into the state's own buffers)
                gen = gen._replace(buffers=write_state(gen.buffers, gen_buffers, donate))
            else:  # the generator's update reuses this forward: keep its pullback
                with autocast(precision, device_type):
                    fake, pullback, gen_buffers = torch.func.vjp(make, gen.params, has_aux=True)
            d_batch = {k: v for k, v in part.items() if k != "z"}
            if reg_every > 1:
                d_batch["regularize"] = reg_every * n_disc if regularize and i == n_disc - 1 else 0
            disc, d_metrics = d_update(disc, {**d_batch, "fake": fake})
        g_batch = {**part, "step": gen.step, "disc_params": disc.params, "disc_buffers": disc.buffers}
        judged = scaled_objective(lambda images: gen_loss(images, g_batch), gen, options)
        at_fakes, (loss, aux) = torch.func.grad(judged, has_aux=True)(fake)
        (grads,) = pullback(at_fakes)
        gen, g_metrics = g_update(gen, grads, loss, aux._replace(buffers=gen_buffers))
        ema = _ema_update(state.ema, gen.params, ema_decay, taken, donate)
        return GANState(gen, disc, ema), {**_prefixed("d_", d_metrics), **_prefixed("g_", g_metrics)}

    def plain(state: GANState, batch: dict) -> tuple[GANState, dict]:
        return step(state, batch, False)

    def regularized(state: GANState, batch: dict) -> tuple[GANState, dict]:
        return step(state, batch, True)

    if reg_every == 1:
        return compile_step(regularized, options)
    penalised = compile_step(regularized, options)  # a file of its own: its fingerprint differs
    unpenalised = compile_step(plain, options)
    seen = {"state": None, "taken": 0}  # the last state returned, and its step count

    def dispatch(state: GANState, batch: dict) -> tuple[GANState, dict]:
        if state is not seen["state"]:  # a state from elsewhere (the first, a resumed one): read it
            seen["taken"] = int(state.step)
        new, metrics = (penalised if seen["taken"] % reg_every == 0 else unpenalised)(state, batch)
        seen.update(state=new, taken=seen["taken"] + 1)
        return new, metrics

    return dispatch


def _images(generate: Callable, params: Tensors, *, buffers: Tensors, z, y) -> tuple:
    """generate with all but the params bound: the function of them that torch.func.vjp takes."""
    return generate(params, buffers, z, y)


def _ema_update(ema: Tensors, params: Tensors, decay: float, step: torch.Tensor, donate: bool) -> Tensors:
    """ema <- ema + (1 - d) * (params - ema) with d = min(decay, (1 + step) / (10 + step)).

    The warm-up of d (as tf.train.ExponentialMovingAverage's num_updates) keeps the average from
    holding on to the random initial weights during a short run; d is a tensor, so no recompiles.
    """
    keys = list(ema)
    old, new = [ema[k] for k in keys], [params[k] for k in keys]
    t = step.to(torch.float32)
    weight = 1 - torch.clamp((1 + t) / (10 + t), max=decay)  # 0-d: this step's share of the params
    delta = torch._foreach_mul(torch._foreach_sub(new, old), weight)
    return write_state(ema, dict(zip(keys, torch._foreach_add(old, delta))), donate)

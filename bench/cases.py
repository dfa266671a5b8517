"""The benchmarked cases: the parameter grid, and a table of builders giving `advance(n)` per case."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch

import engine
import harness
from bench.peer import build_peer
from engine.amp import scaler_init
from harness.device import unusable_gpu
from losses import make_ae_loss, make_elbo_loss, make_gan_loss
from models import build_ae, build_gan, build_vae

VAE_LATENT = 20  # experiments.vae's default
AE_LATENT = 16  # experiments.ae's default
GAN_LATENT, GAN_WIDTH = 100, 32  # the DCGAN case: z=100, a narrower width than experiments.gan (64)
BATCHES = (128, 1024)
PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}
COMPILES = {"cpu": ("eager", "compiled"), "cuda": ("eager", "compiled", "cudagraphs")}
COMPILE_ARG = {"eager": False, "compiled": True, "cudagraphs": "cudagraphs"}  # StepOptions(compile=)


class Spec(NamedTuple):
    """One benchmark case; its id (`mlp_vae-cpu-bf16-compiled-128`) is the test name's parameter."""

    case: str
    device: str
    precision: str
    compile: str
    batch: int

    @property
    def id(self) -> str:
        return "-".join(map(str, self))

    @classmethod
    def from_id(cls, text: str) -> Spec:
        case, device, precision, compile, batch = text.split("-")
        return cls(case, device, precision, compile, int(batch))


class Workload(NamedTuple):
    """What the driver times: advance(n) runs n steps without a device sync."""

    advance: Callable[[int], None]
    steps_per_round: int | None  # a fixed round length (one epoch for the data path), else calibrated


def _scaler(precision: str, device: str):
    return scaler_init(device) if precision == "fp16" else None


def _vae(arch: str, flat: bool = False):
    def build(spec: Spec, compile, donate):
        model = build_vae(arch, VAE_LATENT).to(spec.device)
        opt = engine.flat(engine.adam(1e-3)) if flat else engine.adam(1e-3)
        loss_fn = make_elbo_loss(model)
        step = engine.make_train_step(
            loss_fn, opt, engine.StepOptions(precision=spec.precision, compile=compile, donate=donate)
        )
        state = engine.init_state(model, opt, _scaler(spec.precision, spec.device))
        return step, state, {"eps": (VAE_LATENT,)}

    return build


def _conv_ae(spec: Spec, compile, donate):
    model = build_ae("conv", AE_LATENT).to(spec.device)
    opt = engine.adam(1e-3)
    step = engine.make_train_step(
        make_ae_loss(model), opt, engine.StepOptions(precision=spec.precision, compile=compile, donate=donate)
    )
    return step, engine.init_state(model, opt, _scaler(spec.precision, spec.device)), {}


def _dcgan(spec: Spec, compile, donate):
    """experiments/gan.py's wiring, 2015 DCGAN recipe (BatchNorm D, non-saturating, Adam(2e-4, b1=0.5))."""
    gen, disc = (m.to(spec.device) for m in build_gan("dcgan", (1, 28, 28), GAN_LATENT, GAN_WIDTH))
    g_opt, d_opt = (engine.adam(2e-4, b1=0.5) for _ in range(2))
    step = engine.make_gan_step(
        *make_gan_loss(gen, disc),
        g_opt,
        d_opt,
        engine.StepOptions(precision=spec.precision, compile=compile, donate=donate),
    )
    state = engine.init_gan_state(gen, disc, g_opt, d_opt, spec.precision)
    return step, state, {"z": (GAN_LATENT,)}


MODELS = {"mlp_vae": _vae("mlp"), "conv_vae": _vae("conv"), "conv_ae": _conv_ae, "dcgan": _dcgan}
# the mlp VAE with Adam on one flat buffer (engine.flat): fp32 at batch 128, against mlp_vae's cases
FLAT = {"mlp_vae_flat": _vae("mlp", flat=True)}


def _next_batch(box: dict, loader: harness.Loader) -> dict:
    """The loader's next batch, starting a new epoch when the current one is spent."""
    batch = next(box["it"], None)
    if batch is None:
        box["it"] = iter(loader)
        batch = next(box["it"])
    return batch


def _train_workload(spec: Spec, data) -> Workload:
    """Train steps of a model case, the data path (gather, scale, noise) included as in training."""
    # Donated, CUDA graphs included: the state stays at static addresses, updated in place
    # (engine.compile_step marks each replay's start and copies the metrics out).
    step, state, noise = {**MODELS, **FLAT}[spec.case](spec, COMPILE_ARG[spec.compile], True)
    loader = harness.Loader(data, spec.batch, seed=0, noise=noise)
    box = {"state": state, "it": iter(loader)}

    def advance(n: int) -> None:
        state = box["state"]
        for _ in range(n):
            state, _ = step(state, _next_batch(box, loader))
        box["state"] = state

    return Workload(advance, None)


def _data_workload(spec: Spec, data) -> Workload:
    """The data path alone: one epoch (permutation, index gathers, uint8 -> float scaling) a round."""
    loader = harness.Loader(data, spec.batch, seed=0)
    box = {"it": iter(loader)}

    def advance(n: int) -> None:
        for _ in range(n):
            _next_batch(box, loader)

    return Workload(advance, loader.steps_per_epoch)


def build(spec: Spec, data) -> Workload:
    """The workload of `spec` over `data` (the MNIST train split on spec.device)."""
    torch.manual_seed(0)
    if spec.case == "data_path":
        return _data_workload(spec, data)
    if spec.case == "peer":
        return Workload(build_peer(spec.device, spec.batch), None)
    return _train_workload(spec, data)


def _param(spec: Spec):
    why = unusable_gpu() or "no CUDA device on this machine"  # a GPU torch cannot use is named
    cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=why)
    return pytest.param(spec, id=spec.id, marks=[cuda] if spec.device == "cuda" else [])


def grid() -> list:
    """Every case: the peer and the data path (fp32, eager) and each model over precision x compile,
    all at both batch sizes on cpu and cuda (the cuda ones skip without a GPU)."""
    specs = []
    for device in ("cpu", "cuda"):
        for case in ("peer", "data_path"):
            specs += [Spec(case, device, "fp32", "eager", b) for b in BATCHES]
        for case in MODELS:
            for precision in PRECISIONS[device]:
                for compile in COMPILES[device]:
                    specs += [Spec(case, device, precision, compile, b) for b in BATCHES]
        specs += [Spec(case, device, "fp32", compile, 128) for case in FLAT for compile in COMPILES[device]]
    return [_param(s) for s in specs]

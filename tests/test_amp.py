"""fp16 dynamic loss scaling against torch.amp.GradScaler, and the precision policy."""

import pytest
import torch
from torch import nn

import engine
from engine.amp import ScalerConfig, scaler_update, unscale
from engine.state import Aux

CFG = ScalerConfig(init_scale=2.0**10, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
POISON = {2, 3, 9, 10, 11}  # steps whose loss is multiplied by inf


def _setup():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 1)), torch.randn(32, 6)


def _reference():
    """GradScaler + torch.optim.Adam under CPU fp16 autocast: scales, skips, final params."""
    model, x = _setup()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    scaler = torch.amp.GradScaler(
        "cpu",
        init_scale=CFG.init_scale,
        growth_factor=CFG.growth_factor,
        backoff_factor=CFG.backoff_factor,
        growth_interval=CFG.growth_interval,
    )
    scales, skipped = [], []
    for i in range(16):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(x).float().square().mean() * (float("inf") if i in POISON else 1.0)
        before = [p.detach().clone() for p in model.parameters()]
        scales.append(scaler.get_scale())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        skipped.append(all(torch.equal(b, p) for b, p in zip(before, model.parameters())))
    return scales, skipped, {k: v.detach() for k, v in model.named_parameters()}


def _ours():
    model, x = _setup()

    def loss_fn(params, buffers, batch):
        out = torch.func.functional_call(model, params, (batch["x"],))
        return out.float().square().mean() * batch["factor"], Aux({}, buffers)

    opt = engine.adam(1e-2)
    step = engine.make_train_step(
        loss_fn, opt, engine.StepOptions(precision="fp16", compile=False, scaler_config=CFG)
    )
    state = engine.init_state(model, opt, engine.scaler_init("cpu", CFG))
    scales, skipped = [], []
    for i in range(16):
        factor = torch.tensor(float("inf") if i in POISON else 1.0)
        state, metrics = step(state, {"x": x, "factor": factor})
        scales.append(metrics["loss_scale"].item())
        skipped.append(bool(metrics["skipped"]))
    return scales, skipped, state


def test_loss_scaler_reproduces_grad_scaler():
    want_scales, want_skipped, want_params = _reference()
    scales, skipped, state = _ours()
    assert scales == want_scales
    assert skipped == want_skipped
    assert sum(skipped) == len(POISON)
    assert any(b > a for a, b in zip(scales, scales[1:]))  # it also grew after 3 finite steps
    for k, v in want_params.items():
        torch.testing.assert_close(state.params[k], v)
    # the optimizer counted only the steps it took, as torch.optim.Adam does under GradScaler
    assert int(state.opt["count"]) == 16 - len(POISON)
    assert int(state.step) == 16


def test_scaler_never_grows_to_inf():
    cfg = ScalerConfig(init_scale=2.0**127, growth_interval=1)
    scaler = engine.scaler_init("cpu", cfg)
    scaler = scaler_update(scaler, torch.tensor(False), cfg)
    assert scaler["scale"].item() == 2.0**127 and int(scaler["growth_tracker"]) == 0


def test_unscale_flags_nan_and_inf():
    scaler = engine.scaler_init("cpu")
    for bad in (float("nan"), float("inf"), -float("inf")):
        grads = {"a": torch.ones(3), "b": torch.tensor([1.0, bad])}
        _, found = unscale(grads, scaler)
        assert bool(found)
    unscaled, found = unscale({"a": torch.full((2,), 2.0**16)}, scaler)
    assert not bool(found) and torch.equal(unscaled["a"], torch.ones(2))


def test_precision_policy():
    assert not torch.is_autocast_enabled("cpu")
    with engine.autocast("bf16", "cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with engine.autocast("fp32", "cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        engine.autocast("fp8", "cpu")

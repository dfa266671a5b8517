"""Functional optimizers and schedules against torch.optim over 100 steps."""

import pytest
import torch
from torch import nn

import engine
from engine.schedules import constant, cosine, linear_warmup

STEPS = 100


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randn(64, 3)
    return model, x, y


def _loss(model, params, x, y):
    out = torch.func.functional_call(model, params, (x,))
    return (out - y).square().mean()


def _run_ours(opt):
    model, x, y = _problem()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = opt.init(params)
    for _ in range(STEPS):
        grads = torch.func.grad(lambda p: _loss(model, p, x, y))(params)
        params, state = opt.update(grads, state, params)
    return params


def _run_torch(make_opt, make_sched=None):
    model, x, y = _problem()
    opt = make_opt(model.parameters())
    sched = make_sched(opt) if make_sched else None
    for _ in range(STEPS):
        opt.zero_grad()
        _loss(model, dict(model.named_parameters()), x, y).backward()
        opt.step()
        if sched:
            sched.step()
    return {k: v.detach() for k, v in model.named_parameters()}


CASES = {
    "adam": (lambda: engine.adam(1e-2), lambda p: torch.optim.Adam(p, 1e-2)),
    "adam_l2": (
        lambda: engine.adam(1e-2, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, 1e-2, weight_decay=0.1),
    ),
    "adamw": (
        lambda: engine.adamw(1e-2, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, 1e-2, weight_decay=0.1),
    ),
    "adam_betas": (
        lambda: engine.adam(3e-3, b1=0.5, b2=0.9, eps=1e-6),
        lambda p: torch.optim.Adam(p, 3e-3, betas=(0.5, 0.9), eps=1e-6),
    ),
    "sgd": (lambda: engine.sgd(0.1), lambda p: torch.optim.SGD(p, 0.1)),
    "sgd_momentum": (
        lambda: engine.sgd(0.05, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, 0.05, momentum=0.9, weight_decay=1e-3),
    ),
    "sgd_nesterov": (
        lambda: engine.sgd(0.05, momentum=0.9, nesterov=True),
        lambda p: torch.optim.SGD(p, 0.05, momentum=0.9, nesterov=True),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_torch_optim(name):
    ours, theirs = CASES[name]
    got, want = _run_ours(ours()), _run_torch(theirs)
    for k in want:
        torch.testing.assert_close(got[k], want[k])  # fp32 tolerances: rtol 1.3e-6, atol 1e-5
    model, _, _ = _problem()
    assert not torch.equal(got["0.weight"], dict(model.named_parameters())["0.weight"])


@pytest.mark.parametrize("foreach", [True, False])
def test_out_of_place_update_leaves_inputs_alone(foreach):
    model, x, y = _problem()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = engine.adam(1e-2, foreach=foreach)
    state = opt.init(params)
    before = engine.clone_state((params, state))
    grads = torch.func.grad(lambda p: _loss(model, p, x, y))(params)
    opt.update(grads, state, params)
    after = (params, state)
    flat_b, flat_a = engine.state.flatten_state(before), engine.state.flatten_state(after)
    assert all(torch.equal(flat_b[k], flat_a[k]) for k in flat_b)


def test_cosine_schedule_with_adam_matches_torch():
    got = _run_ours(engine.adam(cosine(1e-2, total_steps=STEPS)))
    want = _run_torch(
        lambda p: torch.optim.Adam(p, 1e-2),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    )
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def _torch_lrs(make_sched, n):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, lrs = make_sched(opt), []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(lrs, dtype=torch.float64)


def test_schedules_match_torch_lr_schedulers():
    steps = torch.arange(40)
    warm = torch.stack([linear_warmup(0.1, 10)(t) for t in steps])
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, total_iters=9), 40)
    torch.testing.assert_close(warm, want)
    cos = torch.stack([cosine(0.1, 30)(t) for t in steps[:31]])
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30), 31)
    torch.testing.assert_close(cos, want)
    assert torch.all(torch.stack([constant(0.1)(t) for t in steps]) == 0.1)
    # warm-up then cosine: rises linearly, peaks at the base rate, ends at the final rate
    both = torch.stack([cosine(0.1, 30, warmup_steps=5, final_lr=0.01)(t) for t in steps])
    assert both[0] == pytest.approx(0.02) and both[5] == pytest.approx(0.1)
    assert both[30:].eq(both[30]).all() and both[30] == pytest.approx(0.01)


@pytest.mark.parametrize("name", ["adamw", "sgd_nesterov"])
def test_per_tensor_loop_and_injected_hyperparams_match_foreach(name):
    factory = {
        "adamw": engine.adamw,
        "sgd_nesterov": lambda **k: engine.sgd(momentum=0.9, nesterov=True, **k),
    }
    want = _run_ours(factory[name](lr=1e-2))
    loop = _run_ours(factory[name](lr=1e-2, foreach=False))
    injected = _run_ours(
        engine.optim.with_hyperparams(lambda lr: factory[name](lr=lr, foreach=False), lr=1e-2)
    )
    for k in want:  # the per-tensor loop runs the same kernels: bitwise equal
        torch.testing.assert_close(loop[k], want[k], rtol=0, atol=0)
        torch.testing.assert_close(injected[k], want[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,compiled", [("adam", False), ("adamw", False), ("sgd_nesterov", False), ("adam", True)]
)
def test_flat_buffers_update_bitwise_as_the_per_tensor_optimizer(name, compiled):
    """One flat buffer per dtype (a bf16 tensor among the float32 ones makes a second): the same
    params and state, bit for bit, after STEPS steps, eager and compiled."""
    make = CASES[name][0]
    model, x, y = _problem()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    params["extra"] = torch.randn(5, 2).bfloat16()
    per_tensor, flat = make(), engine.flat(make())
    runs = {}
    for label, opt in (("per-tensor", per_tensor), ("flat", flat)):
        update = torch.compile(opt.update, fullgraph=True) if compiled else opt.update
        p, state = dict(params), opt.init(params)
        for _ in range(STEPS if not compiled else 10):
            grads = torch.func.grad(lambda q: _loss(model, {k: v for k, v in q.items() if k != "extra"}, x, y)
                                    + q["extra"].float().square().sum())(p)  # fmt: skip
            p, state = update(grads, state, p)
        runs[label] = (p, state)
    (p_ref, s_ref), (p_flat, s_flat) = runs["per-tensor"], runs["flat"]
    assert p_flat.keys() == p_ref.keys() and p_flat["extra"].dtype == torch.bfloat16
    for k in p_ref:
        assert p_flat[k].shape == p_ref[k].shape and torch.equal(p_flat[k], p_ref[k]), k
    assert set(s_flat.get("mu", s_flat.get("momentum", {}))) == {"float32", "bfloat16"}  # one buffer each
    for key in ("mu", "nu", "momentum"):
        if key in s_ref:
            flat_ref = torch.cat([s_ref[key][k].reshape(-1) for k in params if k != "extra"])
            assert torch.equal(s_flat[key]["float32"], flat_ref)

"""The train step's contract: shapes, finiteness, purity, buffers, donation, compilation."""

import pytest
import torch
from torch import nn

import engine
from engine.state import Aux, flatten_state
from losses import make_ae_loss, make_elbo_loss
from models import build_ae, build_vae

Z, B = 8, 16


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(B, 1, 28, 28, generator=g), "eps": torch.randn(B, Z, generator=g)}


def _setup(kind, arch, precision="fp32"):
    torch.manual_seed(0)
    model = (build_vae if kind == "vae" else build_ae)(arch, Z)
    loss_fn = make_elbo_loss(model) if kind == "vae" else make_ae_loss(model)
    opt = engine.adam(1e-3)
    scaler = engine.scaler_init("cpu") if precision == "fp16" else None
    return model, loss_fn, opt, engine.init_state(model, opt, scaler)


def _equal(a, b) -> bool:
    fa, fb = flatten_state(a), flatten_state(b)
    return fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


MODELS = [(k, a) for k in ("ae", "vae") for a in ("mlp", "conv")]


@pytest.mark.parametrize("kind,arch", MODELS)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_step_contract(kind, arch, precision):
    model, loss_fn, opt, state = _setup(kind, arch, precision)
    before = engine.clone_state(state)
    step = engine.make_train_step(loss_fn, opt, engine.StepOptions(precision=precision, compile=False))
    new, metrics = step(state, _batch())
    assert _equal(state, before), "the input state was modified"
    assert int(new.step) == 1
    for k, v in new.params.items():
        assert v.shape == state.params[k].shape and v.dtype == torch.float32
        assert torch.isfinite(v).all()
    changed = any(not torch.equal(new.params[k], state.params[k]) for k in state.params)
    # fp16 may skip a step whose scaled gradient overflowed (GradScaler does too); others always update
    assert changed != bool(metrics.get("skipped", False))
    assert all(m.dim() == 0 and torch.isfinite(m) for m in metrics.values())
    expected = {"neg_elbo", "recon", "kl", "mse"} if kind == "vae" else {"bce", "mse"}
    assert expected | {"loss"} <= set(metrics)
    # the step reports the loss of its input params on this batch, as the eval step computes it
    evaluated = engine.make_eval_step(loss_fn, engine.StepOptions(precision=precision))(state, _batch())
    assert evaluated.keys() == {k: 0 for k in metrics if k not in ("loss_scale", "skipped")}.keys()
    if precision == "fp32":
        torch.testing.assert_close(metrics["loss"], evaluated["loss"])


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_donated_step_is_bitwise_equal(precision):
    _, loss_fn, opt, state = _setup("vae", "mlp", precision)
    plain = engine.make_train_step(loss_fn, opt, engine.StepOptions(precision=precision, compile=False))
    donated = engine.make_train_step(
        loss_fn, opt, engine.StepOptions(precision=precision, compile=False, donate=True)
    )
    a, b = engine.clone_state(state), engine.clone_state(state)
    storage = b.params["encoder.fc1.weight"].data_ptr()
    for i in range(5):
        a, _ = plain(a, _batch(i))
        b, _ = donated(b, _batch(i))
    assert _equal(a, b)
    assert b.params["encoder.fc1.weight"].data_ptr() == storage  # the update reused the input storage


def test_loss_falls_over_steps_on_a_fixed_batch():
    _, loss_fn, opt, state = _setup("vae", "conv")
    step = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=False))
    losses = []
    for _ in range(60):
        state, metrics = step(state, _batch())
        losses.append(metrics["loss"].item())
    assert losses[-1] < 0.75 * losses[0]  # uniform noise images: only the mean intensity is learnable


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.out = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.bn(self.fc(x)).relu())


def test_buffers_come_back_out_of_the_step():
    torch.manual_seed(0)
    model, x = _BNNet(), torch.randn(32, 4)

    def loss_fn(params, buffers, batch):
        out, buffers = engine.call_module(model, params, buffers, batch["x"])
        return out.square().mean(), Aux({}, buffers)

    opt = engine.sgd(0.1)
    state = engine.init_state(model, opt)
    before = engine.clone_state(state)
    new, _ = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=False))(state, {"x": x})
    assert _equal(state, before)
    model(x)  # the module's own training-mode forward updates its statistics in place
    for k, v in model.named_buffers():
        assert torch.equal(new.buffers[k], v), k
    assert int(new.buffers["bn.num_batches_tracked"]) == 1


@pytest.mark.parametrize("precision,donate", [("fp32", False), ("fp32", True), ("fp16", True)])
def test_compiled_step_has_one_graph_and_never_recompiles(precision, donate):
    _, loss_fn, opt, state = _setup("vae", "mlp", precision)
    eager = engine.make_train_step(loss_fn, opt, engine.StepOptions(precision=precision, compile=False))
    compiled = engine.make_train_step(
        loss_fn, opt, engine.StepOptions(precision=precision, compile=True, donate=donate)
    )
    a, b = engine.clone_state(state), engine.clone_state(state)
    a, _ = eager(a, _batch(0))
    b, _ = compiled(b, _batch(0))  # first call compiles (fullgraph=True: a graph break is an error)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(1, 4):  # new step counts, new data, new state tensors: same graph
            a, _ = eager(a, _batch(i))
            b, metrics = compiled(b, _batch(i))
    assert int(b.step) == 4
    assert _equal(a.scaler, b.scaler)
    # fp16 rounding can flip tiny gradients to 0, and Adam moves a weight by up to
    # lr * (1 - b1) / sqrt(1 - b2) ~ 3.2e-3 per step on such noise, in one run and not the other:
    # 4 steps bound the gap at 1.3e-2. Params themselves are O(0.05); a real bug exceeds that.
    tol = {"rtol": 1e-4, "atol": 1e-5} if precision == "fp32" else {"rtol": 0.0, "atol": 1.3e-2}
    for k in a.params:  # compiled kernels reorder float math: equal to rounding, not bitwise
        torch.testing.assert_close(b.params[k], a.params[k], **tol)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_donated_state_keeps_every_address_step_counter_and_loss_scale_included(precision):
    # what CUDA graphs replay against: the same memory for every tensor of the state, step after step
    _, loss_fn, opt, state = _setup("vae", "conv", precision)
    step = engine.make_train_step(
        loss_fn, opt, engine.StepOptions(precision=precision, compile=False, donate=True)
    )
    addresses = {k: v.data_ptr() for k, v in flatten_state(state).items()}
    for i in range(3):
        state, metrics = step(state, _batch(i))
    assert {k: v.data_ptr() for k, v in flatten_state(state).items()} == addresses
    assert int(state.step) == 3
    if precision == "fp16":  # the metric is the scale this step used, not the storage updated after it
        assert metrics["loss_scale"].data_ptr() != state.scaler["scale"].data_ptr()


@pytest.mark.parametrize("donate", [True, False])
def test_cudagraphs_mode_keeps_metrics_and_state_out_of_the_replay_memory(donate):
    # On the CPU inductor records no graph, but compile_step's CUDA-graph path runs as on a GPU: the
    # state marked static (donated) or copied out, the metrics copied out of every replay.
    _, loss_fn, opt, state = _setup("vae", "mlp")
    eager = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=False))
    graphed = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile="cudagraphs", donate=donate))
    a, b, kept_a, kept_b = engine.clone_state(state), engine.clone_state(state), [], []
    for i in range(4):
        a, ma = eager(a, _batch(i))
        b, mb = graphed(b, _batch(i))
        kept_a.append(ma["loss"])
        kept_b.append(mb["loss"])
    torch.testing.assert_close(torch.stack(kept_b), torch.stack(kept_a), rtol=1e-4, atol=1e-4)
    for k in a.params:
        torch.testing.assert_close(b.params[k], a.params[k], rtol=1e-4, atol=1e-5)
    assert int(b.step) == 4


@pytest.mark.parametrize("prior,free_bits", [("vamp", 0.0), ("normal", 0.25)])
def test_vamp_prior_and_free_bits_steps_compile_to_one_graph(prior, free_bits):
    torch.manual_seed(0)
    model = build_vae("mlp", Z, prior=prior, pseudo_inputs=10)
    loss_fn, opt = make_elbo_loss(model, free_bits=free_bits), engine.adam(1e-3)
    state = engine.init_state(model, opt)
    eager = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=False))
    compiled = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=True))
    a, b = engine.clone_state(state), engine.clone_state(state)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(3):  # fullgraph=True: a graph break is an error; a recompile too
            batch = {**_batch(i), "step": torch.tensor(i)}
            a, ma = eager(a, batch)
            b, mb = compiled(b, batch)
            torch.testing.assert_close(mb["loss"], ma["loss"], rtol=1e-5, atol=1e-4)
    for k in a.params:  # Adam turns a reordered near-zero gradient into an lr-sized step: atol 1e-4
        torch.testing.assert_close(b.params[k], a.params[k], rtol=1e-4, atol=1e-4)
    assert ("pseudo_logits" in b.params) == (prior == "vamp")  # learned by the step, with the rest


def test_cuda_graphs_are_the_one_gpu_default_and_a_failed_capture_falls_back_without_losing_a_step(
    monkeypatch, capfd
):
    from engine import compile_mode

    assert compile_mode("auto", "cuda") == compile_mode(None, "cuda") == "reduce-overhead"
    assert compile_mode("auto", "cuda", ranks=True) == "default"  # a collective in the step: no graphs
    assert compile_mode("auto", "cpu") == "default" and compile_mode("default", "cuda") == "default"
    # A capture that fails on its second call after writing into the donated state (as a broken
    # recording could): the step must come back as the eager one, no update lost or applied twice.
    real_compile, calls = torch.compile, {"graphed": 0}

    def fake_compile(fn, fullgraph=False, mode=None):
        if mode != "reduce-overhead":
            return fn  # the fallback: eager here, what matters is which state it gets

        def graphed(state, batch):
            calls["graphed"] += 1
            if calls["graphed"] == 2:
                for v in state.params.values():
                    v.add_(1.0)  # a half-done update in the donated storage
                raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
            return fn(state, batch)

        return graphed

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(engine.step, "default_compile", lambda device_type, ranks=False: "cudagraphs")
    _, loss_fn, opt, state = _setup("vae", "mlp")
    eager = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile=False))
    by_default = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile="auto", donate=True))
    a, b = engine.clone_state(state), engine.clone_state(state)
    for i in range(4):
        a, _ = eager(a, _batch(i))
        b, _ = by_default(b, _batch(i))
    monkeypatch.setattr(torch, "compile", real_compile)
    assert _equal(a, b) and calls["graphed"] == 2  # after the failure the graphed step is never called
    err = capfd.readouterr().err
    assert err.count("note: CUDA graphs could not capture this step") == 1 and len(err.splitlines()) == 1
    # chosen explicitly, a failure is the user's to see
    monkeypatch.setattr(torch, "compile", fake_compile)
    calls["graphed"] = 0
    explicit = engine.make_train_step(loss_fn, opt, engine.StepOptions(compile="cudagraphs", donate=True))
    explicit(engine.clone_state(state), _batch(0))
    with pytest.raises(RuntimeError, match="capturing"):
        explicit(engine.clone_state(state), _batch(1))

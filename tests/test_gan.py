"""GAN pieces: losses by hand, the gradient penalty against finite differences, the two-player step."""

import math

import pytest
import torch
from torch import nn

import engine
from engine.state import flatten_state
from losses import gan as G
from models import build_gan

REAL, FAKE = [0.5, -1.0], [-0.3, 2.0]


def _softplus(v):
    return math.log1p(math.exp(v))


def _mean(xs):
    return sum(xs) / len(xs)


HAND = {  # (D loss, G loss) computed with plain Python arithmetic from REAL and FAKE
    "nonsaturating": (
        _mean([_softplus(-r) for r in REAL]) + _mean([_softplus(f) for f in FAKE]),
        _mean([_softplus(-f) for f in FAKE]),
    ),
    "hinge": (_mean([max(0, 1 - r) for r in REAL]) + _mean([max(0, 1 + f) for f in FAKE]), -_mean(FAKE)),
    "lsgan": (
        0.5 * _mean([(r - 1) ** 2 for r in REAL]) + 0.5 * _mean([f**2 for f in FAKE]),
        0.5 * _mean([(f - 1) ** 2 for f in FAKE]),
    ),
    "wgan-gp": (_mean(FAKE) - _mean(REAL), -_mean(FAKE)),
}


@pytest.mark.parametrize("kind", [k for k in G.GAN_LOSSES if k not in G.PAIRED])  # pairing: test_gan_recipe
def test_losses_match_hand_computed_values(kind):
    d_fn, g_fn = G.PAIRS[kind]
    real, fake = torch.tensor(REAL, dtype=torch.float64), torch.tensor(FAKE, dtype=torch.float64)
    d_loss, d_metrics = d_fn(real, fake)
    g_loss, g_metrics = g_fn(fake)
    assert float(d_loss) == pytest.approx(HAND[kind][0], rel=1e-12)
    assert float(g_loss) == pytest.approx(HAND[kind][1], rel=1e-12)
    assert float(d_metrics["d_loss"]) == float(d_loss) and float(g_metrics["g_loss"]) == float(g_loss)
    prob = kind == "nonsaturating"  # D(x) is a probability for the logistic loss, the raw score otherwise
    expected_real = _mean([1 / (1 + math.exp(-r)) for r in REAL]) if prob else _mean(REAL)
    assert float(d_metrics["d_real"]) == pytest.approx(expected_real, rel=1e-12)


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _fd_input_grad(f, x, h=1e-6):
    """Central differences of a scalar function of x, one coordinate at a time."""
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def test_gradient_penalty_matches_finite_differences():
    critic = _critic()
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(3, 1, 3, 4, generator=g).double(), torch.randn(3, 1, 3, 4, generator=g).double()
    u = torch.rand(3, 1, 1, 1, generator=g).double()
    ours = G.gradient_penalty(critic, real, fake, u)
    x_hat = (u * real + (1 - u) * fake).clone()
    norms = []
    for i in range(3):  # the critic scores each image alone, so per-image gradients are separate
        grad = _fd_input_grad(lambda x, i=i: float(critic(x)[i].detach()), x_hat)
        norms.append(float(grad[i].norm()))
    assert float(ours.detach()) == pytest.approx(_mean([(n - 1) ** 2 for n in norms]), rel=1e-6)


def test_gradient_penalty_is_differentiable_in_the_critic_params():
    """d(penalty)/d(params) through the nested torch.func.grad, against finite differences."""
    critic = _critic()
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(4, 1, 3, 4, generator=g).double(), torch.randn(4, 1, 3, 4, generator=g).double()
    u = torch.rand(4, 1, 1, 1, generator=g).double()
    params = {k: v.detach().clone() for k, v in critic.named_parameters()}

    def penalty(p):
        f = lambda x: torch.func.functional_call(critic, p, (x,))[:, 0]  # noqa: E731
        return G.gradient_penalty(f, real, fake, u)

    grads = torch.func.grad(penalty)(params)
    w = params["1.weight"]
    numeric = _fd_input_grad(lambda t: float(penalty({**params, "1.weight": t})), w.clone())
    torch.testing.assert_close(grads["1.weight"], numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("arch,shape", [("dcgan", (1, 28, 28)), ("dcgan", (3, 64, 64)), ("mlp", (1, 28, 28))])
def test_networks_shapes_and_dcgan_init(arch, shape):
    torch.manual_seed(0)
    gen, disc = build_gan(arch, shape, latent_dim=16, width=8)
    images = gen(torch.randn(5, 16))
    assert images.shape == (5, *shape) and images.abs().max() <= 1
    assert disc(images).shape == (5,)
    layers = [
        m
        for m in [*gen.modules(), *disc.modules()]
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    weights = torch.cat(
        [m.weight.detach().flatten() for m in layers]
    )  # N(0, 0.02), as the DCGAN paper initialises
    assert abs(float(weights.std()) - 0.02) < 0.001 and abs(float(weights.mean())) < 0.001
    assert all(m.bias is None or not m.bias.any() for m in layers)
    with pytest.raises(ValueError, match="32x32"):
        build_gan("dcgan", (1, 32, 32))


@pytest.mark.parametrize("arch,shape", [("dcgan", (1, 28, 28)), ("dcgan", (3, 64, 64)), ("mlp", (1, 28, 28))])
def test_a_wider_discriminator_leaves_the_generator_as_it_was(arch, shape):
    torch.manual_seed(0)
    gen, disc = build_gan(arch, shape, latent_dim=16, width=8)
    torch.manual_seed(0)
    same_gen, wide = build_gan(arch, shape, latent_dim=16, width=8, disc_width=12)
    a, b = gen.state_dict(), same_gen.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same draws, same weights
    narrow = [p.shape[0] for p in disc.parameters() if p.dim() > 1][:-1]  # the hidden layers' outputs
    wider = [p.shape[0] for p in wide.parameters() if p.dim() > 1][:-1]
    assert wider == [n * 12 // 8 for n in narrow] and wide(gen(torch.randn(3, 16))).shape == (3,)


B, Z = 8, 16


def _setup(kind="nonsaturating", n_disc=1, precision="fp32", arch="dcgan"):
    torch.manual_seed(0)
    gen, disc = build_gan(arch, (1, 28, 28), Z, 8)
    gan = G.make_gan_loss(gen, disc, kind)
    g_opt, d_opt = engine.adam(2e-4, b1=0.5), engine.adam(2e-4, b1=0.5)
    return gan, g_opt, d_opt, engine.init_gan_state(gen, disc, g_opt, d_opt, precision)


def _batch(seed, n_disc=1, u=False):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "x": torch.rand(n_disc * B, 1, 28, 28, generator=g),
        "z": torch.randn(n_disc * B, Z, generator=g),
    }
    if u:
        batch["u"] = torch.randn(n_disc * B, generator=g)
    return batch


def _equal(a, b):
    fa, fb = flatten_state(a), flatten_state(b)
    return fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("kind,n_disc", [("nonsaturating", 1), ("hinge", 1), ("lsgan", 1), ("wgan-gp", 3)])
def test_gan_step_contract(kind, n_disc, precision):
    gan, g_opt, d_opt, state = _setup(kind, n_disc, precision)
    before = engine.clone_state(state)
    step = engine.make_gan_step(
        *gan,
        g_opt,
        d_opt,
        engine.StepOptions(precision=precision, compile=False),
        n_disc=n_disc,
        ema_decay=0.9,
    )
    new, metrics = step(state, _batch(0, n_disc, u=kind == "wgan-gp"))
    assert _equal(state, before), "the input state was modified"
    assert int(new.gen.step) == 1 and int(new.disc.step) == n_disc and int(new.step) == 1
    assert {"d_loss", "d_real", "d_fake", "g_loss"} <= metrics.keys()
    assert all(m.dim() == 0 and torch.isfinite(m) for m in metrics.values())
    # BatchNorm statistics of the generator come back out of the step
    assert not torch.equal(new.gen.buffers["net.1.running_mean"], state.gen.buffers["net.1.running_mean"])
    assert int(new.gen.buffers["net.1.num_batches_tracked"]) == n_disc  # one forward per chunk
    for name, p in new.gen.params.items():  # EMA decay warms up: min(0.9, (1 + 0) / (10 + 0)) at step 0
        torch.testing.assert_close(new.ema[name], torch.lerp(state.ema[name], p, 1 - 0.1))
    if precision == "fp16":
        assert {"d_loss_scale", "g_loss_scale", "d_skipped", "g_skipped"} <= metrics.keys()


def test_donation_is_bitwise_the_same_and_compile_never_recompiles():
    gan, g_opt, d_opt, state = _setup("nonsaturating", 2)
    plain = engine.make_gan_step(*gan, g_opt, d_opt, engine.StepOptions(compile=False), n_disc=2)
    donated = engine.make_gan_step(
        *gan, g_opt, d_opt, engine.StepOptions(compile=True, donate=True), n_disc=2
    )
    a, b = state, engine.clone_state(state)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(3):
            a, ma = plain(a, _batch(i, 2))
            b, mb = donated(b, _batch(i, 2))
    fa, fb = flatten_state(a), flatten_state(b)
    for k in fa:  # the compiled kernels may reassociate sums: equal to float rounding, not bitwise
        torch.testing.assert_close(fa[k], fb[k], rtol=1e-4, atol=1e-5)
    c = engine.clone_state(state)
    donated_eager = engine.make_gan_step(
        *gan, g_opt, d_opt, engine.StepOptions(compile=False, donate=True), n_disc=2
    )
    for i in range(3):
        c, _ = donated_eager(c, _batch(i, 2))
    assert _equal(a, c), "donation changed the result"


def test_gan_state_round_trips_through_a_checkpoint(tmp_path):
    _, _, _, state = _setup("wgan-gp", 2, "fp16")
    engine.save_checkpoint(tmp_path / "c.safetensors", state)
    template = _setup("wgan-gp", 2, "fp16")[3]
    loaded, _, _ = engine.load_checkpoint(tmp_path / "c.safetensors", template)
    assert isinstance(loaded, engine.GANState) and _equal(loaded, state)
    _, _, _, other = _setup("nonsaturating", 1, "fp32", arch="mlp")
    with pytest.raises(engine.CheckpointError, match="does not fit"):
        engine.load_checkpoint(tmp_path / "c.safetensors", other)


def test_a_donated_gan_state_keeps_every_address():
    gan, g_opt, d_opt, state = _setup("nonsaturating", 2)
    step = engine.make_gan_step(*gan, g_opt, d_opt, engine.StepOptions(compile=False, donate=True), n_disc=2)
    addresses = {k: v.data_ptr() for k, v in flatten_state(state).items()}
    for i in range(2):
        state, _ = step(state, _batch(i, 2))
    assert {k: v.data_ptr() for k, v in flatten_state(state).items()} == addresses
    assert int(state.step) == 2


@pytest.mark.parametrize("compile", [False, True])
def test_the_step_is_pytorch_examples_dcgan_update_with_torch_optim(compile):
    """pytorch/examples' dcgan/main.py by hand: D on real and on fake.detach(), optimizerD.step(),
    then G's loss at the same fake (one generator forward), optimizerG.step(); torch.optim.Adam."""
    gan, g_opt, d_opt, state = _setup("nonsaturating", 1)
    step = engine.make_gan_step(*gan, g_opt, d_opt, engine.StepOptions(compile=compile))
    torch.manual_seed(0)
    gen, disc = build_gan("dcgan", (1, 28, 28), Z, 8)  # the same draws as _setup's
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    for i in range(3):
        batch = _batch(i)
        state, _ = step(state, batch)
        real, fake = G.to_signed(batch["x"]), gen(batch["z"])
        opt_d.zero_grad()
        out_real, out_fake = disc(real), disc(fake.detach())
        (bce(out_real, torch.ones_like(out_real)) + bce(out_fake, torch.zeros_like(out_fake))).backward()
        opt_d.step()
        opt_g.zero_grad()
        out = disc(fake)
        bce(out, torch.ones_like(out)).backward()
        opt_g.step()
    tol = dict(rtol=1e-4, atol=1e-6) if compile else dict(rtol=1e-5, atol=1e-7)
    for ours, theirs in ((state.gen.params, gen), (state.disc.params, disc)):
        for name, p in theirs.named_parameters():
            torch.testing.assert_close(ours[name], p.detach(), **tol, msg=name)
    for name, b in gen.named_buffers():  # BatchNorm statistics: one generator forward per step, as theirs
        torch.testing.assert_close(state.gen.buffers[name], b, **tol, msg=name)

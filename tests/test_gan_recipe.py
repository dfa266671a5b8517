"""The modern GAN pieces: R1 against autograd and finite differences, the relativistic pairing, the
conditional networks, mode coverage, the multi-scale SWD, held-out folders and fit's probes."""

import json
import math

import pytest
import torch
from torch import nn

import engine
from engine.state import flatten_state
from evaluation import swd
from evaluation.fidelity import class_coverage, label_agreement
from evaluation.sampling import sample_labels
from harness import held_out_split
from harness.data import Dataset
from harness.fit import LoopOptions, fit
from harness.loader import Loader
from losses import gan as G
from models import build_gan


def _critic():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def test_r1_penalty_and_its_parameter_gradient_match_autograd_double_backward():
    """R1 = E ||d D(x) / dx||^2, and d R1 / d params through the nested torch.func.grad, against
    torch.autograd.grad with create_graph=True (the classic double backward)."""
    critic = _critic()
    real = torch.randn(5, 1, 3, 4, generator=torch.Generator().manual_seed(0)).double()
    params = {k: v.detach().clone() for k, v in critic.named_parameters()}

    def r1(p):
        return G.r1_penalty(lambda x: torch.func.functional_call(critic, p, (x,))[:, 0], real)

    ours, ours_grad = r1(params), torch.func.grad(r1)(params)
    x = real.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    reference = gx.flatten(1).square().sum(1).mean()
    ref_grad = torch.autograd.grad(reference, list(critic.parameters()), materialize_grads=True)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
    for (name, _), g in zip(critic.named_parameters(), ref_grad):
        torch.testing.assert_close(ours_grad[name], g, rtol=1e-10, atol=1e-12)


def test_relativistic_pairing_matches_hand_computed_values():
    real, fake = (
        torch.tensor([0.5, -1.0], dtype=torch.float64),
        torch.tensor([-0.3, 2.0], dtype=torch.float64),
    )
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d_loss, _ = G.relativistic_d(real, fake)
    g_loss, _ = G.relativistic_g(fake, real)
    assert float(d_loss) == pytest.approx((softplus(-0.3 - 0.5) + softplus(2.0 + 1.0)) / 2, rel=1e-12)
    assert float(g_loss) == pytest.approx((softplus(0.5 + 0.3) + softplus(-1.0 - 2.0)) / 2, rel=1e-12)


def _disc_batch():
    """A small R1-recipe pair, the discriminator's tensors and a batch of real and fake images."""
    torch.manual_seed(0)
    gen, disc = build_gan("dcgan", (1, 28, 28), 16, 8, disc_norm=False)
    params, buffers = dict(disc.named_parameters()), dict(disc.named_buffers())
    g = torch.Generator().manual_seed(1)
    batch = {
        "x": torch.rand(8, 1, 28, 28, generator=g),
        "fake": torch.rand(8, 1, 28, 28, generator=g) * 2 - 1,
    }
    return gen, disc, params, buffers, batch


def test_r1_on_a_subset_is_the_penalty_of_those_images_and_is_logged():
    gen, disc, params, buffers, batch = _disc_batch()
    plain, _ = G.make_gan_loss(gen, disc).disc_loss(params, buffers, batch)
    full, aux = G.make_gan_loss(gen, disc, r1_gamma=4.0).disc_loss(params, buffers, batch)
    part, aux_part = G.make_gan_loss(gen, disc, r1_gamma=4.0, r1_batch=3).disc_loss(params, buffers, batch)
    r1_full = G.r1_penalty(lambda x: disc(x), G.to_signed(batch["x"]))
    r1_part = G.r1_penalty(lambda x: disc(x), G.to_signed(batch["x"][:3]))
    torch.testing.assert_close(full, plain + 2.0 * r1_full)
    torch.testing.assert_close(part, plain + 2.0 * r1_part)
    torch.testing.assert_close(aux.metrics["r1"], r1_full.detach())
    assert aux_part.metrics["d_loss"].item() == pytest.approx(part.item())


def test_conditional_networks_use_the_label_and_the_projection_is_an_inner_product():
    torch.manual_seed(0)
    gen, disc = build_gan("dcgan", (1, 28, 28), 16, 8, disc_norm=False, classes=10)
    z = torch.randn(4, 16)
    gen.eval()  # BatchNorm on running statistics: each image on its own
    a, b = gen(z, torch.tensor([0, 0, 0, 0])), gen(z, torch.tensor([0, 3, 0, 7]))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])  # the label changes only its own image
    assert gen.net[0].in_channels == 32 and gen.embed.weight.shape == (10, 16)  # reads [z, embed(y)]
    x, y = torch.rand(4, 1, 28, 28) * 2 - 1, torch.tensor([1, 2, 3, 4])
    h = disc.net[:-1](x)  # (4, 2W, 7, 7): what the last layer reads
    assert disc.embed.weight.shape == (10, 16)  # one weight per channel and class
    projection = (disc.embed.weight[y] * h.sum((2, 3))).sum(1)
    expected = disc.net[-1](h).flatten(1)[:, 0] + projection
    torch.testing.assert_close(disc(x, y), expected)
    with torch.no_grad():
        disc.embed.weight.zero_()
    plain = build_gan("dcgan", (1, 28, 28), 16, 8, disc_norm=False)[1]
    plain.load_state_dict({k: v for k, v in disc.state_dict().items() if not k.startswith("embed")})
    torch.testing.assert_close(disc(x, y), plain(x))  # a zero projection: the unconditional critic


def test_mode_seeking_term_matches_its_pairwise_definition_and_punishes_a_generator_ignoring_z():
    from losses.gan import mode_seeking

    torch.manual_seed(0)
    fake, z, y = torch.randn(6, 1, 3, 3), torch.randn(6, 5), torch.tensor([0, 1, 0, 2, 1, 0])
    ratios = [
        (fake[i] - fake[j]).abs().mean() / (z[i] - z[j]).abs().mean()
        for i in range(6)
        for j in range(6)
        if i != j and y[i] == y[j]
    ]
    expected = 1 / (torch.stack(ratios).mean() + 1e-5)
    torch.testing.assert_close(mode_seeking(fake, z, y), expected)
    every_pair = [
        (fake[i] - fake[j]).abs().mean() / (z[i] - z[j]).abs().mean()
        for i in range(6)
        for j in range(6)
        if i != j
    ]
    torch.testing.assert_close(mode_seeking(fake, z), 1 / (torch.stack(every_pair).mean() + 1e-5))
    x = fake.double().requires_grad_(True)  # the generator learns through it: its gradient, too
    (grad,) = torch.autograd.grad(mode_seeking(x, z.double(), y), x)
    (pairwise,) = torch.autograd.grad(1 / (torch.stack([
        (x[i] - x[j]).abs().mean() / (z[i] - z[j]).abs().mean()
        for i in range(6) for j in range(6) if i != j and y[i] == y[j]
    ]).mean() + 1e-5), x)  # fmt: skip
    torch.testing.assert_close(grad, pairwise, rtol=1e-4, atol=1e-6)  # the term computes in float32
    per_label = fake[y]  # one image per label, whatever z: the collapse the term is for
    assert mode_seeking(per_label, z, y) > 1e4 * mode_seeking(fake, z, y)
    assert mode_seeking(fake, z, torch.arange(6)) == 0  # no two images share a label: nothing to compare


def test_conditional_r1_gan_step_donates_bitwise_and_labels_reach_both_players():
    torch.manual_seed(0)
    gen, disc = build_gan("dcgan", (1, 28, 28), 16, 8, disc_norm=False, classes=10)
    gan = G.make_gan_loss(gen, disc, "relativistic", r1_gamma=1.0, r1_batch=4)
    g_opt, d_opt = engine.adam(2e-4, b1=0.0, b2=0.99), engine.adam(4e-4, b1=0.0, b2=0.99)
    state = engine.init_gan_state(gen, disc, g_opt, d_opt)
    g = torch.Generator().manual_seed(0)
    batches = [
        {"x": torch.rand(16, 1, 28, 28, generator=g), "y": torch.randint(10, (16,), generator=g),
         "z": torch.randn(16, 16, generator=g)}
        for _ in range(3)
    ]  # fmt: skip
    plain = engine.make_gan_step(*gan, g_opt, d_opt, engine.StepOptions(compile=False), n_disc=2)
    donated = engine.make_gan_step(
        *gan, g_opt, d_opt, engine.StepOptions(compile=False, donate=True), n_disc=2
    )
    a, b = state, engine.clone_state(state)
    for batch in batches:
        a, metrics = plain(a, batch)
        b, _ = donated(b, batch)
    fa, fb = flatten_state(a), flatten_state(b)
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert {"d_r1", "d_loss", "g_loss"} <= metrics.keys() and float(metrics["d_r1"]) > 0
    for player in (a.gen, a.disc):  # the label embeddings were trained by both players' updates
        assert not torch.equal(
            player.params["embed.weight"],
            getattr(state, "gen" if player is a.gen else "disc").params["embed.weight"],
        )


def test_class_coverage_against_hand_computed_kl():
    real = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    predicted = torch.tensor([0] * 6 + [1] * 4)  # shares 0.6, 0.4, 0 against 0.5, 0.3, 0.2
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    cov = class_coverage(logits, real, classes=3)
    assert cov["class_kl"] == pytest.approx(0.6 * math.log(0.6 / 0.5) + 0.4 * math.log(0.4 / 0.3), rel=1e-12)
    assert cov["rarest_class"] == 2 and cov["rarest_share"] == 0.0
    assert cov["class_shares"] == pytest.approx([0.6, 0.4, 0.0]) and cov["real_shares"] == pytest.approx(
        [0.5, 0.3, 0.2]
    )
    same = class_coverage(torch.nn.functional.one_hot(real, 3).float(), real, classes=3)
    assert same["class_kl"] == 0.0
    assert label_agreement(logits, torch.tensor([0] * 6 + [1] * 2 + [2] * 2)) == pytest.approx(0.8)
    assert sample_labels(12, 10, "cpu").tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    levels = swd.laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16, 8]
    image = levels[-1]
    for band in reversed(levels[:-1]):  # collapse: upsample the coarser image, add the band
        image = band + torch.nn.functional.interpolate(
            image, size=band.shape[-2:], mode="bilinear", align_corners=False
        )
    torch.testing.assert_close(image, x)


def test_sliced_wasserstein_in_one_dimension_is_the_sorted_difference():
    """In 1-D every unit direction is +-1, so SWD is the exact W1 between the two samples."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 1, generator=g), torch.randn(500, 1, generator=g) + 0.7
    exact = float((a[:, 0].sort().values - b[:, 0].sort().values).abs().mean())
    assert swd.sliced_wasserstein(a, b, g) == pytest.approx(exact, rel=1e-6)


def test_multiscale_swd_is_zero_for_equal_sets_and_grows_with_the_difference():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(16, 3, 32, 32, generator=g)
    assert swd.multiscale_swd(real, real.clone())["swd"] == pytest.approx(0.0, abs=1e-9)
    noisy = (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    noisier = (real + 0.4 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    a, b = swd.multiscale_swd(real, noisy), swd.multiscale_swd(real, noisier)
    assert set(a) == {"swd_32px", "swd_16px", "swd_8px", "swd"}
    assert 0 < a["swd"] < b["swd"] and a["swd_32px"] < b["swd_32px"]


def test_held_out_split_is_a_fixed_disjoint_tenth():
    data = Dataset(
        torch.arange(25, dtype=torch.uint8).view(25, 1, 1, 1).expand(25, 1, 2, 2).clone(),
        torch.zeros(25, dtype=torch.long),
    )
    train, test = held_out_split(data)
    seen = lambda d: set(d.images[:, 0, 0, 0].tolist())  # noqa: E731
    assert len(test.images) == 2 and len(train.images) == 23
    assert seen(train) | seen(test) == set(range(25)) and not seen(train) & seen(test)
    assert seen(held_out_split(data)[1]) == seen(test)
    one = Dataset(data.images[:1], data.labels[:1])
    assert held_out_split(one)[0] is one


def test_fit_probes_every_n_steps_and_a_resume_keeps_the_clock(tmp_path):
    model = nn.Linear(4, 1)
    opt = engine.sgd(0.1)

    def loss_fn(p, b, batch):
        out, _ = engine.call_module(model, p, b, batch["x"].flatten(1))
        return out.square().mean(), engine.Aux({}, b)

    data = Dataset(torch.randint(0, 255, (64, 1, 2, 2), dtype=torch.uint8), torch.zeros(64, dtype=torch.long))
    calls = []

    def probe(state):
        calls.append(int(state.step))
        return {"norm": float(state.params["weight"].norm())}

    def run(max_steps):
        state, history = engine.init_state(model, opt), []
        loader = Loader(data, 8, 0)
        if max_steps > 5:  # continue from the checkpoint the first call wrote
            from harness.rundir import resume_state

            state, history = resume_state(tmp_path, state, loader, {}, ())
        opts = LoopOptions(epochs=2, max_steps=max_steps, log_every=1, probe_every=2, progress=False)
        step = engine.make_train_step(
            lambda p, b, batch: loss_fn(p, b, {"x": batch["x"].flatten(1)}),
            opt,
            engine.StepOptions(compile=False),
        )
        return fit(step, state, loader, tmp_path, opts, probe=probe, history=history)

    run(5)
    run(12)
    records = [json.loads(line) for line in (tmp_path / "probes.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12] and calls == [2, 4, 6, 8, 10, 12]
    assert [r["images"] for r in records] == [16, 32, 48, 64, 80, 96]
    walls = [r["wall_s"] for r in records]
    assert walls == sorted(walls) and walls[-1] > walls[0] >= 0  # the resumed run counts on from 5 steps in


def test_photo_crops_come_from_matplotlibs_photographs_deterministically(tmp_path, data_root):
    from experiments.photo_crops import random_crops, sample_photos
    from tests.conftest import run_cli

    photos = sample_photos()
    assert [tuple(p.shape) for p in photos] == [(3, 600, 512), (3, 128, 128)]  # RGB, >= 2x a 64 px crop
    a, b, c = random_crops(photos, 6, 32, 0), random_crops(photos, 6, 32, 0), random_crops(photos, 6, 32, 1)
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c) and a.float().std() > 10  # real pictures, not flat
    out = tmp_path / "crops"
    run_cli("experiments.photo_crops", [out, "--count", "5", "--size", "16"], data_root)
    assert sorted(p.name for p in out.iterdir()) == [f"crop-{i:05d}.png" for i in range(5)]
    proc = run_cli("experiments.photo_crops", [out], data_root, expect=2)  # never over an existing folder
    assert "not empty" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _lazy_setup(reg_every):
    torch.manual_seed(0)
    gen, disc = build_gan("dcgan", (1, 28, 28), 16, 8, disc_norm=False)
    gan = G.make_gan_loss(gen, disc, r1_gamma=2.0, r1_batch=4)
    g_opt, d_opt = engine.adam(2e-4, b1=0.5), engine.adam(2e-4, b1=0.5)
    state = engine.init_gan_state(gen, disc, g_opt, d_opt)
    options = engine.StepOptions(compile=False, donate=True)
    return gan, g_opt, d_opt, state, options


def _lazy_batches(n):
    g = torch.Generator().manual_seed(3)
    return [
        {"x": torch.rand(8, 1, 28, 28, generator=g), "z": torch.randn(8, 16, generator=g)} for _ in range(n)
    ]


def test_the_lazy_r1_loss_weights_the_penalty_by_the_interval_and_skips_it_at_zero():
    gen, disc, params, buffers, batch = _disc_batch()
    loss = G.make_gan_loss(gen, disc, r1_gamma=4.0, r1_batch=3).disc_loss
    plain, _ = G.make_gan_loss(gen, disc).disc_loss(params, buffers, batch)
    r1 = G.r1_penalty(lambda x: disc(x), G.to_signed(batch["x"][:3]))
    every, aux = loss(params, buffers, {**batch, "regularize": 16})
    torch.testing.assert_close(every, plain + 16 * 2.0 * r1)
    torch.testing.assert_close(aux.metrics["r1"], r1.detach())
    skipped, aux = loss(params, buffers, {**batch, "regularize": 0})
    assert torch.equal(skipped, plain) and torch.isnan(aux.metrics["r1"])


def test_lazy_r1_steps_are_the_penalised_and_plain_steps_in_turn_and_resume_on_the_same_schedule():
    gan, g_opt, d_opt, state, options = _lazy_setup(4)
    lazy = engine.make_gan_step(*gan, g_opt, d_opt, options, reg_every=4)

    def fixed(k):  # the reference: a step whose discriminator always sees regularize=k
        d_loss = lambda p, b, batch: gan.disc_loss(p, b, {**batch, "regularize": k})  # noqa: E731
        return engine.make_gan_step(gan.generate, d_loss, gan.gen_loss, g_opt, d_opt, options)

    with_r1, without = fixed(4), fixed(0)
    a, b = state, engine.clone_state(state)
    for t, batch in enumerate(_lazy_batches(9)):
        a, metrics = lazy(a, batch)
        b, _ = (with_r1 if t % 4 == 0 else without)(b, batch)
        assert torch.isfinite(metrics["d_r1"]) == (t % 4 == 0)
        assert _equal(a, b), f"step {t}"
    # a resumed run builds its step anew and picks the schedule up from state.step (here 5: plain)
    _, _, _, c, _ = _lazy_setup(4)
    first = engine.make_gan_step(*gan, g_opt, d_opt, options, reg_every=4)
    batches = _lazy_batches(9)
    for batch in batches[:5]:
        c, _ = first(c, batch)
    again = engine.make_gan_step(*gan, g_opt, d_opt, options, reg_every=4)
    for batch in batches[5:]:
        c, _ = again(engine.clone_state(c), batch)  # a state it has not seen: read its step each time
    assert _equal(a, c)


def _equal(a, b):
    fa, fb = flatten_state(a), flatten_state(b)
    return fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def test_a_channels_last_gan_state_loads_back_channels_last(tmp_path):
    torch.manual_seed(0)
    gen, disc = (m.to(memory_format=torch.channels_last) for m in build_gan("dcgan", (1, 28, 28), 16, 8))
    g_opt, d_opt = engine.adam(2e-4), engine.adam(2e-4)
    state = engine.init_gan_state(gen, disc, g_opt, d_opt)
    weight = "net.2.weight"  # (2W, W, 4, 4): a conv of the discriminator
    assert state.disc.params[weight].is_contiguous(memory_format=torch.channels_last)
    engine.save_checkpoint(tmp_path / "c.safetensors", state)
    loaded, _, _ = engine.load_checkpoint(tmp_path / "c.safetensors", state)
    assert _equal(loaded, state)
    for t in (loaded.disc.params[weight], loaded.disc.opt["mu"][weight], loaded.ema["net.0.weight"]):
        assert t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_the_auxiliary_classifier_loss_is_the_cross_entropy_of_the_discriminators_class_head():
    torch.manual_seed(0)
    gen, disc = build_gan("dcgan", (1, 28, 28), 16, 8, disc_norm=False, classes=10, classify=True)
    d_params, d_buffers = dict(disc.named_parameters()), dict(disc.named_buffers())
    g = torch.Generator().manual_seed(2)
    x, y, z = torch.rand(6, 1, 28, 28, generator=g), torch.arange(6) % 10, torch.randn(6, 16, generator=g)
    fake = torch.rand(6, 1, 28, 28, generator=g) * 2 - 1
    d_batch = {"x": x, "y": y, "fake": fake}
    plain, ac = G.make_gan_loss(gen, disc), G.make_gan_loss(gen, disc, class_weight=0.5)
    h = disc.net[:-1](G.to_signed(x))  # the features both heads read
    real_ce = torch.nn.functional.cross_entropy(disc.classifier(h.flatten(1)), y)
    ours, aux = ac.disc_loss(d_params, d_buffers, d_batch)
    torch.testing.assert_close(ours, plain.disc_loss(d_params, d_buffers, d_batch)[0] + 0.5 * real_ce)
    torch.testing.assert_close(aux.metrics["class_ce"], real_ce.detach())
    g_batch = {"z": z, "y": y, "x": x, "disc_params": d_params, "disc_buffers": d_buffers}
    images = gen(z, y)
    fake_ce = torch.nn.functional.cross_entropy(disc(images, y, classify=True)[1], y)
    ours, aux = ac.gen_loss(images, g_batch)
    torch.testing.assert_close(ours, plain.gen_loss(images, g_batch)[0] + 0.5 * fake_ce)
    torch.testing.assert_close(aux.metrics["class_ce"], fake_ce.detach())
    for weight in (0.0, 0.2):  # the generator's own weight; D's loss keeps class_weight's
        own = G.make_gan_loss(gen, disc, class_weight=0.5, gen_class_weight=weight)
        expected = plain.gen_loss(images, g_batch)[0] + weight * fake_ce
        torch.testing.assert_close(own.gen_loss(images, g_batch)[0], expected)
        torch.testing.assert_close(
            own.disc_loss(d_params, d_buffers, d_batch)[0], ac.disc_loss(d_params, d_buffers, d_batch)[0]
        )
    # the head is trained by D's update on real images, and moves G towards the asked-for class
    grads = torch.func.grad(lambda p: ac.disc_loss(p, d_buffers, d_batch)[0])(d_params)
    assert grads["classifier.weight"].abs().sum() > 0


def test_a_conditional_generators_scores_carry_its_label_agreement(data_root):
    from evaluation.fidelity import RealReference
    from evaluation.sampling import Sampler
    from harness import load_mnist, to_unit

    test = load_mnist(data_root, "test")

    def drawing(shift):  # "draws" the first test image of class y + shift, whatever z
        return lambda params, buffers, z, y: (digits[(y + shift) % 10], buffers)

    reference = RealReference("mnist", test, torch.device("cpu"))
    known = reference.logits.argmax(1) == test.labels  # test digits the classifier reads right
    first = torch.tensor([int((known & (test.labels == c)).nonzero()[0]) for c in range(10)])  # one per class
    digits = to_unit(test.images[first]) * 2 - 1  # (10, 1, 28, 28) in [-1, 1]
    params = {"w": torch.zeros(1)}  # a sampler finds its device from its params
    right = reference.score_generator(Sampler(drawing(0), params, {}, 4, 10), 200, 0, recall=False)
    wrong = reference.score_generator(Sampler(drawing(1), params, {}, 4, 10), 200, 0, recall=False)
    assert right["agreement"] == 1.0 and wrong["agreement"] == 0.0
    plain = reference.score_generator(Sampler(lambda p, b, z, y: (digits[:1].expand(len(z), -1, -1, -1), b),
                                              params, {}, 4, 0), 200, 0, recall=False)  # fmt: skip
    assert "agreement" not in plain  # unconditional: nothing was asked for


def test_top_k_keeps_the_best_scored_share_and_the_generator_learns_only_from_those():
    """Sinha et al. (2020): the share falls linearly from 1 to its floor, the weights pick the
    ceil(share * B) highest logits, and G's loss is the non-saturating loss of those images alone
    (against torch.topk), its gradient zero at every image left out."""
    step = torch.tensor([0, 250, 500, 900])
    torch.testing.assert_close(G.top_k_share(step, 0.5, 500), torch.tensor([1.0, 0.75, 0.5, 0.5]))
    scores = torch.tensor([0.3, -2.0, 1.5, 0.9, -0.1])
    assert G.top_k_weights(scores, torch.tensor(0.5)).tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]  # k = 3
    assert G.top_k_weights(scores, torch.tensor(1.0)).tolist() == [1.0] * 5

    gen, disc, params, buffers, batch = _disc_batch()
    fake = batch["fake"].requires_grad_(True)
    g_batch = {"disc_params": params, "disc_buffers": buffers, "step": torch.tensor(1000)}
    loss, _ = G.make_gan_loss(gen, disc, top_k=0.25, top_k_steps=500).gen_loss(fake, g_batch)
    logits = disc(fake)
    kept = logits.topk(2).indices  # a quarter of 8
    torch.testing.assert_close(loss, torch.nn.functional.softplus(-logits[kept]).mean())
    (grad,) = torch.autograd.grad(loss, fake)
    left_out = torch.ones(8, dtype=torch.bool)
    left_out[kept] = False
    assert grad[left_out].abs().max() == 0 and grad[kept].abs().min() > 0
    every, _ = G.make_gan_loss(gen, disc).gen_loss(fake, g_batch)
    early, _ = G.make_gan_loss(gen, disc, top_k=0.25, top_k_steps=500).gen_loss(
        fake, {**g_batch, "step": torch.tensor(0)}
    )
    torch.testing.assert_close(early, every)  # at step 0 the share is 1: every image
    with pytest.raises(ValueError, match="pairs them"):
        G.make_gan_loss(gen, disc, kind="relativistic", top_k=0.5)

"""Loss functions against references computed another way."""

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from losses import bernoulli_nll, elbo, gaussian_kl, reconstruction_loss, squared_error


def _classic_vae_loss(recon_x, x, mu, logvar):
    """pytorch/examples vae/main.py's loss_function, on probabilities, summed over the batch."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def test_elbo_equals_the_classic_example_per_image():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 1, 28, 28, generator=g) * 3
    x = torch.rand(32, 1, 28, 28, generator=g)
    mu, logvar = torch.randn(32, 20, generator=g), torch.randn(32, 20, generator=g)
    loss, metrics = elbo(logits, x, mu, logvar)
    want = _classic_vae_loss(torch.sigmoid(logits).view(32, 784), x, mu, logvar) / 32
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(metrics["neg_elbo"], want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(metrics["recon"] + metrics["kl"], metrics["neg_elbo"])


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    want = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl(mu, logvar), want)
    assert torch.equal(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3, 4))


def test_beta_and_kl_weight_scale_only_the_kl_term():
    g = torch.Generator().manual_seed(2)
    logits, x = torch.randn(8, 1, 28, 28, generator=g), torch.rand(8, 1, 28, 28, generator=g)
    mu, logvar = torch.randn(8, 3, generator=g), torch.zeros(8, 3)
    full, m = elbo(logits, x, mu, logvar, 1.0)
    half, _ = elbo(logits, x, mu, logvar, 0.5)
    # losses are ~550 nats, where one fp32 ulp is 6e-5: compare the difference to a few ulps
    torch.testing.assert_close(full - half, 0.5 * m["kl"], rtol=0, atol=2.5e-4)
    zero, _ = elbo(logits, x, mu, logvar, 0.0)
    torch.testing.assert_close(zero, m["recon"])


def test_reconstruction_errors():
    g = torch.Generator().manual_seed(3)
    logits, x = torch.randn(4, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g)
    p = torch.sigmoid(logits)
    want_bce = F.binary_cross_entropy(p, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), want_bce, rtol=1e-5, atol=1e-3)
    want_mse = F.mse_loss(p, x, reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(squared_error(logits, x), want_mse)
    loss, metrics = reconstruction_loss(logits, x, "mse")
    torch.testing.assert_close(loss, F.mse_loss(p, x))
    assert metrics.keys() == {"bce", "mse"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_stay_finite_for_extreme_low_precision_logits(dtype):
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]]).view(1, 1, 2, 2)
    logits = torch.tensor([[200.0, -200.0, 60000.0, -60000.0]], dtype=dtype).view(1, 1, 2, 2)
    mu = torch.full((1, 2), 100.0, dtype=dtype)
    logvar = torch.full((1, 2), 30.0, dtype=dtype).clamp(-30, 20)
    loss, metrics = elbo(logits, x, mu, logvar)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in metrics.values())
    assert metrics["recon"].item() == pytest.approx(2 * 200 + 2 * 60000, rel=1e-2)  # confidently wrong


# ---- the IWAE bound as a training objective ----------------------------------------------------


def _iwae_setup(k=8, b=3, seed=0):
    from models import build_vae

    torch.manual_seed(seed)
    model = build_vae("mlp", 2)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    x = torch.rand(b, 1, 28, 28).round()  # binary images
    return model, params, x, torch.randn(b, k, 2)


def test_iwae_loss_is_the_iwae_bound_and_its_gradient_is_autograds():
    from evaluation.likelihood import iwae_bound
    from losses import log_importance_weights, make_iwae_loss

    model, params, x, eps = _iwae_setup()
    loss, aux = make_iwae_loss(model)(params, {}, {"x": x, "eps": eps})
    ours = torch.autograd.grad(loss, list(params.values()))
    reference_model = model  # the same weights through the evaluation's route
    for n, p in reference_model.named_parameters():
        p.data.copy_(params[n].detach())
    log_w = log_importance_weights(reference_model, x, eps.transpose(0, 1))  # (B, K)
    with torch.no_grad():  # the same weights from torch.distributions, term by term
        mu, logvar = reference_model.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        z = mu + eps.transpose(0, 1) * q.scale  # (K, B, Z)
        logits = reference_model.decode(z.flatten(0, 1)).view(len(z), *x.shape)
        log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(2).sum(-1)
        by_hand = log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    torch.testing.assert_close(log_w, by_hand.T, rtol=1e-5, atol=1e-3)
    reference = -iwae_bound(log_w).mean()
    expected = torch.autograd.grad(reference, list(reference_model.parameters()))
    torch.testing.assert_close(loss, reference)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert float(aux.metrics["neg_iwae"]) == pytest.approx(float(loss.detach()))
    assert float(aux.metrics["neg_elbo"]) >= float(loss.detach())  # the bound tightens the ELBO (K draws)
    torch.testing.assert_close(aux.metrics["neg_elbo"], aux.metrics["recon"] + aux.metrics["kl"])


def test_dreg_keeps_the_decoder_gradient_and_the_encoder_gradient_in_expectation_with_less_variance():
    from losses import make_iwae_loss

    model, params, x, _ = _iwae_setup(b=1)
    iwae, dreg = make_iwae_loss(model), make_iwae_loss(model, dreg=True)
    names = list(params)
    enc = [i for i, n in enumerate(names) if n.startswith("encoder.")]
    per_draw = {"iwae": [], "dreg": []}
    g = torch.Generator().manual_seed(1)
    for _ in range(400):
        batch = {"x": x, "eps": torch.randn(1, 8, 2, generator=g)}
        grads = {}
        for name, fn in (("iwae", iwae), ("dreg", dreg)):
            loss, _ = fn(params, {}, batch)
            grads[name] = torch.autograd.grad(loss, list(params.values()))
        for i, n in enumerate(names):
            if n.startswith("decoder."):  # the decoder's gradient is the IWAE one, draw for draw
                torch.testing.assert_close(grads["dreg"][i], grads["iwae"][i], rtol=1e-4, atol=1e-4)
        for name in per_draw:
            per_draw[name].append(torch.cat([grads[name][i].flatten() for i in enc]))
    a, b = torch.stack(per_draw["iwae"]), torch.stack(per_draw["dreg"])  # (draws, encoder params)
    se = ((a.var(0) + b.var(0)) / len(a)).sqrt()
    big = a.mean(0).abs() > 4 * se  # the encoder gradients clearly away from zero
    assert big.sum() > 50
    # both estimate the same gradient: their means agree within the Monte Carlo error
    assert ((a.mean(0) - b.mean(0)).abs() <= 4 * se + 1e-6).float().mean() > 0.99
    assert b.var(0).sum() < 0.5 * a.var(0).sum()  # and DReG's is the quieter estimate


def test_resnet_vae_shapes_blocks_and_a_learning_step_on_real_digits(data_root):
    from engine import StepOptions, adam, init_state, make_train_step
    from harness import load_dataset, to_unit
    from losses import make_iwae_loss
    from models import build_vae
    from models.resnet import ResBlock

    torch.manual_seed(0)
    block = ResBlock(4)
    with torch.no_grad():
        block.conv2.weight.zero_(), block.conv2.bias.zero_()
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(block(x), x)  # a zeroed last conv: the identity
    model = build_vae("resnet", 8)
    images = to_unit(load_dataset("mnist", "test", root=data_root).images[:64]).round()
    logits, mu, logvar = model(images, torch.randn(3, 64, 8))  # K=3 draws per image
    assert logits.shape == (3 * 64, 1, 28, 28) and mu.shape == logvar.shape == (64, 8)
    step = make_train_step(make_iwae_loss(model, dreg=True), adam(1e-3), StepOptions(compile=False))
    state, batch = init_state(model, adam(1e-3)), {"x": images, "eps": torch.randn(64, 3, 8)}
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 100  # the bound improves on real digits


# ---- the VampPrior and free bits ---------------------------------------------------------------


def _vamp_setup(k_pseudo=7, z=3, b=5, seed=0):
    from models import build_vae

    torch.manual_seed(seed)
    model = build_vae("mlp", z, prior="vamp", pseudo_inputs=k_pseudo)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    return model, params, torch.rand(b, 1, 28, 28).round()


def _vamp_reference(model, z):
    """log p(z) of the VampPrior from torch.distributions: a K-component Gaussian mixture."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily

    with torch.no_grad():
        mu, logvar = model.encode(torch.sigmoid(model.pseudo_logits))  # (K, Z)
        k = len(mu)
        components = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
        return MixtureSameFamily(Categorical(logits=torch.zeros(k)), components).log_prob(z)


def test_vamp_prior_is_the_mixture_of_the_pseudo_inputs_posteriors():
    model, _, _ = _vamp_setup()
    z = torch.randn(4, 6, 3)  # any leading shape
    torch.testing.assert_close(model.log_prior(z), _vamp_reference(model, z), rtol=1e-5, atol=1e-5)
    assert "pseudo_logits" in dict(model.named_parameters())  # learned with the rest
    draws = model.sample_prior(4000, torch.Generator().manual_seed(0))
    # draws come from the mixture: their mean is the mixture's mean (the components' average mean)
    with torch.no_grad():
        mu, logvar = model.encode(torch.sigmoid(model.pseudo_logits))
    spread = (mu.var(0) + logvar.exp().mean(0)).sqrt()
    assert ((draws.mean(0) - mu.mean(0)).abs() < 4 * spread / 4000**0.5).all()


def test_vamp_elbo_uses_the_one_draw_kl_and_trains_the_pseudo_inputs():
    from losses import make_elbo_loss

    model, params, x = _vamp_setup()
    eps = torch.randn(len(x), 3)
    loss, aux = make_elbo_loss(model)(params, {}, {"x": x, "eps": eps, "step": torch.tensor(0)})
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n].detach())
        mu, logvar = model.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        z = mu + eps * q.scale
        kl = q.log_prob(z).sum(-1) - _vamp_reference(model, z)  # log q(z|x) - log p(z), per image
        log_px = torch.distributions.Bernoulli(logits=model.decode(z)).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(aux.metrics["kl"], kl.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(loss, (kl - log_px).mean(), rtol=1e-5, atol=1e-3)
    grad = torch.autograd.grad(loss, params["pseudo_logits"])[0]
    assert grad.abs().sum() > 0  # the pseudo-inputs learn through the prior


def test_vamp_importance_weights_use_the_mixture_prior():
    from losses import log_importance_weights

    model, _, x = _vamp_setup()
    eps = torch.randn(4, len(x), 3)  # K=4 draws per image
    with torch.no_grad():
        log_w = log_importance_weights(model, x, eps)  # (B, K)
        mu, logvar = model.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        z = mu + eps * q.scale
        log_px = torch.distributions.Bernoulli(logits=model.decode(z.flatten(0, 1)).view(4, *x.shape))
        by_hand = log_px.log_prob(x).flatten(2).sum(-1) + _vamp_reference(model, z) - q.log_prob(z).sum(-1)
    torch.testing.assert_close(log_w, by_hand.T, rtol=1e-5, atol=1e-3)


def test_vamp_refuses_dreg_and_free_bits():
    from losses import make_elbo_loss, make_iwae_loss

    model, _, _ = _vamp_setup()
    with pytest.raises(ValueError, match="DReG"):
        make_iwae_loss(model, dreg=True)
    with pytest.raises(ValueError, match="free bits"):
        make_elbo_loss(model, free_bits=0.5)


def test_free_bits_floor_each_dimensions_batch_mean_kl_and_report_the_true_elbo():
    g = torch.Generator().manual_seed(4)
    logits, x = torch.randn(16, 1, 28, 28, generator=g), torch.rand(16, 1, 28, 28, generator=g).round()
    mu = torch.cat([torch.randn(16, 2, generator=g) * 2, 0.01 * torch.randn(16, 2, generator=g)], 1)
    logvar = torch.cat([torch.full((16, 2), -2.0), torch.zeros(16, 2)], 1).requires_grad_()
    plain, m = elbo(logits, x, mu, logvar)
    floored, m_fb = elbo(logits, x, mu, logvar, free_bits=0.5)
    per_dim = gaussian_kl(mu, logvar).mean(0)  # dims 0, 1 well above 0.5 nats; 2, 3 near 0
    assert (per_dim[:2] > 0.5).all() and (per_dim[2:] < 0.01).all()
    torch.testing.assert_close(floored, m["recon"] + per_dim[:2].sum() + 1.0)  # two dims floored at 0.5
    torch.testing.assert_close(m_fb["neg_elbo"], m["neg_elbo"])  # what is reported stays the ELBO
    grad = torch.autograd.grad(floored, logvar)[0]
    assert (grad[:, 2:] == 0).all() and (grad[:, :2] != 0).all()  # a floored dimension feels no KL pull
    assert torch.isfinite(plain)

"""The two-layer VAE (z2 -> z1 -> x): its bounds against torch.distributions, term by term."""

import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from losses import log_importance_weights, make_hierarchical_loss
from models import build_vae

Z = 3


def _setup(prior="normal", arch="mlp", b=5, seed=0):
    torch.manual_seed(seed)
    model = build_vae(arch, Z, prior=prior, pseudo_inputs=7, layers=2)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    return model, params, torch.rand(b, 1, 28, 28).round()


def _reference(model, x, eps):
    """Each term of log w from torch.distributions, the draws built from eps (..., B, 2Z) by hand."""
    with torch.no_grad():
        e1, e2 = eps[..., :Z], eps[..., Z:]
        mu2, logvar2 = model.encoder2(x).chunk(2, -1)
        q2 = Normal(mu2, (0.5 * logvar2).exp())
        z2 = mu2 + e2 * q2.scale
        h = model.encoder1(x).relu().expand(*z2.shape[:-1], -1)
        mu1, logvar1 = model.join1(torch.cat([h, z2], -1)).chunk(2, -1)
        q1 = Normal(mu1, (0.5 * logvar1).exp())
        z1 = mu1 + e1 * q1.scale
        pm, plv = model.prior1(z2).chunk(2, -1)
        p1 = Normal(pm, (0.5 * plv).exp())
        if model.pseudo_logits is None:
            log_p2 = Normal(0.0, 1.0).log_prob(z2).sum(-1)
        else:
            m, lv = model.encoder2(torch.sigmoid(model.pseudo_logits)).chunk(2, -1)
            mix = MixtureSameFamily(
                Categorical(logits=torch.zeros(len(m))), Independent(Normal(m, (0.5 * lv).exp()), 1)
            )
            log_p2 = mix.log_prob(z2)
        logits = model.decoder(torch.cat([z1, z2], -1).flatten(0, -2)).view(*z1.shape[:-1], *x.shape[1:])
        return {
            "log_px": Bernoulli(logits=logits).log_prob(x.expand_as(logits)).flatten(-3).sum(-1),
            "log_p1": p1.log_prob(z1).sum(-1),
            "log_p2": log_p2,
            "log_q1": q1.log_prob(z1).sum(-1),
            "log_q2": q2.log_prob(z2).sum(-1),
            "kl1": kl_divergence(q1, p1).sum(-1),
            "kl2": kl_divergence(q2, Normal(0.0, 1.0)).sum(-1),
        }


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_importance_weights_are_the_sum_of_the_five_terms(prior):
    from losses.hierarchical import layer_terms

    model, _, x = _setup(prior)
    eps = torch.randn(4, len(x), 2 * Z)  # K=4 draws of [eps1, eps2] per image
    ref = _reference(model, x, eps)
    with torch.no_grad():
        terms = layer_terms(model(x, eps), x, eps)
        log_w = log_importance_weights(model, x, eps)  # (B, K): what the NLL evaluation streams
    for name, value in terms.items():
        torch.testing.assert_close(value, ref[name], rtol=1e-5, atol=1e-4, msg=name)
    by_hand = ref["log_px"] + ref["log_p1"] + ref["log_p2"] - ref["log_q1"] - ref["log_q2"]
    torch.testing.assert_close(log_w, by_hand.T, rtol=1e-5, atol=1e-3)
    # the prior over codes [z1, z2] that sampling and the explorer use is the same p(z1|z2) p(z2)
    z = torch.cat([_z(model, x, eps)], -1)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prior(z), ref["log_p1"] + ref["log_p2"], rtol=1e-5, atol=1e-4)


def _z(model, x, eps):
    with torch.no_grad():
        out = model(x, eps)
    return torch.cat([out["z1"], out["z2"]], -1)


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_elbo_is_reconstruction_plus_each_layers_kl_and_trains_every_part(prior):
    model, params, x = _setup(prior)
    eps = torch.randn(len(x), 2 * Z)
    loss, aux = make_hierarchical_loss(model)(params, {}, {"x": x, "eps": eps, "step": torch.tensor(0)})
    ref = _reference(model, x, eps)
    kl2 = ref["kl2"] if prior == "normal" else ref["log_q2"] - ref["log_p2"]  # the VampPrior: one draw
    m = aux.metrics
    torch.testing.assert_close(m["kl1"], ref["kl1"].mean(), rtol=1e-5, atol=1e-4)  # closed form at z2
    torch.testing.assert_close(m["kl2"], kl2.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(m["recon"], -ref["log_px"].mean(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(loss, m["neg_elbo"])
    torch.testing.assert_close(m["neg_elbo"], m["recon"] + m["kl1"] + m["kl2"])
    # the closed-form KL1 is the one-draw estimate's expectation: equal on average over z1
    grads = torch.autograd.grad(loss, list(params.values()))
    for name, grad in zip(params, grads, strict=True):
        assert grad.abs().sum() > 0, f"{name} gets no gradient"


def test_iwae_loss_is_the_bound_of_the_importance_weights_and_k1_is_the_one_draw_elbo():
    from evaluation.likelihood import iwae_bound

    model, params, x = _setup("vamp")
    eps = torch.randn(len(x), 6, 2 * Z)  # (B, K, 2Z), as the loader draws it
    loss, aux = make_hierarchical_loss(model, "iwae")(params, {}, {"x": x, "eps": eps})
    with torch.no_grad():
        log_w = log_importance_weights(model, x, eps.transpose(0, 1))
    torch.testing.assert_close(loss.detach(), -iwae_bound(log_w).mean(), rtol=1e-5, atol=1e-4)
    assert float(aux.metrics["neg_elbo"]) >= float(loss.detach())  # K=6 tightens the bound on average here
    one, _ = make_hierarchical_loss(model, "iwae")(params, {}, {"x": x, "eps": eps[:, :1]})
    ref = _reference(model, x, eps[:, 0])
    torch.testing.assert_close(
        one,
        -(ref["log_px"] + ref["log_p1"] + ref["log_p2"] - ref["log_q1"] - ref["log_q2"]).mean(),
        rtol=1e-5,
        atol=1e-3,
    )


def test_free_bits_floor_each_layers_kl_and_kl_warmup_ramps_it():
    model, params, x = _setup()
    eps = torch.randn(len(x), 2 * Z)
    batch = {"x": x, "eps": eps, "step": torch.tensor(0)}
    plain, aux = make_hierarchical_loss(model)(params, {}, batch)
    m = aux.metrics
    floor = float(max(m["kl1"], m["kl2"])) / Z + 1.0  # above both layers' KL per unit
    floored, aux_fb = make_hierarchical_loss(model, free_bits=floor)(params, {}, batch)
    torch.testing.assert_close(floored, m["recon"] + 2 * floor * Z)  # both layers count as their floor
    torch.testing.assert_close(aux_fb.metrics["neg_elbo"], m["neg_elbo"])  # reported: the true ELBO
    prior1 = [p for n, p in params.items() if n.startswith("prior1.")]  # reached by the KL only
    assert all((g == 0).all() for g in torch.autograd.grad(floored, prior1))  # no KL pull below the floor
    assert all((g != 0).any() for g in torch.autograd.grad(plain, prior1))
    half = make_hierarchical_loss(model, kl_warmup_steps=10)(params, {}, {**batch, "step": torch.tensor(5)})[
        0
    ]
    torch.testing.assert_close(half, m["recon"] + 0.5 * m["kl"])


def test_samples_with_z2_held_fixed_vary_only_in_z1_and_come_from_p_z1_given_z2():
    model, _, _ = _setup("vamp", arch="conv")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = model.sample_prior(3, g)
        top = z[:1, Z:].expand(4000, -1)
        again = model.sample_prior(4000, g, z2=top)
        mu1, logvar1 = model.p1(top[:1])
    assert torch.equal(again[:, Z:], top)
    spread = (0.5 * logvar1).exp()
    assert ((again[:, :Z].mean(0) - mu1[0]).abs() < 4 * spread[0] / 4000**0.5).all()
    torch.testing.assert_close(again[:, :Z].std(0), spread[0], rtol=0.1, atol=0)
    assert model.decode(z).shape == (3, 1, 28, 28) and model.encode(torch.rand(2, 1, 28, 28))[0].shape == (
        2,
        2 * Z,
    )


def test_layers_flag_validation():
    from experiments.vae import VAEConfig

    with pytest.raises(ValueError, match="layers must be 1 or 2"):
        build_vae("mlp", 2, layers=3)
    assert VAEConfig(layers=2, prior="vamp", free_bits=0.1).tag() == "conv-l2-z20-vamp500-fb0.1"
    with pytest.raises(Exception, match="--dreg is for --layers 1"):
        VAEConfig(layers=2, objective="iwae", k=2, dreg=True)


def test_two_layer_run_learns_and_is_scored_and_shown_layer_by_layer(data_root, tmp_path):
    import json

    from safetensors.torch import load_file

    from tests.conftest import run_cli

    args = ["--no-compile", "--no-progress", "--batch-size", "256", "--arch", "mlp", "--latent-dim", "4"]
    args += ["--layers", "2", "--prior", "vamp", "--pseudo-inputs", "20", "--kl-warmup", "20"]
    args += ["--free-bits", "0.05", "--val-split", "50000"]  # 10,000 training images: short epochs
    straight = tmp_path / "run"  # resuming is the harness's, tested on the one-layer VAE
    run_cli("experiments.vae", [*args, "--epochs", "2", "--run-dir", straight], data_root)
    assert {"prior1.0.weight", "join1.0.weight", "pseudo_logits"} <= load_file(
        str(straight / "model.safetensors")
    ).keys()
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_neg_elbo"] < records[0]["val_neg_elbo"] < 300
    assert records[-1]["val_kl1"] > 0 and records[-1]["val_kl2"] > 0  # each layer's KL, logged
    proc = run_cli("experiments.evaluate", [straight, "--iwae-k", "50", "--iwae-images", "200"], data_root)
    scored, final = (json.loads((straight / f).read_text()) for f in ("eval.json", "final.json"))
    # the evaluation's one-draw ELBO is the training's hierarchy, not a one-layer bound
    assert scored["neg_elbo"] == pytest.approx(final["neg_elbo"], abs=0.5)
    assert sum(scored["kl_per_layer"]) == pytest.approx(scored["kl"], rel=1e-4)
    assert len(scored["active_units_per_layer"]) == 2 and scored["active_units_per_layer"][1] >= 1
    assert scored["nll"] < scored["neg_elbo"] and "NLL" in proc.stdout
    report = (straight / "report.md").read_text()
    assert "two stochastic layers" in report and "![layer_samples.png]" in report
    assert (straight / "layer_codes.png").stat().st_size > 1000
    assert "Each layer" in (straight / "explore.html").read_text()

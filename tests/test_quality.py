"""Quality metrics against closed forms and planted answers: FID, Inception Score, precision/recall, kNN."""

import math

import pytest
import torch

from evaluation.quality import (
    frechet_distance,
    frechet_from_stats,
    gaussian_stats,
    inception_score,
    nearest_neighbours,
    precision_recall,
)
from evaluation.sampling import Sampler, rejection_sample, sample_images


def _feats(n=2000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) / 4  # correlated


def test_fid_of_a_set_with_itself_is_zero():
    x = _feats()
    scale = 2 * gaussian_stats(x)[1].trace().item()
    assert abs(frechet_distance(x, x)) <= 1e-6 * scale
    assert abs(frechet_distance(x, x[torch.randperm(len(x))])) <= 1e-6 * scale


def test_fid_of_a_shifted_set_is_the_squared_shift_and_grows_with_it():
    x = _feats()
    offsets = [0.1, 0.5, 1.0, 2.0, 4.0]
    fids = [frechet_distance(x, x + c) for c in offsets]
    assert all(a < b for a, b in zip(fids, fids[1:]))
    # Shifting keeps the covariance, so only the mean term remains: ||c * 1||^2 = c^2 d.
    assert fids == pytest.approx([c * c * x.shape[1] for c in offsets], rel=1e-6)


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    mu_a, mu_b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    exact = ((mu_a - mu_b) ** 2).sum() + (var_a + var_b - 2 * (var_a * var_b).sqrt()).sum()
    fid = frechet_from_stats(mu_a, torch.diag(var_a), mu_b, torch.diag(var_b))
    assert fid == pytest.approx(exact.item(), rel=1e-12)
    g = torch.Generator().manual_seed(1)
    a = mu_a + var_a.sqrt() * torch.randn(200_000, 3, generator=g)
    b = mu_b + var_b.sqrt() * torch.randn(200_000, 3, generator=g)
    assert frechet_distance(a, b) == pytest.approx(exact.item(), rel=0.02)


def test_fid_cross_term_matches_the_eigenvalues_of_the_covariance_product():
    # tr((Sa^1/2 Sb Sa^1/2)^1/2) = sum sqrt(eig(Sa Sb)); an independent route for non-commuting Sa, Sb.
    sa, sb = gaussian_stats(_feats(seed=2))[1], gaussian_stats(_feats(seed=3))[1]
    zero = torch.zeros(len(sa), dtype=torch.float64)
    cross = torch.linalg.eigvals(sa @ sb).real.clamp(min=0).sqrt().sum()
    expected = (sa.trace() + sb.trace() - 2 * cross).item()
    assert frechet_from_stats(zero, sa, zero, sb) == pytest.approx(expected, rel=1e-8)


def test_inception_score_of_confident_spread_predictions_is_the_number_of_classes():
    labels = torch.arange(1000) % 10
    logits = 50.0 * torch.nn.functional.one_hot(labels, 10).float()
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


def test_inception_score_of_a_constant_prediction_is_one():
    logits = torch.randn(1, 10).expand(500, 10)
    assert inception_score(logits, splits=5) == pytest.approx((1.0, 0.0), abs=1e-9)
    confident_one_class = torch.zeros(500, 10)
    confident_one_class[:, 3] = 100.0
    assert inception_score(confident_one_class)[0] == pytest.approx(1.0, abs=1e-9)


def test_inception_score_lies_between_one_and_the_number_of_classes():
    mean, _ = inception_score(torch.randn(2000, 10, generator=torch.Generator().manual_seed(0)))
    assert 1.0 < mean < 10.0


def test_precision_recall_of_identical_sets_is_one():
    x = _feats()
    assert precision_recall(x, x[torch.randperm(len(x))], k=3) == (1.0, 1.0)


def test_precision_recall_of_far_apart_sets_is_zero():
    x = _feats()
    assert precision_recall(x, x + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_tell_a_collapsed_generator_from_a_scattered_one():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(2000, 2, generator=g)
    collapsed = 0.1 * torch.randn(2000, 2, generator=g)  # realistic but covers only the centre
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.2
    scattered = 4.0 * torch.randn(2000, 2, generator=g)  # covers everything, mostly off the data
    precision, recall = precision_recall(real, scattered)
    assert precision < 0.6 and recall > 0.95


def test_precision_recall_chunks_large_sets(monkeypatch):
    import evaluation.quality as quality

    real, fake = _feats(1500, 8, seed=5), _feats(1200, 8, seed=6) + 0.3
    whole = precision_recall(real, fake)
    monkeypatch.setattr(quality, "_PAIRS_PER_CHUNK", 1500 * 7)  # 7 rows per chunk, ragged last chunk
    assert precision_recall(real, fake) == whole
    assert 0.0 < whole[0] < 1.0 and 0.0 < whole[1] < 1.0


def test_nearest_neighbours_find_planted_copies(monkeypatch):
    import evaluation.quality as quality

    reference = torch.randn(5000, 16, generator=torch.Generator().manual_seed(7))
    planted = torch.randperm(5000, generator=torch.Generator().manual_seed(8))[:300]
    query = reference[planted] + 1e-4 * torch.randn(300, 16)
    assert torch.equal(nearest_neighbours(query, reference)[:, 0], planted)
    monkeypatch.setattr(quality, "_PAIRS_PER_CHUNK", 5000 * 13)
    top3 = nearest_neighbours(query, reference, k=3)
    assert top3.shape == (300, 3) and torch.equal(top3[:, 0], planted)
    d = torch.cdist(query.double(), reference.double())
    assert torch.equal(top3, d.topk(3, largest=False).indices)


def test_gaussian_stats_match_torch_reference():
    x = _feats(500, 4)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == torch.float64 and sigma.shape == (4, 4)
    centred = x.double() - x.double().mean(0)
    assert torch.allclose(sigma, centred.T @ centred / (len(x) - 1))
    assert math.isfinite(frechet_distance(x[:, :1].expand(-1, 4), x))  # singular covariance


def test_real_reference_embeds_the_test_images_at_first_use_and_once_per_process(monkeypatch):
    # make compare-gan-losses builds a RealReference per run: the test split's classifier pass is shared
    from evaluation import fidelity
    from harness.data import Dataset

    monkeypatch.delenv("PURESTEP_FEATURES", raising=False)
    monkeypatch.setenv("PURESTEP_CACHE", "off")  # in this process only: no file between processes
    calls = []
    real = fidelity.classifier_outputs
    monkeypatch.setattr(fidelity, "classifier_outputs", lambda m, x: calls.append(len(x)) or real(m, x))
    monkeypatch.setattr(fidelity.RealReference, "_outputs", {})
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 28, 28), generator=g, dtype=torch.uint8)
    first = fidelity.RealReference("mnist", Dataset(images, torch.zeros(40)))
    again = fidelity.RealReference("mnist", Dataset(images.clone(), torch.zeros(40)))
    assert calls == []  # nothing scored yet: nothing embedded
    assert torch.equal(first.features, again.features) and calls == [40]
    assert torch.equal(first.features, real(first.classifier, images[:, None] / 255.0)[0])
    other = fidelity.RealReference("mnist", Dataset(images.flip(0), torch.zeros(40)))  # other images
    torch.testing.assert_close(other.features, first.features.flip(0))
    assert calls == [40, 40]


def test_real_reference_keeps_its_outputs_on_disk_for_the_next_process(monkeypatch, tmp_path):
    from evaluation import fidelity
    from harness.data import Dataset

    calls = []
    real = fidelity.classifier_outputs
    monkeypatch.setattr(fidelity, "classifier_outputs", lambda m, x: calls.append(len(x)) or real(m, x))
    monkeypatch.setattr(fidelity.RealReference, "_outputs", {})
    monkeypatch.delenv("PURESTEP_FEATURES", raising=False)
    monkeypatch.setenv("PURESTEP_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (30, 28, 28), generator=g, dtype=torch.uint8)
    first = fidelity.RealReference("mnist", Dataset(images, torch.zeros(30)))
    features, logits = first.features, first.logits
    (saved,) = (tmp_path / "features").iterdir()
    monkeypatch.setattr(fidelity.RealReference, "_outputs", {})  # a new process: only the file is left
    again = fidelity.RealReference("mnist", Dataset(images.clone(), torch.zeros(30)))
    assert torch.equal(again.features, features) and torch.equal(again.logits, logits) and calls == [30]
    monkeypatch.setattr(fidelity.RealReference, "_outputs", {})
    other = fidelity.RealReference("mnist", Dataset(images.flip(0), torch.zeros(30)))  # other images
    assert torch.equal(other.logits, real(other.classifier, images.flip(0)[:, None] / 255.0)[1])
    assert calls == [30, 30] and len(list((tmp_path / "features").iterdir())) == 2
    saved.write_bytes(b"damaged")  # computed again, and the file rewritten
    monkeypatch.setattr(fidelity.RealReference, "_outputs", {})
    assert torch.equal(fidelity.RealReference("mnist", Dataset(images, torch.zeros(30))).features, features)
    assert calls == [30, 30, 30] and saved.stat().st_size > 1000
    monkeypatch.setenv("PURESTEP_CACHE", "off")  # off: nothing read or written
    assert fidelity.features_dir() is None
    monkeypatch.setenv("PURESTEP_FEATURES", str(tmp_path / "elsewhere"))  # the tests' own folder
    assert fidelity.features_dir() == tmp_path / "elsewhere"


def _uniform_sampler(critic=None, classes=0):
    """A 'generator' of 1-pixel images uniform on (-1, 1) (2 Phi(z) - 1); a conditional one adds
    nothing of the label to the pixel but keeps it for the critic."""

    def generate(params, buffers, z, y=None):
        return torch.erf(z[:, :1] / math.sqrt(2)).view(-1, 1, 1, 1), buffers

    return Sampler(generate, {"w": torch.zeros(1)}, {}, 2, classes, critic)


def test_rejection_sampling_turns_the_generators_density_into_the_one_the_critic_implies():
    # p_g uniform on (-1, 1); a critic whose logit is log(1 + x) = log(p_data / p_g) for the
    # triangular p_data(x) = (1 + x) / 2. DRS keeps x with probability min(1, (1 + x) / e^M), e^M the
    # 0.9 quantile of 1 + x (1.8), so it draws from the density proportional to min(1 + x, 1.8).
    critic = lambda x: torch.log1p(x.flatten(1)[:, 0])  # noqa: E731
    images = rejection_sample(_uniform_sampler(critic), 20000, seed=3)
    x = images.flatten() * 2 - 1
    grid = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    density = torch.clamp(1 + grid, max=1.8)
    expected = (grid * density).sum() / density.sum()  # 0.2947...; the uniform's is 0, the triangle's 1/3
    assert abs(x.mean().item() - expected.item()) < 0.015
    assert (x > 0).float().mean().item() > 0.6  # the uniform: 0.5
    assert torch.equal(images, rejection_sample(_uniform_sampler(critic), 20000, seed=3))  # seeded
    assert sample_images(_uniform_sampler(critic), 20000, 3).equal(images)  # a sampler with a critic


def test_rejection_sampling_of_a_conditional_generator_keeps_each_image_beside_its_label():
    # the critic rejects every image of an odd label drawn at x < 0: each kept image still comes back
    # in the slot of the label it was drawn for, so odd slots hold only x >= 0
    critic = lambda x, y: torch.where((y % 2 == 1) & (x.flatten(1)[:, 0] < 0), -30.0, 0.0)  # noqa: E731
    sampler = _uniform_sampler(critic, classes=10)
    images = rejection_sample(sampler, 3000, seed=0).flatten() * 2 - 1
    odd = sampler.labels(3000) % 2 == 1
    assert (images[odd] >= 0).all() and (images[~odd] < 0).float().mean() > 0.4
    with pytest.raises(ValueError, match="whole sets"):
        sample_images(sampler, 10, 0, rows=slice(0, 5))

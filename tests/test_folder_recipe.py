"""The recipe for small colourful folders: DiffAugment against direct pixel arithmetic, R2 against
autograd, the residual networks, labelled subfolders, the diversity score and its collapse warning,
and the folder builders (Debian's emoji font and wallpapers where installed)."""

import dataclasses
import json
import math

import pytest
import torch
from torchvision.io import write_png

from evaluation import swd
from experiments import folders
from experiments.gan import BUILT_IN, FOLDER, GANConfig, warn_collapse
from harness.config import UsageError
from harness.imagefolder import load_image_folder
from harness.run import resumed_config
from losses import augment as A
from losses import gan as G
from models import build_gan
from models.gan import MinibatchStd


def _images(n=4, seed=0, c=3, size=16):
    return (
        torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
        - 1
    )


def test_translation_shifts_whole_pixels_and_fills_zeros():
    x = _images()
    sy = int(16 * A.TRANSLATE + 0.5)  # 2: shifts in -2 .. 2
    # u picks the pad offset k in 0 .. 2 sy; the image moves by sy - k pixels
    offsets = torch.tensor([[0, 4], [2, 2], [4, 1], [1, 3]])
    u = (offsets.double() + 0.5) / (2 * sy + 1)
    out = A.translation(x, u)
    for i, (ky, kx) in enumerate(offsets.tolist()):
        dy, dx = sy - ky, sy - kx  # content moves down by dy, right by dx
        expected = torch.zeros_like(x[i])
        src = x[i][:, max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)]
        expected[:, max(0, dy) : 16 - max(0, -dy), max(0, dx) : 16 - max(0, -dx)] = src
        torch.testing.assert_close(out[i], expected, rtol=0, atol=0)


def test_cutout_zeroes_one_half_side_square_clipped_at_the_border():
    x = torch.ones(2, 3, 16, 16, dtype=torch.float64)
    # centres: (8, 8) inside; (0, 15) at a corner, so a quarter of the square is cut
    u = torch.tensor([[8.5 / 17, 8.5 / 17], [0.5 / 17, 15.5 / 17]], dtype=torch.float64)
    out = A.cutout(x, u)
    assert int((out[0] == 0).sum()) == 3 * 8 * 8 and bool((out[0, :, 4:12, 4:12] == 0).all())
    assert int((out[1] == 0).sum()) == 3 * 4 * 5 and bool((out[1, :, 0:4, 11:16] == 0).all())


def test_color_is_brightness_then_saturation_then_contrast():
    x, u = _images(), torch.tensor([[0.9, 0.25, 0.1]] * 4, dtype=torch.float64)
    out = A.color(x, u)
    y = x + 0.4
    y = (y - y.mean(1, keepdim=True)) * 0.5 + y.mean(1, keepdim=True)
    y = (y - y.mean((1, 2, 3), keepdim=True)) * 0.6 + y.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, y)


def test_diff_augment_is_differentiable_and_checks_its_policy():
    x = _images(2, size=8).requires_grad_(True)
    u = torch.rand(2, A.DRAWS, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: A.diff_augment(t, u), (x,))
    assert A.diff_augment(x, u, ()) is x
    with pytest.raises(ValueError, match="flip"):
        A.diff_augment(x, u, ("color", "flip"))


def test_color_p_recolours_only_the_images_whose_gate_draw_is_below_it():
    x = _images(4)
    u = torch.rand(4, A.DRAWS + 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u[:, A.DRAWS] = torch.tensor([0.1, 0.7, 0.29, 0.31])  # the gate: images 0 and 2 fall below 0.3
    out = A.diff_augment(x, u, ("color", "cutout"), color_p=0.3)
    everything = A.diff_augment(x, u[:, : A.DRAWS], ("color", "cutout"))  # color_p 1: the old draws
    plain = A.diff_augment(x, u, ("cutout",))
    torch.testing.assert_close(out[[0, 2]], everything[[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(out[[1, 3]], plain[[1, 3]], rtol=0, atol=0)
    ok = dict(image_folder=".", augment=("color",))
    assert GANConfig(**ok, color_p=0.5).color_p == 0.5
    for bad in ({"color_p": 0.0}, {"color_p": 1.5}, {"color_p": 0.5, "augment": ("translation",)}):
        with pytest.raises(UsageError, match="--color-p"):
            GANConfig(**{**ok, **bad})


def test_r2_penalty_and_augmentation_in_the_discriminator_loss():
    """disc_loss with augment and R2 = the plain loss on augmented images + gamma/2 E|grad D(fake)|^2
    (autograd's double-backward-free reference), with the batch's draws [:, 0] real, [:, 1] fake."""
    torch.manual_seed(0)
    gen, disc = build_gan("resnet", (3, 64, 64), 8, 4, False)
    gen, disc = gen.double(), disc.double()
    gan = G.make_gan_loss(gen, disc, "nonsaturating", r1_gamma=0.0, r2_gamma=2.0, augment=A.AUGMENTS)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 64, 64, generator=g, dtype=torch.float64)
    fake = torch.rand(4, 3, 64, 64, generator=g, dtype=torch.float64) * 2 - 1
    aug = torch.randn(4, 2, A.DRAWS, generator=g, dtype=torch.float64)
    params = {k: v.detach() for k, v in disc.named_parameters()}
    buffers = dict(disc.named_buffers())
    loss, aux = gan.disc_loss(
        params, buffers, {"x": x, "y": torch.zeros(4, dtype=torch.long), "fake": fake, "aug": aug}
    )
    real_seen = A.diff_augment(x * 2 - 1, G.uniform_from_normal(aug[:, 0]))
    fake_seen = A.diff_augment(fake, G.uniform_from_normal(aug[:, 1])).requires_grad_(True)
    plain = (
        torch.nn.functional.softplus(-disc(real_seen)).mean()
        + torch.nn.functional.softplus(disc(fake_seen)).mean()
    )
    (grad,) = torch.autograd.grad(disc(fake_seen).sum(), fake_seen)
    r2 = grad.flatten(1).square().sum(1).mean()
    assert float(aux.metrics["r2"]) == pytest.approx(float(r2), rel=1e-9)
    # the logits' loss is taken in float32 (as under autocast); gamma / 2 = 1
    assert float(loss) == pytest.approx(float((plain + r2).detach()), rel=1e-6)


def test_mirror_flips_exactly_the_images_drawn_and_every_term_of_d_reads_them_flipped():
    """mirror against torchvision's hflip, image by image; disc_loss with mirrored=True equals the
    plain loss (R1 included) on a batch whose drawn images torchvision flipped beforehand."""
    from torchvision.transforms.functional import hflip

    x, n = _images(), torch.tensor([0.3, -1.2, 2.0, -0.1], dtype=torch.float64)
    out = A.mirror(x, n)
    for i in range(4):
        torch.testing.assert_close(out[i], hflip(x[i]) if n[i] > 0 else x[i], rtol=0, atol=0)
    assert not torch.equal(out, x)
    torch.manual_seed(0)
    gen, disc = (m.double() for m in build_gan("dcgan", (3, 64, 64), 8, 4, False))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 64, 64, generator=g, dtype=torch.float64)
    batch = {"x": x, "fake": torch.rand(4, 3, 64, 64, generator=g, dtype=torch.float64) * 2 - 1, "mirror": n}
    params, buffers = {k: v.detach() for k, v in disc.named_parameters()}, dict(disc.named_buffers())
    kw = {"r1_gamma": 2.0, "augment": A.AUGMENTS}
    batch["aug"] = torch.randn(4, 2, A.DRAWS, generator=g, dtype=torch.float64)
    loss, aux = G.make_gan_loss(gen, disc, mirrored=True, **kw).disc_loss(params, buffers, batch)
    flipped = torch.stack([hflip(x[i]) if n[i] > 0 else x[i] for i in range(4)])
    ref, ref_aux = G.make_gan_loss(gen, disc, **kw).disc_loss(params, buffers, {**batch, "x": flipped})
    assert float(loss) == float(ref) and float(aux.metrics["r1"]) == float(ref_aux.metrics["r1"])
    unflipped, _ = G.make_gan_loss(gen, disc, **kw).disc_loss(params, buffers, batch)
    assert float(unflipped) != float(loss)


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 28, 28)])
def test_resnet_pair_has_no_normalisation_in_the_discriminator(shape):
    gen, disc = build_gan("resnet", shape, 16, 8, disc_norm=True)  # disc_norm is dcgan's alone
    with torch.no_grad():
        images = gen(torch.randn(5, 16))
    assert images.shape == (5, *shape) and float(images.abs().max()) <= 1
    assert disc(images).shape == (5,)
    kinds = {type(m).__name__ for m in disc.modules()}
    assert not any("Norm" in k for k in kinds) and "BatchNorm2d" in {type(m).__name__ for m in gen.modules()}
    cond = build_gan("resnet", shape, 16, 8, classes=4, classify=True)[1]
    logit, classes = cond(images, torch.arange(5) % 4, classify=True)
    assert logit.shape == (5,) and classes.shape == (5, 4)
    with pytest.raises(ValueError, match="resnet take 28x28 or 64x64"):
        build_gan("resnet", (3, 32, 32))


def test_minibatch_std_channel_is_the_groups_mean_feature_spread():
    x = _images(n=8, c=5, size=4)
    out = MinibatchStd(4)(x)
    assert out.shape == (8, 6, 4, 4) and torch.equal(out[:, :5], x)
    for g in range(2):  # images 0-3 and 4-7: the population std of each feature, averaged
        group = x[4 * g : 4 * g + 4]
        spread = ((group - group.mean(0)) ** 2).mean(0).add(1e-8).sqrt().mean()
        torch.testing.assert_close(out[4 * g : 4 * g + 4, 5], spread.expand(4, 4, 4), rtol=1e-12, atol=1e-12)
    six = MinibatchStd(4)(x[:6])  # a batch 4 does not divide: groups of gcd(4, 6) = 2
    pair = x[:2]
    torch.testing.assert_close(six[0, 5, 0, 0], (pair.var(0, unbiased=False) + 1e-8).sqrt().mean())
    same = MinibatchStd(4)(x[:1].expand(4, -1, -1, -1))  # a collapsed group: no spread at all
    torch.testing.assert_close(same[:, 5], torch.full((4, 4, 4), 1e-4, dtype=x.dtype))


@pytest.mark.parametrize(
    "arch, shape",
    [("dcgan", (1, 28, 28)), ("dcgan", (3, 64, 64)), ("resnet", (3, 64, 64)), ("resnet", (1, 28, 28))],
)
def test_with_mbstd_an_images_logit_reads_its_group_and_no_other(arch, shape):
    disc = build_gan(arch, shape, 16, 4, disc_norm=False, mbstd=4)[1].double()
    x = _images(n=8, c=shape[0], size=shape[1])
    with torch.no_grad():
        base = disc(x)
        groupmate, other = x.clone(), x.clone()
        groupmate[1], other[5] = -groupmate[1], -other[5]
        assert float(disc(groupmate)[0]) != float(base[0])  # image 1 shares image 0's group
        torch.testing.assert_close(disc(other)[:4], base[:4], rtol=0, atol=0)  # image 5 does not
    plain = build_gan(arch, shape, 16, 4, disc_norm=False)[1]
    assert not any(isinstance(m, MinibatchStd) for m in plain.modules())
    cond = build_gan(arch, shape, 16, 4, disc_norm=False, classes=3, classify=True, mbstd=4)[1]
    logit, classes = cond(x.float(), torch.arange(8) % 3, classify=True)
    assert logit.shape == (8,) and classes.shape == (8, 3)
    with pytest.raises(ValueError, match="conv D"):
        build_gan("mlp", (1, 28, 28), mbstd=4)


def test_folder_runs_take_the_folder_recipe_and_digits_keep_theirs():
    folder = GANConfig(image_folder="x")
    assert (folder.dataset, folder.arch, folder.width, folder.r2_gamma, folder.augment, folder.mbstd) == (
        "imagefolder", "dcgan", 32, FOLDER["r2_gamma"], FOLDER["augment"], 4)  # fmt: skip
    digits = GANConfig()
    assert (digits.dataset, digits.arch, digits.width, digits.r2_gamma, digits.augmentations) == (
        "mnist", "dcgan", 64, 0.0, ())  # fmt: skip
    assert digits.mbstd == 0 and GANConfig(image_folder="x", arch="mlp").mbstd == 0  # the mlp D has no maps
    assert BUILT_IN["augment"] == ("none",) and not digits.mirror  # a mirrored digit is no digit
    assert not folder.mirror  # measured on the emoji, not adopted
    mine = GANConfig(image_folder="x", augment=("translation",), r2_gamma=0.0, mirror=True, mbstd=0)
    assert (mine.arch, mine.augmentations, mine.r2_gamma, mine.mirror, mine.mbstd) == (
        "dcgan", ("translation",), 0.0, True, 0)  # fmt: skip


def test_a_folder_run_saved_before_mbstd_existed_resumes_without_it(tmp_path):
    """Its config.json lacks the key: it trained without the spread channel, and resumes so, whatever
    today's folder default; asking for the channel on resume is refused in one line."""
    config = dataclasses.asdict(GANConfig(image_folder="x", run_dir=str(tmp_path), mbstd=0))
    del config["mbstd"], config["color_p"]
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "gan", **config}))
    given = GANConfig(image_folder="x", run_dir=str(tmp_path), epochs=9, resume=True)
    cfg = resumed_config(GANConfig, given, {"run_dir", "epochs", "resume"}, "gan")
    assert (cfg.mbstd, cfg.color_p, cfg.epochs, cfg.augment) == (0, 1.0, 9, FOLDER["augment"])
    given = GANConfig(image_folder="x", run_dir=str(tmp_path), mbstd=4, resume=True)
    with pytest.raises(UsageError, match="--mbstd 4 differs from the run's 0"):
        resumed_config(GANConfig, given, {"run_dir", "mbstd", "resume"}, "gan")


def test_a_resume_may_repeat_a_list_flag_the_run_was_started_with(tmp_path):
    """config.json holds --augment as a JSON list; the same flag given again on resume (as `make
    train-gan-abstract ARGS=--resume` passes it) is the run's own, another list is refused."""
    config = dataclasses.asdict(
        GANConfig(image_folder="x", run_dir=str(tmp_path), augment=("translation", "cutout"))
    )
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "gan", **config}))
    given = GANConfig(image_folder="x", run_dir=str(tmp_path), augment=("translation", "cutout"), resume=True)
    cfg = resumed_config(GANConfig, given, {"run_dir", "augment", "resume"}, "gan")
    assert cfg.augment == ("translation", "cutout") and cfg.augmentations == ("translation", "cutout")
    given = GANConfig(image_folder="x", run_dir=str(tmp_path), augment=("translation",), resume=True)
    with pytest.raises(UsageError, match="--augment translation differs from the run's translation,cutout;"):
        resumed_config(GANConfig, given, {"run_dir", "augment", "resume"}, "gan")


def test_subfolders_are_labels_in_sorted_order(tmp_path):
    for name, n in (("b-cats", 2), ("a-dogs", 3)):
        (tmp_path / name).mkdir()
        for i in range(n):
            write_png(torch.full((3, 8, 8), 40 * i, dtype=torch.uint8), str(tmp_path / name / f"{i}.png"))
    data = load_image_folder(tmp_path, 8)
    assert data.labels.tolist() == [0, 0, 0, 1, 1]  # a-dogs first
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(tmp_path / "loose.png"))
    assert load_image_folder(tmp_path, 8).labels.tolist() == [0] * 6  # a file outside: unlabelled


def test_diversity_is_zero_for_copies_and_about_root_two_for_independent_images():
    real = torch.rand(60, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scales = swd.level_scales(real)
    assert swd.diversity(real[:1].expand(30, -1, -1, -1), scales) == pytest.approx(
        0, abs=1e-3
    )  # cdist's fp32 matmul
    own = swd.diversity(real, scales)
    assert own == pytest.approx(math.sqrt(2), rel=0.05)  # noise: the levels are independent per image
    assert swd.diversity(real * 0.3 + 0.35, scales) == pytest.approx(0.3 * own, rel=1e-4)
    assert math.isnan(swd.diversity(real[:1], scales))  # one held-out image: undefined, not an error


def test_a_collapsed_probe_is_said_in_one_line(capsys):
    warn_collapse({"diversity": 0.6, "diversity_real": 1.0}, 500)
    assert capsys.readouterr().out == ""
    warn_collapse({"diversity": 0.4, "diversity_real": 1.0}, 1500)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "mode collapse at step 1,500" in out and "0.400" in out


def test_emoji_groups_come_from_the_file_and_skip_components(tmp_path):
    text = (
        "# group: Smileys & Emotion\n1F600 ; fully-qualified # x\n263A ; unqualified # y\n"
        "# group: Component\n1F3FB ; component # z\n1F9B0 ; fully-qualified # w\n"
        "# group: Flags\n1F1FA 1F1F8 ; fully-qualified # us\n"
    )
    (tmp_path / "emoji-test.txt").write_text(text, encoding="utf-8")
    got = folders.emoji_groups(tmp_path / "emoji-test.txt")
    assert got == [("\U0001f600", "Smileys & Emotion"), ("\U0001f1fa\U0001f1f8", "Flags")]
    assert folders.slug("Smileys & Emotion") == "smileys-emotion"


@pytest.mark.skipif(not folders.EMOJI_FONT.is_file(), reason="fonts-noto-color-emoji is not installed")
def test_emoji_are_drawn_in_colour_on_white():
    from PIL import ImageFont

    font = ImageFont.truetype(str(folders.EMOJI_FONT), folders.EMOJI_SIZE)
    face = folders.draw_emoji("\U0001f600", font, 64)  # grinning face: yellow
    assert face.shape == (3, 64, 64) and face.dtype == torch.uint8
    assert face[:, 0, 0].tolist() == [255, 255, 255]  # a white corner
    r, g, b = face[:, 32, 20].tolist()
    assert r > 200 and g > 150 and b < 100  # yellow skin
    flag = folders.draw_emoji("\U0001f1fa\U0001f1f8", font, 64)  # one ligature glyph, not two letters
    assert flag is not None


@pytest.mark.skipif(not folders.wallpapers(), reason="gnome-backgrounds / mate-backgrounds are not installed")
def test_abstract_crops_come_from_the_opaque_wallpapers(tmp_path):
    names = [p.name for p in folders.wallpapers()]
    assert not any(folders.DUPLICATE.search(n.rsplit(".", 1)[0]) for n in names)
    assert folders.build_abstract(tmp_path, 32, 12, seed=0) == 12
    data = load_image_folder(tmp_path, 32)
    assert data.images.shape == (12, 3, 32, 32)
    assert float(data.images.float().std()) > 10  # colours, not a blank canvas


def _write_folder(path, images):
    path.mkdir(parents=True)
    for i, image in enumerate(images):
        write_png((image * 255).round().to(torch.uint8), str(path / f"{i:03d}.png"))


def test_eval_folders_scores_a_folder_against_another_beside_the_floor(tmp_path, capsys):
    from experiments import eval_folders

    g = torch.Generator().manual_seed(0)
    data = torch.rand(48, 3, 1, 1, generator=g).expand(-1, -1, 32, 32) * 0.5  # flat colours
    data = (data + 0.5 * torch.rand(48, 1, 32, 32, generator=g)).clamp(0, 1)  # and grain
    _write_folder(tmp_path / "data", data)
    _write_folder(tmp_path / "collapsed", data[:1].expand(24, -1, -1, -1))  # one image, 24 times
    out = tmp_path / "out"
    args = [str(tmp_path / "collapsed"), str(tmp_path / "data"), "--out", str(out), "--image-size", "32"]
    result = eval_folders.main(args)
    assert result["images"] == 24  # min(24, 48 // 2)
    assert result["swd"]["swd"] > 2 * result["floor"]["swd"] > 0
    assert result["diversity"]["a"] == pytest.approx(0, abs=1e-3) and result["diversity"]["b"] > 0.5
    assert (out / "nearest_neighbours.png").exists() and "x the floor" in (out / "report.md").read_text()
    assert "collapsed vs data" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        eval_folders.main([str(tmp_path / "nowhere"), str(tmp_path / "data")])
    assert exit_info.value.code == 2


def test_a_labelled_folder_gets_its_own_classifier_and_a_gan_is_scored_in_its_features(tmp_path, monkeypatch):
    """experiments.classifier on a folder of class subfolders (solid colours with grain, 32x32),
    exported with its class names; folder_classifier finds it by those names, and a generator that
    draws one class only scores a FID far above the floor, one class of three found."""
    import models.classifier
    from evaluation.features import folder_classifier
    from evaluation.sampling import Sampler
    from experiments import classifier
    from harness import held_out_split
    from harness.imagefolder import class_names

    monkeypatch.setattr(models.classifier, "WEIGHTS_DIR", tmp_path / "weights")
    g = torch.Generator().manual_seed(0)
    colours = {"blue": (0.1, 0.2, 0.9), "green": (0.1, 0.8, 0.2), "red": (0.9, 0.1, 0.1)}
    for name, rgb in colours.items():
        base = torch.tensor(rgb).view(1, 3, 1, 1).expand(30, 3, 32, 32)
        grain = 0.1 * torch.randn(30, 3, 32, 32, generator=g)
        _write_folder(tmp_path / "colours" / name, (base + grain).clamp(0, 1))
    args = ["--dataset", "imagefolder", "--image-folder", str(tmp_path / "colours"), "--image-size", "32"]
    args += ["--epochs", "6", "--batch-size", "16", "--width", "8", "--warmup", "0", "--lr", "3e-3"]
    args += ["--no-compile", "--no-progress"]
    final = classifier.main([*args, "--run-dir", str(tmp_path / "run")])
    assert final["accuracy"] == 1.0  # the 9 held-out images
    names = class_names(tmp_path / "colours")
    assert names == ["blue", "green", "red"] and folder_classifier(names) == "colours"
    assert folder_classifier(["blue", "red"]) is None

    data = load_image_folder(tmp_path / "colours", 32)
    train, held_out = held_out_split(data)
    red = torch.tensor([0.8, -0.8, -0.8]).view(1, 3, 1, 1)
    weight = {"w": torch.zeros(())}
    sampler = Sampler(lambda p, b, z, y=None: (red.expand(len(z), 3, 32, 32) + p["w"], b), weight, {}, 4)
    reference = swd.LabelledFolderReference(held_out, train, 0, "colours")
    scores = reference.score_generator(sampler, 40, seed=0)
    assert (scores["classes"], scores["classes_found"], scores["rarest_share"]) == (3, 1, 0.0)
    assert scores["fid"] > 10 * scores["fid_floor"] and scores["swd"] > scores["swd_floor"]
    assert scores["diversity"] == pytest.approx(0, abs=1e-3) and "precision" in scores


@pytest.mark.skipif(
    not (folders.EMOJI_FONT.is_file() and folders.EMOJI_TEST.is_file()),
    reason="fonts-noto-color-emoji / unicode-data are not installed (.ci/run installs them where it can)",
)
def test_the_shipped_emoji_group_classifier_reaches_its_accuracy_on_the_held_out_emoji(tmp_path):
    """make data-emoji's folder, drawn afresh, split as a GAN run splits it: the committed classifier
    of its nine groups classifies the held-out tenth as it did when exported."""
    from evaluation.features import classifier_meta, classifier_outputs, folder_classifier, load_classifier
    from harness import held_out_split
    from harness.data import to_unit
    from harness.imagefolder import class_names
    from models.classifier import weights_path

    assert folders.build_emoji(tmp_path / "emoji", 64) > 3000
    names = class_names(tmp_path / "emoji")
    assert len(names) == 9 and folder_classifier(names) == "emoji"
    _, held_out = held_out_split(load_image_folder(tmp_path / "emoji", 64))
    _, logits = classifier_outputs(load_classifier("emoji"), to_unit(held_out.images))
    accuracy = float((logits.argmax(1) == held_out.labels).double().mean())
    exported = float(classifier_meta(weights_path("emoji"))["test_accuracy"])
    assert accuracy == pytest.approx(exported, abs=3 / len(held_out.labels)) and accuracy > 0.8

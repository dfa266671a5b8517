"""Figures: files that PIL and torchvision can read back, RGB grids in colour, grey grids in grey."""

import math

import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, read_image

from evaluation.plots import (
    _smooth,
    plot_step_curves,
    read_png,
    save_gif,
    save_grids_side_by_side,
    save_image_grid,
    save_png,
)

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29


def _read_rgb(path) -> torch.Tensor:
    return read_image(str(path), mode=ImageReadMode.RGB)  # (3, H, W) uint8


def test_smoothing_is_a_centred_moving_average():
    assert _smooth([2.0] * 7, 3) == pytest.approx([2.0] * 7)
    ramp = [float(i) for i in range(10)]
    assert _smooth(ramp, 5)[2:-2] == pytest.approx(ramp[2:-2])  # no lag on a straight line
    assert _smooth(ramp, 5)[0] == pytest.approx(1.0)  # the window shrinks at the ends: mean(0, 1, 2)
    assert _smooth(ramp, 1) == pytest.approx(ramp)


def test_plot_step_curves_writes_a_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    records = [
        {"step": s, "d_loss": 1.4 - s / 2000 + 0.1 * torch.randn(1, generator=g).item(), "g_loss": 0.7}
        | ({"d_real": 0.6, "d_fake": 0.4} if s % 20 == 0 else {})  # logged less often: gaps are fine
        for s in range(0, 1000, 10)
    ]
    records[5]["d_loss"] = math.nan  # a non-finite point is left out, not smeared over the average
    path = tmp_path / "steps.png"
    panels = [("loss", ["d_loss", "g_loss"]), ("D(x)", ["d_real", "d_fake"]), ("absent", ["nope"])]
    plot_step_curves(records, panels, path, "GAN", smooth=10)
    image = _read_rgb(path)
    assert image.shape[0] == 3 and image.shape[2] > image.shape[1] > 100  # three panels side by side
    assert Image.open(path).format == "PNG"


@pytest.mark.parametrize("channels", [1, 3])
def test_png_grids_are_torchvisions_pixels_and_read_back_exactly(tmp_path, channels):
    from torchvision.utils import save_image

    images = torch.rand(10, channels, 9, 7, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    save_png(images, tmp_path / "ours.png", nrow=4)
    save_image(images, tmp_path / "torchvision.png", nrow=4, padding=2)
    ours = read_image(str(tmp_path / "ours.png"), ImageReadMode.RGB)
    assert torch.equal(ours, read_image(str(tmp_path / "torchvision.png"), ImageReadMode.RGB))
    assert torch.equal(read_png(tmp_path / "ours.png"), ours[None].float() / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_save_gif_has_one_frame_per_batch(tmp_path, channels):
    frames = [torch.full((6, channels, 8, 8), k / 4) for k in range(5)]  # each frame a different grey
    path = tmp_path / "progress.gif"
    save_gif(frames, path, duration_ms=100, nrow=3)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.info["loop"] == 0
        assert gif.size == (3 * 10 + 2, 2 * 10 + 2)  # make_grid: 3 x 2 tiles of 8 px, 2 px padding
        gif.seek(4)
        assert gif.convert("RGB").getpixel((5, 5)) == (255, 255, 255)  # the last frame is all ones
    with pytest.raises(ValueError, match="one shape"):
        save_gif([frames[0], frames[1][:3]], path)


def test_image_grids_keep_rgb_colours_and_grey_greys(tmp_path):
    red = torch.zeros(4, 3, 8, 8)
    red[:, 0] = 1.0
    save_image_grid(red, tmp_path / "rgb.png", "red")
    save_grids_side_by_side([("grey", torch.rand(4, 1, 8, 8)), ("red", red)], tmp_path / "both.png", "both")
    rgb = _read_rgb(tmp_path / "rgb.png").int()
    reddish = (rgb[0] > 200) & (rgb[1] < 60) & (rgb[2] < 60)
    assert reddish.float().mean() > 0.2  # the image area is red, not a grey or colormapped rendering
    grey = torch.rand(4, 1, 8, 8)
    save_image_grid(grey, tmp_path / "grey.png", "grey")
    pixels = _read_rgb(tmp_path / "grey.png").int()
    assert (pixels[0] - pixels[1]).abs().max() <= 1 and (pixels[1] - pixels[2]).abs().max() <= 1
    assert _read_rgb(tmp_path / "both.png").shape[0] == 3


GRIDS = [(1, 3, 8, 2, 1.0), (5, 1, 8, 2, 1.0), (8, 3, 8, 0, 0.0), (13, 3, 4, 2, 0.5), (64, 1, 8, 2, 1.0),
         (7, 3, 10, 3, 0.0)]  # fmt: skip


@pytest.mark.parametrize("n,c,nrow,padding,pad_value", GRIDS)
def test_the_grid_is_torchvisions_make_grid_exactly(n, c, nrow, padding, pad_value):
    from torchvision.utils import make_grid as reference

    from harness.board import make_grid

    x = torch.rand(n, c, 6, 5, generator=torch.Generator().manual_seed(n))
    expected = reference(x, nrow=nrow, padding=padding, pad_value=pad_value)
    assert torch.equal(make_grid(x, nrow=nrow, padding=padding, pad_value=pad_value), expected)

"""Image folders as data sets: decoding, resize + centre crop against torchvision.transforms.v2, failures."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import decode_image, write_jpeg, write_png
from torchvision.transforms import v2

import harness.imagefolder
from harness.data import DataError, to_unit
from harness.imagefolder import load_image_folder
from harness.loader import Loader

# torchvision 0.29 deprecates its codecs (used here to write the fixtures); not what these tests check
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

SIZE = 16
RED = (255, 0, 0)
SHAPES = [(40, 40), (30, 60), (60, 30), (17, 23), (100, 50), (24, 24), (50, 33), (16, 16)]  # (H, W)


def _noise(h, w, seed):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def folder(tmp_path):
    """14 readable images (png, jpg, JPG, bmp, gif, webp, one in a sub-folder), a corrupt .png, a .txt."""
    for i, (h, w) in enumerate(SHAPES):  # img_00.png, img_01.jpg, ... img_07.jpg
        write = write_png if i % 2 == 0 else write_jpeg
        write(_noise(h, w, i), str(tmp_path / f"img_{i:02d}.{('png', 'jpg')[i % 2]}"))
    for i, name in enumerate(["img_08.bmp", "img_09.gif", "img_10.webp"]):  # PIL writes these
        Image.fromarray(_noise(20 + 5 * i, 36, 10 + i).permute(1, 2, 0).numpy()).save(tmp_path / name)
    solid = torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1).expand(3, 45, 70).contiguous()
    write_png(solid, str(tmp_path / "red.png"))  # sorted after img_*, before sub/
    write_jpeg(_noise(30, 30, 99), str(tmp_path / "UPPER.JPG"))  # upper case sorts first
    (tmp_path / "sub").mkdir()
    write_png(_noise(33, 21, 7), str(tmp_path / "sub" / "deep.png"))
    (tmp_path / "broken.png").write_bytes(b"this is not a png" * 20)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def _load(path, **kw):
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable .*broken\.png") as record:
        data = load_image_folder(path, SIZE, **kw)
    assert "notes.txt" not in str(record[0].message)
    return data


def test_shapes_dtype_count_and_order(folder):
    data = _load(folder)
    assert data.images.shape == (14, 3, SIZE, SIZE) and data.images.dtype == torch.uint8
    assert data.labels.shape == (14,) and data.labels.dtype == torch.int64 and not data.labels.any()
    assert data.images.device.type == "cpu"
    # sorted by relative path: UPPER.JPG, broken.png (skipped), img_00..img_10, red.png, sub/deep.png
    red = data.images[12]
    assert (red.int() - torch.tensor(RED).view(3, 1, 1)).abs().max() <= 1  # a solid colour survives resizing
    deep = v2.functional.center_crop(v2.functional.resize(_noise(33, 21, 7), [SIZE], antialias=True), [SIZE])
    assert torch.equal(data.images[13], deep)  # the sub-folder is walked


def test_resize_and_centre_crop_match_torchvision_transforms(folder):
    data = _load(folder)
    reference = v2.Compose([v2.Resize(SIZE, antialias=True), v2.CenterCrop(SIZE)])
    for i in (0, 2, 4):  # pngs: img_00 square, img_02 tall, img_04 tall 2:1; index 1 + i
        raw = decode_image(str(folder / f"img_{i:02d}.png"))
        assert torch.equal(data.images[1 + i], reference(raw))
    for i in (1, 3):  # wide jpgs: compare with the file decoded again (jpeg is lossy, decode is not)
        raw = decode_image(str(folder / f"img_{i:02d}.jpg"))
        assert torch.equal(data.images[1 + i], reference(raw))
    assert torch.equal(data.images[9], reference(_noise(20, 36, 10)))  # img_08.bmp: lossless, via PIL


def test_grey_mode_gives_one_channel(folder):
    data = _load(folder, channels=1)
    assert data.images.shape == (14, 1, SIZE, SIZE)
    assert abs(int(data.images[12].float().mean().round()) - 76) <= 1  # ITU-R 601 luma of pure red
    gif = Image.open(folder / "img_09.gif").convert("L")  # torchvision's GIF decoder ignores GRAY
    reference = v2.Compose([v2.PILToTensor(), v2.Resize(SIZE, antialias=True), v2.CenterCrop(SIZE)])
    assert (data.images[10].int() - reference(gif).int()).abs().max() <= 1


def test_sixteen_bit_png_is_scaled_to_uint8(tmp_path):
    ramp = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257  # 0..255 spread over 16 bits
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    data = load_image_folder(tmp_path, SIZE, channels=1)
    assert data.images.dtype == torch.uint8
    assert torch.equal(data.images[0, 0], torch.arange(256, dtype=torch.uint8).view(16, 16))


def test_loader_yields_unit_float_rgb_batches(folder):
    data = _load(folder)
    batch = next(iter(Loader(data, batch_size=4, seed=0)))
    assert batch["x"].shape == (4, 3, SIZE, SIZE) and batch["x"].dtype == torch.float32
    assert 0.0 <= batch["x"].min() and batch["x"].max() <= 1.0
    assert torch.equal(to_unit(data.images[:2]), data.images[:2].float() / 255)


def test_progress_bar_for_many_files_on_a_terminal_only(folder, monkeypatch, capsys):
    from harness import progress

    monkeypatch.setattr(harness.imagefolder, "PROGRESS_OVER", 5)
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    _load(folder)
    assert "decoding" in capsys.readouterr().err
    monkeypatch.setattr(progress, "on_terminal", lambda: False)  # a log file: no bar
    _load(folder)
    assert "decoding" not in capsys.readouterr().err


@pytest.mark.parametrize("case", ["empty", "missing", "file", "only-corrupt"])
def test_unusable_paths_raise_one_line_data_errors(tmp_path, case):
    path = {"empty": tmp_path, "missing": tmp_path / "nope", "file": tmp_path / "a.png"}.get(case, tmp_path)
    if case == "file":
        write_png(_noise(8, 8, 0), str(path))
    if case == "only-corrupt":
        (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    expected = {"empty": "no image files", "missing": "does not exist", "file": "is not a folder"}
    with pytest.raises(DataError, match=expected.get(case, "1 image file")) as e:
        load_image_folder(path, SIZE)
    assert str(path) in str(e.value) and "\n" not in str(e.value)

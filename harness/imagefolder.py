"""Any folder of images as a tensor-resident data set: decoded once, resized and centre-cropped on load."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from harness.config import UsageError
from harness.data import DataError, Dataset
from harness.progress import bar

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # matched case-insensitively
PROGRESS_OVER = 500  # show a progress bar when decoding more files than this
MAX_PIXELS = 40_000_000  # larger images are skipped unread: 40 MP decode to 120 MB of RGB each


def image_files(root: Path) -> list[Path]:
    """Every image file under `root`, recursively, sorted by relative path (the data set's order)."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def folder_classes(root: Path, files: list[Path]) -> tuple[list[str], list[int]]:
    """Class names (the sorted first-level subfolders, torchvision's ImageFolder convention) and
    each file's label; ([], all 0) unless every file sits in one of at least two subfolders."""
    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    names = sorted({t for t in tops if t is not None})
    if None in tops or len(names) < 2:
        return [], [0] * len(files)
    index = {n: i for i, n in enumerate(names)}
    return names, [index[t] for t in tops]


def class_names(root) -> list[str]:
    """The class names of a folder of images (folder_classes): [] for an unlabelled folder."""
    root = Path(root)
    return folder_classes(root, image_files(root))[0]


def _decode(path: Path, channels: int, frames: int = 1) -> torch.Tensor:
    """One file as uint8 (C, H, W): torchvision.io where it can, PIL for the rest (bmp, ...) and for
    an animated file (`frames` > 1), whose first frame alone PIL decodes (torchvision would decode
    every frame: 100 frames of 3000x3000 are 2.7 GB). torchvision loads here, not at import: a run
    on MNIST never pays its 2 s import."""
    import torchvision.transforms.v2.functional as F
    from torchvision.io import ImageReadMode, decode_image

    grey = channels == 1 and path.suffix.lower() not in (".gif", ".webp")  # those return RGB anyway
    image = None  # (GIF and WebP ignore GRAY; WebP says so in a raw C++ warning)
    if frames == 1:
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its codecs for TorchCodec (not a dependency); PIL: fallback
                warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
                image = decode_image(str(path), mode=ImageReadMode.GRAY if grey else ImageReadMode.RGB)
        except RuntimeError:  # an unsupported format or a corrupt file: PIL decides which
            pass
    if image is None:  # and an animation's first frame alone
        from PIL import Image

        with Image.open(path) as im:
            image = F.pil_to_tensor(im.convert("RGB" if channels == 3 else "L"))
    if image.ndim == 4:  # frames, C, H, W
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNGs decode to uint16
        image = F.to_dtype(image, torch.uint8, scale=True)
    if image.shape[0] != channels:  # GIF/WebP decoders ignore the GRAY mode and return RGB
        image = F.rgb_to_grayscale(image[:3]) if channels == 1 else image[:1].expand(3, -1, -1)
    return image


def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to `size` (antialiased), then the central size x size square: (C, size, size)."""
    import torchvision.transforms.v2.functional as F

    image = F.resize(image, [size], antialias=True)
    return F.center_crop(image, [size, size])


def _size(path: Path) -> tuple[float, int]:
    """(width x height, frames) from the file's header alone (PIL reads no pixel data to tell); an
    image PIL itself calls a decompression bomb is infinitely large, so over any --max-pixels."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged by max_pixels here
            with Image.open(path) as im:
                return im.width * im.height, getattr(im, "n_frames", 1)
    except Image.DecompressionBombError:
        return math.inf, 1


def load_image_folder(
    path, size: int, channels: int = 3, device="cpu", max_pixels: int = MAX_PIXELS
) -> Dataset:
    """Every readable image under `path` as uint8 (N, C, size, size) on `device`; labels: the index
    of the image's first-level subfolder among the sorted subfolders (folder_classes), else 0.

    Files that fail to decode, and images over max_pixels (told by their header, never decoded), are
    skipped with one warning naming them; a folder with nothing readable in it raises DataError.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    root = Path(path)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DataError(f"image folder {root} {what}")
    files = image_files(root)
    _, classes = folder_classes(root, files)
    images, labels, skipped, large = [], [], [], []
    shown = bar(files, desc=f"decoding {root.name}", unit="img", enabled=len(files) > PROGRESS_OVER)
    for file, label in zip(shown, classes):
        name = file.relative_to(root).as_posix()
        try:
            pixels, frames = _size(file)
            if pixels > max_pixels:
                large.append(name)
                continue
            image = _decode(file, channels, frames)
        except Exception:  # any decoder failure means an unreadable file, reported below
            skipped.append(name)
            continue
        images.append(_fit(image, size))
        labels.append(label)
    if not images:
        found = f"{len(files)} image file(s), none readable" if files else "no image files"
        raise DataError(f"{found} under {root} (looked for {', '.join(EXTENSIONS)})")
    for names, what in (
        (skipped, "unreadable image file(s)"),
        (large, f"image file(s) over {max_pixels:,} pixels"),
    ):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            warnings.warn(f"skipped {len(names)} {what} under {root}: {shown}", stacklevel=2)
    stacked = torch.stack(images).to(device)  # (N, C, size, size) uint8
    return Dataset(stacked, torch.tensor(labels, dtype=torch.int64, device=device))


def random_crops(photos: list[torch.Tensor], count: int, size: int, seed: int) -> torch.Tensor:
    """count crops (count, 3, size, size) uint8: a photo, a square side between 2 x size and half the
    photo's shorter side, a position, and a mirror flip, all drawn with `seed`; resized with antialiasing.
    (How experiments.photo_crops and experiments.folders make a folder out of a few large pictures.)"""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(count, 3, size, size, dtype=torch.uint8)
    for i in range(count):
        photo = photos[int(torch.randint(len(photos), (), generator=g))]
        h, w = photo.shape[1:]
        low, high = min(2 * size, min(h, w) // 2), min(h, w) // 2
        side = int(torch.randint(low, high + 1, (), generator=g))
        top = int(torch.randint(h - side + 1, (), generator=g))
        left = int(torch.randint(w - side + 1, (), generator=g))
        crop = photo[:, top : top + side, left : left + side][None].float()
        crop = torch.nn.functional.interpolate(
            crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        if torch.rand((), generator=g) < 0.5:
            crop = crop.flip(-1)
        out[i] = crop[0].round().clamp(0, 255).to(torch.uint8)
    return out


def new_folder(path) -> Path:
    """path as a new (or empty) folder, created; a folder with files in it is refused in one line."""
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_crops(crops: torch.Tensor, out: Path) -> None:
    """uint8 images (N, 3, H, W) as out/crop-00000.png, ... (out created if missing)."""
    from torchvision.io import write_png

    out.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(bar(crops, desc="writing crops", unit="img")):
        write_png(crop, str(out / f"crop-{i:05d}.png"))

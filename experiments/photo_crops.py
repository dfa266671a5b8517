"""Build a folder of real photographs to train and score a GAN on, offline: random crops of the sample
photographs shipped inside matplotlib (grace_hopper.jpg, Minduka_Present_Blue_Pack.png), at random
scales and mirrored at random, resized to --size (`python -m experiments.photo_crops OUT`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image, write_png

from harness import Config, UsageError, main_guard, option, parse_config
from harness.progress import bar

PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")  # matplotlib's two photographs


def sample_photos() -> list[torch.Tensor]:
    """matplotlib's sample photographs as uint8 (3, H, W) tensors."""
    root = Path(matplotlib.get_data_path()) / "sample_data"
    return [decode_image(str(root / name), mode=ImageReadMode.RGB) for name in PHOTOS]


def random_crops(photos: list[torch.Tensor], count: int, size: int, seed: int) -> torch.Tensor:
    """count crops (count, 3, size, size) uint8: a photo, a square side between 2 x size and half the
    photo's shorter side, a position, and a mirror flip, all drawn with `seed`; resized with antialiasing."""
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
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
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
    out.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(bar(crops, desc="writing crops", unit="img")):
        write_png(crop, str(out / f"crop-{i:05d}.png"))


@dataclass(frozen=True)
class PhotoCropsConfig(Config):
    out: str = option(
        "", "folder to write the crops into (created; PNG files crop-00000.png, ...)", positional=True
    )
    count: int = option(2000, "number of crops")
    size: int = option(64, "side of each crop in pixels")
    seed: int = option(0, "seed of the crops")

    def __post_init__(self):
        super().__post_init__()
        self.require(self.count >= 1 and self.size >= 8, "--count must be at least 1 and --size at least 8")


@main_guard
def main(argv=None):
    args, _ = parse_config(PhotoCropsConfig, argv, "python -m experiments.photo_crops", __doc__)
    out = new_folder(args.out)
    crops = random_crops(sample_photos(), args.count, args.size, args.seed)
    write_crops(crops, out)
    print(f"wrote {len(crops)} crops of {args.size}x{args.size} into {out}")


if __name__ == "__main__":
    main()

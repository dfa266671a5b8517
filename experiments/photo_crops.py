"""Build a folder of real photographs to train and score a GAN on, offline: random crops of the sample
photographs shipped inside matplotlib (grace_hopper.jpg, Minduka_Present_Blue_Pack.png), at random
scales and mirrored at random, resized to --size (`python -m experiments.photo_crops OUT`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch
from torchvision.io import ImageReadMode, decode_image

from harness import Config, main_guard, option, parse_config
from harness.imagefolder import new_folder, random_crops, write_crops

PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")  # matplotlib's two photographs


def sample_photos() -> list[torch.Tensor]:
    """matplotlib's sample photographs as uint8 (3, H, W) tensors."""
    root = Path(matplotlib.get_data_path()) / "sample_data"
    return [decode_image(str(root / name), mode=ImageReadMode.RGB) for name in PHOTOS]


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

"""Score one folder of images against another, the way a user compares their samples with their data
(`python -m experiments.eval_folders SAMPLES DATA`, `make eval-folders A=... B=...`): the multi-scale SWD
per pyramid level beside its floor, each folder's diversity, and a nearest-neighbour grid.

The floor: DATA split in two halves at random, one half scored against the other, as many images as
SAMPLES is scored on: what a perfect sampler of DATA would get. Both folders are read as the GAN reads
one (harness.imagefolder: resized and centre-cropped to --image-size)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.plots import save_grids_side_by_side, save_nearest_grid
from evaluation.swd import diversity, level_scales, multiscale_swd
from harness import Config, UsageError, main_guard, option, parse_config, to_unit
from harness.imagefolder import load_image_folder


@dataclass(frozen=True)
class EvalFoldersConfig(Config):
    a: str = option("", "the folder to score (e.g. a generator's samples)", positional=True)
    b: str = option("", "the folder to score it against (e.g. the training data)", positional=True)
    out: str = option("", "where eval.json, report.md and the grids go (default: A-vs-B beside A)")
    image_size: int = option(64, "both folders resized and centre-cropped to this")
    channels: int = option(3, "3 (RGB) or 1 (grey)", (1, 3))
    max_images: int = option(2000, "score at most this many images of A (the SWD sorts every patch)")
    seed: int = option(0, "seed of the halves of B, the subsets and the SWD's projections")

    def __post_init__(self):
        super().__post_init__()
        self.require(self.image_size >= 16, f"--image-size must be at least 16, got {self.image_size}")
        self.require(self.max_images >= 2, f"--max-images must be at least 2, got {self.max_images}")


def score_folders(a: torch.Tensor, b: torch.Tensor, seed: int = 0, max_images: int = 2000) -> dict:
    """SWD per level of images a against b (both (N, C, H, W) in [0, 1]) and the floor (b's halves
    against each other), on n = min(len(a), len(b) // 2, max_images) images; each side's diversity in
    units of b's levels."""
    g = torch.Generator().manual_seed(seed)
    half = len(b) // 2
    n = min(len(a), half, max_images)
    if n < 2:
        raise UsageError(f"need at least 2 images in A and 4 in B, got {len(a)} and {len(b)}")
    perm = torch.randperm(len(b), generator=g)
    b1, b2 = b[perm[:half]][:n], b[perm[half:]][:n]
    a = a[torch.randperm(len(a), generator=g)[:n]]
    scales = level_scales(b1)
    return {
        "images": n,
        "swd": multiscale_swd(b1, a, seed),
        "floor": multiscale_swd(b1, b2, seed),
        "diversity": {"a": diversity(a, scales), "b": diversity(b1, scales)},
    }


def report(result: dict, names: tuple[str, str]) -> str:
    """The scores as a markdown table: one row per side, one column per level."""
    swd, floor = result["swd"], result["floor"]
    levels = [k for k in swd if k != "swd"]
    head = "| | " + " | ".join(levels) + " | SWD (mean) | diversity |"
    ratio = f"{swd['swd']:.1f} ({swd['swd'] / floor['swd']:.2f}x the floor)"
    cells = lambda r: " | ".join(f"{r[k]:.1f}" for k in levels)  # noqa: E731
    rows = [
        f"| {names[0]} vs {names[1]} | {cells(swd)} | {ratio} | {result['diversity']['a']:.3f} |",
        f"| floor: half of {names[1]} vs the other | {cells(floor)} | {floor['swd']:.1f} "
        f"| {result['diversity']['b']:.3f} |",
    ]
    sep = "|" + "---|" * (len(levels) + 3)
    intro = (
        f"SWD x 1e3 on {result['images']:,} images a side (lower is better); diversity: docs/evaluation.md"
    )
    return "\n".join([intro, "", head, sep, *rows, ""])


@main_guard
def main(argv=None):
    args, _ = parse_config(EvalFoldersConfig, argv, "python -m experiments.eval_folders", __doc__)
    paths = Path(args.a), Path(args.b)
    a, b = (to_unit(load_image_folder(p, args.image_size, args.channels).images) for p in paths)
    result = score_folders(a, b, args.seed, args.max_images)
    out = Path(args.out) if args.out else paths[0].parent / f"{paths[0].name}-vs-{paths[1].name}"
    out.mkdir(parents=True, exist_ok=True)
    names = (paths[0].name, paths[1].name)
    (out / "eval.json").write_text(json.dumps({"a": str(paths[0]), "b": str(paths[1]), **result}, indent=2))
    table = report(result, names)
    (out / "report.md").write_text(f"# {names[0]} against {names[1]}\n\n{table}\n![](samples_vs_real.png)\n")
    save_grids_side_by_side([(names[0], a[:64]), (names[1], b[:64])], out / "samples_vs_real.png", "")
    title = f"{names[0]}: 32 images, each over its nearest of the {len(b):,} of {names[1]} (pixels)"
    save_nearest_grid(a[:32], b, out / "nearest_neighbours.png", title)
    print(table)
    print(f"wrote {out / 'report.md'}, eval.json, samples_vs_real.png, nearest_neighbours.png")
    return result


if __name__ == "__main__":
    main()

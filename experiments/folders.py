"""Build a folder of real colour images from a Debian package, offline (`python -m experiments.folders
{emoji,abstract} OUT`; `make data-emoji` / `make data-abstract` install the packages first):

- emoji: every fully-qualified emoji of Unicode's own emoji-test.txt (package unicode-data) drawn by
  Noto Color Emoji (fonts-noto-color-emoji) at its bitmap size 109, on white, centred and resized to
  --size; one subfolder per Unicode emoji group (its label), the group read from the file, never typed;
- abstract: random crops (random scale, position and mirror flip, as experiments.photo_crops) of the
  abstract wallpapers of gnome-backgrounds and mate-backgrounds (the opaque ones: mate's transparent
  overlays are drawn over a desktop colour the file does not hold).
A GAN run holds a tenth of either folder out to score against (harness.splits)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import write_png

from harness import Config, UsageError, main_guard, option, parse_config
from harness.imagefolder import new_folder, random_crops, write_crops
from harness.progress import bar

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")  # Debian's unicode-data
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")  # fonts-noto-color-emoji
EMOJI_SIZE = 109  # the font's one bitmap strike: Pillow draws colour glyphs at this size only
SKIPPED_GROUPS = ("Component",)  # skin-tone and hair swatches, not emoji on their own
BACKGROUNDS = Path("/usr/share/backgrounds")
WALLPAPERS = ("gnome/*.webp", "mate/abstract/*", "mate/desktop/*")  # not mate/nature: photographs
DUPLICATE = re.compile(r"_\d+x\d+$")  # Elephants_3840x2160.jpg: a larger copy of Elephants.jpg
MIN_SIDE = 1024  # smaller wallpapers (gnome's 256-pixel vnc tiles) give no crops at --size 64 scales
PACKAGES = {"emoji": "fonts-noto-color-emoji unicode-data", "abstract": "gnome-backgrounds mate-backgrounds"}


def slug(group: str) -> str:
    """'Smileys & Emotion' -> 'smileys-emotion': the group's folder name."""
    return re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-")


def emoji_groups(path: Path = EMOJI_TEST) -> list[tuple[str, str]]:
    """(emoji, group) of every fully-qualified line of emoji-test.txt, in file order, the groups
    of SKIPPED_GROUPS left out. A line reads `1F600 ; fully-qualified # ...` under `# group: ...`."""
    out, group = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and group not in SKIPPED_GROUPS:
            codes = line.split(";", 1)[0].split()
            out.append(("".join(chr(int(c, 16)) for c in codes), group))
    if not out:
        raise UsageError(f"no fully-qualified emoji in {path}")
    return out


def draw_emoji(text: str, font, size: int) -> torch.Tensor | None:
    """One emoji as uint8 (3, size, size): drawn in colour on transparency, cropped to its ink,
    centred on a white square and resized with antialiasing; None where the font draws it as more
    than one glyph (a sequence it has no ligature for)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    if right - left > 1.5 * (bottom - top):  # two or more glyphs side by side
        return None
    canvas = Image.new("RGBA", (right + 8, bottom + 8), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((4, 4), text, font=font, embedded_color=True)
    ink = canvas.getbbox()
    if ink is None:
        return None
    glyph = canvas.crop(ink)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    image = TF.pil_to_tensor(square.convert("RGB"))
    return TF.resize(image, [size, size], antialias=True)


def build_emoji(out: Path, size: int) -> int:
    """Every drawable emoji into out/<group>/<code points>.png; returns how many were written."""
    from PIL import ImageFont

    for need in (EMOJI_TEST, EMOJI_FONT):
        if not need.is_file():
            raise UsageError(
                f"{need} is missing: run `make data-emoji` (apt-get install {PACKAGES['emoji']})"
            )
    font = ImageFont.truetype(str(EMOJI_FONT), EMOJI_SIZE)
    written, skipped = 0, 0
    for text, group in bar(emoji_groups(), desc="drawing emoji", unit="glyph"):
        image = draw_emoji(text, font, size)
        if image is None:
            skipped += 1
            continue
        folder = out / slug(group)
        folder.mkdir(parents=True, exist_ok=True)
        write_png(image, str(folder / ("-".join(f"{ord(c):x}" for c in text) + ".png")))
        written += 1
    if skipped:
        print(f"skipped {skipped} emoji the font draws as several glyphs")
    return written


def wallpapers(root: Path = BACKGROUNDS) -> list[Path]:
    """The abstract wallpapers under root, sorted, larger copies of one picture left out."""
    files = sorted({p for pattern in WALLPAPERS for p in root.glob(pattern) if p.is_file()})
    return [p for p in files if not DUPLICATE.search(p.stem)]


def load_wallpaper(path: Path) -> torch.Tensor | None:
    """uint8 (3, H, W); None for a picture with transparent pixels (an overlay, not a painting)."""
    from PIL import Image

    with Image.open(path) as im:
        if "A" in im.getbands() and im.getchannel("A").getextrema()[0] < 255:
            return None
        return TF.pil_to_tensor(im.convert("RGB"))


def build_abstract(out: Path, size: int, count: int, seed: int) -> int:
    """count random crops of the wallpapers into out/crop-NNNNN.png; returns count."""
    files = wallpapers()
    if not files:
        need = f"run `make data-abstract` (apt-get install {PACKAGES['abstract']})"
        raise UsageError(f"no wallpapers under {BACKGROUNDS}: {need}")
    read = {p.name: load_wallpaper(p) for p in bar(files, desc="reading wallpapers", unit="file")}
    used = [name for name, p in read.items() if p is not None and min(p.shape[1:]) >= MIN_SIDE]
    pictures = [read[name] for name in used]
    crops = random_crops(pictures, count, size, seed)
    write_crops(crops, out)
    print(f"{len(used)} wallpapers: {', '.join(used)}")
    return len(crops)


@dataclass(frozen=True)
class FoldersConfig(Config):
    kind: str = option("emoji", "which folder: emoji or abstract", tuple(PACKAGES), positional=True)
    out: str = option("", "folder to write into (created; must be new or empty)", positional=True)
    size: int = option(64, "side of each image in pixels")
    count: int = option(10000, "abstract: number of crops")
    seed: int = option(0, "abstract: seed of the crops")

    def __post_init__(self):
        super().__post_init__()
        self.require(self.count >= 1 and self.size >= 8, "--count must be at least 1 and --size at least 8")


@main_guard
def main(argv=None):
    args, _ = parse_config(FoldersConfig, argv, "python -m experiments.folders", __doc__)
    out = new_folder(args.out)
    if args.kind == "emoji":
        n = build_emoji(out, args.size)
    else:
        n = build_abstract(out, args.size, args.count, args.seed)
    print(f"wrote {n} {args.kind} images of {args.size}x{args.size} into {out}")


if __name__ == "__main__":
    main()

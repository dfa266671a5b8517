"""What a trained model learned, to look at: TensorBoard images and projector entries for a run, and
explore.html, one self-contained page (inline script and style, images as data URIs, nothing fetched)
that walks an AE/VAE's code plane or a GAN's samples."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from pathlib import Path

import torch

import engine
from evaluation import latents
from evaluation.autoencoders import decode, encode
from evaluation.plots import Image
from evaluation.report import layer_figures
from evaluation.sampling import Sampler
from harness import Throttled, finish, to_unit
from harness.files import finite

PAGE = "explore.html"
GRID = 40  # decoded images per side of the code plane's dense grid
STRIP = 12  # images in an interpolation strip
PROJECTED = 1000  # test codes in TensorBoard's projector, ~100 a class (its sprite costs ~0.3 s a 1,000)
NEIGHBOURS, RADIUS = 8, 0.35  # a GAN sample's neighbourhood: draws of z + RADIUS * N(0, I)
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "boot"],
}  # fmt: skip


def _png(images: torch.Tensor, ncol: int) -> str:
    """Images (N, C, H, W) in [0, 1] tiled row-major, ncol per row, no padding, as a PNG data URI."""
    n, c, h, w = images.shape
    rows = -(-n // ncol)
    tiles = torch.ones(rows * ncol, c, h, w)
    tiles[:n] = images.detach().float().cpu().clamp(0, 1)
    sheet = tiles.view(rows, ncol, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, ncol * w, c)
    pixels = (sheet * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if c == 1 else pixels).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


# ---- TensorBoard ------------------------------------------------------------------------------------


@torch.no_grad()
def board_images(board, model, test_images: torch.Tensor, step: int, latent_dim: int | None, seed: int):
    """Reconstructions of 16 test images (above them) and, for a VAE (latent_dim given), 64 decoded
    prior draws, as TensorBoard image grids at `step`; the model holds the weights to show."""
    if board.writer is None:
        return
    x = test_images[:16]
    codes, _ = encode(model, x)
    board.image("reconstructions", torch.cat([x, torch.sigmoid(decode(model, codes))]), step)
    if latent_dim:
        g = torch.Generator(device=x.device).manual_seed(seed)
        board.image("prior_samples", torch.sigmoid(decode(model, model.sample_prior(64, g))), step)


@torch.no_grad()
def board_projector(board, model, test_images: torch.Tensor, labels: torch.Tensor, step: int) -> None:
    """The first PROJECTED test images' codes in TensorBoard's projector, with their images and labels."""
    if board.writer is None:
        return
    x = test_images[:PROJECTED]
    codes, _ = encode(model, x)
    board.embedding(codes, labels[:PROJECTED], x, step)


class EpochFigures:
    """An AE/VAE run's pictures after each epoch (rank 0): reconstructions and, for a VAE (latent_dim
    given), prior samples on TensorBoard, and the run's own figures, draw(state), throttled to about
    5% of the wall time; flush() draws the last skipped ones."""

    def __init__(self, run, model, draw, latent_dim: int | None = None):
        self.run, self.model, self.latent_dim = run, model, latent_dim
        self.test_x = to_unit(run.test.images)
        self.plots = Throttled(draw)

    def __call__(self, state, record: dict) -> None:
        engine.load_into(self.model, state.params, state.buffers)
        seed = self.run.config.seed
        board_images(self.run.board, self.model, self.test_x, record["step"], self.latent_dim, seed)
        self.plots(state)

    def flush(self) -> None:
        self.plots.flush()


def headline(final: dict, config: dict) -> dict[str, str]:
    """The numbers a page shows: the final test metrics, the epochs and the steps."""
    shown = {f"test {k}": f"{v:.4g}" for k, v in final.items() if isinstance(v, int | float)}
    return {**shown, "epochs": str(config.get("epochs", "?"))}


def finish_exploring(run, model, state, evaluate, title: str) -> dict:
    """The end of an AE/VAE run (a harness.RunContext): the test codes into TensorBoard's projector,
    harness.finish (weights, final test metrics, the board closed), then explore.html (rank 0).
    Returns the final metrics."""
    engine.load_into(model, state.params, state.buffers)
    test_x = to_unit(run.test.images)
    if run.world.main:
        board_projector(run.board, model, test_x, run.test.labels, int(state.step))
    final = finish(run, state, evaluate)
    if run.world.main:
        cfg = dataclasses.asdict(run.config)
        info = {"title": title, "dataset": cfg["dataset"], "numbers": headline(final, cfg)}
        path = write_explorer(run.run_dir, model, test_x, run.test.labels, info)
        print(f"wrote {path} (open it in a browser)")
    return final


# ---- explore.html for an AE or VAE --------------------------------------------------------------------


def _plane(mu: torch.Tensor):
    """(N, 2) points of the codes in the page's plane and plane -> code: 2-D codes as they are (one
    dimension: a zero second axis), larger ones in their top two principal axes (the report's
    projection), mapped back through the codes' mean."""
    z_dim = mu.shape[1]
    if z_dim <= 2:
        points = mu if z_dim == 2 else torch.cat([mu, torch.zeros_like(mu)], 1)
        return (
            points,
            (lambda p: p[:, :z_dim]),
            "the codes themselves (2-D)" if z_dim == 2 else "the 1-D code",
        )
    mean, comps = latents.pca_fit(mu, 2)
    how = (
        f"the {z_dim}-D codes' top two principal axes; the image under the pointer is the decoded point "
        "of that plane through the codes' mean"
    )
    return latents.pca_project(mu, mean, comps), (lambda p: mean + p @ comps), how


@torch.no_grad()
def write_explorer(run_dir, model, test_images: torch.Tensor, labels: torch.Tensor, info: dict) -> Path:
    """run_dir/explore.html for a trained AE/VAE (weights in `model`) on the test split; info: the
    run's config and headline numbers to show."""
    mu, _ = encode(model, test_images)
    points, to_code, how = _plane(mu.float())
    lo, hi = points.quantile(0.005, dim=0), points.quantile(0.995, dim=0)
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    steps = [torch.linspace(float(lo[i]), float(hi[i]), GRID) for i in range(2)]
    gy, gx = torch.meshgrid(steps[1].flip(0), steps[0], indexing="ij")  # row 0 at the top: high y
    cells = torch.stack([gx.flatten(), gy.flatten()], 1).to(mu.device)
    decoded = torch.sigmoid(decode(model, to_code(cells).to(mu.dtype)))
    data = {
        "x": [round(v, 3) for v in points[:, 0].tolist()],
        "y": [round(v, 3) for v in points[:, 1].tolist()],
        "c": labels.tolist(),
        "lo": lo.tolist(),
        "hi": hi.tolist(),
        "grid": GRID,
        "strip": STRIP,
        "size": test_images.shape[-1],
        "classes": CLASSES.get(info.get("dataset"), [str(i) for i in range(10)]),
        "how": how,
        "title": info["title"],
        "numbers": info["numbers"],
    }
    layers = ""
    if getattr(model, "layers", 1) == 2:  # each layer's codes, and z1 redrawn under a fixed z2
        files = layer_figures(Path(run_dir), model, mu, labels, info["title"])
        layers = "<h2>Each layer</h2>" + "".join(f'<img src="{_file_uri(Path(run_dir) / f)}">' for f in files)
    return _write(Path(run_dir), "ae", data, {"SPRITE": _png(decoded, GRID), "LAYERS": layers})


# ---- explore.html for a GAN ------------------------------------------------------------------------


@torch.no_grad()
def write_gan_explorer(run_dir, sampler: Sampler, seed: int, info) -> Path:
    """run_dir/explore.html for a GAN run: the fixed-z grid of every epoch (grids/epoch-*.png) on a
    slider, and for each of the 64 fixed draws NEIGHBOURS generated from z + RADIUS * N(0, I), shown
    when the sample is clicked."""
    run_dir, device, latent_dim, classes = Path(run_dir), sampler.device, sampler.latent_dim, sampler.classes
    z = torch.randn(64, latent_dim, generator=torch.Generator(device=device).manual_seed(seed), device=device)
    g = torch.Generator(device=device).manual_seed(seed + 1)
    near = z[:, None] + RADIUS * torch.randn(64, NEIGHBOURS, latent_dim, generator=g, device=device)
    zs = torch.cat([z[:, None], near], 1).flatten(0, 1)  # (64 * (1 + NEIGHBOURS), Z): each draw, then its own
    y = (torch.arange(64, device=device) % classes).repeat_interleave(1 + NEIGHBOURS) if classes else None
    images = torch.cat([sampler(zs[i : i + 144], None if y is None else y[i : i + 144])
                        for i in range(0, len(zs), 144)])  # fmt: skip
    images = ((images.float() + 1) / 2).clamp(0, 1)
    grids = sorted((run_dir / "grids").glob("epoch-*.png"))
    data = {"neighbours": NEIGHBOURS, "radius": RADIUS, "size": images.shape[-1], "title": info["title"],
            "numbers": info["numbers"], "epochs": [int(p.stem.split("-")[1]) for p in grids]}  # fmt: skip
    uris = {"SPRITE": _png(images, 1 + NEIGHBOURS), "GRIDS": script_json([_file_uri(p) for p in grids])}
    return _write(run_dir, "gan", data, uris)


_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value) -> str:
    """value as JSON that is safe inside an inline <script>: <, >, & and the JavaScript line separators
    escaped, so no string from a run's files (a key of final.json, a folder's name) can end the
    script or start another; the page only ever puts them in as text."""
    text = json.dumps(finite(value), separators=(",", ":"), allow_nan=False)
    return "".join(_SCRIPT_UNSAFE.get(ch, ch) for ch in text)


def _write(run_dir: Path, page: str, data: dict, uris: dict) -> Path:
    """run_dir/explore.html from the template pages/<page>.html with pages/style.css inlined: the data
    as inline JSON, the images as data URIs (written atomically)."""
    pages = Path(__file__).parent / "pages"
    text = (pages / f"{page}.html").read_text().replace("%STYLE%", (pages / "style.css").read_text())
    for key, value in uris.items():  # the template's own slots first: nothing from the run is searched
        text = text.replace(f"%{key}%", value)
    text = text.replace("/*DATA*/", script_json(data), 1)
    path = run_dir / PAGE
    tmp = path.with_name(f".{PAGE}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path

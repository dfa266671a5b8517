"""Finished runs loaded back for scoring and pages: an AE/VAE as its model, a GAN as its Sampler."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from evaluation.sampling import Sampler
from harness import DataError
from harness.config import DATASET_NAMES
from losses.gan import make_gan_loss
from models import build_ae, build_vae
from models.gan import build_gan


def load_trained(run_dir: Path, device):
    """(config dict, model with the run's final weights, in eval mode); DataError if it is not one."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        cfg = None
    build = {"vae": build_vae, "ae": build_ae}.get(cfg.get("experiment")) if isinstance(cfg, dict) else None
    if (
        build is None
        or not (run_dir / "model.safetensors").exists()
        or not {"arch", "latent_dim"} <= cfg.keys()
    ):
        raise DataError(f"{run_dir} is not a finished AE/VAE run (config.json and model.safetensors)")
    prior = {"prior": cfg.get("prior", "normal"), "pseudo_inputs": cfg.get("pseudo_inputs", 500)}
    model = build(cfg["arch"], cfg["latent_dim"], **(prior if build is build_vae else {})).to(device)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors"), device=str(device)), strict=True)
    return cfg, model.eval()


def load_generator(run_dir: Path, device) -> tuple[dict, Sampler]:
    """(the run's saved config, its EMA generator as a Sampler) of a finished GAN run; DataError if it
    is not one. Committed generators are stored in fp16 (half the size); sampling runs in float32."""
    path = run_dir / "config.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("experiment") != "gan" or not (run_dir / "generator.safetensors").exists():
        raise DataError(f"{run_dir} is not a finished GAN run (config.json and generator.safetensors)")
    classified = saved["dataset"] in DATASET_NAMES  # MNIST's 28x28 grey, or a folder's own size
    shape = (1, 28, 28) if classified else (saved["channels"], saved["image_size"], saved["image_size"])
    classes = 10 if saved.get("conditional") else 0
    gen, disc = build_gan(saved["arch"], shape, saved["latent_dim"], saved["width"],
                          saved.get("disc_norm", False), classes)  # fmt: skip
    weights = load_file(str(run_dir / "generator.safetensors"), device=str(device))
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}  # int counters stay
    gen.load_state_dict(weights, strict=True)  # checks every name and shape
    params = {k: v for k, v in weights.items() if k in dict(gen.named_parameters())}
    buffers = {k: v for k, v in weights.items() if k not in params}
    generate = make_gan_loss(gen.to(device), disc.to(device), saved["loss"]).generate
    return saved, Sampler(generate, params, buffers, saved["latent_dim"], classes)

"""Finished runs loaded back for scoring and pages: an AE/VAE as its model, a GAN as its Sampler."""

from __future__ import annotations

from pathlib import Path

import torch

from engine import CheckpointError, load_weights
from evaluation.sampling import Sampler
from harness import DataError
from harness.config import DATASET_NAMES
from harness.files import FileError, read_json
from losses.gan import make_gan_loss
from models import build_ae, build_vae
from models.gan import build_gan


def load_trained(run_dir: Path, device):
    """(config dict, model with the run's final weights, in eval mode); DataError if it is not one."""
    cfg = run_config(run_dir)
    build = {"vae": build_vae, "ae": build_ae}.get(cfg.get("experiment")) if isinstance(cfg, dict) else None
    if (
        build is None
        or not (run_dir / "model.safetensors").exists()
        or not {"arch", "latent_dim"} <= cfg.keys()
    ):
        raise DataError(f"{run_dir} is not a finished AE/VAE run (config.json and model.safetensors)")
    prior = {
        "prior": cfg.get("prior", "normal"),
        "pseudo_inputs": cfg.get("pseudo_inputs", 500),
        "layers": cfg.get("layers", 1),
    }
    try:
        model = build(cfg["arch"], cfg["latent_dim"], **(prior if build is build_vae else {})).to(device)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise DataError(f"{run_dir}/config.json does not describe a model here ({e})") from None
    load_into_module(model, run_dir / "model.safetensors", device)
    return cfg, model.eval()


def run_config(run_dir: Path) -> dict | None:
    """A run's config.json as a dict, or None where it is missing, damaged or not an object."""
    try:
        return read_json(Path(run_dir) / "config.json")
    except (FileError, OSError):
        return None


def load_into_module(module: torch.nn.Module, path: Path, device, dtype=None) -> dict[str, torch.Tensor]:
    """The checksummed weights at path loaded into module (strict: every name and shape), floats cast
    to `dtype` if given; a damaged file or one of another model is one CheckpointError line."""
    weights, _ = load_weights(path, device)
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        reason = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"{path} does not fit this run's model ({reason})") from None
    return weights


def load_generator(run_dir: Path, device, rejection: bool = False) -> tuple[dict, Sampler]:
    """(the run's saved config, its EMA generator as a Sampler) of a finished GAN run; DataError if it
    is not one. Committed generators are stored in fp16 (half the size); sampling runs in float32.
    rejection: the run's discriminator.safetensors too, as the Sampler's critic (its samples then
    come by discriminator rejection sampling, evaluation.sampling.rejection_sample)."""
    saved = run_config(run_dir) or {}
    if saved.get("experiment") != "gan" or not (run_dir / "generator.safetensors").exists():
        raise DataError(f"{run_dir} is not a finished GAN run (config.json and generator.safetensors)")
    try:
        classified = saved["dataset"] in DATASET_NAMES  # MNIST's 28x28 grey, or a folder's own size
        shape = (1, 28, 28) if classified else (saved["channels"], saved["image_size"], saved["image_size"])
        classes = 10 if saved.get("conditional") else 0
        classify = bool(classes) and saved.get("class_weight", 0) > 0  # D's auxiliary classifier head
        gen, disc = build_gan(saved["arch"], shape, saved["latent_dim"], saved["width"],
                              saved.get("disc_norm", False), classes, classify,
                              saved.get("disc_width", 0), saved.get("mbstd", 0))  # fmt: skip
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise DataError(f"{run_dir}/config.json does not describe a generator here ({e!r})") from None
    # fp16 on disk, float32 to sample; int counters stay
    weights = load_into_module(gen, run_dir / "generator.safetensors", device, torch.float32)
    params = {k: v for k, v in weights.items() if k in dict(gen.named_parameters())}
    buffers = {k: v for k, v in weights.items() if k not in params}
    generate = make_gan_loss(gen.to(device), disc.to(device), saved["loss"]).generate
    critic = None
    if rejection:
        if not (run_dir / "discriminator.safetensors").exists():
            raise DataError(f"{run_dir} has no discriminator.safetensors to sample by rejection with")
        load_into_module(disc, run_dir / "discriminator.safetensors", device, torch.float32)
        critic = disc.eval()
    return saved, Sampler(generate, params, buffers, saved["latent_dim"], classes, critic)

"""Write explore.html for a finished run (AE, VAE or GAN): `python -m experiments.explore RUN_DIR`
(`make explore RUN=dir`); new runs write it themselves at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from evaluation.explore import headline, write_explorer, write_gan_explorer
from evaluation.trained import load_generator, load_trained, run_config
from harness import DataError, load_dataset, main_guard, option, parse_config, resolve_device, to_unit
from harness.config import DeviceFlags
from harness.files import read_json
from harness.rundir import lock_run_dir


@dataclass(frozen=True)
class ExploreConfig(DeviceFlags):
    run_dir: str = option(
        "", "a finished run of experiments.ae, experiments.vae or experiments.gan", positional=True
    )


def _final(run_dir: Path) -> dict:
    path = run_dir / "final.json"
    return read_json(path) if path.exists() else {}


@main_guard
def main(argv=None):
    args, _ = parse_config(ExploreConfig, argv, "python -m experiments.explore", __doc__)
    run_dir, device = Path(args.run_dir), resolve_device(args.device)
    lock_run_dir(run_dir, create=False)  # explore.html is written beside the run: one writer at a time
    experiment = (run_config(run_dir) or {}).get("experiment")
    if experiment == "gan":
        cfg, sampler = load_generator(run_dir, device)
        title = f"GAN {cfg['arch']} ({cfg['loss']}) on {cfg['dataset']}"
        info = {"title": title, "numbers": headline(_final(run_dir), cfg)}
        out = write_gan_explorer(run_dir, sampler, cfg["seed"], info)
    elif experiment in ("ae", "vae"):
        cfg, model = load_trained(run_dir, device)
        test = load_dataset(cfg["dataset"], "test", device=device)
        title = f"{experiment.upper()} {cfg['arch']} z={cfg['latent_dim']} on {cfg['dataset']}"
        info = {"title": title, "dataset": cfg["dataset"], "numbers": headline(_final(run_dir), cfg)}
        with torch.no_grad():
            out = write_explorer(run_dir, model, to_unit(test.images), test.labels, info)
    else:
        raise DataError(f"{run_dir} is not a finished AE, VAE or GAN run (no config.json naming one)")
    print(f"wrote {out} (open it in a browser)")
    return out


if __name__ == "__main__":
    main()

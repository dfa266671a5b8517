"""Evaluate a saved AE or VAE run: `python -m experiments.evaluate RUN_DIR` writes eval.json,
figures and report.md into it (`make eval RUN=dir`)."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from evaluation.autoencoders import FULL_IMAGES, FULL_K, QUICK_IMAGES, QUICK_K, evaluate_run, nll_line
from evaluation.report import write_run_report
from harness import main_guard, option, parse_config
from harness.config import DeviceFlags
from harness.files import open_regular


@dataclass(frozen=True)
class EvaluateConfig(DeviceFlags):
    run_dir: str = option("", "a finished run of experiments.ae or experiments.vae", positional=True)
    iwae_k: int = option(QUICK_K, "importance samples per image for the NLL")
    iwae_images: int = option(QUICK_IMAGES, "NLL on a seeded subset of N test images (0: all)")
    full: bool = option(False, f"the papers' protocol: k={FULL_K} over every test image (hours on a CPU)")

    def __post_init__(self):
        super().__post_init__()
        ok = self.iwae_k >= 1 and self.iwae_images >= 0
        self.require(ok, "--iwae-k must be >= 1 and --iwae-images >= 0")


@main_guard
def main(argv=None):
    args, _ = parse_config(EvaluateConfig, argv, "python -m experiments.evaluate", __doc__)
    k, images = (FULL_K, FULL_IMAGES) if args.full else (args.iwae_k, args.iwae_images)
    cfg, model, result, tensors = evaluate_run(args.run_dir, k, images, args.device)
    if "nll" in result:
        print(nll_line(result))
    for layer, units in enumerate(result.get("active_units_per_layer", []), start=1):
        if units == 0:  # the posterior-collapse check, per layer
            kl = result["kl_per_layer"][layer - 1]
            print(f"z{layer} has collapsed to its prior: no active unit, KL {kl:.2f} nats")
    # processes sharing the NLL: one at a time (a planted link is refused, not followed)
    with os.fdopen(open_regular(Path(args.run_dir) / ".eval.lock", os.O_WRONLY | os.O_CREAT), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f"wrote {write_run_report(Path(args.run_dir), cfg, model, result, tensors)}")
    return result


if __name__ == "__main__":
    main()

"""Where a run computes: the device asked for, why a GPU is out of reach, CUDA's global switches."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from harness.config import DEVICES, UsageError
from harness.world import World, init_world

NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # present where an NVIDIA kernel driver is loaded
CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}  # bf16 dot products in hardware (oneDNN uses them)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is unreadable)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes in bf16 natively: a CUDA device that supports it, a CPU with
    AVX-512 BF16 or AMX. Elsewhere bf16 is emulated, and slower than fp32 (about 20x for the DCGAN
    step on an AVX2 CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """--precision auto: bf16 autocast where the device has it natively, else fp32; others as given."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def unusable_gpu() -> str | None:
    """Why an NVIDIA GPU this machine has is out of torch's reach (None: there is none, or it works)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    if hidden or torch.cuda.is_available() or not NVIDIA_DRIVER.exists():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the driver (a driver too old?)"


def resolve_device(name: str) -> torch.device:
    """cpu or cuda (auto: cuda when present). CUDA asked for and not usable is a UsageError; auto
    falling back to the CPU beside an unusable GPU says so in one warning (rank 0 under torchrun)."""
    if name not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    reason = unusable_gpu()
    if name == "cuda" and not torch.cuda.is_available():
        why = f": {reason}" if reason else ""
        raise UsageError(f"--device cuda asked for, but no CUDA device is available{why}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if reason and int(os.environ.get("RANK", "0")) == 0:
            warnings.warn(f"an NVIDIA GPU is present but {reason}: running on the CPU", stacklevel=2)
    return torch.device(name)


def setup_device(cfg) -> tuple[torch.device, World]:
    """The run's device and its data-parallel world (torchrun: the process group joined, each rank on
    its own GPU), with CUDA's TF32 and cuDNN switches set from the config."""
    device = resolve_device(cfg.device)
    world = init_world(device.type)
    if world.parallel and device.type == "cuda":  # the rank's own GPU (LOCAL_RANK)
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":  # TF32 for fp32 matmuls/convolutions only when asked
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
        # cuDNN's default convolution backward may sum with atomics, so two identical runs differ;
        # deterministic kernels make a resumed CUDA run equal an uninterrupted one bitwise
        torch.backends.cudnn.deterministic = cfg.deterministic
    return device, world

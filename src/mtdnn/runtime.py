"""Device, precision, threads and seeds: the few process-wide settings of a run, in one place; and
which machine this is (``cpu_model``, ``environment``), for run directories and the records of
benchmarks and experiments."""

from __future__ import annotations

import contextlib
import logging
import platform
import random
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .version import __version__

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but no CUDA GPU is available", field="device")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on the device, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int | None) -> None:
    if n is not None:
        torch.set_num_threads(n)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``) and the SIMD level torch's CPU kernels use
    (AVX2, AVX512, ...): figures measured on different machines are not comparable without both."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


# the packages whose version can move a run's floating-point rounding (kernels, tokenisation,
# initialisation, metrics): named in environment.json, experiment records and the golden recording
ROUNDING_PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "scikit-learn", "peft")


def package_versions() -> dict[str, str | None]:
    """The installed version of each of ``ROUNDING_PACKAGES`` (None when it is not installed)."""
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {p: torch.__version__ if p == "torch" else version(p) for p in ROUNDING_PACKAGES}


def environment(device: torch.device, world_size: int = 1) -> dict[str, object]:
    """What a run computed on: package versions (``package_versions``), the device, the processor
    (``cpu_model``: float rounding differs between processors, even at one SIMD level), the GPU,
    processes and threads."""
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "mtdnn": __version__,
            "python": platform.python_version(), **package_versions(), "device": device.type,
            "processor": cpu_model(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "world_size": world_size, "threads": torch.get_num_threads()}

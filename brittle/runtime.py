"""Device, dtype and seeding: the same choices in every script.

`--device auto` picks the CUDA GPU with the most free memory, then Apple's MPS, then the CPU;
`--dtype auto` picks bf16 on CUDA, fp16 on MPS and fp32 on CPU.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from brittle.cli import UserError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def best_cuda_device() -> str:
    """`cuda:N` for the visible GPU with the most free memory."""
    free_memory = [torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count())]
    return f"cuda:{max(range(len(free_memory)), key=free_memory.__getitem__)}"


def resolve_device(spec: str = "auto") -> str:
    """Turn a `--device` value into a concrete torch device string, checking it is usable."""
    if spec == "auto":
        if torch.cuda.is_available():
            return best_cuda_device()
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec} was asked for but no CUDA GPU is visible; use --device cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) are visible")
        return spec
    if spec == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    if spec not in ("mps", "cpu"):
        raise UserError(f"unknown --device {spec!r}; use auto, cuda, cuda:N, mps or cpu")
    return spec


def resolve_dtype(spec: str, device: str) -> torch.dtype:
    """Turn a `--dtype` value into a torch dtype for `device`."""
    if spec == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16
        if device == "mps":
            return torch.float16
        return torch.float32
    if spec not in DTYPES:
        raise UserError(f"unknown --dtype {spec!r}; use auto, fp32, fp16 or bf16")
    return DTYPES[spec]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))

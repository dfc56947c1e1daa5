"""Device, precision and seeded randomness, shared by `train` and `sample`."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from hyperdiffusion.io import InputError


def resolve_device(name: str) -> torch.device:
    """"auto": CUDA when available (the GPU of LOCAL_RANK under torchrun), else CPU. Asking for CUDA
    on a machine without it is an error, not a silent CPU run."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is available (use --device cpu or auto)")
        if device.index is None and "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def autocast_context(precision: str, device: torch.device):
    """The one precision switch (nanoGPT): bf16 autocast or nothing; parameters stay fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError(f"precision must be auto, fp32 or bf16; got {precision!r}")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose seed is a pure function of `keys` (seed, purpose, step ...)."""
    h = 0
    for k in keys:
        h = (h * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(h)

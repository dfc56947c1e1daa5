"""Device, precision, seeded randomness and torchrun processes, shared by `train` and `sample`."""

from __future__ import annotations

import gc
import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

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
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: CUDA device {device.index} does not exist (this machine has "
                             f"{torch.cuda.device_count()}); give torchrun at most that many --nproc_per_node")
    return device


def require_bf16(device: torch.device) -> None:
    """bf16 on a GPU that lacks it (before Ampere) would be emulated slowly or fail inside a kernel:
    say so before the run starts."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use --precision fp32")


def autocast_context(precision: str, device: torch.device):
    """The one precision switch (nanoGPT): bf16 autocast or nothing; parameters stay fp32."""
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError(f"precision must be auto, fp32 or bf16; got {precision!r}")
    if precision == "bf16":
        require_bf16(device)
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose seed is a pure function of `keys` (seed, purpose, step ...)."""
    h = 0
    for k in keys:
        h = (h * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(h)


# ----------------------------------------------------------------------------- torchrun


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (world_size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


@contextmanager
def distributed(device: torch.device) -> Iterator[Distributed]:
    """Join the torchrun job this process belongs to (WORLD_SIZE > 1), as DiT's train.py does: NCCL
    between GPUs, gloo between CPU processes; leave it on exit. A process group someone else made
    (a caller that already called init_process_group) is used and left alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Distributed()
        return
    dist = torch.distributed
    own = not dist.is_initialized()
    if own:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size())
    finally:
        if own:
            # Free the DDP wrapper (its reducer holds gloo work) and let every rank arrive before any
            # tears the group down: without this, a gloo rank aborted at exit ("terminate called
            # without an active exception") once in CI under load, after its training had finished.
            gc.collect()
            if sys.exc_info()[0] is None:
                dist.barrier()
            dist.destroy_process_group()

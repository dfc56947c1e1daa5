"""What every representation provides to the diffusion stack.

A representation is the answer to "what is one sample?": an MLP's flat weight vector
(HyperDiffusion), a voxel grid (the paper's voxel baseline), a point cloud (PVD, DPC).
The diffusion stack (diffusion/train.py, diffusion/sample.py) only ever sees tensors of
shape [N, *sample_shape]; the representation turns a dataset into such tensors and
samples back into the files `evaluate` reads (meshes/, clouds/, mesh.json; docs/FORMATS.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass
class TrainingSet:
    """The tensors a diffusion model is trained on, and what decoding a sample needs."""

    data: torch.Tensor  # [N, *sample_shape], float32
    names: list[str]
    info: dict[str, Any]  # JSON-able; recorded in checkpoints, so `sample CKPT` needs nothing else
    layout: list[int] | None = None  # sizes of the parts a flat sample is made of (MLP tensors), for tokenizers
    source: str = ""

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])


@dataclass(frozen=True)
class DecodeOptions:
    """How samples become surfaces. `level` is an occupancy probability for every representation."""

    res: int | None = None  # marching-cubes resolution where the representation has a free one (MLPs)
    level: float | None = None  # surface occupancy probability; None = the representation's default (0.5)
    n_points: int = 2048  # surface samples per shape (paper Sec. 5)
    seed: int = 0
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)  # representation-specific (e.g. MLP level_logit)


class Representation(ABC):
    """One kind of sample. Subclasses are registered by name in representations/__init__.py."""

    name: ClassVar[str]
    default_denoiser: ClassVar[str]  # a key of denoisers.DENOISERS
    source_kind: ClassVar[str]  # what `load` reads, for messages: "weight set", "prepared dataset"

    @abstractmethod
    def load(self, source: str | Path, *, progress: bool = True) -> TrainingSet:
        """The training tensors of `source` (a prepared dataset's train split, or a weight set)."""

    def save_samples(self, out: Path, x: torch.Tensor, names: list[str], info: dict[str, Any],
                     extra: dict[str, Any]) -> Path:
        """Write raw samples [n, *sample_shape] as one self-describing file in `out`; return its path.

        The default: OUT/samples.safetensors, tensor "samples" and metadata "samples" =
        {representation, info, names, **extra} (docs/FORMATS.md); `read_samples` reads it back."""
        from hyperdiffusion.io import save_safetensors

        path = out / "samples.safetensors"
        meta = {"representation": self.name, "info": info, "names": names, **extra}
        save_safetensors(path, {"samples": x.float().cpu().contiguous()}, {"samples": meta})
        return path

    @abstractmethod
    def decode(self, samples: Path, out: Path, options: DecodeOptions, *, progress: bool = True) -> dict[str, str]:
        """Samples file -> out/meshes/, out/clouds/, out/mesh.json; returns name -> status
        ("ok", "empty", "full", "non-finite"). Resumable where the work is long."""

    @abstractmethod
    def to_clouds(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list[np.ndarray | None]:
        """In memory, for validation during training: one [n_points, 3] cloud per sample (None: no surface)."""


def read_samples(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """(samples [n, *shape], metadata) of a samples.safetensors written by `Representation.save_samples`."""
    from hyperdiffusion.io import InputError, load_safetensors

    tensors, meta = load_safetensors(path)
    if "samples" not in tensors or not isinstance(meta.get("samples"), dict):
        raise InputError(f"{path}: not a samples file (needs a 'samples' tensor and 'samples' metadata)")
    m = meta["samples"]
    if len(m.get("names", [])) != len(tensors["samples"]):
        raise InputError(f"{path}: {len(m.get('names', []))} names for {len(tensors['samples'])} samples")
    return tensors["samples"], m

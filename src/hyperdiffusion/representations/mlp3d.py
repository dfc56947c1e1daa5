"""HyperDiffusion's representation: one occupancy MLP per shape, as a flat weight vector (paper Sec. 3).

Training data is a weight set written by `fit` (fields/fit.py); samples are written in the same
format (OUT/weights.safetensors), then meshed by the mesh stage (fields/mesh.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperdiffusion.fields.mlp import MLPConfig, WeightSet, load_weight_set, save_weight_set
from hyperdiffusion.representations.base import DecodeOptions, Representation, TrainingSet


def mesh_config(options: DecodeOptions):
    """The mesh stage's settings for these options (its own defaults where an option is None)."""
    from hyperdiffusion.fields.mesh import MeshConfig

    given = {"res": options.res, "level": options.level, "level_logit": options.extra.get("level_logit"),
             "n_points": options.n_points, "seed": options.seed}
    return MeshConfig(**{k: v for k, v in given.items() if v is not None})


class MLPWeights(Representation):
    name = "mlp3d"
    default_denoiser = "transformer"
    source_kind = "weight set (weights.safetensors from `fit`)"

    def load(self, source: str | Path, *, progress: bool = True) -> TrainingSet:
        ws = load_weight_set(source)
        layout = [math.prod(shape) for _, shape in ws.mlp.tensor_shapes()]
        return TrainingSet(ws.weights.float(), list(ws.names), {"mlp": ws.mlp.to_dict()}, layout, str(source))

    def save_samples(self, out: Path, x: torch.Tensor, names: list[str], info: dict[str, Any],
                     extra: dict[str, Any]) -> Path:
        path = out / "weights.safetensors"
        save_weight_set(path, x, names, MLPConfig.from_dict(info["mlp"]), extra=extra)
        return path

    def decode(self, samples: Path, out: Path, options: DecodeOptions, *, progress: bool = True) -> dict[str, str]:
        from hyperdiffusion.fields.mesh import mesh_weights

        return mesh_weights(samples, out, mesh_config(options), device=options.device, progress=progress)

    def to_clouds(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list[np.ndarray | None]:
        from hyperdiffusion.fields.mesh import extract_meshes, surface_cloud

        cfg = mesh_config(options)
        names = [f"sample_{i:02d}" for i in range(len(x))]
        device = "cpu" if options.device == "auto" and not torch.cuda.is_available() else options.device
        device = "cuda" if device == "auto" else device
        meshes = extract_meshes(WeightSet(x.float().cpu(), names, MLPConfig.from_dict(info["mlp"]), {}),
                                res=cfg.res, level=cfg.level, level_logit=cfg.level_logit, device=device)
        return [surface_cloud(m, cfg.n_points, cfg.seed + i) if m is not None and len(m.faces) else None
                for i, m in enumerate(meshes)]

"""HyperDiffusion in 4D: one MLP over (x, y, z, t) per animation, as a flat weight vector (paper Sec. 4.4).

Training data is a weight set of 4D MLPs written by `fit` on a 4D dataset (docs/4D.md); samples
are written in the same format and meshed frame by frame (fields/mesh4d.py): OUT/sequences/<name>/,
animated GLBs and previews, and [16, 2048, 3] clouds that `evaluate` scores as sequences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperdiffusion.fields.mlp import MLPConfig, WeightSet
from hyperdiffusion.io import InputError
from hyperdiffusion.representations.base import DecodeOptions, TrainingSet
from hyperdiffusion.representations.mlp3d import MLPWeights, mesh_config

N_FRAMES = 16  # the paper's animations: 16 frames each


class MLP4DWeights(MLPWeights):
    name = "mlp4d"
    default_denoiser = "transformer"
    source_kind = "weight set of 4D MLPs (weights.safetensors from `fit` on a 4D dataset)"

    def load(self, source: str | Path, *, progress: bool = True) -> TrainingSet:
        tset = super().load(source, progress=progress)
        if tset.info["mlp"].get("in_dim") != 4:
            raise InputError(f"{source}: {tset.info['mlp'].get('in_dim')}D MLPs; --representation mlp4d needs "
                             "4D MLPs (fit on a 4D dataset), and mlp3d is for 3D ones")
        return tset

    def decode(self, samples: Path, out: Path, options: DecodeOptions, *, progress: bool = True) -> dict[str, str]:
        from hyperdiffusion.fields.mesh4d import mesh_weights_4d

        cfg = mesh_config(options)
        return mesh_weights_4d(samples, out, cfg, device=options.device, progress=progress, n_frames=N_FRAMES)

    def to_clouds(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list[np.ndarray | None]:
        """One [16, n_points, 3] sequence cloud per sample; None when any frame has no surface."""
        from hyperdiffusion.fields.mesh import extract_meshes, surface_cloud
        from hyperdiffusion.fields.mesh4d import frame_weights

        mlp = MLPConfig.from_dict(info["mlp"])
        cfg = mesh_config(options)
        w3, cfg3 = frame_weights(x.float().cpu(), mlp, mlp.frame_times(N_FRAMES))
        names = [f"sample_{i:02d}_frame_{k:02d}" for i in range(len(x)) for k in range(N_FRAMES)]
        device = "cuda" if options.device == "auto" and torch.cuda.is_available() else options.device
        device = "cpu" if device == "auto" else device
        meshes = extract_meshes(WeightSet(w3, names, cfg3, {}), res=cfg.res, level=cfg.level,
                                level_logit=cfg.level_logit, device=device)
        out = []
        for i in range(len(x)):
            frames = meshes[i * N_FRAMES:(i + 1) * N_FRAMES]
            if any(m is None or len(m.faces) == 0 for m in frames):
                out.append(None)
                continue
            out.append(np.stack([surface_cloud(m, cfg.n_points, cfg.seed + i * 101 + k) for k, m in enumerate(frames)]))
        return out

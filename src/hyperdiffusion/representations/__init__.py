"""Representations: what one sample is, for the diffusion stack (diffusion/).

    base.py        the interface: a dataset -> training tensors [N, *sample_shape]; samples -> surfaces
    mlp3d.py       HyperDiffusion: an occupancy MLP's flat weight vector (from `fit`)
    mlp4d.py       HyperDiffusion in 4D: an MLP over (x, y, z, t) per animation of 16 frames
    voxel.py       the paper's voxel baseline: 24^3 grids of -1 / +1 (voxel_grid.py does the geometry),
                   and voxel4d, its 4D variant with the 16 frames of an animation as channels
    points.py      the point-cloud baselines (PVD, DPC): 2048-point clouds
    surfaces.py    in-memory meshes or clouds -> the meshes/, clouds/, mesh.json files `evaluate` reads

A fifth representation is one module here with a `Representation` subclass, and one entry in
`REPRESENTATIONS`; its default denoiser is a key of `denoisers.DENOISERS`.
"""

from __future__ import annotations

from pathlib import Path

from hyperdiffusion.io import InputError
from hyperdiffusion.representations.base import DecodeOptions, Representation, TrainingSet
from hyperdiffusion.representations.mlp3d import MLPWeights
from hyperdiffusion.representations.mlp4d import MLP4DWeights
from hyperdiffusion.representations.points import PointClouds
from hyperdiffusion.representations.voxel import VoxelGrids, VoxelSequences

# name (recorded in every checkpoint) -> the representation.
REPRESENTATIONS: dict[str, Representation] = {
    "mlp3d": MLPWeights(),
    "mlp4d": MLP4DWeights(),
    "voxel": VoxelGrids(),
    "voxel4d": VoxelSequences(),
    "points": PointClouds(),
}


def get_representation(name: str) -> Representation:
    if name not in REPRESENTATIONS:
        raise InputError(f"unknown representation {name!r}; choose one of {', '.join(sorted(REPRESENTATIONS))}")
    return REPRESENTATIONS[name]


def detect_representation(source: str | Path) -> str:
    """The representation a training source implies: weight sets are MLPs; a prepared dataset is ambiguous."""
    path = Path(source)
    if path.suffix == ".safetensors" or (path / "weights.safetensors").is_file():
        from hyperdiffusion.io import load_safetensors

        _, meta = load_safetensors(path if path.suffix == ".safetensors" else path / "weights.safetensors",
                                   prefixes=())  # the MLP config alone; `load` reads the weights once
        return "mlp4d" if (meta.get("mlp") or {}).get("in_dim") == 4 else "mlp3d"
    if (path / "manifest.json").is_file():
        raise InputError(f"{path}: a prepared dataset; say which representation to train on it with "
                         f"--representation ({', '.join(n for n in sorted(REPRESENTATIONS) if n != 'mlp3d')}), "
                         "or fit MLPs first (`hyperdiffusion fit`) for HyperDiffusion")
    raise InputError(f"{path}: neither a weight set (weights.safetensors) nor a prepared dataset (manifest.json)")


__all__ = ["REPRESENTATIONS", "DecodeOptions", "Representation", "TrainingSet", "detect_representation",
           "get_representation"]

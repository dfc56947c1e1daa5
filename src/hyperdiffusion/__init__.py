"""HyperDiffusion: generating implicit neural fields with weight-space diffusion.

Erkoç, Ma, Shan, Nießner, Dai, ICCV 2023 (arXiv 2303.17015).

The public API is the pipeline's stages, each a function that reads and writes files
(docs/FORMATS.md), so any stage can be rerun alone or from a notebook:

    import hyperdiffusion as hd
    hd.prepare("builtin:chair", "data/chair")
    hd.fit("data/chair", "mlps/chair")
    hd.train("mlps/chair/weights.safetensors", "runs/chair", hd.TRAIN_PRESETS["cpu"])
    hd.sample("runs/chair", "samples/chair")
    hd.evaluate("samples/chair", "data/chair")

The package, folder by folder (the pipeline in reading order):

    data/             stage 1: meshes -> prepared datasets (built-in families, robust labels)
    fields/           stage 2: one occupancy MLP per shape (fit), and MLPs back to meshes (mesh)
    representations/  what a sample *is* for the diffusion stack: MLP weights, voxel grids, ...
    denoisers/        the networks that denoise them: weight transformer, 3D UNet, ...
    diffusion/        stages 3-4: the Gaussian diffusion, training, sampling, checkpoints
    evaluation/       stage 5: metrics, FPD, the evaluate and compare stages
    pictures/         renders and the HTML gallery
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# name -> (module, attribute). Loaded on first use, so `import hyperdiffusion` stays cheap and
# the command line starts without importing every stage.
_API = {
    "prepare": ("hyperdiffusion.data.prepare", "prepare"),
    "PrepareConfig": ("hyperdiffusion.data.prepare", "PrepareConfig"),
    "load_dataset": ("hyperdiffusion.data.prepare", "load_dataset"),
    "fit": ("hyperdiffusion.fields.fit", "fit_dataset"),
    "FitConfig": ("hyperdiffusion.fields.fit", "FitConfig"),
    "mesh": ("hyperdiffusion.fields.mesh", "mesh_weights"),
    "MeshConfig": ("hyperdiffusion.fields.mesh", "MeshConfig"),
    "load_weight_set": ("hyperdiffusion.fields.mlp", "load_weight_set"),
    "train": ("hyperdiffusion.diffusion.train", "train"),
    "TrainConfig": ("hyperdiffusion.diffusion.train", "TrainConfig"),
    "TRAIN_PRESETS": ("hyperdiffusion.diffusion.train", "TRAIN_PRESETS"),
    "sample": ("hyperdiffusion.diffusion.sample", "sample"),
    "SampleConfig": ("hyperdiffusion.diffusion.sample", "SampleConfig"),
    "load_checkpoint": ("hyperdiffusion.diffusion.checkpoint", "load_denoiser"),
    "evaluate": ("hyperdiffusion.evaluation.evaluate", "evaluate"),
    "EvalConfig": ("hyperdiffusion.evaluation.evaluate", "EvalConfig"),
    "compare": ("hyperdiffusion.evaluation.compare", "compare"),
    "merge": ("hyperdiffusion.shards", "merge_all"),
    "REPRESENTATIONS": ("hyperdiffusion.representations", "REPRESENTATIONS"),
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'hyperdiffusion' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

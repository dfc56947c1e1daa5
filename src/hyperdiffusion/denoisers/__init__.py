"""Denoising networks: `model(x_t, t) -> prediction`, each rebuilt from a name and a config dict.

Every denoiser module defines a config dataclass and a `build(config: dict, data_shape) -> nn.Module`;
`DENOISERS` maps the name a checkpoint records to that builder. A new network is one module here
and one line in `DENOISERS`.

    transformer.py  G.pt's weight-space transformer (HyperDiffusion's denoiser)
    unet3d.py       a 3D UNet over voxel grids (the paper's voxel baseline)
    dpc.py          DPC's FlowVAE over point clouds (PointNet encoder, flow prior, per-point diffusion decoder)
    pvcnn.py        PVD's point-voxel CNN over point clouds (point_ops.py: FPS, ball query, ...)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class DenoiserEntry:
    """Where a denoiser lives: its module (imported on use), config class and size presets by name."""

    module: str
    config_class: str
    presets: str  # name of the module's dict preset name -> config

    def load(self):
        return importlib.import_module(self.module)

    def preset_names(self) -> list[str]:
        return sorted(getattr(self.load(), self.presets))

    def config(self, preset: str, **overrides: Any) -> dict[str, Any]:
        """The preset's config with `overrides` applied, as the dict a checkpoint records."""
        mod = self.load()
        presets = getattr(mod, self.presets)
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r} for {self.module}; choose one of {sorted(presets)}")
        cfg = presets[preset].to_dict()
        unknown = set(overrides) - set(cfg)
        if unknown:
            raise ValueError(f"{sorted(unknown)} are not settings of {self.config_class}")
        return getattr(mod, self.config_class).from_dict({**cfg, **overrides}).to_dict()


# name (recorded in every checkpoint) -> entry. A new denoiser: one module with a config dataclass,
# a presets dict and `build(config, sample_shape[, layout])`, plus one line here.
DENOISERS: dict[str, DenoiserEntry] = {
    "transformer": DenoiserEntry("hyperdiffusion.denoisers.transformer", "TransformerConfig", "PAPER_PRESETS"),
    "unet3d": DenoiserEntry("hyperdiffusion.denoisers.unet3d", "UNet3DConfig", "UNET_PRESETS"),
    "dpc": DenoiserEntry("hyperdiffusion.denoisers.dpc", "DPCConfig", "DPC_PRESETS"),
    "pvcnn2": DenoiserEntry("hyperdiffusion.denoisers.pvcnn", "PVCNNConfig", "PVCNN_PRESETS"),
}


def get_denoiser(name: str) -> DenoiserEntry:
    if name not in DENOISERS:
        raise ValueError(f"unknown denoiser {name!r}; choose one of {sorted(DENOISERS)}")
    return DENOISERS[name]


def build_denoiser(name: str, config: dict[str, Any], sample_shape: tuple[int, ...],
                   layout: list[int] | None = None) -> nn.Module:
    """Rebuild a denoiser from what a checkpoint records: its registry name, config dict and data shape."""
    extra = {"layout": layout} if layout is not None else {}  # only token-based denoisers take a layout
    return get_denoiser(name).load().build(config, tuple(sample_shape), **extra)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

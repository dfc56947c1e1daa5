"""Point clouds as samples: the representation of the point-cloud baselines (PVD, DPC; paper Table 1).

Training data is each prepared train shape's reference cloud (2048 surface points, in the
dataset's normalised coordinates, max |coordinate| 0.475); samples are clouds of the same size,
written straight to OUT/clouds/ for `evaluate` (there is no mesh to extract).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperdiffusion.io import InputError
from hyperdiffusion.representations.base import DecodeOptions, Representation, TrainingSet, read_samples
from hyperdiffusion.representations.surfaces import NON_FINITE, write_surfaces

N_POINTS = 2048  # paper Sec. 5 and both baselines


class PointClouds(Representation):
    name = "points"
    default_denoiser = "pvcnn2"
    source_kind = "prepared dataset (from `prepare`)"

    def __init__(self, n_points: int = N_POINTS):
        self.n_points = n_points

    def load(self, source: str | Path, *, progress: bool = True) -> TrainingSet:
        from hyperdiffusion.data.prepare import load_cloud, load_dataset

        ds = load_dataset(source)
        names = ds.names("train")
        if not names:
            raise InputError(f"{ds.root}: the train split is empty")
        clouds = []
        for name in names:
            cloud = load_cloud(ds.root, name)
            if len(cloud) < self.n_points:
                raise InputError(f"{ds.root}: {name}'s cloud has {len(cloud)} points; {self.n_points} are needed")
            clouds.append(cloud[: self.n_points])
        info = {"n_points": self.n_points, "dataset": str(ds.root)}
        return TrainingSet(torch.from_numpy(np.stack(clouds)).float(), names, info, None, str(ds.root))

    def decode(self, samples: Path, out: Path, options: DecodeOptions, *, progress: bool = True) -> dict[str, str]:
        started = time.perf_counter()
        x, meta = read_samples(samples)
        return write_surfaces(out, meta["names"], self._items(x), options, source=str(samples), progress=progress,
                              settings={"representation": self.name}, started=started)

    def to_clouds(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list[np.ndarray | None]:
        return [c if not isinstance(c, str) else None for c in self._items(x)]

    @staticmethod
    def _items(x: torch.Tensor) -> list:
        clouds = x.float().cpu().numpy()
        return [c if np.isfinite(c).all() else NON_FINITE for c in clouds]

"""The paper's voxel baseline: 24^3 occupancy grids with values -1 / +1 (REFERENCE.md "Voxel baseline").

The official code scales each mesh to max |coordinate| 0.95, voxelises it at pitch 1.9/23 and
fills it. Prepared shapes here have max |coordinate| 0.475 inside [-0.5, 0.5]^3, so the same
grid is 24 voxel centres per axis at linspace(-0.475, 0.475, 24). We voxelise as the official
code (every voxel the surface touches, then fill) and add the project's robust inside/outside
labels at the voxel centres (data/occupancy.py) where the fill leaks through a hole: method
"solid" in voxel_grid.py. Labels at centres alone lose every part thinner than a voxel (4 % of
the shape): on the 77 real chairs, 56 fell into pieces (benchmarks/RESULTS.md, "Voxel baseline").

Grids are computed once per dataset and cached beside it, one file per shape
(DATASET/derived/voxel_<res>_<method>/<name>.npy; voxel4d_... for 4D), so a crash loses at most one shape's work.
Decoding thresholds at 0 (probability 0.5 maps to grid value 2 * 0.5 - 1 = 0), runs marching
cubes and samples 2048 surface points, as the official baseline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperdiffusion.io import InputError, load_npy, safe_name, save_npy
from hyperdiffusion.progress import progress as progress_bar
from hyperdiffusion.representations.base import DecodeOptions, Representation, TrainingSet, read_samples
from hyperdiffusion.representations.surfaces import write_surfaces

RES = 24  # the official vox_resolution
EXTENT = 0.475  # outermost voxel centre: the prepared shapes' max |coordinate|


def grid_level(options: DecodeOptions) -> float:
    """The surface level on the -1/+1 grid for an occupancy probability p: 2p - 1 (p = 0.5 -> 0)."""
    return 2.0 * (0.5 if options.level is None else options.level) - 1.0


class VoxelGrids(Representation):
    name = "voxel"
    default_denoiser = "unet3d"
    source_kind = "prepared dataset (from `prepare`)"

    def __init__(self, res: int = RES, extent: float = EXTENT, method: str = "solid"):
        self.res, self.extent, self.method = res, extent, method

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return (self.res,) * 3

    def load(self, source: str | Path, *, progress: bool = True) -> TrainingSet:
        from hyperdiffusion.data.prepare import load_dataset

        ds = load_dataset(source)
        names = ds.names("train")
        if not names:
            raise InputError(f"{ds.root}: the train split is empty")
        grids = [self._cached_grid(ds.root, n) for n in progress_bar(names, desc="voxelise", unit="shape",
                                                                      disable=not progress)]
        data = torch.from_numpy(np.stack(grids).reshape(len(grids), -1, *(self.res,) * 3))  # [N, C, R, R, R]
        info = {"res": self.res, "extent": self.extent, "frames": data.shape[1], "voxelisation": self.method,
                "dataset": str(ds.root)}
        return TrainingSet(data.float(), names, info, None, str(ds.root))

    def _cached_grid(self, root: Path, name: str) -> np.ndarray:
        path = root / "derived" / f"{self.name}_{self.res}_{self.method}" / f"{safe_name(name)}.npy"
        if path.is_file():
            grid = load_npy(path)
            if grid.shape == self.grid_shape:
                return grid
        grid = self._voxelize(root, name)
        save_npy(path, grid)
        return grid

    def _voxelize(self, root: Path, name: str) -> np.ndarray:
        import trimesh

        from hyperdiffusion.data.prepare import mesh_path
        from hyperdiffusion.representations.voxel_grid import voxelize

        mesh = trimesh.load(mesh_path(root, name), force="mesh", process=False)
        return voxelize(mesh, self.res, self.extent, method=self.method).astype(np.float32)

    def decode(self, samples: Path, out: Path, options: DecodeOptions, *, progress: bool = True) -> dict[str, str]:
        started = time.perf_counter()
        x, meta = read_samples(samples)
        meshes = self.to_meshes(x, meta["info"], options)
        return write_surfaces(out, meta["names"], meshes, options, source=str(samples), progress=progress,
                              settings={"representation": self.name, "grid_level": grid_level(options)},
                              started=started)

    def to_meshes(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list:
        from hyperdiffusion.representations.voxel_grid import grid_to_mesh

        level = grid_level(options)
        out = []
        for grid in x.float().cpu().numpy():
            if not np.isfinite(grid).all():
                out.append("non-finite")
                continue
            out.append(grid_to_mesh(grid[0], info["extent"], level))
        return out

    def to_clouds(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list[np.ndarray | None]:
        from hyperdiffusion.fields.mesh import surface_cloud

        return [surface_cloud(m, options.n_points, options.seed + i) if _has_faces(m) else None
                for i, m in enumerate(self.to_meshes(x, info, options))]


def _has_faces(mesh) -> bool:
    return mesh is not None and not isinstance(mesh, str) and len(mesh.faces) > 0


class VoxelSequences(VoxelGrids):
    """The 4D voxel baseline (paper Sec. 4.4): each animation's 16 frames as the 16 channels of one grid,
    from a 4D dataset (docs/4D.md); decoded frame by frame into the layout the 4D mesh stage writes
    (OUT/sequences/<name>/frame_XX.ply, OUT/clouds/<name>.npy [16, 2048, 3], mesh.json "kind": "4d")."""

    name = "voxel4d"
    source_kind = "prepared 4D dataset (from `prepare` on animations)"
    frames = 16

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return (self.frames,) + (self.res,) * 3

    def load(self, source: str | Path, *, progress: bool = True) -> TrainingSet:
        from hyperdiffusion.data.animation import is_4d_dataset

        if not is_4d_dataset(source):
            raise InputError(f"{source}: not a 4D dataset; --representation voxel4d trains on animations "
                             "(`prepare` on .anime files or builtin:walker), voxel on 3D shapes")
        return super().load(source, progress=progress)

    def _voxelize(self, root: Path, name: str) -> np.ndarray:
        from hyperdiffusion.data.animation import load_sequence_meshes
        from hyperdiffusion.representations.voxel_grid import voxelize_frames

        frames = load_sequence_meshes(root, name)
        return voxelize_frames(frames, self.res, self.extent, method=self.method).astype(np.float32)

    def to_meshes(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list:
        from hyperdiffusion.representations.voxel_grid import grid_to_mesh

        level = grid_level(options)
        return ["non-finite" if not np.isfinite(seq).all() else [grid_to_mesh(g, info["extent"], level) for g in seq]
                for seq in x.float().cpu().numpy()]

    def decode(self, samples: Path, out: Path, options: DecodeOptions, *, progress: bool = True) -> dict[str, str]:
        from hyperdiffusion.fields.mesh import surface_cloud
        from hyperdiffusion.io import atomic_path, ensure_writable_dir, write_json

        started = time.perf_counter()
        x, meta = read_samples(samples)
        out = ensure_writable_dir(out)
        status = {}
        for i, (name, seq) in enumerate(zip(meta["names"], self.to_meshes(x, meta["info"], options))):
            if isinstance(seq, str):
                status[name] = seq
                continue
            for k, mesh in enumerate(seq):
                if mesh is not None:
                    with atomic_path(out / "sequences" / safe_name(name) / f"frame_{k:02d}.ply") as tmp:
                        mesh.export(tmp, file_type="ply")
            empty = [k for k, m in enumerate(seq) if m is None]
            status[name] = f"empty frames {','.join(map(str, empty))}" if empty else "ok"
            if not empty:
                seed = options.seed * 1_000_003 + i
                save_npy(out / "clouds" / f"{safe_name(name)}.npy",
                         np.stack([surface_cloud(m, options.n_points, seed * 101 + k) for k, m in enumerate(seq)]))
        write_json(out / "mesh.json", {"kind": "4d", "n_frames": self.frames, "source": str(samples),
                                       "config": {"representation": self.name, "grid_level": grid_level(options),
                                                  "n_points": options.n_points, "seed": options.seed},
                                       "status": status, "seconds": round(time.perf_counter() - started, 2)})
        return status

    def to_clouds(self, x: torch.Tensor, info: dict[str, Any], options: DecodeOptions) -> list[np.ndarray | None]:
        from hyperdiffusion.fields.mesh import surface_cloud

        out = []
        for i, seq in enumerate(self.to_meshes(x, info, options)):
            ok = not isinstance(seq, str) and all(_has_faces(m) for m in seq)
            out.append(np.stack([surface_cloud(m, options.n_points, options.seed + i * 101 + k)
                                 for k, m in enumerate(seq)]) if ok else None)
        return out

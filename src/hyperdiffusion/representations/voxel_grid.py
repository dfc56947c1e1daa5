"""Voxel grids of prepared shapes, and back to meshes: the data of the paper's voxel baseline.

The official baseline (REFERENCE.md "Voxel baseline") normalises a mesh to max |coordinate|
0.95, voxelises it at pitch 1.9 / 23 (24 voxels across) and fills it, with values +1 inside
and -1 outside; generated grids are thresholded at 0 and meshed by marching cubes. Prepared
shapes here are normalised to max |coordinate| 0.475 = 0.5 x 0.95 inside [-0.5, 0.5]^3, so
the same grid has its 24 voxel centres per axis at linspace(-0.475, 0.475, 24), pitch 0.95 / 23.

Index [i, j, k] of every grid here is the voxel centred at (x_i, y_j, z_k) ("ij" indexing:
axis 0 is x), x_i = -extent + i * 2 extent / (res - 1).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import trimesh

METHODS = ("labels", "solid", "surface_fill")


def voxel_centres(res: int = 24, extent: float = 0.475) -> np.ndarray:
    """Centres [res, res, res, 3] (float64) of the voxels: linspace(-extent, extent, res) per axis."""
    if res < 2 or extent <= 0:
        raise ValueError(f"need res >= 2 and extent > 0; got res={res}, extent={extent}")
    axis = np.linspace(-extent, extent, res)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)


def pitch(res: int = 24, extent: float = 0.475) -> float:
    """Edge length of one voxel (distance between neighbouring centres): 2 extent / (res - 1)."""
    return 2.0 * extent / (res - 1)


def voxelize(mesh: trimesh.Trimesh, res: int = 24, extent: float = 0.475, method: str = "labels") -> np.ndarray:
    """A [res, res, res] float32 grid of +1 (inside `mesh`) and -1 (outside).

    method "surface_fill": the official recipe on this grid. trimesh marks the voxels the
    surface passes through (`Trimesh.voxelized(pitch)`, grid aligned to our centres), then
    every voxel the outside cannot reach without crossing them is filled
    (`scipy.ndimage.binary_fill_holes`, as trimesh's `VoxelGrid.fill()`). Surface voxels
    outside the grid are dropped. Marking every voxel the surface touches is what keeps thin
    parts: at 24^3 a voxel is 4 % of the shape, thicker than most chair legs, slats and table
    tops, which then become slabs one or two voxels thick. Its weakness is the fill: a hole
    wider than a voxel (open meshes, which real data has) lets the outside in and the shape
    stays a hollow shell.

    method "labels" (default): each voxel takes the inside/outside label of its centre from
    the project's labeller, `hyperdiffusion.data.occupancy.inside` with the settings `prepare`
    uses (`OccupancyConfig()`), built for open and messy meshes (docs/OCCUPANCY.md), so holes
    do not matter, and the grid agrees with the occupancy samples the MLPs are fitted to. It
    is exact for smooth solids (grid -> mesh -> grid reproduces a grid). But a part thinner
    than a voxel is inside at no centre and vanishes: on the 77 real chairs
    (benchmarks/RESULTS.md, "Voxel baseline") it keeps a median 1.2 % of the grid, 56 chairs
    in several pieces and 3 of 57 tables empty, where "surface_fill" keeps 4.7 % in one piece.
    For real furniture at 24^3 use "solid".

    method "solid": the union of "labels" and "surface_fill", i.e. the official recipe plus
    the robust labels where the fill leaked. On closed meshes it is "surface_fill" (there the
    labelled voxels are a subset of it); on an open box it is solid where "surface_fill" is
    a shell.
    """
    if method not in METHODS:
        raise ValueError(f"unknown voxelisation method {method!r}; choose one of {METHODS}")
    centres = voxel_centres(res, extent)
    solid = np.zeros((res, res, res), dtype=bool)
    if method in ("solid", "labels"):
        from hyperdiffusion.data.occupancy import OccupancyConfig, inside

        # Same function and settings as prepare_shape (see data.prepare.labelling_settings).
        solid |= np.asarray(inside(mesh, centres.reshape(-1, 3), OccupancyConfig()), bool).reshape(res, res, res)
    if method in ("solid", "surface_fill"):
        solid |= _surface_fill(mesh, res, extent)
    return np.where(solid, 1.0, -1.0).astype(np.float32)


def _surface_fill(mesh: trimesh.Trimesh, res: int, extent: float) -> np.ndarray:
    p = pitch(res, extent)
    # trimesh puts voxel centres at integer multiples of the pitch; shift so ours are there too.
    shifted = mesh.copy()
    shifted.apply_translation([extent, extent, extent])
    surface = np.zeros((res, res, res), dtype=bool)
    if len(shifted.faces):
        points = np.asarray(shifted.voxelized(p).points)
        ijk = np.rint(points / p).astype(np.int64)
        ijk = ijk[np.all((ijk >= 0) & (ijk < res), axis=1)]
        surface[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    # Pad by one empty voxel so a shape touching the border still has an outside around it.
    return ndi.binary_fill_holes(np.pad(surface, 1))[1:-1, 1:-1, 1:-1]


def voxelize_frames(meshes: list[trimesh.Trimesh], res: int = 24, extent: float = 0.475,
                    method: str = "labels") -> np.ndarray:
    """The 4D variant: one grid per frame, stacked as channels, [F, res, res, res] float32."""
    if not meshes:
        raise ValueError("voxelize_frames needs at least one mesh")
    return np.stack([voxelize(m, res, extent, method) for m in meshes])


def grid_to_mesh(grid: np.ndarray, extent: float = 0.475, level: float = 0.0) -> trimesh.Trimesh | None:
    """Marching cubes of a [res, res, res] grid at `level` (inside: values above it); None when
    every value is on one side (an empty or a full grid).

    The grid is padded with one layer of -1 first, so a shape touching the border of the grid
    is closed there; vertices are placed so that voxel centre i lands on its coordinate
    x_i = -extent + i * pitch. Faces point outward (scikit-image's "ascent" convention with
    larger values inside), so the volume is positive.
    """
    from skimage.measure import marching_cubes

    grid = np.asarray(grid, np.float32)
    if grid.ndim != 3 or min(grid.shape) < 2 or len(set(grid.shape)) != 1:
        raise ValueError(f"expected a cubic grid [res, res, res] with res >= 2; got shape {grid.shape}")
    if not np.isfinite(grid).all():
        raise ValueError("the grid has NaN or infinite values")
    if grid.max() <= level or grid.min() > level:
        return None
    p = pitch(grid.shape[0], extent)
    # Pad below the level (at least -1, so binary +-1 grids keep the surface half-way between centres).
    padded = np.pad(grid, 1, constant_values=min(-1.0, level - 1.0))
    verts, faces, _, _ = marching_cubes(padded, level, spacing=(p, p, p), method="lewiner",
                                        gradient_direction="ascent")
    # Padded index 1 is grid index 0, at -extent.
    return trimesh.Trimesh(verts - p - extent, faces, process=False)

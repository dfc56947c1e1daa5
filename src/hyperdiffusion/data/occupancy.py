"""Inside/outside labels for query points against a real, possibly messy mesh.

The official code labels points by the generalised winding number (libigl
`fast_winding_number` >= 0.5) on ManifoldPlus-repaired meshes (REFERENCE.md,
"Data preparation"). Our meshes are not repaired: they have holes, hundreds of
disconnected parts, single-sided sheets (seats, table tops), flipped faces
and triangle soup. Measured in docs/OCCUPANCY.md, every single classic test
fails on one of those: the winding number on flipped faces, ray parity on
holes and overlapping parts, all of them on sheets (a sheet encloses nothing,
so it vanishes). We therefore use two paths:

* **clean** (every edge shared by exactly two faces, consistently oriented):
  orient each connected part outward and take winding number >= 0.5. This is
  exact, also for separate overlapping parts (the winding numbers add up).
  Fast variant (`fast=True`, the default; measured in benchmarks/bench_labels.py): the
  winding number of a closed surface is an integer, constant on each connected piece of
  space minus the surface. So the surface is rasterised, every voxel it may touch is
  marked (the *band*), the rest is split into connected components and each component
  takes the winding number of one of its voxels; only points in the band are computed,
  by counting signed ray crossings (embree, the median of three directions), which is
  the winding number of a closed surface. Overlapping closed parts stay right, where
  plain ray parity would count their overlap as outside.
* **robust** (everything else):
  1. make the orientation consistent inside every edge-connected patch and
     point each patch outward (signed volume), then compute the winding
     number w: right far from holes and flipped patches. Only its side of 0.5
     is used, so it is computed in two tiers (`two_tier_winding`, the default;
     `WindingNumber`): libigl's Barnes-Hut accuracy 1.0 at every point, 2.0
     (libigl's default, the paper's labels) again where the first pass lies
     within `winding_band` of 0.5; measured in benchmarks/bench_labels.py;
  2. rasterise the surface on a voxel grid (`resolution` voxels along the
     longest side) and flood-fill the exterior from the border: everything
     the surface encloses, even when it is built from separate sheets of
     random orientation, is solid;
  3. far from the surface (> 2 voxels) a point is inside when w >= 0.5 or its
     voxel is enclosed;
  4. near the surface each face is classified by probing that far field 2
     voxels in front of and behind it: a *boundary* face (outside on one side,
     inside on the other; its normal is flipped to point out if needed), a
     *sheet* (outside on both sides) or an *internal* face (inside on both).
     A near point takes the side of its closest boundary face, is inside
     within `sheet_thickness / 2` voxels of a sheet (a sheet becomes a thin
     slab the MLP can fit), and is inside next to an internal face.

`inside` gives what a pure function of its arguments gives, so it can run in
parallel worker processes; it keeps the preparation of the last mesh it labelled
(merged vertices, the voxel solid, the winding-number hierarchy; keyed by the mesh's
content), because `prepare` labels every shape twice. Memory is a few
`resolution**3` byte grids.
"""

from __future__ import annotations

import atexit
import hashlib
from dataclasses import dataclass

import igl
import numpy as np
import scipy.ndimage as ndi
import trimesh

METHODS = ("auto", "robust", "winding")


@dataclass(frozen=True)
class OccupancyConfig:
    """How points are labelled. The defaults are what docs/OCCUPANCY.md measured.

    The paper labels by winding number only (method="winding").
    """

    method: str = "auto"          # "auto": clean path when the mesh is closed, else robust
    fast: bool = True             # clean path: components + ray crossings (same labels, several x faster)
    # Robust path: the winding number in two tiers, libigl's Barnes-Hut accuracy 1.0 first (1.4-4x
    # cheaper, off by up to ~0.8 on rare points), then its default 2.0 wherever the first pass
    # lies within `winding_band` of the 0.5 threshold. False: 2.0 everywhere (the labels before
    # 2026-11-28, bit for bit). Measured in benchmarks/RESULTS.md, "Faster labels".
    two_tier_winding: bool = True
    winding_band: float = 0.4
    resolution: int = 128         # voxels along the longest side of the padded bounding box
    sheet_thickness: float = 1.0  # slab thickness of a single-sided sheet, in voxels
    probe_voxels: float = 2.0     # distance of the face probes; > sqrt(3) to leave surface voxels

    def __post_init__(self):
        assert self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"
        assert self.resolution >= 16, "resolution must be >= 16 voxels"
        assert self.sheet_thickness >= 0, "sheet_thickness must be >= 0"
        assert 0 <= self.winding_band, "winding_band must be >= 0"


# What `label` reports as the labeller it used (prepare records it in each shape's meta.json).
LABELLERS = ("empty", "winding", "clean", "fast", "robust")


def inside(mesh: trimesh.Trimesh, points: np.ndarray, config: OccupancyConfig | None = None) -> np.ndarray:
    """Boolean [N] array: True where `points` [N, 3] lie inside `mesh`."""
    return label(mesh, points, config)[0]


def label(mesh: trimesh.Trimesh, points: np.ndarray,
          config: OccupancyConfig | None = None) -> tuple[np.ndarray, str]:
    """(`inside` labels, the labeller that made them: one of LABELLERS)."""
    config = config or OccupancyConfig()
    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    cache = _mesh_cache(mesh)
    if "merged" not in cache:
        cache["merged"] = _merged(mesh)
    vertices, faces = cache["merged"]
    if len(faces) == 0 or len(points) == 0:
        return np.zeros(len(points), dtype=bool), "empty"
    if config.method == "winding":
        return WindingNumber(vertices, faces)(points) >= 0.5, "winding"
    if config.method == "auto" and "clean" not in cache:
        cache["clean"] = is_clean(vertices, faces)
    if config.method == "auto" and cache["clean"]:
        faces = _orient_patches(vertices, faces)
        if config.fast and _signed_volume(vertices, faces) > 0:
            key = ("fast", config.resolution)
            if key not in cache:
                cache[key] = _clean_components(vertices, faces, config.resolution)
            return _fast_clean_inside(vertices, faces, points, cache[key]), "fast"
        return WindingNumber(vertices, faces)(points) >= 0.5, "clean"
    key = ("robust", config.resolution, config.probe_voxels, config.two_tier_winding, config.winding_band)
    if key not in cache:
        cache[key] = _robust_solid(vertices, faces, config)
    return _robust_inside(cache[key], points, config), "robust"


def is_clean(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """True when every edge has exactly two faces and they traverse it in opposite directions.

    Then the winding number is exact (after pointing each part outward).
    """
    faces = np.asarray(faces, dtype=np.int64)
    start = faces.reshape(-1)
    end = faces[:, [1, 2, 0]].reshape(-1)
    # Each directed edge must appear once and its reverse once: watertight and consistently wound.
    # Edges as one int64 each (start * #V + end): a 1-D sort, far cheaper than unique rows.
    key = np.sort(start * np.int64(len(vertices)) + end)
    if np.any(key[1:] == key[:-1]):
        return False
    reverse = end * np.int64(len(vertices)) + start
    return bool(np.isin(reverse, key, assume_unique=True).all())


# `prepare` labels each shape twice (its training samples, then its evaluation set). The
# preparation of the last mesh labelled (merged vertices, cleanliness, the robust path's voxel
# solid and winding-number hierarchy) is kept, keyed by the mesh's content, so the second call
# only labels points. One mesh at a time: a few `resolution**3` byte grids.
_LAST_MESH: dict = {}
# Emptied at exit, while libigl's bindings are still alive (else nanobind reports the cached
# winding-number hierarchy as leaked).
atexit.register(_LAST_MESH.clear)


def _mesh_cache(mesh: trimesh.Trimesh) -> dict:
    """The cache entry of `mesh` (emptied first when another mesh was labelled last)."""
    vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    digest = hashlib.blake2b(vertices.tobytes(), digest_size=16)
    digest.update(faces.tobytes())
    key = (vertices.shape, faces.shape, digest.hexdigest())
    if _LAST_MESH.get("key") != key:
        _LAST_MESH.clear()
        _LAST_MESH["key"] = key
    return _LAST_MESH


# --- mesh preparation -------------------------------------------------------------------------

def _merged(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and non-degenerate faces with duplicate vertices merged.

    Exported meshes often split vertices along UV seams; merging them makes the
    patches edge-connected, which the orientation repair relies on.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(vertices) == 0:
        return vertices.reshape(0, 3), faces.reshape(0, 3)
    scale = float(np.ptp(vertices, axis=0).max()) or 1.0
    _, first, inverse = np.unique(np.round(vertices / (scale * 1e-7)).astype(np.int64), axis=0,
                                  return_index=True, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    vertices = vertices[first]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    return vertices, faces[keep]


def _orient_patches(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Consistent winding inside each edge-connected patch, each patch pointing outward.

    Outward = positive signed volume measured from the patch's own centroid, so
    a patch that a modeller mirrored (all faces flipped) is turned back.
    """
    oriented, patch = igl.bfs_orient(faces.astype(np.int64))
    oriented = np.asarray(oriented, dtype=np.int64)
    patch = np.asarray(patch).reshape(-1)
    tri = vertices[oriented]
    n_patches = int(patch.max()) + 1
    counts = np.bincount(patch, minlength=n_patches)
    centroid = np.stack([np.bincount(patch, tri[:, :, k].mean(1), n_patches) for k in range(3)], 1)
    centroid /= np.maximum(counts, 1)[:, None]
    rel = tri - centroid[patch][:, None, :]
    volume = np.bincount(patch, np.einsum("ij,ij->i", rel[:, 0], np.cross(rel[:, 1], rel[:, 2])), n_patches)
    flip = volume[patch] < 0
    oriented[flip] = oriented[flip][:, ::-1]
    return oriented


# libigl's Barnes-Hut accuracy: a cluster of faces is expanded when the query is closer than
# `accuracy` times its radius. 2.0 is libigl's default (`igl.fast_winding_number`, the
# official code's labels); 1.0 is 1.4-4x cheaper but off by up to ~0.8 right next to the surface.
EXACT_ACCURACY, COARSE_ACCURACY = 2.0, 1.0


class WindingNumber:
    """Generalised winding number of one triangle soup at any number of query sets.

    The hierarchy (libigl `FastWindingNumberBVH`) is built once; `igl.fast_winding_number`
    rebuilt it on every call. With `band=None` every point is evaluated at EXACT_ACCURACY,
    which is bit for bit `igl.fast_winding_number`. With a `band`, every point is first
    evaluated at COARSE_ACCURACY and those within `band` of the 0.5 threshold again at
    EXACT_ACCURACY: only the side of 0.5 matters to the labels, and of 8.6M queries on the 57
    real chairs that take the robust path every one whose side the coarse pass got wrong had
    |w - 0.5| < 0.38
    (benchmarks/RESULTS.md, "Faster labels"); `last_refined` counts the points of the last
    call evaluated twice.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, band: float | None = None):
        self.bvh = igl.FastWindingNumberBVH()
        self.bvh.init(np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int64))
        self.band = band
        self.last_refined = 0

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        if len(points) == 0:
            return np.zeros(0)
        if self.band is None:
            return np.asarray(self.bvh.winding_number(points, EXACT_ACCURACY)).reshape(-1)
        w = np.array(self.bvh.winding_number(points, COARSE_ACCURACY), dtype=np.float64).reshape(-1)
        redo = np.flatnonzero(np.abs(w - 0.5) < self.band)
        self.last_refined = len(redo)
        if len(redo):
            w[redo] = np.asarray(self.bvh.winding_number(points[redo], EXACT_ACCURACY)).reshape(-1)
        return w


def _winding(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact (EXACT_ACCURACY) winding number at `points`, for one-off queries."""
    return WindingNumber(vertices, faces)(points)


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    tri = vertices[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)


# Three fixed ray directions, none along an axis or a diagonal, where axis-aligned
# (CAD-like) meshes would put many hits exactly on edges.
_RAY_DIRECTIONS = np.array([[0.5377, 0.8112, 0.2301], [-0.7001, 0.3112, 0.6427], [0.2203, -0.6041, 0.7659]])
_RAY_DIRECTIONS = _RAY_DIRECTIONS / np.linalg.norm(_RAY_DIRECTIONS, axis=1, keepdims=True)


def _ray_winding(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Winding number of a closed outward-oriented surface by signed ray crossings.

    Along a ray from p, every exit (d . n > 0) counts +1 and every entry -1; the sum is
    the winding number at p, also inside overlapping parts. But a ray grazing an edge or
    a vertex can be counted twice or not at all, and trimesh's multi-hit loop steps past
    a hit, so of two coincident faces (overlapping parts that share a face plane) only
    one is counted. Three directions are cast; where they disagree the exact winding
    number decides.
    Uses embree (embreex) when trimesh finds it.
    """
    if len(points) == 0:
        return np.zeros(0)
    tm = trimesh.Trimesh(vertices, faces, process=False)
    normals = tm.face_normals
    counts = []
    for d in _RAY_DIRECTIONS:
        tri, ray = tm.ray.intersects_id(points, np.broadcast_to(d, points.shape), multiple_hits=True,
                                        return_locations=False)
        counts.append(np.bincount(ray, np.sign(normals[tri] @ d), len(points)))
    counts = np.stack(counts)
    result = counts[0]
    unsure = np.flatnonzero((counts != counts[0]).any(axis=0))
    if len(unsure):
        result[unsure] = _winding(vertices, faces, points[unsure])
    return result


@dataclass(frozen=True)
class _Components:
    """The fast path's voxel stage for one mesh (cached per mesh; see `_fast_clean_inside`)."""
    grid: _Grid
    labels: np.ndarray     # component of each voxel; 0 is the band around the surface
    table: np.ndarray      # [n + 1] the inside/outside of each component
    exact: np.ndarray      # [n + 1] components computed point by point (the band, unsure ones)


def _clean_components(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> _Components:
    grid = _make_grid(vertices, resolution)
    band = ndi.binary_dilation(_surface_voxels(vertices, faces, grid), structure=np.ones((3, 3, 3), bool))
    components, n = ndi.label(~band)
    flat = components.reshape(-1)
    _, first = np.unique(flat, return_index=True)
    _, last = np.unique(flat[::-1], return_index=True)
    reps = np.concatenate([first[1:], len(flat) - 1 - last[1:]])          # label 0 is the band
    centres = grid.origin + (np.stack(np.unravel_index(reps, components.shape), 1) + 0.5) * grid.voxel
    read = np.split(_winding(vertices, faces, centres) >= 0.5, 2) if n else (np.zeros(0, bool),) * 2
    table = np.concatenate([[False], read[0]])
    exact = np.concatenate([[True], read[0] != read[1]])                  # band and unsure components
    return _Components(grid, components, table, exact)


def _fast_clean_inside(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                       stage: _Components) -> np.ndarray:
    """`_winding(...) >= 0.5` for a closed, outward-oriented mesh, computed only near the surface.

    Triangles are sampled at most half a voxel apart, so every voxel the surface touches
    is a sampled voxel or one of its 26 neighbours: the dilated *band* covers the
    surface, and each connected component of the remaining voxels lies in one piece of
    space minus the surface, where the winding number is one integer. Each component is
    read at its first and last voxel (one evaluation each); a component whose two reads
    differ (it should not happen) is computed point by point like the band
    (`_clean_components`, made once per mesh).
    """
    grid, components, table, exact = stage.grid, stage.labels, stage.table, stage.exact
    ijk, valid = grid.index(points)
    comp = np.where(valid, components[ijk[:, 0], ijk[:, 1], ijk[:, 2]], -1)
    # Outside the padded bounding box (comp -1) a closed outward surface has winding number 0.
    result = np.zeros(len(points), dtype=bool)
    known = comp >= 0
    result[known] = table[comp[known]]
    todo = np.flatnonzero(known & exact[np.maximum(comp, 0)])
    result[todo] = _ray_winding(vertices, faces, points[todo]) >= 0.5
    return result


# --- voxel solid ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Grid:
    origin: np.ndarray   # [3] corner of voxel (0, 0, 0)
    voxel: float         # edge length
    shape: tuple         # (nx, ny, nz)

    def index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer voxel indices [N, 3] and a mask of points inside the grid."""
        ijk = np.floor((points - self.origin) / self.voxel).astype(np.int64)
        valid = np.all((ijk >= 0) & (ijk < np.asarray(self.shape)), axis=1)
        return np.clip(ijk, 0, np.asarray(self.shape) - 1), valid

    def flat_index(self, points: np.ndarray) -> np.ndarray:
        """Flat (C-order) voxel indices of the points inside the grid; the others are dropped."""
        x = points - self.origin
        x /= self.voxel
        ijk = np.floor(x, out=x).astype(np.int64)
        shape = np.asarray(self.shape)
        valid = ((ijk >= 0) & (ijk < shape)).all(axis=1)
        if not valid.all():
            ijk = ijk[valid]
        return (ijk[:, 0] * shape[1] + ijk[:, 1]) * shape[2] + ijk[:, 2]

    def lookup(self, volume: np.ndarray, points: np.ndarray) -> np.ndarray:
        ijk, valid = self.index(points)
        return volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] & valid


def _make_grid(vertices: np.ndarray, resolution: int, pad: int = 3) -> _Grid:
    lo, hi = vertices.min(0), vertices.max(0)
    voxel = max(float((hi - lo).max()), 1e-12) / (resolution - 2 * pad)
    shape = tuple(int(np.ceil(e / voxel)) + 2 * pad for e in (hi - lo))
    return _Grid(origin=lo - pad * voxel, voxel=voxel, shape=shape)


def _surface_voxels(vertices: np.ndarray, faces: np.ndarray, grid: _Grid) -> np.ndarray:
    """Voxels touched by the surface: every triangle sampled at spacing <= half a voxel."""
    occupied = np.zeros(grid.shape, dtype=bool)
    tri = vertices[faces]
    longest = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2), axis=1)
    steps = np.maximum(1, np.ceil(longest / (0.5 * grid.voxel)).astype(np.int64))
    for n in np.unique(steps):
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        bary = np.stack([i[keep], j[keep]], 1) / n                      # [S, 2]
        group = tri[steps == n]                                          # [T, 3, 3]
        # Chunk so a few huge triangles never need more than ~8 M sample points at once.
        chunk = max(1, 8_000_000 // len(bary))
        for start in range(0, len(group), chunk):
            g = group[start:start + chunk]
            # g0 + b1 (g1 - g0) + b2 (g2 - g0), in place (the same floating-point operations
            # in the same order as the plain expression, so the same voxels).
            pts = bary[None, :, :1] * (g[:, None, 1] - g[:, None, 0])
            pts += g[:, None, 0]
            pts += bary[None, :, 1:] * (g[:, None, 2] - g[:, None, 0])
            occupied.reshape(-1)[grid.flat_index(pts.reshape(-1, 3))] = True
    return occupied


# --- robust labelling -------------------------------------------------------------------------

# Kinds of faces near a query point; BOUNDARY_W is a boundary where the winding number is right.
BOUNDARY_W, BOUNDARY, SHEET, INTERNAL = 0, 1, 2, 3


@dataclass(frozen=True)
class _RobustSolid:
    """What the robust path needs of a mesh, whatever the query points (cached per mesh)."""
    vertices: np.ndarray
    faces: np.ndarray          # each edge-connected patch oriented outward
    grid: _Grid
    enclosed: np.ndarray       # voxels the flood fill from the border cannot reach
    near_mask: np.ndarray      # surface voxels dilated past the probe distance
    winding: WindingNumber


def _robust_solid(vertices: np.ndarray, faces: np.ndarray, config: OccupancyConfig) -> _RobustSolid:
    faces = _orient_patches(vertices, faces)
    grid = _make_grid(vertices, config.resolution)
    surface = _surface_voxels(vertices, faces, grid)
    # Flood fill from the border (6-connected background): what it cannot reach is enclosed.
    enclosed = ndi.binary_fill_holes(surface) & ~surface
    # Near points (within `probe` of the surface) need the surface itself. A dilated surface
    # mask is a cheap superset of them.
    near_mask = ndi.binary_dilation(surface, iterations=int(np.ceil(config.probe_voxels)) + 1)
    # One hierarchy for every query set (face probes, near points, far points) of every call.
    winding = WindingNumber(vertices, faces, config.winding_band if config.two_tier_winding else None)
    return _RobustSolid(vertices, faces, grid, enclosed, near_mask, winding)


def _robust_inside(solid: _RobustSolid, points: np.ndarray, config: OccupancyConfig) -> np.ndarray:
    vertices, faces, grid, enclosed, winding = solid.vertices, solid.faces, solid.grid, solid.enclosed, solid.winding
    probe = config.probe_voxels * grid.voxel

    def winding_inside(x: np.ndarray, skip: np.ndarray) -> np.ndarray:
        """Winding number >= 0.5, evaluated only where `skip` is False (it is the costly part)."""
        out = np.zeros(len(x), dtype=bool)
        if (~skip).any():
            out[~skip] = winding(x[~skip]) >= 0.5
        return out

    candidate = np.flatnonzero(grid.lookup(solid.near_mask, points))
    near = np.zeros(0, dtype=np.int64)
    result = np.zeros(len(points), dtype=bool)
    if len(candidate):
        sq, face_id, closest = igl.point_mesh_squared_distance(points[candidate], vertices, faces)
        dist = np.sqrt(np.asarray(sq).reshape(-1))
        keep = dist <= probe
        near, closest, dist = candidate[keep], np.asarray(closest)[keep], dist[keep]
        face_id = np.asarray(face_id).reshape(-1)[keep]
        kind, normal = _classify_patches(vertices, faces, face_id, closest, probe,
                                         lambda x: grid.lookup(enclosed, x), winding_inside)
        along = np.einsum("ij,ij->i", points[near] - closest, normal)
        # Where the winding number is right (it is exact for closed overlapping parts and at
        # open rims and holes), it decides; elsewhere the side of the closest face does.
        use_winding = kind == BOUNDARY_W
        half = 0.5 * config.sheet_thickness * grid.voxel
        result[near] = np.select([use_winding, kind <= BOUNDARY, kind == SHEET],
                                 [winding_inside(points[near], ~use_winding), along < 0, dist <= half],
                                 default=True)
    # Far points: enclosed by the surface voxels, or by the winding number. Outside the
    # bounding box the winding number of an outward-oriented surface is below 0.5.
    far = np.ones(len(points), dtype=bool)
    far[near] = False
    lo, hi = vertices.min(0), vertices.max(0)
    far_points = points[far]
    far_enclosed = grid.lookup(enclosed, far_points)
    in_box = np.all((far_points >= lo) & (far_points <= hi), axis=1)
    result[far] = far_enclosed | winding_inside(far_points, far_enclosed | ~in_box)
    return result


def _classify_patches(vertices, faces, face_id, closest, probe, enclosed_at, winding_inside):
    """Kind (BOUNDARY_W/BOUNDARY/SHEET/INTERNAL) and outward unit normal at each closest point.

    The surface near the query points is cut into patches of one face and one cell of
    2 `probe` (a big face may be half inside another part and half exposed), and each
    patch is probed at its mean closest point. Points whose patch is INTERNAL are probed
    again at their own closest point: an internal patch that reaches out of the part it
    is buried in would otherwise swallow the outside points next to it.
    """
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)[face_id]
    cell = np.floor(closest / (2 * probe)).astype(np.int64)
    cell -= cell.min(0)
    span = cell.max(0) + 1
    key = ((face_id.astype(np.int64) * span[0] + cell[:, 0]) * span[1] + cell[:, 1]) * span[2] + cell[:, 2]
    _, first, patch, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    patch = patch.reshape(-1)
    centre = np.stack([np.bincount(patch, closest[:, k]) for k in range(3)], 1) / counts[:, None]
    kind, flip = _probe(centre, normal[first], probe, enclosed_at, winding_inside)
    kind, flip = kind[patch], flip[patch]
    internal = kind == INTERNAL
    kind[internal], flip[internal] = _probe(closest[internal], normal[internal], probe, enclosed_at, winding_inside)
    return kind, normal * flip[:, None]


def _probe(centre, normal, probe, enclosed_at, winding_inside):
    """Kind of the surface at `centre` with unit `normal`, and -1 where the normal points
    inward (else +1).

    The voxels are probed `probe` in front and behind (they must leave the surface
    voxels); the winding number only 1/8 of that, so that a closed plate thinner than two
    probes still reads as a boundary. A boundary whose sides the winding number alone gets
    right is BOUNDARY_W.
    """
    e_front, e_back = np.split(enclosed_at(np.concatenate([centre + probe * normal, centre - probe * normal])), 2)
    near = probe / 8
    w_front, w_back = np.split(winding_inside(np.concatenate([centre + near * normal, centre - near * normal]),
                                              np.zeros(2 * len(centre), dtype=bool)), 2)
    front, back = e_front | w_front, e_back | w_back
    kind = np.full(len(centre), SHEET, dtype=np.int8)
    kind[front != back] = BOUNDARY
    kind[~front & w_back] = BOUNDARY_W
    kind[front & back] = INTERNAL
    kind[np.linalg.norm(normal, axis=1) == 0] = SHEET   # degenerate face: no side to speak of
    return kind, np.where(front & ~back, -1.0, 1.0)

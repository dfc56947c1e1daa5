"""Inside/outside labels: analytic shapes, damaged meshes, sheets and a real chair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from hyperdiffusion.data.occupancy import OccupancyConfig, inside, is_clean, label

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"
ROBUST = OccupancyConfig(method="robust")


def paper_points(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> np.ndarray:
    """As in data preparation: surface + N(0, 0.01^2) noise, then uniform in [-0.5, 0.5]^3."""
    rng = np.random.default_rng(seed)
    surface, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.concatenate([surface + rng.normal(0, 0.01, surface.shape), rng.uniform(-0.5, 0.5, (n, 3))])


def torus(major=0.3, minor=0.15, n_major=256, n_minor=128) -> trimesh.Trimesh:
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n_major, endpoint=False),
                       np.linspace(0, 2 * np.pi, n_minor, endpoint=False), indexing="ij")
    # Vertices slightly outside the true circles (equal-area polygons), so the faceted
    # surface straddles the analytic one instead of lying inside it.
    minor_v = minor * np.sqrt((2 * np.pi / n_minor) / np.sin(2 * np.pi / n_minor))
    ring = np.sqrt((2 * np.pi / n_major) / np.sin(2 * np.pi / n_major))
    verts = np.stack([(major + minor_v * np.cos(v)) * np.cos(u) * ring, (major + minor_v * np.cos(v)) * np.sin(u) * ring,
                      minor_v * np.sin(v)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_major), np.arange(n_minor), indexing="ij")
    a, b = i * n_minor + j, ((i + 1) % n_major) * n_minor + j
    c, d = ((i + 1) % n_major) * n_minor + (j + 1) % n_minor, i * n_minor + (j + 1) % n_minor
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return trimesh.Trimesh(verts, faces, process=False)


def in_torus(p, major=0.3, minor=0.15):
    return (np.hypot(p[:, 0], p[:, 1]) - major) ** 2 + p[:, 2] ** 2 < minor ** 2


def in_box(p, centre=(0.0, 0.0, 0.0), extents=(0.95, 0.6, 0.4)):
    return np.all(np.abs(p - np.asarray(centre)) < np.asarray(extents) / 2, axis=1)


BOXES = [((-0.3, 0.0, 0.0), (0.35, 0.5, 0.6)), ((0.0, 0.1, 0.05), (0.8, 0.2, 0.3)),
         ((0.25, -0.1, -0.1), (0.3, 0.6, 0.3))]


def box_union() -> trimesh.Trimesh:
    """Three overlapping closed boxes, concatenated (not booleaned)."""
    return trimesh.util.concatenate([
        trimesh.creation.box(extents=e, transform=trimesh.transformations.translation_matrix(c)) for c, e in BOXES])


def in_union(p):
    return np.any([in_box(p, c, e) for c, e in BOXES], axis=0)


@pytest.mark.parametrize("config", [None, ROBUST], ids=["auto", "robust"])
@pytest.mark.parametrize("name, mesh, truth", [
    ("sphere", trimesh.creation.icosphere(subdivisions=6, radius=0.475), lambda p: np.linalg.norm(p, axis=1) < 0.475),
    ("box", trimesh.creation.box(extents=(0.95, 0.6, 0.4)), in_box),
    ("torus", torus(), in_torus),
    ("union of overlapping boxes", box_union(), in_union),
])
def test_analytic_shapes_agree_with_truth(name, mesh, truth, config):
    points = paper_points(mesh, 20_000)
    accuracy = (inside(mesh, points, config) == truth(points)).mean()
    assert accuracy >= 0.999, f"{name}: {accuracy:.5f}"


def test_clean_detection():
    assert is_clean(*_vf(box_union()))
    open_box = trimesh.creation.box()
    assert not is_clean(*_vf(trimesh.Trimesh(open_box.vertices, open_box.faces[2:], process=False)))
    flipped = open_box.faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert not is_clean(*_vf(trimesh.Trimesh(open_box.vertices, flipped, process=False)))


def _vf(mesh):
    return np.asarray(mesh.vertices, float), np.asarray(mesh.faces, np.int64)


def flipped(mesh: trimesh.Trimesh, fraction: float, seed: int) -> trimesh.Trimesh:
    """`mesh` with a random `fraction` of its faces turned inside out."""
    faces = mesh.faces.copy()
    flip = np.random.default_rng(seed).random(len(faces)) < fraction
    faces[flip] = faces[flip][:, ::-1]
    return trimesh.Trimesh(mesh.vertices, faces, process=False)


def test_flipped_faces_are_repaired():
    mesh = torus(n_major=96, n_minor=48)
    damaged = flipped(mesh, 0.2, seed=0)
    points = paper_points(mesh, 20_000)
    # Truth: the exact winding number of the undamaged (clean) mesh, so that only the
    # damage is measured, not the tessellation.
    truth = inside(mesh, points, OccupancyConfig(method="winding"))
    assert (inside(damaged, points) == truth).mean() >= 0.999
    # The paper's plain winding number is measurably wrong here (about 97 %).
    assert (inside(damaged, points, OccupancyConfig(method="winding")) == truth).mean() < 0.99


def test_whole_part_inside_out_is_turned_back():
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    inverted = trimesh.Trimesh(box.vertices, box.faces[:, ::-1], process=False)
    assert inside(inverted, np.array([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0]])).tolist() == [True, False]


def test_box_with_a_missing_face_stays_a_box():
    box = trimesh.creation.box(extents=(0.95, 0.6, 0.4))
    top = np.abs(box.face_normals[:, 2] - 1) < 1e-6
    open_box = trimesh.Trimesh(box.vertices, box.faces[~top], process=False)
    points = paper_points(box, 20_000)
    assert (inside(open_box, points) == in_box(points)).mean() >= 0.999


def test_single_sided_sheet_becomes_a_thin_slab():
    plate = trimesh.Trimesh([[-.4, -.4, 0], [.4, -.4, 0], [.4, .4, 0], [-.4, .4, 0]], [[0, 1, 2], [0, 2, 3]])
    config = OccupancyConfig(resolution=128, sheet_thickness=1.0)
    voxel = 0.8 / (128 - 6)                      # longest side over the unpadded voxels
    xy = np.random.default_rng(0).uniform(-0.35, 0.35, (1000, 2))
    on_sheet = np.c_[xy, np.full(1000, 0.2 * voxel)]
    off_sheet = np.c_[xy, np.full(1000, 1.5 * voxel)]
    beyond_edge = np.c_[0.1 * xy + 0.5, np.zeros(1000)]   # 0.065-0.135 past the edge
    labels = inside(plate, np.concatenate([on_sheet, -on_sheet, off_sheet, -off_sheet, beyond_edge]), config)
    assert labels[:2000].all(), "points within half a voxel of a sheet are inside"
    assert not labels[2000:].any(), "points away from the sheet or beyond its edge are outside"


def test_sheets_enclosing_a_volume_fill_it():
    """Six separate single-sided squares with random orientation still enclose a cube."""
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    rng = np.random.default_rng(3)
    parts = []
    for k in range(6):
        f = box.faces[2 * k:2 * k + 2]
        parts.append(trimesh.Trimesh(box.vertices, f[:, ::-1] if rng.random() < 0.5 else f, process=False))
    soup = trimesh.util.concatenate(parts)
    points = paper_points(box, 10_000)
    assert (inside(soup, points) == in_box(points, extents=(0.6, 0.6, 0.6))).mean() >= 0.995


def test_empty_inputs():
    assert inside(trimesh.Trimesh(), np.zeros((3, 3))).tolist() == [False] * 3
    assert inside(trimesh.creation.box(), np.zeros((0, 3))).shape == (0,)


@pytest.mark.skipif(not DATA.exists(), reason="real meshes not available")
def test_real_chair_is_sane():
    entry = next(e for e in json.loads((DATA / "manifest.json").read_text())
                 if e["file"] == "sweethome3d-chair/BlendSwap-CC-0_0031.ply")
    assert not entry["watertight"]
    mesh = trimesh.load(DATA / entry["file"], process=False, force="mesh")
    v = np.asarray(mesh.vertices, float)
    v = (v - v.mean(0)) * (0.475 / np.abs(v - v.mean(0)).max())
    mesh = trimesh.Trimesh(v, mesh.faces, process=False)
    points = paper_points(mesh, 10_000)
    labels = inside(mesh, points)
    uniform = labels[10_000:].mean()
    assert 0.003 < uniform < 0.4, f"uniform inside fraction {uniform:.3f}"
    assert 0.2 < labels[:10_000].mean() < 0.8
    far = np.array([[0.7, 0, 0], [0, -0.9, 0], [0, 0, 2.0], [-3.0, 1.0, 1.0]])
    assert not inside(mesh, far).any()


# --- the fast path for closed meshes (components + ray crossings) ---------------------------

FAST_CASES = [
    ("sphere", trimesh.creation.icosphere(subdivisions=5, radius=0.475), lambda p: np.linalg.norm(p, axis=1) < 0.475),
    ("box", trimesh.creation.box(extents=(0.95, 0.6, 0.4)), in_box),
    ("torus", torus(n_major=128, n_minor=64), in_torus),
    ("union of overlapping boxes", box_union(), in_union),   # ray parity alone gets the overlaps wrong
]


@pytest.mark.parametrize("name, mesh, truth", FAST_CASES, ids=[c[0] for c in FAST_CASES])
def test_fast_path_agrees_with_robust_path(name, mesh, truth):
    points = paper_points(mesh, 10_000)
    fast, used = label(mesh, points)
    assert used == "fast"
    robust, used_robust = label(mesh, points, ROBUST)
    assert used_robust == "robust"
    exact, _ = label(mesh, points, OccupancyConfig(fast=False))   # winding number of every point
    assert (fast == exact).mean() >= 0.999, name
    assert (fast == robust).mean() >= 0.999, name
    # Against the analytic shape both lose the same tessellation error (up to 0.2 % here).
    assert (fast == truth(points)).mean() >= min(0.999, (exact == truth(points)).mean() - 2e-4), name


def test_fast_path_defers_to_robust_on_flipped_faces():
    mesh = torus(n_major=96, n_minor=48)
    damaged = flipped(mesh, 0.1, seed=1)
    points = paper_points(mesh, 10_000)
    labels, used = label(damaged, points)
    assert used == "robust"
    assert (labels == inside(mesh, points, OccupancyConfig(method="winding"))).mean() >= 0.999
    # An inside-out but closed mesh is clean: it is turned back and takes the fast path.
    inverted = trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], process=False)
    labels, used = label(inverted, points)
    assert used == "fast" and (labels == in_torus(points)).mean() >= 0.995


# --- the two-tier winding number of the robust path -------------------------------------------

EXACT_ROBUST = OccupancyConfig(method="robust", two_tier_winding=False)


def test_winding_number_off_position_is_libigls_default():
    """Without a band, the cached hierarchy gives igl.fast_winding_number bit for bit (the labels
    before the two tiers)."""
    import igl

    from hyperdiffusion.data.occupancy import WindingNumber

    v, f = _vf(flipped(torus(n_major=48, n_minor=24), 0.2, seed=2))
    q = paper_points(trimesh.Trimesh(v, f, process=False), 2_000)
    exact = WindingNumber(v, f)
    assert np.array_equal(exact(q), np.asarray(igl.fast_winding_number(v, f, q)))
    assert np.array_equal(exact(q[:100]), exact(q)[:100])   # the hierarchy is reused


def test_two_tier_winding_refines_only_near_the_threshold():
    from hyperdiffusion.data.occupancy import WindingNumber

    v, f = _vf(flipped(torus(n_major=48, n_minor=24), 0.2, seed=2))
    q = paper_points(trimesh.Trimesh(v, f, process=False), 5_000)
    exact = WindingNumber(v, f)(q)
    two = WindingNumber(v, f, band=OccupancyConfig().winding_band)
    w = two(q)
    assert 0 < two.last_refined < len(q)            # some points are computed twice, most once
    assert (w != exact).any()                       # the coarse pass really is another evaluation
    assert ((w >= 0.5) == (exact >= 0.5)).mean() >= 0.999
    zero = WindingNumber(v, f, band=0.0)            # no refinement: the coarse pass alone
    assert zero(q).tolist() != exact.tolist() and zero.last_refined == 0


@pytest.mark.parametrize("name, mesh", [
    ("sphere", trimesh.creation.icosphere(subdivisions=4, radius=0.475)),
    ("box with a missing face", trimesh.Trimesh(trimesh.creation.box(extents=(0.95, 0.6, 0.4)).vertices,
                                                trimesh.creation.box(extents=(0.95, 0.6, 0.4)).faces[1:],
                                                process=False)),
    ("open sheet", trimesh.Trimesh([[-.4, -.4, 0], [.4, -.4, 0], [.4, .4, .1], [-.4, .4, 0]], [[0, 1, 2], [0, 2, 3]])),
    ("torus with flipped faces", flipped(torus(n_major=64, n_minor=32), 0.2, seed=4)),
])
def test_two_tier_labels_agree_with_one_tier(name, mesh, monkeypatch):
    from hyperdiffusion.data import occupancy

    bands = []

    class Recording(occupancy.WindingNumber):
        def __init__(self, vertices, faces, band=None):
            super().__init__(vertices, faces, band)
            bands.append(band)

    monkeypatch.setattr(occupancy, "WindingNumber", Recording)
    points = paper_points(mesh, 5_000)
    two, used = label(mesh, points, ROBUST)
    band = OccupancyConfig().winding_band
    assert used == "robust" and bands == [band]     # the switch's on position: two tiers
    one, _ = label(mesh, points, EXACT_ROBUST)
    assert bands == [band, None]                    # off: libigl's default accuracy everywhere
    assert (two == one).mean() >= 0.999, name


def test_mesh_preparation_is_reused_only_for_the_same_mesh():
    """prepare labels a shape twice (samples, evaluation set): the second call reuses the mesh's
    voxel solid and hierarchy, and gives what a fresh call gives; another mesh starts afresh."""
    from hyperdiffusion.data import occupancy

    box = trimesh.creation.box(extents=(0.95, 0.6, 0.4))
    open_box = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)
    first, second = paper_points(box, 3_000, seed=1), paper_points(box, 3_000, seed=2)
    for mesh, used in ((open_box, "robust"), (box, "fast")):
        occupancy._LAST_MESH.clear()
        label(mesh, first)
        reused, how = label(mesh, second)
        assert how == used and any(isinstance(k, tuple) and k[0] == used for k in occupancy._LAST_MESH)
        occupancy._LAST_MESH.clear()
        assert np.array_equal(reused, label(mesh, second)[0])
    shifted = open_box.copy()
    shifted.vertices = shifted.vertices + [0.02, 0.0, 0.0]      # same faces, other vertices
    moved = label(shifted, second)[0]
    assert (moved == in_box(second, centre=(0.02, 0.0, 0.0))).mean() >= 0.999
    assert (moved != label(open_box, second)[0]).any()

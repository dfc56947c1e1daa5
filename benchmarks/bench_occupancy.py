"""Benchmark inside/outside labelling methods (docs/OCCUPANCY.md).

Points as in the paper's data preparation (REFERENCE.md): 100k surface samples
plus N(0, 0.01^2) noise and 100k uniform points in [-0.5, 0.5]^3, meshes
normalised to max |coord| = 0.475.

    python benchmarks/bench_occupancy.py                 # analytic + damaged shapes
    python benchmarks/bench_occupancy.py --real 12       # + every k-th real mesh
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import trimesh

from hyperdiffusion.data import occupancy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"


# --- shapes with analytic truth ---------------------------------------------------------------

def torus_mesh(major=0.3, minor=0.15, n_major=256, n_minor=128) -> trimesh.Trimesh:
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n_major, endpoint=False),
                       np.linspace(0, 2 * np.pi, n_minor, endpoint=False), indexing="ij")
    verts = np.stack([(major + minor * np.cos(v)) * np.cos(u), (major + minor * np.cos(v)) * np.sin(u),
                      minor * np.sin(v)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_major), np.arange(n_minor), indexing="ij")
    a, b = i * n_minor + j, ((i + 1) % n_major) * n_minor + j
    c, d = ((i + 1) % n_major) * n_minor + (j + 1) % n_minor, i * n_minor + (j + 1) % n_minor
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return trimesh.Trimesh(verts, faces, process=False)


def torus_truth(p, major=0.3, minor=0.15):
    return (np.hypot(p[:, 0], p[:, 1]) - major) ** 2 + p[:, 2] ** 2 < minor ** 2


BOXES = [((-0.3, 0.0, 0.0), (0.35, 0.5, 0.6)), ((0.0, 0.1, 0.05), (0.8, 0.2, 0.3)),
         ((0.25, -0.1, -0.1), (0.3, 0.6, 0.3))]


def box_truth(p, centre=(0, 0, 0), extents=(0.95, 0.6, 0.4)):
    return np.all(np.abs(p - np.asarray(centre)) < np.asarray(extents) / 2, axis=1)


def analytic_cases(seed=0):
    """(name, mesh, truth function) for clean and damaged shapes."""
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=0.475)
    box = trimesh.creation.box(extents=(0.95, 0.6, 0.4))
    union = trimesh.util.concatenate([trimesh.creation.box(extents=e, transform=trimesh.transformations
                                                           .translation_matrix(c)) for c, e in BOXES])
    torus = torus_mesh()
    holes = trimesh.Trimesh(torus.vertices, torus.faces[rng.random(len(torus.faces)) >= 0.02], process=False)
    flipped_faces = torus.faces.copy()
    flip = rng.random(len(flipped_faces)) < 0.2
    flipped_faces[flip] = flipped_faces[flip][:, ::-1]
    flipped = trimesh.Trimesh(torus.vertices, flipped_faces, process=False)
    open_box = trimesh.Trimesh(box.vertices, box.faces[np.abs(box.face_normals[:, 2] - 1) > 1e-6], process=False)
    return [
        ("sphere", sphere, lambda p: np.linalg.norm(p, axis=1) < 0.475),
        ("box", box, box_truth),
        ("torus", torus, torus_truth),
        ("union of 3 overlapping boxes", union,
         lambda p: np.any([box_truth(p, c, e) for c, e in BOXES], axis=0)),
        ("torus, 2% faces removed", holes, torus_truth),
        ("torus, 20% faces flipped", flipped, torus_truth),
        ("box, top face missing", open_box, box_truth),
    ]


def sample_points(mesh: trimesh.Trimesh, n=100_000, seed=0) -> np.ndarray:
    """The paper's 200k query points: surface + N(0, 0.01^2), then uniform in [-0.5, 0.5]^3."""
    rng = np.random.default_rng(seed)
    surface, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.concatenate([surface + rng.normal(0, 0.01, surface.shape), rng.uniform(-0.5, 0.5, (n, 3))])


# --- methods ----------------------------------------------------------------------------------

def voxel_only(mesh, points, resolution=128):
    """Baseline: surface voxels + flood fill, no refinement near the surface."""
    v, f = occupancy._merged(mesh)
    grid = occupancy._make_grid(v, resolution)
    surface = occupancy._surface_voxels(v, f, grid)
    return grid.lookup(ndi.binary_fill_holes(surface), points)


def ray_parity(mesh, points):
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).contains(points)


METHODS = {
    "auto (ours)": lambda m, p: occupancy.inside(m, p),
    "robust path always": lambda m, p: occupancy.inside(m, p, occupancy.OccupancyConfig(method="robust")),
    "robust, res 256": lambda m, p: occupancy.inside(m, p, occupancy.OccupancyConfig(method="robust",
                                                                                     resolution=256)),
    "winding (paper)": lambda m, p: occupancy.inside(m, p, occupancy.OccupancyConfig(method="winding")),
    "ray parity (embree)": ray_parity,
    "voxel fill only": voxel_only,
}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def run_analytic(methods):
    rows = []
    for name, mesh, truth in analytic_cases():
        points = sample_points(mesh)
        gt = truth(points)
        for method in methods:
            labels, seconds = timed(METHODS[method], mesh, points)
            rows.append({"case": name, "method": method, "accuracy": float((labels == gt).mean()),
                         "near": float((labels[:100_000] == gt[:100_000]).mean()), "seconds": seconds})
            print(f"{name:30s} {method:22s} acc {rows[-1]['accuracy']:.5f} near {rows[-1]['near']:.5f} "
                  f"{seconds:6.2f}s", flush=True)
    # Thin single-sided sheet: a square plate of 2 triangles. There is no analytic inside; we
    # report the inside fraction and the thickness of what is labelled inside.
    plate = trimesh.Trimesh([[-.4, -.4, 0], [.4, -.4, 0], [.4, .4, 0], [-.4, .4, 0]], [[0, 1, 2], [0, 2, 3]])
    points = sample_points(plate)
    for method in methods:
        labels, seconds = timed(METHODS[method], plate, points)
        z = np.abs(points[labels, 2])
        rows.append({"case": "single-sided plate (2 triangles)", "method": method,
                     "inside_fraction": float(labels.mean()),
                     "slab_half_thickness": float(z.max()) if len(z) else 0.0, "seconds": seconds})
        print(f"{'plate':30s} {method:22s} inside {labels.mean():.4f} max|z| {rows[-1]['slab_half_thickness']:.4f}"
              f" {seconds:6.2f}s", flush=True)
    return rows


def normalised(path: Path) -> trimesh.Trimesh:
    mesh = trimesh.load(path, process=False, force="mesh")
    v = np.asarray(mesh.vertices, np.float64)
    v = v - v.mean(0)
    return trimesh.Trimesh(v * (0.475 / np.abs(v).max()), mesh.faces, process=False)


def run_real(step, methods):
    """Real meshes. Watertight ones give a truth (exact winding number); the others are
    compared between methods, and watertight ones are also damaged (flips, holes)."""
    rows = []
    manifest = json.loads((DATA / "manifest.json").read_text())
    for entry in manifest[::step]:
        mesh = normalised(DATA / entry["file"])
        points = sample_points(mesh)
        labels = {m: timed(METHODS[m], mesh, points) for m in methods}
        row = {"file": entry["file"], "watertight": entry["watertight"], "faces": len(mesh.faces),
               "clean": occupancy.is_clean(*occupancy._merged(mesh))}
        ref = labels["auto (ours)"][0]
        for m, (lab, sec) in labels.items():
            row[m] = {"inside": float(lab.mean()), "agree_auto": float((lab == ref).mean()), "seconds": sec}
        if row["clean"]:
            rng = np.random.default_rng(1)
            faces = mesh.faces.copy()
            flip = rng.random(len(faces)) < 0.2
            faces[flip] = faces[flip][:, ::-1]
            damaged = {"20% flipped": trimesh.Trimesh(mesh.vertices, faces, process=False),
                       "2% removed": trimesh.Trimesh(mesh.vertices, mesh.faces[rng.random(len(faces)) >= 0.02],
                                                     process=False)}
            for dname, dmesh in damaged.items():
                for m in methods:
                    lab, sec = timed(METHODS[m], dmesh, points)
                    row[f"{dname} / {m}"] = float((lab == ref).mean())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, default=0, help="also run every k-th real mesh (0: none)")
    parser.add_argument("--skip-analytic", action="store_true")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    rows = [] if args.skip_analytic else run_analytic(args.methods)
    if args.real and DATA.exists():
        rows += run_real(args.real, [m for m in args.methods if m != "robust, res 256"] or ["auto (ours)"])
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

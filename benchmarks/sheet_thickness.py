"""Does a thicker sheet slab make single-sided sheets fittable, and what does it cost? (issue 13)

The robust labeller turns a single-sided sheet (a seat or back made of one layer of
triangles) into a slab `sheet_thickness` voxels thick (data/occupancy.py; 1 voxel of the
128³ labelling grid = 0.0078 of the cube). A slab that thin may be below what the paper's
MLP can represent. This script

1. scans the first `--scan` meshes of a folder for sheets: the share of near-surface
   points whose label changes between the thinnest and the thickest setting;
2. prepares the `--pick` most sheet-heavy ones once per thickness (the paper's counts,
   labels from `OccupancyConfig(sheet_thickness=t)`);
3. fits them with the `fast` recipe (benchmarks/fit_recipes.py, cosine) and scores each fit
   on its own evaluation set (volume IoU: how well the labels can be fitted) and against
   the true surface (F-score at 1 % of the cube, Chamfer-L1: what the slab costs in
   fidelity; a slab's faces sit t/2 voxels off the sheet).

    python benchmarks/sheet_thickness.py ../shared/data/meshes/sweethome3d-chair OUT --scan 40 --pick 6
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).parent))
from bench_labels import labels  # noqa: E402  (OccupancyConfig overrides for prepare's labels)
from fit_recipes import run, summary_line  # noqa: E402

from hyperdiffusion.data.occupancy import OccupancyConfig, label  # noqa: E402
from hyperdiffusion.fields.mlp import MLPConfig  # noqa: E402

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb")


def sheet_share(path: Path, thin: float, thick: float, n: int = 20_000, seed: int = 0) -> float:
    """Share of near-surface points (noise 1 % of the longest side) whose label differs between
    sheet_thickness `thin` and `thick`; the labeller is scale-invariant, so the raw mesh will do."""
    mesh = trimesh.load(str(path), force="mesh", process=False)
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    points = points + np.random.default_rng(seed).normal(scale=0.01 * extent, size=points.shape)
    a = label(mesh, points, OccupancyConfig(sheet_thickness=thin))[0]
    b = label(mesh, points, OccupancyConfig(sheet_thickness=thick))[0]
    return float((a != b).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("meshes", help="a folder of meshes (e.g. ../shared/data/meshes/sweethome3d-chair)")
    ap.add_argument("out")
    ap.add_argument("--scan", type=int, default=40, help="meshes scanned for sheets (first N by name)")
    ap.add_argument("--pick", type=int, default=6, help="most sheet-heavy meshes prepared and fitted")
    ap.add_argument("--thickness", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="in labelling voxels")
    ap.add_argument("--budget", type=int, default=2910, help="paper steps per shape (fast recipe)")
    ap.add_argument("--mesh-res", type=int, default=96)
    args = ap.parse_args()
    import torch

    from hyperdiffusion.data.prepare import PrepareConfig, prepare

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scan_file = out / "scan.json"
    if scan_file.is_file():
        shares = json.loads(scan_file.read_text())
    else:
        paths = sorted(p for p in Path(args.meshes).iterdir() if p.suffix.lower() in MESH_SUFFIXES)[:args.scan]
        shares = {p.stem: sheet_share(p, min(args.thickness), max(args.thickness)) for p in paths}
        scan_file.write_text(json.dumps(shares, indent=1))
    picked = sorted(shares, key=shares.get, reverse=True)[:args.pick]
    print("sheet-heavy:", ", ".join(f"{n} {100 * shares[n]:.1f} %" for n in picked), flush=True)
    src = out / "meshes"
    src.mkdir(exist_ok=True)
    for name in picked:  # links, so prepare reads exactly the picked meshes
        target = next(p for p in Path(args.meshes).iterdir() if p.stem == name)
        link = src / target.name
        if not link.exists():
            link.symlink_to(target.resolve())

    rows_file = out / "rows.json"
    rows = json.loads(rows_file.read_text()) if rows_file.is_file() else []
    for t in args.thickness:
        if any(r["sheet_thickness"] == t for r in rows):
            continue
        data = out / f"t{t:g}"
        with labels({"sheet_thickness": t}):
            prepare(src, data, PrepareConfig(workers=1), progress=False)
        r = run(data, picked, "cosine", args.budget, 97, MLPConfig(), args.mesh_res, len(picked), 0, 64)
        r.pop("weights")
        rows.append({"sheet_thickness": t, "sheet_share": {n: shares[n] for n in picked}, **r})
        rows_file.write_text(json.dumps(rows, indent=1))
        print(f"thickness {t:g} voxels: " + summary_line(r), flush=True)


if __name__ == "__main__":
    main()

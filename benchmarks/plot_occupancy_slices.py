"""Draw inside/outside label slices of real chairs and tables (docs/images/label_slices.png).

    python benchmarks/plot_occupancy_slices.py [--out docs/images/label_slices.png] [--res 200]

Per shape: a vertical slice through the middle (x = 0), a horizontal slice through the
seat / table top and one through the legs. Inside is dark, outside light; the mesh
cross-section is drawn in red.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from hyperdiffusion.data import occupancy  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"
SHAPES = [
    "sweethome3d-chair/BlendSwap-CC-0_0001.ply", "sweethome3d-chair/BlendSwap-CC-0_0031.ply",
    "sweethome3d-chair/KatorLegaz_0051.ply", "sweethome3d-chair/Scopia_0029.ply",
    "sweethome3d-table/Scopia_0039.ply", "sweethome3d-table/KatorLegaz_0015.ply",
    "sweethome3d-table/BlendSwap-CC-0_0027.ply", "sweethome3d-table/Scopia_0094.ply",
]


def normalised(path: Path) -> trimesh.Trimesh:
    mesh = trimesh.load(path, process=False, force="mesh")
    v = np.asarray(mesh.vertices, np.float64)
    v = v - v.mean(0)
    return trimesh.Trimesh(v * (0.475 / np.abs(v).max()), mesh.faces, process=False)


def plane_points(axis: int, level: float, res: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Grid points [res*res, 3] on the plane coordinate[axis] = level, and the two in-plane axes."""
    # Draw with Y (up) vertical in the side view and X across in the top views.
    a, b = {0: (2, 1), 1: (0, 2), 2: (0, 1)}[axis]
    u = np.linspace(-0.5, 0.5, res)
    g = np.zeros((res, res, 3))
    g[..., a], g[..., b] = np.meshgrid(u, u, indexing="xy")
    g[..., axis] = level
    return g.reshape(-1, 3), (a, b)


def draw_slice(ax, mesh, axis, level, res, title):
    points, (a, b) = plane_points(axis, level, res)
    labels = occupancy.inside(mesh, points).reshape(res, res)
    ax.imshow(labels, origin="lower", extent=(-0.5, 0.5, -0.5, 0.5), cmap="Greys", vmin=-0.3, vmax=1.3,
              interpolation="nearest")
    normal = np.eye(3)[axis]
    segments = trimesh.intersections.mesh_plane(mesh, normal, normal * level)
    for seg in segments:
        ax.plot(seg[:, a], seg[:, b], color="red", linewidth=0.4)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    return float(labels.mean())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("docs/images/label_slices.png"))
    parser.add_argument("--res", type=int, default=200)
    args = parser.parse_args()
    fig, axes = plt.subplots(len(SHAPES), 3, figsize=(7.5, 2.5 * len(SHAPES)))
    for row, name in zip(axes, SHAPES):
        mesh = normalised(DATA / name)
        lo, hi = mesh.bounds[:, 1]
        # Y is up: the seat / top is the level in the upper 80 % with the most inside
        # points on a coarse grid; the legs are sampled at 20 % of the height.
        u = np.linspace(-0.5, 0.5, 48)
        heights = u[(u > lo + 0.2 * (hi - lo)) & (u < hi)]
        coarse = np.stack(np.meshgrid(u, heights, u, indexing="ij"), -1).reshape(-1, 3)
        per_level = occupancy.inside(mesh, coarse).reshape(48, len(heights), 48).mean((0, 2))
        top = float(heights[int(np.argmax(per_level))])
        legs = lo + 0.2 * (hi - lo)
        short = name.split("/")[-1].removesuffix(".ply")
        draw_slice(row[0], mesh, 0, 0.0, args.res, f"{short}: x = 0 (side)")
        draw_slice(row[1], mesh, 1, top, args.res, f"y = {top:.2f} (seat/top)")
        draw_slice(row[2], mesh, 1, legs, args.res, f"y = {legs:.2f} (legs)")
        print(name, flush=True)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=130)


if __name__ == "__main__":
    main()

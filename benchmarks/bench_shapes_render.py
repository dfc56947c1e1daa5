"""Speed of the built-in shape families and of the CPU renderer; optionally writes the preview grids.

    python benchmarks/bench_shapes_render.py --n 50 --previews docs/images

Prints shapes/second per family (make_shape, boolean union included), mean
faces per shape, and seconds per 256-pixel render.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hyperdiffusion.pictures.render import render_grid, render_mesh
from hyperdiffusion.data.shapes import FAMILIES, make_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="shapes per family to time")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--previews", type=Path, default=None, help="write builtin_<family>.png (seeds 0..15) here")
    args = parser.parse_args()

    print(f"{'family':10s} {'shapes/s':>9s} {'faces (mean, max)':>18s} {'render s/shape':>15s}")
    for family in FAMILIES:
        t0 = time.perf_counter()
        meshes = [make_shape(family, seed) for seed in range(args.n)]
        gen = time.perf_counter() - t0
        faces = np.array([len(m.faces) for m in meshes])
        t0 = time.perf_counter()
        tiles = [render_mesh(m, size=args.size) for m in meshes[:16]]
        ren = (time.perf_counter() - t0) / len(tiles)
        print(f"{family:10s} {args.n / gen:9.1f} {faces.mean():11.0f} {faces.max():6d} {ren:15.3f}")
        if args.previews is not None:
            path = args.previews / f"builtin_{family}.png"
            render_grid(tiles, path, ncols=4, titles=[f"{family} seed {s}" for s in range(16)], size=args.size)
            print(f"  wrote {path}")


if __name__ == "__main__":
    main()

"""Picture of fitted MLPs beside their original meshes: docs/images/fit_chairs.png.

    python benchmarks/plot_fit_chairs.py DATASET FIT_OUT [--out docs/images/fit_chairs.png] [--n 8] [--res 128]

Takes `n` shapes spread over the range of held-out uniform IoU (worst to best, from
FIT_OUT/fit_quality.json), meshes their MLPs with `mesh.extract_meshes` and renders
each original (prepared, normalised mesh) beside its reconstruction.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import trimesh

from hyperdiffusion.fields.mesh import extract_meshes
from hyperdiffusion.fields.mlp import WeightSet, load_weight_set
from hyperdiffusion.data.prepare import mesh_path
from hyperdiffusion.pictures.render import render_grid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("fit_out")
    ap.add_argument("--out", default="docs/images/fit_chairs.png")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ws = load_weight_set(Path(args.fit_out) / "weights.safetensors")
    quality = json.loads((Path(args.fit_out) / "fit_quality.json").read_text())["shapes"]
    ranked = sorted(ws.names, key=lambda n: quality[n]["iou_uniform"])
    picks = [ranked[i] for i in np.linspace(0, len(ranked) - 1, min(args.n, len(ranked))).round().astype(int)]
    rows = [ws.names.index(n) for n in picks]
    sub = WeightSet(ws.weights[rows], picks, ws.mlp, ws.meta)
    fitted = extract_meshes(sub, res=args.res)
    items, titles = [], []
    for name, mesh in zip(picks, fitted):
        items += [trimesh.load(mesh_path(args.dataset, name), force="mesh"), mesh if mesh is not None else
                  trimesh.Trimesh()]
        titles += [f"{name} original", f"MLP IoU {quality[name]['iou_uniform']:.3f}"]
    render_grid(items, args.out, ncols=4, titles=titles, size=256)
    print(f"wrote {args.out}: {', '.join(picks)}")


if __name__ == "__main__":
    main()

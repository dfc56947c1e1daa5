"""4D MLP: the official raw frame index t = 0..15 against a normalised t, at equal budget (docs/4D.md).

Fits the same sequences from the same initial weights with each t encoding (the official
4D batch, cosine lr) and reports the held-out per-frame IoU (uniform points): mean over
frames and worst frame, per sequence and on average.

    python benchmarks/bench_4d_tmode.py DATA4D [--limit 8] [--epochs 24] [--points 1024]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from hyperdiffusion.data.prepare import load_dataset
from hyperdiffusion.fields.fit import PRESETS, fit_quality, fit_shapes
from hyperdiffusion.fields.fit4d import load_sequence
from hyperdiffusion.fields.mlp import default_init, mlp4d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    names = ds.names("all")
    names = [names[i] for i in np.linspace(0, len(names) - 1, min(args.limit, len(names))).astype(int)]
    cfg = replace(PRESETS["cpu"], schedule="cosine", max_epochs=args.epochs, points_per_step=args.points, lr=args.lr)
    results = {}
    for mode in ("index", "normalised"):
        mlp = mlp4d(mode)
        shapes = [load_sequence(ds.root, n, cfg, mlp) for n in names]
        init = default_init(mlp, 1, torch.Generator().manual_seed(0))[0]
        t0 = time.perf_counter()
        w, _ = fit_shapes(shapes, init, cfg, mlp)
        q = fit_quality(w, shapes, mlp)
        results[mode] = {n: {k: r[k] for k in ("iou_frame_mean", "iou_frame_worst", "iou_frame_surface_mean")}
                         for n, r in zip(names, q)}
        m = np.mean([r["iou_frame_mean"] for r in q])
        wst = np.mean([r["iou_frame_worst"] for r in q])
        print(f"{mode:10s} per-frame IoU mean {m:.4f}, worst frame (avg over sequences) {wst:.4f}, "
              f"near-surface {np.mean([r['iou_frame_surface_mean'] for r in q]):.4f}  "
              f"({len(names)} sequences, {cfg.max_epochs * cfg.steps_per_epoch} steps x {cfg.points_per_step} "
              f"points, {time.perf_counter() - t0:.0f} s)", flush=True)
    for n in names:
        a, b = results["index"][n], results["normalised"][n]
        print(f"  {n:40s} index {a['iou_frame_mean']:.3f}/{a['iou_frame_worst']:.3f}  "
              f"normalised {b['iou_frame_mean']:.3f}/{b['iou_frame_worst']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": cfg.to_dict(), "names": names, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()

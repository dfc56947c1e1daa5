"""Benchmark: per-shape fitting (batched vs one shape at a time) and grid evaluation for meshing.

    python benchmarks/bench_fit.py [--threads 1] [--shapes 8] [--steps 10] [--res 128]

Fitting: the paper recipe's step (2048 points per shape, paper MLP, batched Adam) timed
for `--shapes` analytic shapes, once as one [B, P] batch and once one shape at a time
(the official code's loop, `--batch-shapes 1`). Both give the same weights (tests/test_fit.py),
so the fit quality (IoU) is equal by construction; only the speed differs. Shapes per hour
at the paper budget are extrapolated from the measured seconds per step: budget =
epochs x 97 steps, shown at the 5000-epoch cap and at 500 epochs.

Grid evaluation: `mesh.evaluate_grid` (separable first layer) against a plain evaluation
(positional encoding + batched_forward on every grid point), in M points per second.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from hyperdiffusion.fields.fit import PRESETS, fit_shapes, split_samples
from hyperdiffusion.fields.mesh import evaluate_grid
from hyperdiffusion.fields.mlp import MLPConfig, batched_forward, default_init


def analytic_shape(i: int, cfg):
    """A sphere or box (varied sizes) with 100k near-surface and 100k uniform labelled samples."""
    rng = np.random.default_rng(i)
    m = 100_000
    pts = np.concatenate([rng.uniform(-0.4, 0.4, (m, 3)), rng.uniform(-0.5, 0.5, (m, 3))]).astype(np.float32)
    size = 0.15 + 0.2 * rng.random(3)
    occ = (np.linalg.norm(pts / size, axis=1) < 1) if i % 2 else np.all(np.abs(pts) < size, axis=1)
    return split_samples(f"shape{i}", pts, occ.astype(np.uint8), m, cfg)


def time_fit(shapes, cfg, mlp, batch: int) -> float:
    init = default_init(mlp, 1, torch.Generator().manual_seed(0))[0]
    t = time.perf_counter()
    for i in range(0, len(shapes), batch):
        fit_shapes(shapes[i:i + batch], init, cfg, mlp)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="measured steps (one short epoch)")
    ap.add_argument("--res", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mlp = MLPConfig()
    cfg = replace(PRESETS["paper"], steps_per_epoch=args.steps, max_epochs=1)
    shapes = [analytic_shape(i, cfg) for i in range(args.shapes)]
    time_fit(shapes[:1], replace(cfg, steps_per_epoch=2), mlp, 1)  # warm-up
    print(f"fit: {args.shapes} shapes x {args.steps} steps x {cfg.points_per_step} points, paper MLP, "
          f"{args.threads} thread(s)")
    for label, batch in (("one at a time", 1), (f"batched B={args.shapes}", args.shapes)):
        sec = time_fit(shapes, cfg, mlp, batch)
        per = sec / (args.shapes * args.steps)  # seconds per shape-step
        rate = cfg.points_per_step * mlp.n_params / per / 1e9
        line = "  ".join(f"{3600 / (ep * 97 * per):.3f} shapes/h @{ep} epochs" for ep in (5000, 500))
        print(f"  {label:16s} {1000 * per:7.2f} ms per shape-step ({rate:.1f} G point-params/s)  {line}")

    print(f"grid evaluation at res {args.res} (paper MLP, {args.threads} thread(s)):")
    for b in (1, 4):
        w = default_init(mlp, b, torch.Generator().manual_seed(1))
        t = time.perf_counter()
        evaluate_grid(w, mlp, args.res)
        sec = time.perf_counter() - t
        print(f"  evaluate_grid B={b}: {b * args.res**3 / sec / 1e6:.2f} M points/s "
              f"(256^3 per shape: {256**3 / (b * args.res**3 / sec):.1f} s)")
    w = default_init(mlp, 1, torch.Generator().manual_seed(1))
    g = torch.linspace(-0.5, 0.5, args.res)
    pts = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(1, -1, 3)
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, pts.shape[1], 2**16):
            batched_forward(w, pts[:, i:i + 2**16], mlp)
    sec = time.perf_counter() - t
    print(f"  plain batched_forward (64k-point chunks): {args.res**3 / sec / 1e6:.2f} M points/s")


if __name__ == "__main__":
    main()

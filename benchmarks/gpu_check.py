"""One command that checks every CUDA path against the CPU and times the paper-scale work; one JSON.

    python benchmarks/gpu_check.py --out gpu_check.json        # a GPU machine: <= 8 minutes on one H100
    python benchmarks/gpu_check.py --tiny --out check.json     # the same code on the CPU at tiny sizes
                                                               # (tests/test_gpu_check.py runs it)

Each section runs the project's own functions twice on the same inputs, once on the CPU (the
reference: float32, or float64 where the project's CPU path is float64) and once on the device, and
records the difference with the tolerance it is held to ("pass"), then times the paper-scale case:

    fit        batched fitting (fields/fit.py fit_shapes) fp32 and bf16 against the CPU; throughput at
               the paper recipe (2048 points per step, 97 steps per epoch, Adam 1e-2, plateau, early
               stop) on analytic shapes, in shapes/hour at the budget run, with held-out IoU
    train      one transformer training step (loss, gradients, AdamW, EMA: diffusion/train.py), fp32 and
               bf16 autocast against the CPU; steps/s of the 1.41 B-parameter `plane` preset in bf16
    sample     DDIM (diffusion/gaussian.py) from the same starting noise against the CPU; 100 shapes
               with all 500 steps of the `plane` preset
    mesh       MLP grid (fields/mesh.py evaluate_grid) and marching cubes against the CPU; 256^3 meshes
               of 100 fitted MLPs
    chamfer    batched Chamfer (evaluation/metrics.py: torch blocks under exact fp32, and the fused Triton
               kernel where Triton is installed) against the float64 kd-tree: relative error and
               whether MMD / COV / 1-NNA change; TF32 unguarded for comparison; a 1000 x 1000 matrix
               at 2048 points with the fused kernel, 200 x 200 with the torch blocks
    emd        auction EMD against exact (scipy's assignment: no POT needed) with the proven bound
    baselines  the voxel UNet, PVCNN2 (PVD) and DPC: one batch's loss against the CPU; training steps/s
               of each paper-size model at the authors' batch

Nothing is installed at run time. The project's modules are imported inside each section, so the
script starts without trimesh, POT, libigl or manifold3d; a section whose imports fail is recorded
as skipped with the reason. fit, train and mesh import trimesh (pure Python): `--wheels DIR` puts
the pure-Python wheels in DIR on sys.path (zip import, nothing installed), e.g. a trimesh wheel
carried to a GPU machine that lacks it (benchmarks/RESULTS.md has the command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
import traceback
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# Sizes: (full, tiny). The full ones fit in ~8 minutes on one H100 (estimates in each section).
SIZES = {
    "fit_parity_shapes": (4, 2), "fit_parity_steps": (50, 3),
    "fit_shapes": (512, 3), "fit_epochs": (30, 2), "fit_steps_per_epoch": (97, 3), "fit_samples": (50_000, 2_000),
    "train_parity_batch": (8, 4), "plane_preset": ("plane", None), "plane_batch": (32, 4), "plane_steps": (10, 2),
    "sample_n": (100, 2), "sample_steps": (500, 4), "mesh_n": (100, 2), "mesh_res": (256, 24),
    "parity_res": (64, 16),
    "chamfer_n": (1000, 6), "chamfer_parity_n": (100, 6), "points": (2048, 64),
    "emd_pairs": (8, 2),
    "baseline_points": (2048, 64), "baseline_steps": (5, 1),
}
# A transformer small enough for the CPU side of the parity checks (and, with --tiny, for the
# timings in place of the 1.41 B `plane` preset: same code, tiny sizes).
SMALL_TRANSFORMER = dict(n_embd=64, n_layer=2, n_head=4)
SMALL_MLP = dict(hidden=16, multires=2, n_hidden_layers=1)


@dataclass
class Check:
    tiny: bool
    device: torch.device
    sizes: dict[str, Any]
    store: dict[str, Any] = field(default_factory=dict)  # what one section hands the next (fitted MLPs)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - t


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| over all elements (b the reference), in float64."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def compared(value: float, tol: float) -> dict[str, Any]:
    return {"value": value, "tol": tol, "pass": bool(value <= tol)}


def mlp_config(tiny: bool):
    from hyperdiffusion.fields.mlp import MLPConfig

    return MLPConfig(**SMALL_MLP) if tiny else MLPConfig()  # the paper MLP: 36,737 parameters


def analytic_shape(i: int, n: int, cfg):
    """A sphere, box or torus of seeded size with n uniform and n near-surface labelled samples
    (benchmarks/bench_fit.py's shapes plus a torus; no dataset needed)."""
    from hyperdiffusion.fields.fit import split_samples

    rng = np.random.default_rng(i)
    size = 0.15 + 0.2 * rng.random(3)
    near = rng.uniform(-0.4, 0.4, (n, 3))
    pts = np.concatenate([near, rng.uniform(-0.5, 0.5, (n, 3))]).astype(np.float32)
    kind = i % 3
    if kind == 0:
        occ = np.linalg.norm(pts / size, axis=1) < 1
    elif kind == 1:
        occ = np.all(np.abs(pts) < size, axis=1)
    else:
        ring = np.hypot(pts[:, 0], pts[:, 1]) - size[0]
        occ = np.hypot(ring, pts[:, 2]) < 0.4 * size[1]
    return split_samples(f"shape{i}", pts, occ.astype(np.uint8), n, cfg)


# ----------------------------------------------------------------------------- sections


def section_fit(c: Check) -> dict[str, Any]:
    from hyperdiffusion.fields.fit import PRESETS, fit_quality, fit_shapes
    from hyperdiffusion.fields.mlp import default_init

    s = c.sizes
    mlp = mlp_config(c.tiny)
    paper = PRESETS["paper"]
    init = default_init(mlp, 1, torch.Generator().manual_seed(0))[0]
    out: dict[str, Any] = {"mlp_params": mlp.n_params}

    # Parity: the same shapes, draws and init on the CPU (fp32) and the device (fp32, bf16).
    # Held to the loss and its gradient, not to the weights after Adam steps: Adam's normalised update
    # turns the rounding differences of near-zero gradients into whole steps of lr, so fp32 weights
    # part by ~4e-3 after 50 steps on an H200 with the loss unchanged (2026-11-28).
    shapes = [analytic_shape(i, s["fit_samples"], paper) for i in range(s["fit_parity_shapes"])]
    one = replace(paper, steps_per_epoch=1, max_epochs=1)
    cfg = replace(paper, steps_per_epoch=s["fit_parity_steps"], max_epochs=1)
    ref1, _ = fit_shapes(shapes, init, one, mlp, device="cpu")
    ref, ref_rec = fit_shapes(shapes, init, cfg, mlp, device="cpu")
    for precision, tol in (("fp32", 1e-3), ("bf16", 5e-2)):
        w1, _ = fit_shapes(shapes, init, one, mlp, device=c.device, precision=precision)
        w, rec = fit_shapes(shapes, init, cfg, mlp, device=c.device, precision=precision)
        loss_gap = max(abs(a.final_loss - b.final_loss) / b.final_loss for a, b in zip(rec, ref_rec))
        # fp32: the same arithmetic up to summation order; bf16 rounds activations to 8 bits of mantissa,
        # so it is held to the loss alone.
        row = {"weights_rel_err_after_1_step": rel_err(w1, ref1),
               f"weights_rel_err_after_{cfg.steps_per_epoch}_steps": rel_err(w, ref),
               "loss_rel_gap": compared(loss_gap, tol)}
        if precision == "fp32":
            row["loss_and_gradient_rel_err"] = compared(_fit_gradient_gap(shapes, init, mlp, paper, c.device), 1e-4)
        out[f"parity_{precision}"] = row

    # Throughput at the paper recipe: B shapes fitted together in bf16 on the device, early stopping on.
    cfg = replace(paper, steps_per_epoch=s["fit_steps_per_epoch"], max_epochs=s["fit_epochs"])
    shapes = [analytic_shape(i, s["fit_samples"], cfg) for i in range(s["fit_shapes"])]
    precision = "bf16" if c.device.type == "cuda" else "fp32"
    fit_shapes(shapes[:2], init, replace(cfg, steps_per_epoch=2, max_epochs=1), mlp, c.device, precision)  # warm-up
    (w, rec), sec = c.timed(lambda: fit_shapes(shapes, init, cfg, mlp, device=c.device, precision=precision))
    q = fit_quality(w, shapes, mlp, device=c.device)
    shape_steps = sum(r.epochs for r in rec) * cfg.steps_per_epoch
    per_shape_step = sec / shape_steps
    out["throughput"] = {
        "precision": precision, "shapes": len(shapes), "max_epochs": cfg.max_epochs, "seconds": sec,
        "mean_epochs": float(np.mean([r.epochs for r in rec])),
        "shapes_per_hour_at_this_budget": len(shapes) * 3600 / sec,
        "ms_per_shape_step": 1000 * per_shape_step,
        # bench_fit.py's convention: the paper budget is epochs x 97 steps.
        "shapes_per_hour_at_500_epochs": 3600 / (500 * 97 * per_shape_step),
        "shapes_per_hour_at_5000_epoch_cap": 3600 / (5000 * 97 * per_shape_step),
        "iou_uniform_mean": float(np.mean([r["iou_uniform"] for r in q])),
        "iou_uniform_min": float(np.min([r["iou_uniform"] for r in q])),
        "iou_surface_mean": float(np.mean([r["iou_surface"] for r in q])),
    }
    c.store["fitted"] = (w, mlp)
    return out


def _fit_gradient_gap(shapes, init: torch.Tensor, mlp, cfg, device) -> float:
    """fit's per-shape BCE loss and its gradient on one draw of points, device against CPU (the larger
    relative error of the two)."""
    import torch.nn.functional as F

    from hyperdiffusion.fields.mlp import batched_forward

    g = torch.Generator().manual_seed(9)
    idx = [torch.randint(len(s.train_points), (cfg.points_per_step,), generator=g) for s in shapes]
    pts = torch.stack([s.train_points[i] for s, i in zip(shapes, idx)])
    occ = torch.stack([s.train_occ[i] for s, i in zip(shapes, idx)])
    perturb = 0.01 * torch.randn(len(shapes), mlp.n_params, generator=g)  # rows differ, as in a real fit
    out = []
    for dev in (torch.device("cpu"), device):
        w = (init.reshape(1, -1) + perturb).to(dev).requires_grad_()
        loss = F.binary_cross_entropy_with_logits(batched_forward(w, pts.to(dev), mlp), occ.to(dev),
                                                  reduction="none").sum(1)
        loss.sum().backward()
        out.append((loss.detach(), w.grad))
    return max(rel_err(out[1][0], out[0][0]), rel_err(out[1][1], out[0][1]))


def _transformer(c: Check, preset: str | None, mlp, device):
    from hyperdiffusion.denoisers import build_denoiser, get_denoiser

    layout = [math.prod(shape) for _, shape in mlp.tensor_shapes()]
    config = get_denoiser("transformer").config(preset or "cpu", **({} if preset else SMALL_TRANSFORMER))
    torch.manual_seed(0)
    return build_denoiser("transformer", config, (mlp.n_params,), layout).to(device), layout


def _train_steps(model, diffusion, x0, steps: int, precision: str, device, state=None, first: int = 0):
    """`steps` training steps exactly as diffusion/train.py takes them, from step `first` with the
    optimiser and EMA of `state` (fresh ones when None); returns (losses, (optimiser, ema))."""
    import copy

    from hyperdiffusion.diffusion.runtime import autocast_context
    from hyperdiffusion.diffusion.train import (TrainConfig, ema_decay_at, make_optimizer, model_loss,
                                                step_randomness, update_ema)

    cfg = TrainConfig()
    opt, ema = state or (make_optimizer(model, cfg), copy.deepcopy(model).requires_grad_(False))
    losses = []
    for step in range(first, first + steps):
        t, noise = step_randomness(cfg.seed, step, len(x0), x0.shape[1:], diffusion.num_timesteps)
        with autocast_context(precision, device):
            loss = model_loss(model, diffusion, x0, t.to(device), noise.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema(ema, model, ema_decay_at(step, cfg.ema_decay))
        losses.append(loss.detach())
    return torch.stack(losses).float().cpu(), (opt, ema)


def section_train(c: Check) -> dict[str, Any]:
    from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
    from hyperdiffusion.fields.mlp import MLPConfig, default_init

    s = c.sizes
    diffusion = GaussianDiffusion(DiffusionConfig())
    small_mlp = MLPConfig(**SMALL_MLP)
    x0 = default_init(small_mlp, s["train_parity_batch"], torch.Generator().manual_seed(1))
    out: dict[str, Any] = {}
    ref_model, _ = _transformer(c, None, small_mlp, "cpu")
    ref_loss, (_, ref_ema) = _train_steps(ref_model, diffusion, x0, 2, "fp32", torch.device("cpu"))
    for precision, tol in (("fp32", 1e-4), ("bf16", 3e-2)):
        model, _ = _transformer(c, None, small_mlp, c.device)
        loss, (_, ema) = _train_steps(model, diffusion, x0.to(c.device), 2, precision, c.device)
        out[f"parity_{precision}"] = {
            "loss_rel_err": compared(rel_err(loss, ref_loss), tol),
            "weights_rel_err_after_2_steps": rel_err(torch.cat([p.flatten() for p in model.parameters()]),
                                                     torch.cat([p.flatten() for p in ref_model.parameters()])),
            "ema_rel_err": rel_err(torch.cat([p.flatten() for p in ema.parameters()]),
                                   torch.cat([p.flatten() for p in ref_ema.parameters()]))}
    del ref_model, ref_ema

    # Steps/s of the paper's airplane transformer (1.41 B parameters) in bf16 at batch 32.
    preset = s["plane_preset"]
    mlp = mlp_config(c.tiny)
    model, _ = _transformer(c, preset, mlp, c.device)
    n_params = sum(p.numel() for p in model.parameters())
    x0 = default_init(mlp, s["plane_batch"], torch.Generator().manual_seed(2)).to(c.device)
    precision = "bf16"
    # Warm-up: kernels, the optimiser's state and the EMA copy are allocated here, not in the timed steps.
    _, state = _train_steps(model, diffusion, x0, 2, precision, c.device)
    _, sec = c.timed(lambda: _train_steps(model, diffusion, x0, s["plane_steps"], precision, c.device, state, 2))
    out["throughput"] = {"preset": preset or "small (tiny run)", "params": n_params, "batch": s["plane_batch"],
                         "precision": precision, "steps": s["plane_steps"],
                         "steps_per_s": s["plane_steps"] / sec}
    if c.device.type == "cuda":
        out["throughput"]["peak_memory_gb"] = torch.cuda.max_memory_allocated(c.device) / 1e9
    c.store["plane"] = (model.eval().requires_grad_(False), mlp, diffusion)
    return out


def section_sample(c: Check) -> dict[str, Any]:
    from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
    from hyperdiffusion.fields.mlp import MLPConfig

    s = c.sizes
    diffusion = GaussianDiffusion(DiffusionConfig())
    small_mlp = MLPConfig(**SMALL_MLP)
    noise = torch.randn(3, small_mlp.n_params, generator=torch.Generator().manual_seed(3))
    ref_model, _ = _transformer(c, None, small_mlp, "cpu")
    ref = diffusion.ddim_sample(ref_model.eval(), noise.shape, steps=20, noise=noise, device="cpu")
    model, _ = _transformer(c, None, small_mlp, c.device)
    x = diffusion.ddim_sample(model.eval(), noise.shape, steps=20, noise=noise.to(c.device), device=c.device)
    out: dict[str, Any] = {"parity_fp32_ddim20": {"rel_err": compared(rel_err(x, ref), 1e-3)}}

    if "plane" in c.store:
        model, mlp, diffusion = c.store["plane"]
    else:
        model, _ = _transformer(c, None if c.tiny else "plane", mlp_config(c.tiny), c.device)
        model, mlp = model.eval(), mlp_config(c.tiny)
    n, steps = s["sample_n"], s["sample_steps"]
    start = torch.randn(n, mlp.n_params, generator=torch.Generator().manual_seed(4)).to(c.device)
    with torch.no_grad():
        samples, sec = c.timed(lambda: diffusion.ddim_sample(model, start.shape, steps=steps, noise=start,
                                                             device=c.device))
    out["throughput"] = {"n": n, "ddim_steps": steps, "precision": "fp32 (sample's default)", "seconds": sec,
                         "finite": bool(torch.isfinite(samples).all())}
    return out


def section_mesh(c: Check) -> dict[str, Any]:
    from hyperdiffusion.fields.mesh import evaluate_grid, field_to_mesh
    from hyperdiffusion.fields.mlp import default_init

    s = c.sizes
    if "fitted" in c.store:
        w, mlp = c.store["fitted"]
        source = "fitted analytic shapes (the fit section)"
    else:
        mlp = mlp_config(c.tiny)
        w = default_init(mlp, 2, torch.Generator().manual_seed(5))
        source = "default-init MLPs (the fit section did not run)"
    res = s["parity_res"]
    ref = evaluate_grid(w[:2].cpu(), mlp, res, device="cpu")
    got = evaluate_grid(w[:2], mlp, res, device=c.device)
    parity = {"field_rel_err": compared(rel_err(got, ref), 1e-4)}
    # Halfway between two neighbouring values of each CPU field, so that marching cubes runs even on an
    # untrained (tiny) MLP and no grid value sits on the level (where 1e-7 of rounding flips a corner).
    levels = []
    for f in ref:
        v = f.flatten().sort().values
        k = len(v) // 2
        levels.append(float((v[k] + v[k + 1]) / 2))
    meshes = [(field_to_mesh(a.numpy(), lv)[0], field_to_mesh(b.numpy(), lv)[0]) for a, b, lv in zip(got, ref, levels)]
    parity["meshes"] = sum(m is not None for pair in meshes for m in pair)
    parity["vertex_counts"] = [[None if m is None else len(m.vertices) for m in pair] for pair in meshes]
    # Only a field value within rounding of the level can flip a corner: count those.
    parity["values_within_1e-5_of_level"] = int(sum(((f - lv).abs() < 1e-5).sum() for f, lv in zip(ref, levels)))
    out: dict[str, Any] = {"source": source, "parity": parity}

    # 256^3 meshes of n MLPs: grids on the device in batches of 4 (mesh.py's default), marching cubes
    # (scikit-image on the CPU; it holds the GIL, so forked processes) while the next grids are evaluated.
    n, res = s["mesh_n"], s["mesh_res"]
    reps = -(-n // len(w))
    weights = w.repeat(reps, 1)[:n]
    workers = min(16, os.cpu_count() or 1)
    grid_sec = [0.0]

    def run():
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = []
            for i in range(0, n, 4):
                t = time.perf_counter()
                fields = evaluate_grid(weights[i:i + 4], mlp, res, device=c.device)
                grid_sec[0] += time.perf_counter() - t
                futures += [pool.submit(_mesh_status, f.numpy(), 0.0) for f in fields]
            return [f.result() for f in futures]

    results, sec = c.timed(run)
    statuses = [r[0] for r in results]
    out["throughput"] = {"n": n, "res": res, "seconds": sec, "grid_seconds": grid_sec[0],
                         "marching_cubes_processes": workers,
                         "mean_vertices": float(np.mean([r[1] for r in results])),
                         "status_counts": {k: statuses.count(k) for k in sorted(set(statuses))}}
    return out


def _mesh_status(field: np.ndarray, level: float) -> tuple[str, int]:
    """field_to_mesh in a worker process: (status, vertex count), not the mesh itself."""
    from hyperdiffusion.fields.mesh import field_to_mesh

    mesh, status = field_to_mesh(field, level)
    return status, 0 if mesh is None else len(mesh.vertices)


def _clouds(n: int, points: int, seed: int) -> np.ndarray:
    """n noisy surface clouds of spheres, boxes and tori of seeded sizes, normalised as the paper ("hd")."""
    from hyperdiffusion.evaluation.metrics import normalize_clouds

    rng = np.random.default_rng(seed)
    out = np.empty((n, points, 3))
    for i in range(n):
        size = 0.5 + rng.random(3)
        d = rng.normal(size=(points, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        if i % 3 == 0:
            p = d * size
        elif i % 3 == 1:
            p = d / np.abs(d).max(axis=1, keepdims=True) * size
        else:
            u, v = rng.uniform(0, 2 * np.pi, (2, points))
            p = np.stack([(size[0] + 0.3 * np.cos(v)) * np.cos(u), (size[0] + 0.3 * np.cos(v)) * np.sin(u),
                          0.3 * size[2] * np.sin(v)], 1)
        out[i] = p + 0.01 * rng.normal(size=p.shape)
    return normalize_clouds(out, "hd")


def section_chamfer(c: Check) -> dict[str, Any]:
    from hyperdiffusion.evaluation import metrics

    s = c.sizes
    m, pts = s["chamfer_parity_n"], s["points"]
    clouds = _clouds(2 * m, pts, 6)
    gen, ref = clouds[:m], clouds[m:]
    dev = str(c.device)

    def three(fn):
        return fn(gen), fn(gen, ref), fn(ref)

    exact = three(lambda a, b=None: metrics.pairwise_chamfer(a, b))  # scipy kd-tree, float64
    guarded = three(lambda a, b=None: metrics.pairwise_chamfer(a, b, backend="torch", device=dev))
    matmul = torch.backends.cuda.matmul
    old = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else None
    try:  # the same blocks with TF32 allowed, to show what the guard prevents (no effect on a CPU)
        if old is not None:
            matmul.fp32_precision = "tf32"
        unguarded = three(lambda a, b=None: metrics._pairwise_chamfer_blocks(
            a, a if b is None else b, dev, 256 << 20, torch.float32, lambda _n: None))
    finally:
        if old is not None:
            matmul.fp32_precision = old

    def summary(ds):
        scores = metrics.set_metrics(*ds)
        return {"rel_err": max(rel_err(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(ds, exact)),
                **scores}

    from hyperdiffusion.evaluation import chamfer_triton

    fused = (three(lambda a, b=None: metrics.pairwise_chamfer(a, b, backend="triton", device=dev))
             if chamfer_triton.available(dev) else None)
    base = metrics.set_metrics(*exact)
    out: dict[str, Any] = {"reference": {"backend": "scipy-kdtree float64", **base}}
    rows = [("torch_fp32_guarded", guarded), ("torch_fp32_tf32_allowed", unguarded)]
    rows += [("triton_fused_fp32", fused)] if fused is not None else []
    for name, ds in rows:
        row = summary(ds)
        row["cov_nna_unchanged"] = row["cov"] == base["cov"] and row["nna"] == base["nna"]
        out[name] = row
    for name in ("torch_fp32_guarded", "triton_fused_fp32"):
        if name in out:
            out[name]["pass"] = bool(out[name]["cov_nna_unchanged"] and out[name]["rel_err"] <= 1e-4)

    # n x n matrices (the 1-NNA reference block at paper size): the fused kernel at n, the torch
    # blocks at n / 5 (25x fewer pairs: 55 s at n = 1000 on an H200, 2026-11-28).
    n = s["chamfer_n"]
    big = np.concatenate([clouds] * -(-n // len(clouds)))[:n]
    out["throughput"] = {}
    backends = [("triton", n)] if fused is not None else []
    for backend, k in backends + [("torch", max(2, n // 5))]:
        kw = {"max_block_bytes": 2 << 30} if backend == "torch" else {}
        metrics.pairwise_chamfer(big[:2], backend=backend, device=dev, **kw)  # warm-up (compilation)
        mat, sec = c.timed(lambda: metrics.pairwise_chamfer(big[:k], backend=backend, device=dev, **kw))
        out["throughput"][backend] = {"n": k, "points": pts, "seconds": sec, "pairs_per_s": k * k / sec,
                                      "finite": bool(np.isfinite(mat).all())}
    return out


def section_emd(c: Check) -> dict[str, Any]:
    from hyperdiffusion.evaluation import metrics

    s = c.sizes
    k, pts = s["emd_pairs"], s["points"]
    clouds = _clouds(2 * k, pts, 7)
    a, b = clouds[:k], clouds[k:]
    dtype = torch.float64 if c.device.type == "cpu" else torch.float32  # as pairwise_emd
    ta, tb = (torch.as_tensor(x, dtype=dtype, device=c.device) for x in (a, b))
    cfg = metrics.AuctionConfig()
    (est, low), sec = c.timed(lambda: metrics.emd_auction(ta, tb, with_bound=True, cfg=cfg))
    est, low = est.double().cpu().numpy(), low.double().cpu().numpy()
    t = time.perf_counter()
    exact = np.array([metrics.emd_exact(x, y, solver="lsa") for x, y in zip(a, b)])
    exact_sec = time.perf_counter() - t
    cmax = np.array([np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)).max() for x, y in zip(a, b)])
    bound = cfg.eps_final * cmax + 1e-5 * exact  # eps-CS bound, plus float32 rounding of the costs
    return {"pairs": k, "points": pts, "dtype": str(dtype).removeprefix("torch."),
            "max_rel_err": float(np.max(np.abs(est - exact) / exact)),
            "within_bound": {"pass": bool(np.all(est - exact <= bound) and np.all(low <= exact + bound))},
            "auction_seconds_per_pair": sec / k, "exact_lsa_seconds_per_pair": exact_sec / k}


# The baselines' denoisers (train presets of diffusion/train.py): (train preset, small model preset for
# the CPU side of the parity check, data shape with P = the cloud size).
BASELINES = {"voxel": ("voxel", "cpu", (1, 24, 24, 24)), "pvd": ("pvd", "tiny", ("P", 3)),
             "dpc": ("dpc", "tiny", ("P", 3))}


def _baseline_steps(model, opt, diffusion, x0: torch.Tensor, n: int) -> None:
    from hyperdiffusion.diffusion.train import model_loss

    for _ in range(n):
        t = torch.randint(0, diffusion.num_timesteps, (len(x0),), device=x0.device)
        loss = model_loss(model, diffusion, x0, t, torch.randn_like(x0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def section_baselines(c: Check) -> dict[str, Any]:
    """The voxel UNet, PVD's PVCNN2 and DPC: the loss of one batch on the device against the CPU (the
    same weights, inputs and latent noise; eval mode, so no dropout), then training steps/s of the
    paper-size model at the authors' batch (fp32, as their presets train)."""
    import copy

    from hyperdiffusion.denoisers import build_denoiser, count_parameters, get_denoiser
    from hyperdiffusion.diffusion.gaussian import GaussianDiffusion
    from hyperdiffusion.diffusion.train import TRAIN_PRESETS, model_loss

    s = c.sizes
    out: dict[str, Any] = {"cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}
    for method, (train_preset, small, shape) in BASELINES.items():
        tc = TRAIN_PRESETS[train_preset]
        shape = tuple(s["baseline_points"] if d == "P" else d for d in shape)
        diffusion = GaussianDiffusion(tc.diffusion_config())
        name = tc.denoiser_name
        torch.manual_seed(0)
        ref = build_denoiser(name, get_denoiser(name).config(small), shape).eval()
        model = copy.deepcopy(ref).to(c.device)
        g = torch.Generator().manual_seed(8)
        x0 = torch.randn(2, *shape, generator=g) * 0.3
        noise = torch.randn(x0.shape, generator=g)
        t = torch.tensor([3, diffusion.num_timesteps * 3 // 4])
        losses = []
        for m, dev in ((ref, torch.device("cpu")), (model, c.device)):
            torch.manual_seed(5)  # DPC's latent noise is drawn from the global CPU generator
            with torch.no_grad():
                losses.append(model_loss(m, diffusion, x0.to(dev), t.to(dev), noise.to(dev)).float().cpu())
        # cuDNN convolutions (the UNet, PVCNN2's voxel branch) may use TF32 by default: held to TF32's level.
        row: dict[str, Any] = {"parity_loss_rel_err": compared(rel_err(losses[1], losses[0]), 5e-3),
                               "parity_preset": small}

        torch.manual_seed(0)
        preset = small if c.tiny else tc.preset
        model = build_denoiser(name, get_denoiser(name).config(preset), shape).to(c.device).train()
        batch = min(tc.batch_size, 4) if c.tiny else tc.batch_size
        x0 = (torch.randn(batch, *shape, generator=g) * 0.3).to(c.device)
        opt = torch.optim.Adam(model.parameters(), lr=tc.lr)

        _baseline_steps(model, opt, diffusion, x0, 2)  # warm-up: kernels, cuDNN plans, optimiser state
        _, sec = c.timed(lambda: _baseline_steps(model, opt, diffusion, x0, s["baseline_steps"]))
        row["throughput"] = {"train_preset": train_preset, "model_preset": preset, "params": count_parameters(model), "batch": batch,
                             "precision": "fp32", "steps_per_s": s["baseline_steps"] / sec}
        out[method] = row
    return out


SECTIONS = {"fit": section_fit, "train": section_train, "sample": section_sample, "mesh": section_mesh,
            "chamfer": section_chamfer, "emd": section_emd, "baselines": section_baselines}


# ----------------------------------------------------------------------------- driver


def failed_checks(result: Any, path: str = "") -> list[str]:
    """Every '"pass": false' in a section's result, by its path."""
    bad = []
    if isinstance(result, dict):
        if result.get("pass") is False:
            bad.append(path or "(section)")
        for k, v in result.items():
            bad += failed_checks(v, f"{path}.{k}" if path else k)
    return bad


def run_section(name: str, fn, c: Check) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        result = fn(c)
        status = "ok"
    except ImportError as e:  # a package this section needs is not on this machine
        return {"status": "skipped", "reason": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t}
    except Exception as e:  # recorded, so the other sections still run
        return {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:],
                "seconds": time.perf_counter() - t}
    failed = failed_checks(result)
    return {"status": "failed" if failed else status, **({"failed_checks": failed} if failed else {}),
            **result, "seconds": time.perf_counter() - t}


def environment(device: torch.device) -> dict[str, Any]:
    import importlib.util

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_count": os.cpu_count(), "date": datetime.date.today().isoformat(),
           "packages": {p: importlib.util.find_spec(p) is not None
                        for p in ("trimesh", "ot", "igl", "manifold3d", "skimage", "scipy", "safetensors")}}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), bf16_supported=torch.cuda.is_bf16_supported(),
                   cuda=torch.version.cuda, gpu_memory_gb=torch.cuda.get_device_properties(device).total_memory / 1e9)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check.json", help="the JSON written")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU: every code path in seconds")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--wheels", default=None, help="a folder of pure-Python wheels to import from (nothing installed)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no section after this many seconds (the rest are recorded as skipped), so a "
                         "time-limited lease still returns every finished section")
    args = ap.parse_args(argv)
    if args.wheels:
        sys.path[:0] = [str(p) for p in sorted(Path(args.wheels).glob("*-py3-none-any.whl"))]
    if str(ROOT / "src") not in sys.path:  # a checkout without `pip install -e .` (a GPU machine)
        sys.path.insert(0, str(ROOT / "src"))
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --tiny for the CPU check", file=sys.stderr)
        return 2
    sizes = {k: v[1] if args.tiny else v[0] for k, v in SIZES.items()}
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    c = Check(args.tiny, device, sizes)
    report: dict[str, Any] = {"command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                              "tiny": args.tiny, "environment": environment(device), "sizes": sizes, "sections": {}}
    from hyperdiffusion.io import write_json

    t0 = time.perf_counter()
    for name in names:
        if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
            r = {"status": "skipped", "reason": f"--budget-s {args.budget_s:g} spent", "seconds": 0.0}
        else:
            print(f"gpu_check: {name} ...", flush=True)
            r = run_section(name, SECTIONS[name], c)
        report["sections"][name] = r
        print(f"gpu_check: {name}: {r['status']} in {r['seconds']:.1f} s "
              f"{r.get('reason') or r.get('error') or r.get('failed_checks') or ''}", flush=True)
        report["seconds"] = time.perf_counter() - t0
        write_json(args.out, report)  # after every section: a run cut off keeps what it finished
    print(json.dumps({k: v["status"] for k, v in report["sections"].items()}), f"-> {args.out}")
    return 0 if all(v["status"] in ("ok", "skipped") for v in report["sections"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

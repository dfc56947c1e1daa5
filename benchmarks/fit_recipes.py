"""Fit recipes at equal CPU cost: held-out IoU, evaluation-set IoU and F-score (issue 13, part 2).

The paper's MLP is unchanged; only the way it is fitted differs. Every recipe fits the
same shapes in the same chunks (`--batch-shapes`, one thread) from the same seeded default init, for a
budget counted in paper steps (one step = 2048 points through the MLP, forward and
backward): a recipe with 4x the points per step gets 4x fewer steps. Early stopping is
off so every recipe spends its whole budget. Each fit is timed (process CPU seconds)
and scored on the held-out 10 % of the training samples and on the dataset's evaluation
set (eval.npz: volume IoU, F-score at 1 % of the cube, fields/fit_eval.py).

    python benchmarks/fit_recipes.py DATASET --limit 6 --budgets 485 970 1940 --out results.json

DATASET: a prepared dataset (`hyperdiffusion prepare ...`, with its evaluation set).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hyperdiffusion.fields.fit import PRESETS, fit_quality, fit_shapes, split_samples
from hyperdiffusion.fields.fit_eval import ScoreConfig, score_fits
from hyperdiffusion.fields.mlp import MLPConfig, default_init, save_weight_set

PAPER_POINTS = 2048
# name -> FitConfig overrides on top of `paper` (max_epochs is set from the budget).
RECIPES = {
    "paper": {},
    "cosine": {"schedule": "cosine"},
    "cosine, warm-up": {"schedule": "cosine", "warmup_epochs": 2},
    "cosine, 8192 points/step": {"schedule": "cosine", "points_per_step": 8192},
    "cosine, hard 50 %": {"schedule": "cosine", "hard_fraction": 0.5},
    "cosine, warm-up, hard 50 %": {"schedule": "cosine", "warmup_epochs": 2, "hard_fraction": 0.5},
}


def shape_names(root: Path, limit: int) -> list[str]:
    names = sorted(p.parent.name for p in (root / "shapes").glob("*/eval.npz"))
    return names[:limit]


def run(root: Path, names: list[str], recipe: str, budget: int, steps_per_epoch: int, mlp: MLPConfig,
        mesh_res: int, batch_shapes: int, curve_every: int, curve_mesh_res: int) -> dict:
    """Fit `names` in chunks of `batch_shapes` with one recipe; score the end point and a curve.

    The curve: every `curve_every` epochs the current weights are scored on the evaluation set
    (volume IoU; F-score from a `curve_mesh_res`³ mesh), against the fit's process CPU seconds
    up to that epoch summed over chunks (scoring time excluded). Under the cosine schedule
    the intermediate points are the same run observed midway, not shorter cosine runs.
    """
    from hyperdiffusion.data.prepare import load_samples

    over = RECIPES[recipe]
    base = replace(PRESETS["paper"], steps_per_epoch=steps_per_epoch, early_stop_patience=10**9, **over)
    epochs = max(1, round(budget * PAPER_POINTS / (base.steps_per_epoch * base.points_per_step)))
    cfg = replace(base, max_epochs=epochs)
    init = default_init(mlp, 1, torch.Generator().manual_seed(0))[0]
    marks = sorted({*range(curve_every, epochs, curve_every), epochs} if curve_every else set())
    curve_cpu = {e: 0.0 for e in marks}
    curve_rows: dict[int, list[dict]] = {e: [] for e in marks}
    weights_all, held, cpu_total, wall_total = [], [], 0.0, 0.0
    for lo in range(0, len(names), batch_shapes):
        chunk = names[lo:lo + batch_shapes]
        shapes = []
        for n in chunk:
            pts, occ, n_surface = load_samples(root, n)[:3]
            shapes.append(split_samples(n, pts, occ, int(n_surface), cfg))
        scoring = [0.0]  # CPU seconds spent scoring inside the callback, taken off the fit's time
        cpu0, wall0 = time.process_time(), time.perf_counter()

        def snapshot(epoch: int, w: torch.Tensor) -> None:
            if epoch not in curve_cpu:
                return
            t = time.process_time()
            curve_cpu[epoch] += t - cpu0 - scoring[0]
            curve_rows[epoch] += score_fits(w, chunk, root, mlp, ScoreConfig(mesh_res=curve_mesh_res, n_points=20_000,
                                                                             n_boot=50))
            scoring[0] += time.process_time() - t

        w, _ = fit_shapes(shapes, init, cfg, mlp, on_weights=snapshot if marks else None)
        cpu_total += time.process_time() - cpu0 - scoring[0]
        wall_total += time.perf_counter() - wall0
        weights_all.append(w)
        held += fit_quality(w, shapes, mlp)
        print(f"  {recipe}: {lo + len(chunk)}/{len(names)} shapes fitted, fit cpu {cpu_total:.0f} s", flush=True)
    weights = torch.cat(weights_all)
    scores = score_fits(weights, names, root, mlp, ScoreConfig(mesh_res=mesh_res, n_points=30_000, n_boot=200))
    mean = lambda key, rows: float(np.nanmean([r[key] for r in rows]))  # noqa: E731
    curve = [{"epoch": e, "paper_steps": e * cfg.steps_per_epoch * cfg.points_per_step // PAPER_POINTS,
              "cpu_s": curve_cpu[e], "eval_iou": mean("eval_iou", curve_rows[e]), "fscore": mean("fscore", curve_rows[e]),
              "mesh_res": curve_mesh_res} for e in marks]
    return {"weights": weights, "recipe": recipe, "budget_paper_steps": budget, "epochs": epochs, "cpu_s": cpu_total,
            "wall_s": wall_total,
            "batch_shapes": batch_shapes, "curve": curve, "mesh_res": mesh_res,
            "iou_uniform": mean("iou_uniform", held), "iou_surface": mean("iou_surface", held),
            "eval_iou": mean("eval_iou", scores), "eval_iou_min": float(np.nanmin([r["eval_iou"] for r in scores])),
            "fscore": mean("fscore", scores), "fscore_min": float(np.nanmin([r["fscore"] for r in scores])),
            "per_shape": {n: {k: s[k] for k in ("eval_iou", "fscore", "chamfer_l1")} for n, s in zip(names, scores)}}


def summary_line(r: dict) -> str:
    """One line of a `run` result: CPU time, held-out IoU, evaluation-set IoU, F-score, Chamfer-L1."""
    chamfer = np.mean([s["chamfer_l1"] for s in r["per_shape"].values()])
    return (f"cpu {r['cpu_s']:6.0f} s  held-out IoU {r['iou_uniform']:.3f} / {r['iou_surface']:.3f}  "
            f"eval IoU {r['eval_iou']:.3f} (min {r['eval_iou_min']:.3f})  F {r['fscore']:.3f} "
            f"(min {r['fscore_min']:.3f})  Chamfer-L1 {chamfer:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--names", nargs="+", default=None, help="these shapes instead of the first --limit")
    ap.add_argument("--budgets", type=int, nargs="+", default=[485, 970, 1940], help="in paper steps per shape")
    ap.add_argument("--steps-per-epoch", type=int, default=97)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--mesh-res", type=int, default=128, help="marching-cubes grid for the F-score")
    ap.add_argument("--batch-shapes", type=int, default=16, help="shapes fitted together (one chunk at a time)")
    ap.add_argument("--curve-every", type=int, default=0, help="score the fit every this many epochs (0: end only)")
    ap.add_argument("--curve-mesh-res", type=int, default=64, help="marching-cubes grid for the curve's F-scores")
    ap.add_argument("--out", required=True)
    ap.add_argument("--save-weights", action="store_true",
                    help="also write each fit's weights beside OUT (OUT_<recipe>_<budget>.safetensors, for `mesh`)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.dataset)
    names = args.names or shape_names(root, args.limit)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else []   # resumable: skip what is done
    done = {(r["recipe"], r["budget_paper_steps"]) for r in results}
    for budget in args.budgets:
        for recipe in args.recipes:
            if (recipe, budget) in done:
                continue
            r = run(root, names, recipe, budget, args.steps_per_epoch, MLPConfig(), args.mesh_res, args.batch_shapes,
                    args.curve_every, args.curve_mesh_res)
            weights = r.pop("weights")
            if args.save_weights:
                tag = recipe.replace(" ", "").replace(",", "_").replace("%", "")
                save_weight_set(out.with_name(f"{out.stem}_{tag}_{budget}.safetensors"), weights, names, MLPConfig())
            results.append({**r, "shapes": names})
            out.write_text(json.dumps(results, indent=1))
            print(f"{recipe:28s} budget {budget:5d}  " + summary_line(r), flush=True)


if __name__ == "__main__":
    main()

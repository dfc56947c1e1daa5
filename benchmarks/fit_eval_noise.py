"""Fit-score noise before and after the evaluation set, on the same fitted MLPs (issue 13).

Before: IoU on the held-out 10 % of the training pool's uniform samples (a few dozen to a few
hundred inside points). After: volume IoU on the prepared evaluation set (eval.npz: stratified
shell + far points). Both come with a 95 % bootstrap interval computed the same way
(evaluation/surface_scores.volume_iou), from the same fit, in the same fit_quality.json.

    python benchmarks/fit_eval_noise.py OUT [--builtin 16 --builtin-epochs 40] [--real 8 --real-epochs 10
        --meshes ../shared/data/meshes/sweethome3d-chair]

Built-in chairs use the demo's sizes (20k + 20k samples, the `cpu` fit preset, --builtin-epochs);
real chairs the paper's (100k + 100k, the `paper` recipe cut at --real-epochs). Writes
OUT/noise.json and prints a per-shape table and a summary (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def run_set(label: str, src: str, out: Path, prep, fit_cfg, count: int | None, split: str = "all") -> dict:
    from hyperdiffusion.data.prepare import prepare
    from hyperdiffusion.fields.fit import fit_dataset
    from hyperdiffusion.fields.fit_eval import ScoreConfig

    t = time.perf_counter()
    prepare(src, out / "data", prep, count=count, progress=False)
    t_prep = time.perf_counter() - t
    t = time.perf_counter()
    fit_dataset(out / "data", out / "fit", fit_cfg, split=split, device="cpu", progress=False, scores=ScoreConfig())
    t_fit = time.perf_counter() - t
    q = json.loads((out / "fit" / "fit_quality.json").read_text())
    rows = []
    for name, s in q["shapes"].items():
        rows.append({"name": name, "heldout_iou": s["iou_uniform"], "heldout_ci": s["iou_uniform_ci"],
                     "heldout_inside": s["n_uniform_inside"], "heldout_points": s["n_uniform"],
                     "eval_iou": s["eval_iou"], "eval_ci": s["eval_iou_ci"], "eval_inside": s["eval_n_inside"],
                     "eval_points": s["eval_n_points"], "fscore": s.get("fscore"), "chamfer_l1": s.get("chamfer_l1"),
                     "normal_consistency": s.get("normal_consistency")})
    return {"label": label, "prepare_seconds": round(t_prep, 1), "fit_and_score_seconds": round(t_fit, 1),
            "summary": q["summary"], "shapes": rows}


def describe(result: dict) -> str:
    rows = result["shapes"]
    w_before = np.array([r["heldout_ci"][1] - r["heldout_ci"][0] for r in rows])
    w_after = np.array([r["eval_ci"][1] - r["eval_ci"][0] for r in rows])
    lines = [f"### {result['label']}",
             "| shape | held-out IoU [95% CI] | inside / points | eval-set IoU [95% CI] | inside / points | F-score@1% | Chamfer-L1 | NC |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["eval_iou"]):
        lines.append(f"| {r['name']} | {r['heldout_iou']:.3f} [{r['heldout_ci'][0]:.3f}, {r['heldout_ci'][1]:.3f}] | "
                     f"{r['heldout_inside']} / {r['heldout_points']} | {r['eval_iou']:.3f} "
                     f"[{r['eval_ci'][0]:.3f}, {r['eval_ci'][1]:.3f}] | {r['eval_inside']} / {r['eval_points']} | "
                     f"{r['fscore']:.3f} | {r['chamfer_l1']:.4f} | {r['normal_consistency']:.3f} |")
    diff = np.array([r["heldout_iou"] - r["eval_iou"] for r in rows])
    lines.append("")
    lines.append(f"CI width: held-out mean {w_before.mean():.3f} (max {w_before.max():.3f}), eval set mean "
                 f"{w_after.mean():.3f} (max {w_after.max():.3f}); inside points held-out median "
                 f"{int(np.median([r['heldout_inside'] for r in rows]))}, eval set median "
                 f"{int(np.median([r['eval_inside'] for r in rows]))}; held-out minus eval IoU: mean {diff.mean():+.3f}, "
                 f"max |.| {np.abs(diff).max():.3f}; prepare {result['prepare_seconds']} s, fit + scores "
                 f"{result['fit_and_score_seconds']} s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--builtin", type=int, default=16, help="built-in chairs (0: none)")
    ap.add_argument("--real", type=int, default=8, help="real chairs, the first N by name (0: none)")
    ap.add_argument("--meshes", default="../shared/data/meshes/sweethome3d-chair")
    ap.add_argument("--builtin-epochs", type=int, default=40, help="`cpu` preset epochs of 25 steps (the demo's 40)")
    ap.add_argument("--real-epochs", type=int, default=10, help="paper recipe epochs of 97 steps")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hyperdiffusion.data.prepare import PrepareConfig
    from hyperdiffusion.fields.fit import PRESETS

    out = Path(args.out)
    results = []
    if args.builtin:
        prep = PrepareConfig(n_surface=20_000, n_uniform=20_000, n_eval_shell=30_000, n_eval_far=15_000,
                             n_eval_surface=15_000, workers=1)
        results.append(run_set(f"{args.builtin} built-in chairs, demo sizes (20k + 20k samples, cpu preset "
                               f"{args.builtin_epochs} epochs)", "builtin:chair", out / "builtin", prep,
                               replace(PRESETS["cpu"], max_epochs=args.builtin_epochs), args.builtin))
        print(describe(results[-1]), flush=True)
    if args.real and Path(args.meshes).is_dir():
        prep = PrepareConfig(workers=1)  # the paper's 100k + 100k; the default evaluation set (30k / 15k / 15k)
        cfg = replace(PRESETS["paper"], max_epochs=args.real_epochs)
        results.append(run_set(f"{args.real} real chairs (sweethome3d, first by name), paper sizes and recipe cut "
                               f"at {args.real_epochs} epochs", args.meshes, out / "real", prep, cfg, args.real))
        print(describe(results[-1]), flush=True)
    (out / "noise.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

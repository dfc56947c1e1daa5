"""Fit quality on the prepared evaluation set (eval.npz), which fitting never sees (issue 13).

For each fitted MLP: volume IoU of (logit > 0) on the stratified uniform points with its
95 % bootstrap interval, IoU on the near-surface evaluation points, and the Occupancy
Networks mesh scores (Chamfer-L1, normal consistency, F-score at 1 % of the cube side) of
its marching-cubes mesh against the shape's prepared mesh (mesh.ply). Definitions:
`hyperdiffusion.evaluation.surface_scores`. The fit stage writes these into
fit_quality.json beside the older held-out-10 % IoU (fields/fit.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh

from hyperdiffusion.evaluation.surface_scores import F_SCORE_TAU, mesh_scores, sample_with_normals, volume_iou
from hyperdiffusion.fields.mlp import MLPConfig, logits_at


@dataclass(frozen=True)
class ScoreConfig:
    """Defaults follow Occupancy Networks' evaluation: meshes at 128^3, 100k points per surface."""

    mesh_res: int = 128  # marching-cubes grid for the mesh scores; 0 = no mesh scores (IoU only)
    n_points: int = 100_000  # points sampled on each surface (predicted and true)
    tau: float = F_SCORE_TAU  # F-score distance threshold, in cube sides
    n_boot: int = 1000  # bootstrap resamples for the IoU interval
    seed: int = 0

    def __post_init__(self):
        if self.mesh_res and self.mesh_res < 8:
            raise ValueError("mesh_res must be 0 (no mesh scores) or at least 8")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_stamp(dataset_root: Path, names: list[str], cfg: ScoreConfig) -> dict[str, Any]:
    """What the scores of `names` depend on besides the weights: settings and each eval set's recipe."""
    from hyperdiffusion.data.prepare import shape_dir
    from hyperdiffusion.io import read_json

    recipes = []
    for n in names:
        meta = shape_dir(dataset_root, n) / "meta.json"
        has = (shape_dir(dataset_root, n) / "eval.npz").is_file()
        recipes.append(read_json(meta).get("eval") if has and meta.is_file() else None)
    return {"config": cfg.to_dict(), "eval_sets": recipes}


@torch.no_grad()
def score_fits(weights: torch.Tensor, names: list[str], dataset_root: str | Path, mlp: MLPConfig,
               cfg: ScoreConfig = ScoreConfig(), device: str | torch.device = "cpu",
               chunk: int = 65536) -> list[dict[str, Any]]:
    """One dict of scores per fitted MLP (weights [B, P]); {"eval_set": False} where a shape has none."""
    from hyperdiffusion.data.prepare import load_eval_set, mesh_path
    from hyperdiffusion.fields.mesh import evaluate_grid, field_to_mesh

    rows = []
    for b, name in enumerate(names):
        ev = load_eval_set(dataset_root, name)
        if ev is None:
            rows.append({"eval_set": False})
            continue
        logits = logits_at(weights[b], torch.from_numpy(ev["points"]), mlp, device, chunk)
        pred, true, st = logits.numpy() > 0, ev["occ"], ev["stratum"]
        vol = st < 2
        v = volume_iou(pred[vol], true[vol], st[vol], ev["volumes"], cfg.n_boot, cfg.seed)
        s = volume_iou(pred[st == 2], true[st == 2], None, None, cfg.n_boot, cfg.seed)
        row: dict[str, Any] = {"eval_set": True, "eval_iou": v["iou"], "eval_iou_ci": [v["ci_low"], v["ci_high"]],
                               "eval_n_points": v["n_points"], "eval_n_inside": v["n_inside"],
                               "eval_iou_surface": s["iou"], "eval_iou_surface_ci": [s["ci_low"], s["ci_high"]],
                               "eval_n_surface": s["n_points"]}
        if cfg.mesh_res:
            field = evaluate_grid(weights[b:b + 1], mlp, cfg.mesh_res, device=device)[0]
            pred_mesh, status = field_to_mesh(field.numpy(), 0.0)
            true_mesh = trimesh.load(str(mesh_path(dataset_root, name)), force="mesh", process=False)
            true_pts, true_nrm = sample_with_normals(true_mesh, cfg.n_points, cfg.seed)
            row.update(mesh_scores(pred_mesh, true_pts, true_nrm, cfg.n_points, cfg.tau, cfg.seed + 1))
            row["mesh"] = status
        rows.append(row)
    return rows


SCORE_KEYS = ("eval_iou", "eval_iou_surface", "fscore", "chamfer_l1", "normal_consistency")


def summarise_scores(quality: dict[str, dict]) -> dict[str, Any] | None:
    """Mean / min / max of each score over the shapes that have an evaluation set, the mean IoU
    interval width, the fewest inside points, and the worst shapes by volume IoU."""
    scored = {n: q for n, q in quality.items() if q.get("eval_set")}
    out: dict[str, Any] = {"n_scored": len(scored), "n_without_eval_set": len(quality) - len(scored)}
    if not scored:
        return out
    for key in SCORE_KEYS:
        v = np.array([q.get(key, math.nan) for q in scored.values()], float)
        if np.isfinite(v).any():
            out[key] = {"mean": float(np.nanmean(v)), "min": float(np.nanmin(v)), "max": float(np.nanmax(v))}
    width = np.array([q["eval_iou_ci"][1] - q["eval_iou_ci"][0] for q in scored.values()], float)
    out["eval_iou_ci_width"] = {"mean": float(np.nanmean(width)), "max": float(np.nanmax(width))}
    out["eval_n_inside_min"] = int(min(q["eval_n_inside"] for q in scored.values()))
    worst = sorted(scored, key=lambda n: scored[n]["eval_iou"])[:5]
    out["worst"] = [[n, scored[n]["eval_iou"], scored[n].get("fscore")] for n in worst]
    return out


def format_scores(s: dict[str, Any] | None) -> list[str]:
    """Lines for the printed fit summary."""
    if not s or not s.get("n_scored"):
        return []
    lines = []
    if s["n_without_eval_set"]:
        lines.append(f"{s['n_without_eval_set']} shapes have no evaluation set and are not in the lines below")
    iou, w = s["eval_iou"], s["eval_iou_ci_width"]
    lines.append(f"eval-set IoU (volume, {s['n_scored']} shapes): mean {iou['mean']:.4f}, min {iou['min']:.4f}; "
                 f"95% interval width mean {w['mean']:.4f} (max {w['max']:.4f}); "
                 f"fewest inside points {s['eval_n_inside_min']}")
    if "fscore" in s:
        f, c, nc = s["fscore"], s["chamfer_l1"], s["normal_consistency"]
        lines.append(f"mesh scores: F-score@1% mean {f['mean']:.4f} (min {f['min']:.4f}); Chamfer-L1 mean "
                     f"{c['mean']:.5f} (max {c['max']:.5f}); normal consistency mean {nc['mean']:.4f} "
                     f"(min {nc['min']:.4f})")
    lines.append("worst (eval IoU" + (", F-score)" if "fscore" in s else ")") + ": " + ", ".join(
        f"{n} {a:.3f}" + (f"/{f:.3f}" if f is not None else "") for n, a, f in s["worst"]))
    return lines

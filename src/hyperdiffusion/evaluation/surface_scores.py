"""How well one occupancy field matches its ground truth: volume IoU with a confidence
interval, and the mesh scores of Occupancy Networks (issue 13, "a fit evaluation worth trusting").

Mesh scores follow Occupancy Networks (Mescheder et al., CVPR 2019, Sec. 4.1) as their
evaluation code computes them (`MeshEvaluator.eval_pointcloud`, also used by Convolutional
Occupancy Networks): n points are sampled area-uniformly on the predicted mesh and n on the
ground-truth surface, each with the normal of the face it lies on; then, with Euclidean
(not squared) nearest-neighbour distances,

    accuracy       = mean over predicted points of the distance to the nearest true point
    completeness   = mean over true points of the distance to the nearest predicted point
    Chamfer-L1     = (accuracy + completeness) / 2
    normal consist.= (mean |n_pred . n_true(nearest)| + mean |n_true . n_pred(nearest)|) / 2
                     (absolute value: the orientation of a face is not scored)
    F-score(tau)   = 2 P R / (P + R), P = fraction of predicted points within tau of the
                     true ones, R = fraction of true points within tau of the predicted ones

in the dataset's frame (the cube [-0.5, 0.5]^3, side 1), so tau = 0.01 is "1 % of the cube
side" as ConvONet's F-score (its F[9] with thresholds linspace(0.001, 1, 1000)). An empty
prediction gets the worst values: distances sqrt(3) (the cube's diagonal; OccNet's
EMPTY_PCL_DICT), normal consistency 0 and F-score 0 (OccNet's -1 sentinel lies outside the
score's range, so we use its minimum).

Volume IoU is estimated from labelled points drawn in strata of known volume (the prepared
evaluation set, docs/FORMATS.md "eval.npz"; a plain uniform sample is one stratum of
volume 1): |P and T| / |P or T| with each stratum's point fractions weighted by its volume.
Its 95 % interval is a stratified bootstrap over the evaluation points: each stratum's
counts of (both, predicted only, true only, neither) are redrawn from a multinomial with the
observed fractions (the same as resampling its points with replacement), `n_boot` times,
and the 2.5 / 97.5 percentiles of the resampled IoU are reported. It measures the noise of
the finite evaluation sample, not label errors or the choice of sample.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree

F_SCORE_TAU = 0.01  # 1 % of the cube side (the dataset cube [-0.5, 0.5]^3 has side 1)
EMPTY_DISTANCE = math.sqrt(3.0)  # the cube's diagonal: no predicted point at all


# --------------------------------------------------------------------------- volume IoU


def volume_iou(pred: np.ndarray, true: np.ndarray, stratum: np.ndarray | None = None,
               volumes: np.ndarray | list[float] | None = None, n_boot: int = 1000,
               seed: int = 0) -> dict[str, Any]:
    """IoU of boolean `pred` vs `true` at points drawn uniformly within strata, with a 95 % interval.

    `stratum[i]` is point i's stratum (0..S-1) and `volumes[s]` that stratum's volume (default:
    one stratum, volume 1). Returns iou, ci_low, ci_high, and the counts behind them:
    n_points, n_inside (true), n_union (points in pred or true). nan with no points; 1.0 when
    both are empty (nothing to get wrong), as `fields.fit.iou`.
    """
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    stratum = np.zeros(len(pred), np.int64) if stratum is None else np.asarray(stratum, np.int64)
    volumes = np.ones(1) if volumes is None else np.asarray(volumes, np.float64)
    out = {"n_points": int(len(pred)), "n_inside": int(true.sum()), "n_union": int((pred | true).sum())}
    if len(pred) == 0:
        return {"iou": math.nan, "ci_low": math.nan, "ci_high": math.nan, **out}
    # Per stratum: counts of (both, pred only, true only, neither) and the volume per point.
    category = np.where(pred & true, 0, np.where(pred, 1, np.where(true, 2, 3)))
    counts = np.zeros((len(volumes), 4), np.int64)
    np.add.at(counts, (stratum, category), 1)
    n = counts.sum(1)
    used = n > 0
    counts, n, weight = counts[used], n[used], volumes[used] / np.maximum(n[used], 1)

    def ratio(c: np.ndarray) -> np.ndarray:  # c [..., S, 4] -> IoU [...]
        inter = (c[..., 0] * weight).sum(-1)
        union = (c[..., :3].sum(-1) * weight).sum(-1)
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)

    rng = np.random.default_rng(seed)
    boot = np.stack([rng.multinomial(n_s, c / n_s, size=n_boot) for n_s, c in zip(n, counts)], axis=1)
    low, high = np.percentile(ratio(boot), [2.5, 97.5])
    return {"iou": float(ratio(counts)), "ci_low": float(low), "ci_high": float(high), **out}


# --------------------------------------------------------------------------- mesh scores


def sample_with_normals(mesh: trimesh.Trimesh, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n area-uniform points on `mesh` and the unit normals of their faces, float64 [n, 3] each."""
    points, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(points, np.float64), np.asarray(mesh.face_normals[face], np.float64)


def point_scores(pred: np.ndarray, pred_normals: np.ndarray, true: np.ndarray, true_normals: np.ndarray,
                 tau: float = F_SCORE_TAU) -> dict[str, float]:
    """Chamfer-L1, normal consistency and F-score of two oriented point sets (module docstring)."""
    if len(true) == 0:
        raise ValueError("the ground-truth point set is empty")
    if len(pred) == 0:
        return {"chamfer_l1": EMPTY_DISTANCE, "accuracy": EMPTY_DISTANCE, "completeness": EMPTY_DISTANCE,
                "normal_consistency": 0.0, "fscore": 0.0, "precision": 0.0, "recall": 0.0}
    to_true, nn_true = cKDTree(true).query(pred)  # accuracy side: predicted -> true
    to_pred, nn_pred = cKDTree(pred).query(true)  # completeness side: true -> predicted
    nc_pred = np.abs((_unit(pred_normals) * _unit(true_normals)[nn_true]).sum(1)).mean()
    nc_true = np.abs((_unit(true_normals) * _unit(pred_normals)[nn_pred]).sum(1)).mean()
    precision, recall = float((to_true <= tau).mean()), float((to_pred <= tau).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    acc, comp = float(to_true.mean()), float(to_pred.mean())
    return {"chamfer_l1": 0.5 * (acc + comp), "accuracy": acc, "completeness": comp,
            "normal_consistency": float(0.5 * (nc_pred + nc_true)), "fscore": fscore,
            "precision": precision, "recall": recall}


def mesh_scores(pred: trimesh.Trimesh | None, true_points: np.ndarray, true_normals: np.ndarray,
                n_points: int = 100_000, tau: float = F_SCORE_TAU, seed: int = 0) -> dict[str, float]:
    """`point_scores` of n_points sampled on the predicted mesh (None or no faces: empty) vs the truth."""
    if pred is None or len(pred.faces) == 0 or not pred.area > 0:
        empty = np.zeros((0, 3))
        return point_scores(empty, empty, true_points, true_normals, tau)
    points, normals = sample_with_normals(pred, n_points, seed)
    return point_scores(points, normals, true_points, true_normals, tau)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)

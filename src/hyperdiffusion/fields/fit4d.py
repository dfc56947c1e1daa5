"""Fitting 4D MLPs: one occupancy MLP over (x, y, z, t) per animation (paper Sec. 4.4; docs/4D.md).

The batched fitter of `fit.py` fits sequences exactly as it fits shapes (same Adam, same
schedules, first-weights initialisation, held-out quality); this module supplies what
differs for sequences:

  - the samples: each frame's points get the frame's t (`MLPConfig.frame_times`), and a
    fixed 10 % of each frame's near-surface and of its uniform points is held out;
  - the official 4D batch (REFERENCE.md "4D"; the official code never released its 4D
    fitting config, only its data loader): each step draws 16 frames *with replacement*
    and splits the step's points evenly over them (2048 = 16 x 128), each point drawn
    with replacement from its frame's training points;
  - quality per sequence: IoU of (logit > 0) per frame on the held-out uniform points
    (and near-surface points), their mean and the worst frame.
"""

from __future__ import annotations

import numpy as np
import torch

from hyperdiffusion.fields.mlp import MLPConfig


def split_sequence(name: str, points: np.ndarray, occ: np.ndarray, n_surface: int, times: torch.Tensor, cfg):
    """A `fit.ShapeSamples` of 4D points from per-frame samples points [F, N, 3], occ [F, N].

    Training points are stored frame after frame; `train_frame_starts` [F + 1] delimits them.
    """
    from hyperdiffusion.fields.fit import ShapeSamples, stable_seed

    n_frames, n = occ.shape
    if points.shape != (n_frames, n, 3) or len(times) != n_frames:
        raise ValueError(f"{name}: points {points.shape}, occ {occ.shape} and {len(times)} frame times disagree")
    rng = np.random.default_rng(stable_seed(cfg.seed, name, "holdout"))
    surface = np.arange(n) < n_surface
    tr_p, tr_o, ev_p, ev_o, ev_s, ev_f, starts = [], [], [], [], [], [], [0]
    for f in range(n_frames):
        held = np.zeros(n, bool)
        for lo, hi in ((0, n_surface), (n_surface, n)):
            k = int(round((hi - lo) * cfg.holdout_fraction))
            held[lo + rng.permutation(hi - lo)[:k]] = True
        p4 = np.concatenate([points[f], np.full((n, 1), float(times[f]), np.float32)], axis=1)
        tr_p.append(p4[~held]), tr_o.append(occ[f][~held])
        ev_p.append(p4[held]), ev_o.append(occ[f][held]), ev_s.append(surface[held])
        ev_f.append(np.full(int(held.sum()), f))
        starts.append(starts[-1] + int((~held).sum()))
    as_t = lambda parts, dtype: torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)).astype(dtype))  # noqa: E731
    return ShapeSamples(name, as_t(tr_p, np.float32), as_t(tr_o, np.float32), as_t(ev_p, np.float32),
                        as_t(ev_o, np.float32), as_t(ev_s, bool), train_frame_starts=torch.tensor(starts),
                        eval_frame=as_t(ev_f, np.int64))


def draw_frame_indices(starts: torch.Tensor, steps: int, points_per_step: int,
                       generator: torch.Generator) -> torch.Tensor:
    """[steps, points_per_step] indices: per step, F frames with replacement, the points split evenly.

    With F = 16 and 2048 points this is the official 16 frames x 128 points; a remainder
    (points_per_step not a multiple of F) goes one point each to the first frames drawn.
    """
    n_frames = len(starts) - 1
    counts = (starts[1:] - starts[:-1]).double()
    per = torch.full((n_frames,), points_per_step // n_frames)
    per[: points_per_step % n_frames] += 1
    slot_frame = torch.repeat_interleave(torch.arange(n_frames), per)  # which drawn frame each point belongs to
    frames = torch.randint(n_frames, (steps, n_frames), generator=generator)[:, slot_frame]  # [steps, pps]
    u = torch.rand(steps, points_per_step, generator=generator, dtype=torch.float64)
    return starts[:-1][frames] + (u * counts[frames]).long().clamp_max(counts[frames].long() - 1)


def frame_quality(pred: torch.Tensor, true: torch.Tensor, samples) -> dict:
    """Per-frame IoU on held-out uniform and near-surface points; their mean and the worst frame."""
    from hyperdiffusion.fields.fit import iou

    n_frames = len(samples.train_frame_starts) - 1
    uni, sur, both = [], [], []
    for f in range(n_frames):
        in_f = samples.eval_frame == f
        uni.append(iou(pred[in_f & ~samples.eval_surface], true[in_f & ~samples.eval_surface]))
        sur.append(iou(pred[in_f & samples.eval_surface], true[in_f & samples.eval_surface]))
        both.append(iou(pred[in_f], true[in_f]))
    u, a = np.array(uni, float), np.array(both, float)
    # Thin shapes (a character fills ~2 % of the cube) leave few inside points among a frame's
    # held-out uniform samples, so the uniform IoU of one frame is noisy; the IoU over all of the
    # frame's held-out points (near-surface + uniform) is reported beside it.
    return {"iou_frames": [round(v, 6) for v in uni], "iou_frames_surface": [round(v, 6) for v in sur],
            "iou_frames_all": [round(v, 6) for v in both],
            "iou_frame_mean": float(np.nanmean(u)), "iou_frame_worst": float(np.nanmin(u)),
            "worst_frame": int(np.nanargmin(u)), "iou_frame_surface_mean": float(np.nanmean(sur)),
            "iou_frame_all_mean": float(np.nanmean(a)), "iou_frame_all_worst": float(np.nanmin(a)),
            "inside_uniform_per_frame": float((true & ~samples.eval_surface).sum()) / n_frames}


def load_sequence(dataset_root, name: str, cfg, mlp: MLPConfig):
    """A prepared sequence's samples as `fit.ShapeSamples` for a 4D MLP."""
    from hyperdiffusion.data.animation import load_sequence_samples

    points, occ, n_surface = load_sequence_samples(dataset_root, name)
    return split_sequence(name, points, occ, n_surface, mlp.frame_times(len(points)), cfg)


def summarise_frames(quality: dict[str, dict]) -> dict:
    """Dataset-level 4D summary: mean and worst per-frame IoU over sequences."""
    mean = np.array([q["iou_frame_mean"] for q in quality.values()], float)
    worst = np.array([q["iou_frame_worst"] for q in quality.values()], float)
    order = sorted(quality, key=lambda n: quality[n]["iou_frame_worst"])[:5]
    all_mean = np.array([q["iou_frame_all_mean"] for q in quality.values()], float)
    all_worst = np.array([q["iou_frame_all_worst"] for q in quality.values()], float)
    return {"iou_frame_mean": {"mean": float(np.nanmean(mean)), "min": float(np.nanmin(mean))},
            "iou_frame_worst": {"mean": float(np.nanmean(worst)), "min": float(np.nanmin(worst))},
            "iou_frame_all_mean": {"mean": float(np.nanmean(all_mean)), "min": float(np.nanmin(all_mean))},
            "iou_frame_all_worst": {"mean": float(np.nanmean(all_worst)), "min": float(np.nanmin(all_worst))},
            "worst_sequences": [[n, quality[n]["iou_frame_worst"], quality[n]["worst_frame"]] for n in order]}

"""Fit one occupancy MLP per shape: the weights the diffusion model learns from (paper Sec. 3.1).

The recipe is the official code's (REFERENCE.md, "Per-shape MLP"): each step draws
2048 points with replacement from the shape's labelled samples, the loss is binary
cross-entropy with logits *summed* over those points, Adam lr 1e-2, ReduceLROnPlateau
on the epoch loss (factor 0.8, patience 10, threshold 0, min lr 1e-5), early stop after
50 epochs without improvement, at most 5000 epochs of 97 steps. Summing instead of
averaging only rescales the loss; Adam is invariant to that scale except through eps
(1e-8), whose relative size shrinks by 2048x, so we keep the sum as the official code.

"First weights" initialisation (`init="first"`): the first train shape (sorted by name, so
it does not depend on directory-listing order) is fitted alone from PyTorch's default init
with a fixed seed; every other shape starts from its final weights. `init="random"` (the
paper's ablation) starts every shape from its own default init, seeded by (seed, name) so
it does not depend on batching.

The fast path no library gives: many shapes are optimised together as one [B, P]
weight matrix (`mlp.batched_forward`, one baddbmm per layer) by a hand-written batched
Adam with a per-shape learning rate, because every shape has its own plateau schedule
and early stop. A shape that stops is taken out of the batch with its final weights (as
the official code keeps them; `keep="best"` keeps the best-epoch weights instead), so it
neither stalls nor changes the others. Each shape draws its points from its own random
generator seeded from (seed, name), and shapes never interact, so a shape gets the same
weights (up to float rounding in the matrix kernels) whether fitted alone or in a batch.

Fit quality is measured on held-out samples: a fixed random 10 % of each shape's
near-surface and of its uniform samples are never drawn for training (the official code
trains on all 200k and reports no fit quality). IoU of (logit > 0) against the labels is
reported separately for the uniform and the near-surface points, with a 95 % interval.
Those few hundred inside points make a noisy score, so datasets prepared with an
evaluation set (eval.npz) are also scored on it: volume IoU with its interval and the
Occupancy Networks mesh scores (fields/fit_eval.py).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from hyperdiffusion.io import InputError, ensure_writable_dir, load_safetensors, save_safetensors, write_json
from hyperdiffusion.evaluation.surface_scores import volume_iou
from hyperdiffusion.fields.fit_eval import ScoreConfig, eval_stamp, format_scores, score_fits, summarise_scores
from hyperdiffusion.fields.mlp import MLPConfig, batched_forward, default_init, logits_at, save_weight_set
from hyperdiffusion.progress import progress as progress_bar
from hyperdiffusion.shards import Shard, add_shard_argument

FIRST_WEIGHTS_WAIT_S = 48 * 3600  # how long shards 1..N-1 wait for shard 0's first-weights fit

# --------------------------------------------------------------------------- configuration

INITS = ("first", "random")  # how each MLP starts (module docstring)


@dataclass(frozen=True)
class FitConfig:
    """Defaults are the official per-shape recipe (REFERENCE.md "Per-shape MLP")."""

    points_per_step: int = 2048  # drawn with replacement from the shape's training samples
    steps_per_epoch: int = 97
    max_epochs: int = 5000
    lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    plateau_factor: float = 0.8  # ReduceLROnPlateau on the per-shape epoch loss
    plateau_patience: int = 10
    plateau_threshold: float = 0.0  # relative, as PyTorch's default threshold_mode="rel"
    min_lr: float = 1e-5
    early_stop_patience: int = 50  # epochs without a new best epoch loss
    init: str = "first"  # "first": every shape starts from the first train shape's fit; "random": its own
    keep: str = "final"  # "final" (official) or "best" (weights at the best epoch loss)
    # "plateau": the paper's ReduceLROnPlateau. "cosine": lr follows a half cosine from `lr` to
    # `min_lr` over max_epochs, for a fixed short budget (the plateau rule barely lowers the lr
    # in the first few thousand steps, when the loss is still falling every epoch).
    schedule: str = "plateau"
    # Linear lr warm-up from lr / warmup_epochs over the first epochs (0: none, the paper).
    warmup_epochs: int = 0
    # Hard-example mining (0: none, the paper): this fraction of every step's points is drawn,
    # once per epoch, from a pool of `hard_pool` x points_per_step uniform training points
    # with probability proportional to each point's current BCE, so the steps concentrate
    # on the points the MLP gets wrong (thin parts); the rest stay uniform.
    hard_fraction: float = 0.0
    hard_pool: int = 8
    holdout_fraction: float = 0.1  # of near-surface and of uniform samples, for fit quality only
    seed: int = 0

    def __post_init__(self):
        if self.schedule not in ("plateau", "cosine"):
            raise ValueError(f"schedule must be 'plateau' or 'cosine', not {self.schedule!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not {self.init!r}")
        if self.keep not in ("final", "best"):
            raise ValueError(f"keep must be 'final' or 'best', not {self.keep!r}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError("holdout_fraction must be in [0, 1)")
        if not 0.0 <= self.hard_fraction <= 1.0 or self.hard_pool < 1 or self.warmup_epochs < 0:
            raise ValueError("hard_fraction must be in [0, 1], hard_pool >= 1 and warmup_epochs >= 0")

    @property
    def first_weights(self) -> bool:
        return self.init == "first"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, FitConfig] = {
    "paper": FitConfig(),
    # The paper's MLP, points per step and lr, for a fixed budget of 30 epochs (2,910 steps): the lr
    # follows a half cosine to min_lr instead of waiting for plateaus that a few thousand steps never
    # reach. On the 77 real chairs at that budget (benchmarks/RESULTS.md, "Fit recipes at equal
    # cost"): evaluation-set IoU 0.915 vs 0.871 for `paper`, better on 76 of 77 chairs.
    "fast": FitConfig(schedule="cosine", max_epochs=30),
    # For tests and CPU runs: ~1000 steps of 1024 points.
    "cpu": FitConfig(points_per_step=1024, steps_per_epoch=25, max_epochs=40, plateau_patience=3,
                     early_stop_patience=8),
    # The demo's: the `cpu` budget with the `fast` preset's cosine schedule.
    "fast-cpu": FitConfig(points_per_step=1024, steps_per_epoch=25, max_epochs=40, schedule="cosine",
                          early_stop_patience=10**9),
}


# --------------------------------------------------------------------------- per-shape data


@dataclass
class ShapeSamples:
    """One shape's samples, split into the training pool and the held-out evaluation set."""

    name: str
    train_points: torch.Tensor  # [n, 3] float32
    train_occ: torch.Tensor  # [n] float32 (1 inside)
    eval_points: torch.Tensor  # [m, 3]
    eval_occ: torch.Tensor  # [m]
    eval_surface: torch.Tensor  # [m] bool: near-surface (True) or uniform (False)
    # 4D sequences (fit4d.py): the training points are stored frame after frame, delimited by
    # these [F + 1] offsets, and eval_frame is each held-out point's frame; None for 3D shapes.
    train_frame_starts: torch.Tensor | None = None
    eval_frame: torch.Tensor | None = None


def _draw(shape: ShapeSamples, steps: int, pps: int, generator: torch.Generator) -> torch.Tensor:
    """[steps, pps] training-point indices: uniform with replacement (3D), or the official 4D batch."""
    if shape.train_frame_starts is not None:
        from hyperdiffusion.fields.fit4d import draw_frame_indices

        return draw_frame_indices(shape.train_frame_starts, steps, pps, generator)
    return torch.randint(len(shape.train_points), (steps, pps), generator=generator)


def stable_seed(seed: int, name: str, purpose: str) -> int:
    """A seed that depends only on (seed, name, purpose): not on batch layout or Python's hash salt."""
    digest = hashlib.sha256(f"{seed}/{purpose}/{name}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def split_samples(name: str, points: np.ndarray, occ: np.ndarray, n_surface: int,
                  cfg: FitConfig) -> ShapeSamples:
    """Hold out a fixed random `holdout_fraction` of the near-surface and of the uniform samples."""
    rng = np.random.default_rng(stable_seed(cfg.seed, name, "holdout"))
    n = len(points)
    held = np.zeros(n, bool)
    for lo, hi in ((0, n_surface), (n_surface, n)):
        k = int(round((hi - lo) * cfg.holdout_fraction))
        held[lo + rng.permutation(hi - lo)[:k]] = True
    surface = np.arange(n) < n_surface
    p = torch.from_numpy(np.ascontiguousarray(points, np.float32))
    o = torch.from_numpy(np.asarray(occ).astype(np.float32))
    h = torch.from_numpy(held)
    return ShapeSamples(name, p[~h], o[~h], p[h], o[h], torch.from_numpy(surface)[h])


# --------------------------------------------------------------------------- optimiser and schedules


class BatchedAdam:
    """Adam (Kingma & Ba 2015, as torch.optim.Adam computes it) on a [B, P] matrix, one lr per row."""

    def __init__(self, n_rows: int, n_params: int, beta1: float, beta2: float, eps: float, device):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = torch.zeros(n_rows, n_params, device=device)
        self.v = torch.zeros(n_rows, n_params, device=device)
        self.t = 0  # every row of a batch starts together and stops leaving the batch: one count

    @torch.no_grad()
    def step(self, params: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor) -> None:
        """params -= lr * m_hat / (sqrt(v_hat) + eps), in place; lr is [B]."""
        self.t += 1
        self.m.lerp_(grad, 1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        step_size = (lr / (1 - self.beta1**self.t)).unsqueeze(1)
        denom = (self.v.sqrt() / math.sqrt(1 - self.beta2**self.t)).add_(self.eps)
        params.sub_(step_size * self.m / denom)

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.m, self.v = self.m[rows], self.v[rows]


class PlateauSchedules:
    """Per-row ReduceLROnPlateau (mode min, relative threshold, no cooldown) plus early stopping.

    Same rules as torch.optim.lr_scheduler.ReduceLROnPlateau: an epoch is better when
    loss < best * (1 - threshold); after more than `patience` worse epochs the lr is
    multiplied by `factor` (not below min_lr) and the count restarts.
    """

    def __init__(self, n_rows: int, cfg: FitConfig):
        self.cfg = cfg
        self.lr = np.full(n_rows, cfg.lr)
        self.best = np.full(n_rows, np.inf)
        self.bad = np.zeros(n_rows, int)  # for the lr schedule; reset at each reduction
        self.since_best = np.zeros(n_rows, int)  # for early stopping

    def update(self, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Record one epoch's losses; return (improved, stop) boolean rows."""
        c = self.cfg
        improved = losses < self.best * (1 - c.plateau_threshold)
        self.best = np.where(improved, losses, self.best)
        self.bad = np.where(improved, 0, self.bad + 1)
        self.since_best = np.where(improved, 0, self.since_best + 1)
        reduce = self.bad > c.plateau_patience
        new_lr = np.maximum(self.lr * c.plateau_factor, c.min_lr)
        self.lr = np.where(reduce & (self.lr - new_lr > 1e-8), new_lr, self.lr)
        self.bad = np.where(reduce, 0, self.bad)
        return improved, self.since_best >= c.early_stop_patience

    def keep_rows(self, rows: np.ndarray) -> None:
        self.lr, self.best, self.bad, self.since_best = (a[rows] for a in (self.lr, self.best, self.bad,
                                                                           self.since_best))


def warmup_factor(cfg: FitConfig, epoch: int) -> float:
    """lr multiplier during epoch `epoch` (0-based): (epoch + 1) / warmup_epochs, then 1."""
    return min(1.0, (epoch + 1) / cfg.warmup_epochs) if cfg.warmup_epochs else 1.0


@torch.no_grad()
def _mine_hard(shapes: list[ShapeSamples], rows: np.ndarray, idx: list[torch.Tensor], weights: torch.Tensor,
               cfg: FitConfig, mlp: MLPConfig, gens: list[torch.Generator], device) -> None:
    """Replace the first `hard_fraction` of each step's draws in `idx` (in place) by points drawn
    from a uniform pool with probability proportional to their current BCE (`FitConfig.hard_fraction`).

    Each shape uses its own generator and its own row of `weights`, so batching changes nothing.
    """
    n_hard = int(round(cfg.hard_fraction * cfg.points_per_step))
    if n_hard == 0:
        return
    pool = [torch.randint(len(shapes[b].train_points), (cfg.hard_pool * cfg.points_per_step,), generator=gens[b])
            for b in rows]
    for k, b in enumerate(rows):
        # One shape at a time: a batched kernel's rounding would make the picks depend on the batch.
        logits = batched_forward(weights.detach()[k:k + 1], shapes[b].train_points[pool[k]].unsqueeze(0).to(device), mlp)
        loss = F.binary_cross_entropy_with_logits(logits[0].float(), shapes[b].train_occ[pool[k]].to(device),
                                                  reduction="none").cpu()
        pick = torch.multinomial(loss + 1e-6, idx[k].shape[0] * n_hard, replacement=True, generator=gens[b])
        idx[k][:, :n_hard] = pool[k][pick].reshape(idx[k].shape[0], n_hard)


def cosine_lr(cfg: FitConfig, epoch: int) -> float:
    """The lr for `epoch` (0-based count of finished epochs) under the cosine schedule."""
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(epoch, cfg.max_epochs) / cfg.max_epochs))


# --------------------------------------------------------------------------- fitting


@dataclass
class FitRecord:
    name: str
    epochs: int
    final_loss: float  # mean per-step summed BCE over the last epoch
    best_loss: float
    final_lr: float
    stopped: str  # "early" or "max_epochs"


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def fit_shapes(shapes: list[ShapeSamples], init: torch.Tensor, cfg: FitConfig, mlp: MLPConfig,
               device: str | torch.device = "cpu", precision: str = "fp32",
               on_epoch: Callable[[int, int], None] | None = None,
               on_weights: Callable[[int, torch.Tensor], None] | None = None) -> tuple[torch.Tensor, list[FitRecord]]:
    """Fit B shapes together from `init`: one vector [P] for all, or one per shape [B, P]; return
    ([B, P] weights, records).

    `on_epoch(epoch, n_active)` is called after each epoch (progress display);
    `on_weights(epoch, weights [B, P])` too, with every shape's current weights (for curves of
    fit quality against time, benchmarks/fit_recipes.py).
    """
    device = torch.device(device)
    n_shapes, n_params = len(shapes), mlp.n_params
    gens = [torch.Generator().manual_seed(stable_seed(cfg.seed, s.name, "draw")) for s in shapes]
    start = init.reshape(-1, n_params).to(device, torch.float32)
    weights = (start.repeat(n_shapes, 1) if len(start) == 1 else start.clone()).requires_grad_()
    best_weights = weights.detach().clone() if cfg.keep == "best" else None
    adam = BatchedAdam(n_shapes, n_params, cfg.beta1, cfg.beta2, cfg.eps, device)
    sched = PlateauSchedules(n_shapes, cfg)
    active = np.arange(n_shapes)  # original index of each row still being optimised
    result = torch.empty(n_shapes, n_params)
    records: list[FitRecord | None] = [None] * n_shapes
    steps, pps = cfg.steps_per_epoch, cfg.points_per_step

    for epoch in range(cfg.max_epochs):
        # One epoch of draws per shape from its own generator, so batching cannot change them.
        idx = [_draw(shapes[b], steps, pps, gens[b]) for b in active]
        if cfg.hard_fraction > 0 and shapes[active[0]].train_frame_starts is None:  # 3D only
            _mine_hard(shapes, active, idx, weights, cfg, mlp, gens, device)
        pts = torch.stack([shapes[b].train_points[i] for b, i in zip(active, idx)]).to(device)
        occ = torch.stack([shapes[b].train_occ[i] for b, i in zip(active, idx)]).to(device)
        lr = torch.as_tensor(sched.lr * warmup_factor(cfg, epoch), dtype=torch.float32, device=device)
        epoch_loss = torch.zeros(len(active), device=device)
        for s in range(steps):
            weights.grad = None
            with _autocast(device, precision):
                logits = batched_forward(weights, pts[:, s], mlp)
            loss = F.binary_cross_entropy_with_logits(logits.float(), occ[:, s], reduction="none").sum(1)
            loss.sum().backward()  # rows are independent: each row's gradient is its own loss's
            adam.step(weights, weights.grad, lr)
            epoch_loss += loss.detach()
        losses = (epoch_loss / steps).cpu().double().numpy()

        improved, stop = sched.update(losses)
        if cfg.schedule == "cosine":
            sched.lr[:] = cosine_lr(cfg, epoch + 1)
        if best_weights is not None:
            best_weights[torch.from_numpy(improved).to(device)] = weights.detach()[torch.from_numpy(improved).to(device)]
        last = epoch + 1 == cfg.max_epochs
        done = stop | last
        for row in np.flatnonzero(done):
            b = active[row]
            final = best_weights[row] if best_weights is not None else weights.detach()[row]
            result[b] = final.float().cpu()
            records[b] = FitRecord(shapes[b].name, epoch + 1, float(losses[row]), float(sched.best[row]),
                                   float(sched.lr[row]), "early" if stop[row] else "max_epochs")
        if done.any():  # take finished shapes out: the rest continue exactly as before
            keep = np.flatnonzero(~done)
            rows = torch.from_numpy(keep).to(device)
            weights = weights.detach()[rows].clone().requires_grad_()
            if best_weights is not None:
                best_weights = best_weights[rows]
            adam.keep_rows(rows)
            sched.keep_rows(keep)
            active = active[keep]
        if on_epoch:
            on_epoch(epoch + 1, len(active))
        if on_weights:
            now = result.clone()
            now[torch.from_numpy(active)] = weights.detach().float().cpu()
            on_weights(epoch + 1, now)
        if len(active) == 0:
            break
    return result, records  # type: ignore[return-value]


@torch.no_grad()
def fit_quality(weights: torch.Tensor, shapes: list[ShapeSamples], mlp: MLPConfig,
                device: str | torch.device = "cpu", chunk: int = 65536) -> list[dict[str, float]]:
    """IoU of (logit > 0) against the labels on each shape's held-out uniform and near-surface points."""
    out = []
    for w, s in zip(weights, shapes):
        pred = logits_at(w, s.eval_points, mlp, device, chunk) > 0
        true = s.eval_occ > 0.5
        row = {}
        for key, sel in (("iou_uniform", ~s.eval_surface), ("iou_surface", s.eval_surface)):
            row[key] = iou(pred[sel], true[sel])
            row["n_" + key[4:]] = int(sel.sum())
            if s.eval_frame is None:  # 3D: how far this held-out score could move (surface_scores.py)
                ci = volume_iou(pred[sel].numpy(), true[sel].numpy())
                row[key + "_ci"], row["n_" + key[4:] + "_inside"] = [ci["ci_low"], ci["ci_high"]], ci["n_inside"]
        if s.eval_frame is not None:  # a 4D sequence: IoU per frame, mean and worst frame
            from hyperdiffusion.fields.fit4d import frame_quality

            row.update(frame_quality(pred, true, s))
        out.append(row)
    return out


def iou(pred: torch.Tensor, true: torch.Tensor) -> float:
    """|pred and true| / |pred or true|; 1.0 when both are empty (nothing to get wrong); nan with no points."""
    if pred.numel() == 0:
        return float("nan")
    union = (pred | true).sum().item()
    return 1.0 if union == 0 else (pred & true).sum().item() / union


# --------------------------------------------------------------------------- the stage


def _open_dataset(path: Path):
    from hyperdiffusion.data import prepare  # the prepare stage owns the dataset layout (docs/FORMATS.md)

    return prepare.load_dataset(path)


def _names(dataset, split: str) -> list[str]:
    names: set[str] = set()
    for s in split.split(","):
        try:
            names.update(dataset.names(s.strip()))
        except ValueError as e:
            raise InputError(f"--split {split}: {e}") from None
    return sorted(names)


def _load(dataset_root: Path, name: str, cfg: FitConfig, mlp: MLPConfig | None = None) -> ShapeSamples:
    from hyperdiffusion.data import prepare

    if mlp is not None and mlp.in_dim == 4:  # a sequence of a 4D dataset (fit4d.py)
        from hyperdiffusion.fields.fit4d import load_sequence

        return load_sequence(dataset_root, name, cfg, mlp)

    points, occ, n_surface = prepare.load_samples(dataset_root, name)
    return split_samples(name, points, occ, int(n_surface), cfg)


def _mlp_for_dataset(dataset_root: Path, mlp: MLPConfig) -> MLPConfig:
    """A 4D dataset (prepare's manifest "kind": "4d") is fitted with the 4D MLP over (x, y, z, t)."""
    from hyperdiffusion.data.animation import is_4d_dataset
    from hyperdiffusion.fields.mlp import DEFAULT_T_MODE

    four = is_4d_dataset(dataset_root)
    if four and mlp.in_dim == 3:
        return replace(mlp, in_dim=4, t_mode=mlp.t_mode or DEFAULT_T_MODE)
    if not four and mlp.in_dim != 3:
        raise InputError(f"{dataset_root}: a 3D dataset; a {mlp.in_dim}D MLP (--t-mode) needs a 4D dataset")
    return mlp


def _pick_device(device: str) -> torch.device:
    from hyperdiffusion.diffusion.runtime import resolve_device  # LOCAL_RANK's GPU under torchrun (shards)

    return resolve_device(device)


class _FitProgress:
    """Progress of the whole fit stage in shape-epochs (one epoch of one shape = steps_per_epoch steps).

    The total is the budget of the shapes still to fit (max_epochs each); when a shape stops
    early its unused epochs leave the total, so the count ends at the epochs really trained
    and the ETA (remaining budget / measured rate) is an upper bound that shrinks as shapes stop.
    """

    def __init__(self, bar, n_shapes: int, max_epochs: int):
        self.bar, self.n_shapes, self.max_epochs = bar, n_shapes, max_epochs
        self.shapes_done = 0

    def chunk_read_back(self, n_names: int) -> None:
        self.shapes_done += n_names

    def epoch_callback(self, n_names: int, label: str, counted: bool = True) -> Callable[[int, int], None]:
        """on_epoch for one chunk; `counted=False` for the first-weights shape when it is not an output."""
        active_before = n_names

        def on_epoch(epoch: int, n_active: int) -> None:
            nonlocal active_before
            stopped = active_before - n_active
            if stopped and self.bar.total:
                self.bar.total -= stopped * (self.max_epochs - epoch)  # their unused budget
            if counted:
                self.shapes_done += stopped
            self.bar.set_postfix(batch=label, epoch=epoch, active=n_active,
                                 shapes=f"{self.shapes_done}/{self.n_shapes}", refresh=False)
            self.bar.update(active_before)  # every shape active before this epoch trained one epoch
            active_before = n_active

        return on_epoch


# FitConfig fields added after fits were first stamped; their defaults are what those fits did.
_FIELDS_ADDED_LATER = ("warmup_epochs", "hard_fraction", "hard_pool")


def same_stamp(stored: dict | None, stamp: dict) -> bool:
    """Whether a chunk's stored stamp describes this run's settings.

    Stamps written before `init` replaced `first_weights` (true = "first"; false meant a different
    random start than `init="random"`, so it is not translated) and before the recipe options
    above existed are read as those settings, so older fit folders (and `compare` outputs) resume.
    """
    if stored == stamp:
        return True
    fit = dict((stored or {}).get("fit") or {})
    if fit.pop("first_weights", None) is not True or "init" in fit:
        return False
    defaults = FitConfig().to_dict()
    fit = {"init": "first", **{k: defaults[k] for k in _FIELDS_ADDED_LATER}, **fit}
    return {**stored, "fit": fit} == stamp


def _fit_chunk(path: Path, names: list[str], init: torch.Tensor, dataset_root: Path, cfg: FitConfig,
               mlp: MLPConfig, device, precision: str, stamp: dict,
               on_epoch: Callable[[int, int], None] | None = None,
               scores: ScoreConfig | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Fit `names` together and write them to `path`; or read them back if a previous run did.

    Evaluation-set scores (`scores`; 3D only) are recorded with what they depend on, and are
    recomputed from the stored weights, without refitting, when that changed (an evaluation
    set added by a `prepare` rerun, other score settings)."""
    score = scores is not None and mlp.in_dim == 3
    wanted = eval_stamp(dataset_root, names, scores) if score else None
    if path.is_file():
        tensors, meta = load_safetensors(path)
        if meta.get("names") != names or not same_stamp(meta.get("stamp"), stamp):
            raise InputError(f"{path}: written by a run with other shapes or settings; use a new output folder")
        weights, quality = tensors["weights"], meta["quality"]
        if score and meta.get("scores") != wanted:
            quality = [{**q, **r} for q, r in zip(quality, score_fits(weights, names, dataset_root, mlp, scores,
                                                                       device))]
            save_safetensors(path, {"weights": weights}, {**meta, "quality": quality, "scores": wanted})
        return weights, quality
    t0 = time.perf_counter()
    shapes = [_load(dataset_root, n, cfg, mlp) for n in names]
    weights, records = fit_shapes(shapes, init, cfg, mlp, device, precision, on_epoch)
    seconds = time.perf_counter() - t0
    quality = [{**asdict(r), **q} for r, q in zip(records, fit_quality(weights, shapes, mlp, device))]
    if score:
        quality = [{**q, **r} for q, r in zip(quality, score_fits(weights, names, dataset_root, mlp, scores, device))]
    for q in quality:
        q["batch_seconds"] = round(seconds, 2)  # fitting only, without the scoring
    save_safetensors(path, {"weights": weights}, {"names": names, "stamp": stamp, "quality": quality,
                                                  "scores": wanted})
    return weights, quality


def fit_dataset(dataset: str | Path, out: str | Path, cfg: FitConfig = FitConfig(), mlp: MLPConfig = MLPConfig(),
                split: str = "train", batch_shapes: int = 16, device: str = "auto", precision: str = "fp32",
                limit: int | None = None, progress: bool = True, shard: Shard | str | None = None,
                first_only: bool = False, merge_only: bool = False,
                scores: ScoreConfig | None = ScoreConfig()) -> Path | None:
    """Fit every shape of `split` ("train", "all", or "train,val") of a prepared dataset; return weights path.

    `scores`: how the fits are scored on the dataset's evaluation set (fit_eval.py; None: the
    held-out IoU only).

    Resumable: each batch of shapes is written to OUT/chunks/ when it finishes and is read
    back instead of refitted when the same command runs again. Progress is shown in
    shape-epochs over the whole stage (`_FitProgress`).

    Sharded (`shard` K/N, or RANK/WORLD_SIZE under torchrun; hyperdiffusion.shards): the
    first-weights fit happens once, in shard 0, which writes OUT/chunks/first.safetensors
    atomically; the other shards wait for that file (or find it made beforehand with
    `first_only`), then fit chunks K, K + N, ... Chunk files are named by their global index,
    so shards never write the same file; the last shard to finish merges (`merge_only`: read
    every chunk back, fit nothing, write weights.safetensors and fit_quality.json as an
    unsharded run does). Returns None for a shard that did not merge.
    """
    from hyperdiffusion import shards as sharding

    shard = sharding.resolve_shard(shard) if not merge_only else None
    run_args = {"dataset": str(dataset), "cfg": cfg.to_dict(), "mlp": mlp.to_dict(), "split": split,
                "batch_shapes": batch_shapes, "precision": precision, "limit": limit,
                "scores": scores.to_dict() if scores is not None else None}
    dataset_root = Path(dataset)
    ds = _open_dataset(dataset_root)
    mlp = _mlp_for_dataset(dataset_root, mlp)
    out = ensure_writable_dir(out)
    dev = _pick_device(device)
    if precision not in ("fp32", "bf16"):
        raise InputError(f"--precision {precision}: choose fp32 or bf16")
    if precision == "bf16" and dev.type != "cuda" and not merge_only:  # a merge only reads chunks back
        raise InputError("--precision bf16 is for CUDA devices; use fp32 on the CPU")
    if precision == "bf16" and dev.type == "cuda":
        from hyperdiffusion.diffusion.runtime import require_bf16

        require_bf16(dev)  # a GPU before Ampere has no bf16: say so before hours of fitting
    names = _names(ds, split)
    if limit is not None:
        names = names[:limit]
    if not names:
        raise InputError(f"{dataset_root}: no shapes in split {split!r}")
    train = sorted(ds.names("train"))
    stamp = {"fit": cfg.to_dict(), "mlp": mlp.to_dict(), "precision": precision}
    chunks = out / "chunks"
    if mlp.in_dim == 3 and scores is not None and not merge_only:
        _warn_missing_eval_sets(dataset_root, names)
    # First weights: the first train shape alone from a seeded default init (REFERENCE.md).
    init_name = (train or names)[0]
    plan: list[tuple[Path, list[str]]] = [(chunks / "first.safetensors", [init_name])] if cfg.first_weights else []
    rest = [n for n in names if not (cfg.first_weights and n == init_name)]
    plan += [(chunks / f"chunk_{i // batch_shapes:05d}.safetensors", rest[i:i + batch_shapes])
             for i in range(0, len(rest), batch_shapes)]
    n_first = int(cfg.first_weights)
    if merge_only and [p for p, _ in plan if not p.is_file()]:
        raise InputError(f"{chunks}: {', '.join(p.name for p, _ in plan if not p.is_file())} missing; a shard "
                         "has not finished")
    if first_only and not cfg.first_weights:
        raise InputError("--first-weights-only with first weights turned off: nothing to fit")
    if shard is not None and cfg.first_weights and shard.index != 0 and not plan[0][0].is_file():
        sharding.wait_for(plan[0][0], f"the first-weights fit, done once by shard 0/{shard.count}", FIRST_WEIGHTS_WAIT_S)
    if shard is not None or first_only:  # every shard reads the first weights back, then fits its own chunks
        plan = plan[:n_first] + ([] if first_only else shard.take(plan[n_first:]))
    todo_epochs = sum(len(batch) * cfg.max_epochs for path, batch in plan if not path.is_file())
    generator = torch.Generator().manual_seed(cfg.seed)
    init = default_init(mlp, 1, generator)[0]
    fitted: dict[str, tuple[torch.Tensor, dict]] = {}
    with progress_bar(total=todo_epochs, desc="fit", unit="shape-epoch", disable=not progress) as bar:
        tracker = _FitProgress(bar, len(names), cfg.max_epochs)
        n_batches = len(plan) - int(cfg.first_weights)
        for k, (path, batch) in enumerate(plan):
            first = cfg.first_weights and k == 0
            label = "first weights" if first else f"{k + 1 - int(cfg.first_weights)}/{n_batches}"
            counted = not first or init_name in names  # the first-weights shape may not be in the split
            if path.is_file() and counted:
                tracker.chunk_read_back(len(batch))
            start = init if cfg.first_weights else random_inits(mlp, batch, cfg.seed)
            w, q = _fit_chunk(path, batch, start, dataset_root, cfg, mlp, dev, precision, stamp,
                              tracker.epoch_callback(len(batch), label, counted), scores if counted else None)
            if first:
                init = w[0]
            if counted:
                fitted.update({n: (w[j], q[j]) for j, n in enumerate(batch)})

    if first_only:
        print(f"first weights ({init_name}) -> {plan[0][0]}")
        return plan[0][0]
    if shard is not None:
        merged = sharding.finish(out, "fit", shard, "fit", run_args)
        return out / "weights.safetensors" if merged else None
    weights = torch.stack([fitted[n][0] for n in names])
    quality = {n: fitted[n][1] for n in names}
    extra = {"stage": "fit", "fit": cfg.to_dict(), "dataset": str(dataset_root), "split": split,
             "first_weights_shape": init_name if cfg.first_weights else None, "precision": precision,
             "scores": scores.to_dict() if scores is not None and mlp.in_dim == 3 else None}
    save_weight_set(out / "weights.safetensors", weights, names, mlp, extra)
    summary = summarise(quality)
    if mlp.in_dim == 3 and scores is not None:
        summary["eval"] = summarise_scores(quality)
    if mlp.in_dim == 4:
        from hyperdiffusion.fields.fit4d import summarise_frames

        summary["frames"] = summarise_frames(quality)
    write_json(out / "fit_quality.json", {"summary": summary, "config": extra, "shapes": quality})
    print(format_summary(summary))
    return out / "weights.safetensors"


def merge_shards(out: Path, args: dict[str, Any], count: int) -> Path:
    """hyperdiffusion.shards merger: the unsharded outputs from the chunks every shard wrote."""
    return fit_dataset(args["dataset"], out, FitConfig(**args["cfg"]), MLPConfig.from_dict(args["mlp"]), args["split"],
                       args["batch_shapes"], "cpu", args["precision"], args["limit"], progress=False, merge_only=True,
                       scores=ScoreConfig(**args["scores"]) if args.get("scores") else None)


def random_inits(mlp: MLPConfig, names: list[str], seed: int) -> torch.Tensor:
    """[len(names), P]: each shape's own default init, seeded by (seed, name) (`init="random"`)."""
    return torch.cat([default_init(mlp, 1, torch.Generator().manual_seed(stable_seed(seed, n, "init")))
                      for n in names])


def _warn_missing_eval_sets(dataset_root: Path, names: list[str]) -> None:
    """Say clearly when the dataset predates the evaluation set, and how to add it."""
    from hyperdiffusion.data.prepare import shape_dir
    from hyperdiffusion.io import read_json

    missing = [n for n in names if not (shape_dir(dataset_root, n) / "eval.npz").is_file()]
    if missing:
        source = read_json(dataset_root / "manifest.json").get("source", "SRC")
        print(f"{dataset_root}: {len(missing)} of {len(names)} shapes have no evaluation set (eval.npz; e.g. "
              f"{missing[0]}), so their fit quality is the noisy held-out 10 % IoU only. Run the same prepare "
              f"command again (`hyperdiffusion prepare {source} {dataset_root}` with its options) to add it: "
              "the training samples are kept; then rerun this fit, which rescores without refitting.")


def summarise(quality: dict[str, dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_shapes": len(quality)}
    for key in ("iou_uniform", "iou_surface", "epochs", "final_loss"):
        v = np.array([q[key] for q in quality.values()], float)
        out[key] = {"mean": float(np.nanmean(v)), "min": float(np.nanmin(v)), "max": float(np.nanmax(v))}
    worst = sorted(quality, key=lambda n: quality[n]["iou_uniform"])[:5]
    out["worst_uniform"] = [[n, quality[n]["iou_uniform"], quality[n]["iou_surface"]] for n in worst]
    out["stopped_early"] = sum(q["stopped"] == "early" for q in quality.values())
    return out


def format_summary(s: dict[str, Any]) -> str:
    u, su, ep = s["iou_uniform"], s["iou_surface"], s["epochs"]
    lines = [f"fitted {s['n_shapes']} shapes ({s['stopped_early']} stopped early); epochs mean {ep['mean']:.0f} "
             f"(min {ep['min']:.0f}, max {ep['max']:.0f})",
             f"held-out IoU uniform: mean {u['mean']:.4f}, min {u['min']:.4f}; "
             f"near-surface: mean {su['mean']:.4f}, min {su['min']:.4f}",
             "worst (uniform, near-surface): " + ", ".join(f"{n} {a:.3f}/{b:.3f}" for n, a, b in s["worst_uniform"])]
    lines += format_scores(s.get("eval"))
    if "frames" in s:  # 4D: per-frame IoU on the frame's held-out uniform points, and on all its held-out points
        for key, what in (("iou_frame", "uniform"), ("iou_frame_all", "all held-out")):
            fm, fw = s["frames"][f"{key}_mean"], s["frames"][f"{key}_worst"]
            lines.append(f"per-frame IoU ({what} points): mean over frames {fm['mean']:.4f} (lowest sequence "
                         f"{fm['min']:.4f}); worst frame {fw['mean']:.4f} on average, {fw['min']:.4f} at the lowest")
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit one occupancy MLP per shape (paper Sec. 3.1)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="prepared dataset folder (hyperdiffusion prepare)")
    p.add_argument("out", help="output folder: weights.safetensors, weights.json, fit_quality.json, chunks/")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="recipe (default: paper)")
    p.add_argument("--split", default="train", help="train | val | test | all | comma list (default: train)")
    p.add_argument("--batch-shapes", type=int, default=16, help="shapes optimised together (1 = one at a time)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 autocast (CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--limit", type=int, default=None, help="fit only the first N shapes (sorted names)")
    p.add_argument("--hidden", type=int, default=None, help="MLP width (paper: 128)")
    p.add_argument("--multires", type=int, default=None,
                   help="positional-encoding frequencies (paper: 4; 0 = no encoding, the paper's ablation; "
                        "changes the weight layout: the first layer takes 3 inputs instead of 27)")
    p.add_argument("--init", choices=INITS, default=None,
                   help="first: every MLP starts from the first train shape's fit (paper); random: each from "
                        "its own random init (the paper's ablation)")
    p.add_argument("--score-res", type=int, default=ScoreConfig().mesh_res,
                   help="marching-cubes grid for the evaluation-set mesh scores (Chamfer-L1, normal "
                        "consistency, F-score); 0 = IoU only (default: %(default)s)")
    p.add_argument("--score-points", type=int, default=ScoreConfig().n_points,
                   help="points sampled per surface for the mesh scores (default: %(default)s)")
    p.add_argument("--t-mode", choices=["index", "normalised"], default=None,
                   help="4D datasets: t = frame index 0..15 (official) or normalised to (-0.5, 0.5) "
                        "(default: normalised, docs/4D.md)")
    for field, typ in (("max_epochs", int), ("steps_per_epoch", int), ("points_per_step", int), ("lr", float),
                       ("seed", int)):
        p.add_argument("--" + field.replace("_", "-"), type=typ, default=None, help=f"override the preset's {field}")
    p.add_argument("--keep", choices=["final", "best"], default=None, help="weights kept when a shape stops")
    p.add_argument("--schedule", choices=["plateau", "cosine"], default=None,
                   help="lr schedule: plateau (paper) or cosine over --max-epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    add_shard_argument(p, "chunks of shapes (shard 0 fits the first weights; the others wait for them)")
    p.add_argument("--first-weights-only", action="store_true",
                   help="fit only OUT/chunks/first.safetensors (before shards on machines without a shared folder)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in ("max_epochs", "steps_per_epoch", "points_per_step", "lr", "seed", "keep",
                                           "schedule", "init")
                 if getattr(args, k) is not None}
    cfg = replace(PRESETS[args.preset], **overrides)
    shape = {k: getattr(args, k) for k in ("hidden", "multires") if getattr(args, k) is not None}
    if shape.get("multires", 0) < 0:
        raise InputError("--multires must be >= 0")
    mlp = MLPConfig(**shape)
    if args.t_mode:
        mlp = replace(mlp, in_dim=4, t_mode=args.t_mode)
    if args.batch_shapes < 1:
        raise InputError("--batch-shapes must be at least 1")
    fit_dataset(args.dataset, args.out, cfg, mlp, args.split, args.batch_shapes, args.device, args.precision,
                args.limit, progress=not args.no_progress, shard=args.shard, first_only=args.first_weights_only,
                scores=ScoreConfig(mesh_res=args.score_res, n_points=args.score_points, seed=cfg.seed))
    return 0

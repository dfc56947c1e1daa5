"""Point-cloud distances and the generative metrics MMD, COV and 1-NNA (paper Sec. 4).

The metrics follow PointFlow (Yang et al. 2019), which HyperDiffusion's evaluation
copies (REFERENCE.md "Evaluation"):

- Chamfer distance (CD), squared: mean over X of the squared distance to the
  nearest point of Y, plus the same from Y to X. No square root, no 0.5.
- Earth mover's distance (EMD) between equal-size clouds: the mean ground cost of
  the optimal one-to-one matching. Euclidean ground cost by default (PointFlow's
  `emd_approx` CUDA kernel matches points with Euclidean cost), squared on request.
- MMD: mean over reference clouds of the distance to the closest sample.
- COV: fraction of reference clouds that are the nearest reference of at least
  one sample.
- 1-NNA: leave-one-out accuracy of the 1-nearest-neighbour classifier on the
  union of samples and references; 0.5 is ideal, 1.0 means fully separable.

The official HyperDiffusion code reports EMD metrics of zero because its EMD
returns zeros (REFERENCE.md); here every EMD value is computed, and the mode
(exact network simplex or approximate auction, point count, ground cost) is
returned beside it. Nothing falls back silently: an unavailable mode raises.

Speed on a 2-core CPU (REFERENCE.md "Measured here"): scipy's cKDTree is ~10x
faster than torch.cdist for 2048-point Chamfer, so the CPU path uses kd-trees and
the torch path (batched [b, n, m] distance blocks) is meant for the GPU.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

NORM_MODES = ("hd", "none", "bbox")
EMD_MODES = ("exact", "approx", "off")


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

def normalize_clouds(clouds: np.ndarray, mode: str) -> np.ndarray:
    """Normalise each cloud of `clouds` [K, N, 3] on its own.

    - "hd": the official test protocol (REFERENCE.md "Evaluation"; the same as
      DPC's "shape_unit"): subtract the per-axis mean, divide by the scalar
      standard deviation of all 3N raw coordinates (unbiased, as torch.std).
    - "none": raw coordinates (PointFlow).
    - "bbox": DPC's "shape_bbox": centre the bounding box, scale so that half of
      its longest side is 1.
    """
    clouds = np.asarray(clouds, dtype=np.float64)
    if clouds.ndim != 3 or clouds.shape[-1] != 3:
        raise ValueError(f"expected clouds of shape [K, N, 3], got {clouds.shape}")
    if mode == "none":
        return clouds.copy()
    if mode == "hd":
        shift = clouds.mean(axis=1, keepdims=True)
        scale = clouds.reshape(len(clouds), -1).std(axis=1, ddof=1)[:, None, None]
    elif mode == "bbox":
        lo, hi = clouds.min(axis=1, keepdims=True), clouds.max(axis=1, keepdims=True)
        shift = (lo + hi) / 2
        scale = (hi - lo).max(axis=2, keepdims=True) / 2
    else:
        raise ValueError(f"unknown normalisation {mode!r}; choose from {', '.join(NORM_MODES)}")
    # A degenerate cloud (all points equal) keeps scale 1 rather than dividing by 0.
    return (clouds - shift) / np.where(scale > 0, scale, 1.0)


# ---------------------------------------------------------------------------
# Distances between two clouds
# ---------------------------------------------------------------------------

def chamfer(x: np.ndarray, y: np.ndarray) -> float:
    """Squared Chamfer distance: mean_x min_y |x-y|^2 + mean_y min_x |x-y|^2."""
    dxy = cKDTree(y).query(x, k=1)[0]
    dyx = cKDTree(x).query(y, k=1)[0]
    return float(np.mean(dxy**2) + np.mean(dyx**2))


def _ground_cost(x: np.ndarray, y: np.ndarray, squared: bool) -> np.ndarray:
    diff = np.asarray(x, np.float64)[:, None, :] - np.asarray(y, np.float64)[None, :, :]
    cost = np.einsum("nmd,nmd->nm", diff, diff)
    return cost if squared else np.sqrt(cost)


def emd_exact(x: np.ndarray, y: np.ndarray, squared: bool = False, solver: str = "pot") -> float:
    """Exact EMD between equal-size clouds: mean cost of the optimal bijection.

    With uniform weights and equal sizes, optimal transport has a permutation
    solution (Birkhoff), so network simplex (POT `ot.emd2`, the default: 2-3x
    faster here, REFERENCE.md) and Hungarian assignment (scipy
    `linear_sum_assignment`, solver="lsa") give the same value.
    """
    if len(x) != len(y):
        raise ValueError(f"EMD needs equal-size clouds, got {len(x)} and {len(y)}")
    cost = _ground_cost(x, y, squared)
    if solver == "lsa":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        return float(cost[rows, cols].mean())
    if solver == "pot":
        import ot

        n = len(x)
        w = np.full(n, 1.0 / n)
        # The default iteration cap (1e5) stops short on 2048 points with a warning.
        value, log = ot.emd2(w, w, cost, numItermax=10_000_000, log=True)
        if log.get("warning"):
            raise RuntimeError(f"exact EMD did not converge: {log['warning']}")
        return float(value)
    raise ValueError(f"unknown exact EMD solver {solver!r}; choose 'pot' or 'lsa'")


@dataclass(frozen=True)
class AuctionConfig:
    """Auction algorithm with epsilon scaling (Bertsekas 1988; Bertsekas & Castanon 1989).

    An auction that ends with every point assigned at bid increment `eps` gives a
    matching whose mean cost is within `eps` of the optimum (eps-complementary
    slackness), so the error is bounded, not just measured. `eps` starts at
    `eps_start` x the largest ground cost of the pair and is divided by `scaling`
    until it reaches `eps_final` x that cost; prices carry over between stages.
    The dual value of the final prices is a certified lower bound, returned beside
    the estimate by `emd_auction(..., with_bound=True)`.

    `max_rounds` caps the bidding rounds of one call over all stages: a finite
    auction always ends, but slowly when eps is tiny against nearly tied costs.
    Measured here: ~13,000 rounds for 2048-point pairs, ~2,400 for 256 points; the
    cap is ~40x that, and hitting it raises instead of looping for hours.
    """

    eps_start: float = 0.1
    eps_final: float = 1e-4
    scaling: float = 8.0
    max_rounds: int = 500_000


@torch.no_grad()
def emd_auction(x: torch.Tensor, y: torch.Tensor, squared: bool = False,
                cfg: AuctionConfig = AuctionConfig(), with_bound: bool = False):
    """Approximate EMD for a batch of pairs x, y [B, n, 3]; returns [B] (and a lower bound [B]).

    Jacobi auction: in each round every unassigned point of x (a "person") bids
    for its cheapest point of y (an "object") at price + (second best - best) +
    eps; each object goes to its highest bidder, evicting the previous owner.
    Only unassigned persons are touched per round, over all pairs at once, so the
    batch runs as a few large tensor operations per round (GPU-friendly).
    """
    if x.shape != y.shape:
        raise ValueError(f"EMD needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    b, n, _ = x.shape
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("EMD of clouds with NaN or infinite coordinates: the auction would never end")
    cost = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    if squared:
        cost = cost**2
    cmax = cost.amax(dim=(1, 2)).clamp_min(1e-30)  # [B]
    flat_cost = cost.reshape(b * n, n)
    price = torch.zeros(b * n, dtype=cost.dtype, device=cost.device)  # object prices, flat (pair, object)
    n_stages = max(1, math.ceil(math.log(cfg.eps_start / cfg.eps_final, cfg.scaling)) + 1)
    pair_of_row = torch.arange(b, device=cost.device).repeat_interleave(n)
    rounds = 0
    for stage in range(n_stages):
        rel = max(cfg.eps_start / cfg.scaling**stage, cfg.eps_final)
        eps = (cmax * rel)[pair_of_row]  # per flat person
        owner = torch.full((b * n,), -1, dtype=torch.long, device=cost.device)  # flat object -> flat person
        assigned = torch.full((b * n,), -1, dtype=torch.long, device=cost.device)  # flat person -> object
        while True:
            persons = (assigned < 0).nonzero().squeeze(1)
            if len(persons) == 0:
                break
            rounds += 1
            if rounds > cfg.max_rounds:
                raise RuntimeError(f"auction EMD: {len(persons)} of {b * n} points still unassigned after "
                                   f"{cfg.max_rounds} bidding rounds (stage {stage + 1} of {n_stages}, eps = "
                                   f"{rel:g} x max cost); raise AuctionConfig.max_rounds or eps_final, or use "
                                   "exact EMD")
            pair = pair_of_row[persons]
            values = flat_cost[persons] + price.view(b, n)[pair]  # [k, n]
            best2 = values.topk(2 if n > 1 else 1, dim=1, largest=False)
            obj = best2.indices[:, 0]
            gap = best2.values[:, 1] - best2.values[:, 0] if n > 1 else torch.zeros_like(best2.values[:, 0])
            key = pair * n + obj
            bid = price[key] + gap + eps[persons]
            top = torch.full_like(price, -math.inf).scatter_reduce(0, key, bid, "amax")
            # Highest bid wins; ties go to the highest flat person index (any rule will do).
            wins = bid >= top[key]
            winner = torch.full_like(owner, -1).scatter_reduce(
                0, key[wins], persons[wins], "amax", include_self=True)
            won = (winner >= 0).nonzero().squeeze(1)
            evicted = owner[won]
            assigned[evicted[evicted >= 0]] = -1
            owner[won] = winner[won]
            assigned[winner[won]] = won % n
            price[won] = top[won]
    rows = torch.arange(b * n, device=cost.device)
    estimate = flat_cost[rows, assigned].view(b, n).mean(1)
    if not with_bound:
        return estimate
    # Dual value: mean_i min_j (c_ij + p_j) - mean_j p_j <= optimal mean cost.
    p = price.view(b, n)
    lower = (cost + p[:, None, :]).amin(2).mean(1) - p.mean(1)
    return estimate, lower


# ---------------------------------------------------------------------------
# Pairwise matrices between two sets of clouds
# ---------------------------------------------------------------------------

def _both_ways(a: np.ndarray, b: np.ndarray, same: bool, one_way, progress) -> np.ndarray:
    """Chamfer from one-way mean squared distances: D_ab + D_ba^T, one pass when b is a. Two passes of
    K x L each when a and b differ: each counts half of every pair in `progress`."""
    half = progress if same else (lambda p: progress(p / 2))
    d_ab = one_way(a, b, half)
    d_ba = d_ab if same else one_way(b, a, half)
    return d_ab + d_ba.T


def _one_way_kdtree(src: np.ndarray, dst: np.ndarray, workers: int, progress) -> np.ndarray:
    """D[i, j] = mean over points of src[i] of the squared distance to dst[j].

    One kd-tree per destination cloud, queried with all source points at once:
    one scipy call per column keeps the Python overhead negligible.
    """
    k, n, _ = src.shape
    flat = src.reshape(-1, 3)
    out = np.empty((k, len(dst)))
    for j in range(len(dst)):
        d = cKDTree(dst[j]).query(flat, k=1, workers=workers)[0]
        out[:, j] = (d.reshape(k, n) ** 2).mean(axis=1)
        progress(k)
    return out


def pairwise_chamfer(a: np.ndarray, b: np.ndarray | None = None, backend: str = "kdtree",
                     device: str = "cpu", workers: int = -1, max_block_bytes: int = 256 << 20,
                     dtype: torch.dtype = torch.float32, progress=None) -> np.ndarray:
    """Squared Chamfer distance between every cloud of `a` [K, N, 3] and of `b` [L, M, 3].

    `b=None` means `b is a` (the matrix is then symmetric and computed once).
    backend "kdtree": scipy cKDTree with `workers` threads (fast on CPU);
    backend "torch": batched [bi, bj, n, m] distance blocks on `device`, each block
    at most `max_block_bytes`; backend "triton": one fused kernel that never stores a
    distance (evaluation/chamfer_triton.py; a CUDA device with Triton installed), the fast
    path for the GPU, ~11x the torch blocks on an H200. `chamfer_backend_name` names
    the choice for metrics.json. `progress(p)` is called as pairs finish, p summing
    to K x L.
    """
    same = b is None
    a = np.asarray(a, np.float64)
    b = a if same else np.asarray(b, np.float64)
    progress = progress or (lambda _n: None)
    if backend == "kdtree":
        return _both_ways(a, b, same, lambda x, y, p: _one_way_kdtree(x, y, workers, p), progress)
    if backend == "torch":
        return _pairwise_chamfer_torch(a, b, device, max_block_bytes, dtype, progress)
    if backend == "triton":
        from hyperdiffusion.evaluation import chamfer_triton

        if not chamfer_triton.available(device):
            raise ValueError(f"the triton Chamfer backend needs Triton and a CUDA device; got {device!r}")
        return _both_ways(a, b, same, lambda x, y, p: chamfer_triton.one_way(x, y, device, p), progress)
    raise ValueError(f"unknown backend {backend!r}; choose 'kdtree', 'torch' or 'triton'")


def chamfer_backend_name(backend: str = "kdtree", device: str = "cpu", dtype: torch.dtype = torch.float32) -> str:
    """How `pairwise_chamfer` computes with these settings, as metrics.json records it.

    "scipy-kdtree float64" (exact nearest neighbours in double precision) or e.g.
    "torch float32 cuda" (|x|^2 + |y|^2 - 2 x.y in that dtype; tests/test_metrics.py holds
    float32 to the kd-tree within 1e-3 relative).
    """
    if backend == "kdtree":
        return "scipy-kdtree float64"
    if backend == "torch":
        return f"torch {str(dtype).removeprefix('torch.')} {torch.device(device)}"
    if backend == "triton":
        return f"triton fused float32 {torch.device(device)}"
    raise ValueError(f"unknown backend {backend!r}; choose 'kdtree', 'torch' or 'triton'")


@contextmanager
def exact_fp32_matmul():
    """No TensorFloat-32 inside: with it (torch.set_float32_matmul_precision("high"), or the
    allow_tf32 flags, which a training script may have set) the x.y term of a GPU distance keeps
    10 mantissa bits, errors of ~1e-3 relative that can reorder nearest neighbours and so change
    COV and 1-NNA against the float64 kd-tree path (benchmarks/gpu_check.py measures both)."""
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):  # torch before 2.9: only the legacy flag
        old_flag = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = old_flag
        return
    old = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = old


@torch.no_grad()
def _pairwise_chamfer_torch(a, b, device, max_block_bytes, dtype, progress) -> np.ndarray:
    with exact_fp32_matmul():
        return _pairwise_chamfer_blocks(a, b, device, max_block_bytes, dtype, progress)


def _pairwise_chamfer_blocks(a, b, device, max_block_bytes, dtype, progress) -> np.ndarray:
    ta = torch.as_tensor(a, dtype=dtype, device=device)
    tb = torch.as_tensor(b, dtype=dtype, device=device)
    n, m = ta.shape[1], tb.shape[1]
    # Rows of a per block x columns of b per block, so one [bi, bj, n, m] block fits.
    per_pair = n * m * ta.element_size()
    pairs = max(1, max_block_bytes // per_pair)
    bj = min(len(tb), pairs)
    bi = max(1, min(len(ta), pairs // bj))
    sq_a, sq_b = (ta**2).sum(-1), (tb**2).sum(-1)
    out = torch.empty(len(ta), len(tb), dtype=torch.float64, device=device)
    for i in range(0, len(ta), bi):
        xa, na = ta[i:i + bi], sq_a[i:i + bi]
        for j in range(0, len(tb), bj):
            xb, nb = tb[j:j + bj], sq_b[j:j + bj]
            # |x - y|^2 = |x|^2 + |y|^2 - 2 x.y, one batched matmul per block.
            d = na[:, None, :, None] + nb[None, :, None, :] - 2 * torch.einsum("ind,jmd->ijnm", xa, xb)
            d = d.clamp_min_(0)
            out[i:i + bi, j:j + bj] = (d.amin(3).mean(2) + d.amin(2).mean(2)).double()
            progress(len(xa) * len(xb))
    return out.cpu().numpy()


def subsample_clouds(clouds: np.ndarray, n_points: int, seed: int) -> np.ndarray:
    """A seeded random subset of `n_points` points of every cloud (without replacement)."""
    k, n, _ = clouds.shape
    if n_points >= n:
        return clouds
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(n, n_points, replace=False) for _ in range(k)])
    return np.take_along_axis(clouds, idx[:, :, None], axis=1)


def pairwise_emd(a: np.ndarray, b: np.ndarray | None = None, mode: str = "exact", squared: bool = False,
                 device: str = "cpu", auction: AuctionConfig = AuctionConfig(),
                 pairs_per_batch: int = 16, progress=None, rows=None, workers: int | None = 1) -> np.ndarray:
    """EMD between every cloud of `a` and of `b` (`b=None`: symmetric, each pair once).

    mode "exact": POT network simplex per pair on CPU, over `workers` processes (None: every
    core); "approx": batched auction (`emd_auction`) on `device`, mean cost within
    eps_final x max cost. Every pair is computed on its own, so neither `workers` nor the
    batching changes a value. `rows` (a shard's rows of `a`, hyperdiffusion.shards): only
    those rows, as a block [len(rows), L]; when symmetric the block holds the pairs j > i
    only (0 elsewhere) and U + U.T of the assembled blocks is the full matrix.
    """
    same = b is None
    a = np.asarray(a, np.float64)
    b = a if same else np.asarray(b, np.float64)
    progress = progress or (lambda _n: None)
    if mode not in ("exact", "approx"):
        raise ValueError(f"unknown EMD mode {mode!r} for a matrix; choose 'exact' or 'approx'")
    row_ids = range(len(a)) if rows is None else [int(i) for i in rows]
    pairs = [(k, i, j) for k, i in enumerate(row_ids) for j in range(len(b)) if not same or j > i]
    out = np.zeros((len(row_ids), len(b)))
    if mode == "exact":
        for k, j, value in _emd_exact_pairs(a, b, pairs, squared, workers):
            out[k, j] = value
            progress(1)
    else:
        dtype = torch.float64 if torch.device(device).type == "cpu" else torch.float32
        ta = torch.as_tensor(a, dtype=dtype, device=device)
        tb = torch.as_tensor(b, dtype=dtype, device=device)
        for s in range(0, len(pairs), pairs_per_batch):
            chunk = pairs[s:s + pairs_per_batch]
            ii = torch.tensor([p[1] for p in chunk], device=device)
            jj = torch.tensor([p[2] for p in chunk], device=device)
            vals = emd_auction(ta[ii], tb[jj], squared, auction).double().cpu().numpy()
            out[[p[0] for p in chunk], [p[2] for p in chunk]] = vals
            progress(len(chunk))
    if same and rows is None:
        out = out + out.T  # diagonal stays 0: EMD of a cloud to itself
    return out


def cpu_count() -> int:
    """Cores this process may use: the affinity mask (as a batch scheduler sets it), shared with the
    other torchrun processes of this machine (LOCAL_WORLD_SIZE) so that shards do not oversubscribe."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


_POOL_CLOUDS: tuple = ()  # (a, b) of the pool's matrix, inherited by forked workers


def _emd_pair_chunk(chunk, squared):
    a, b = _POOL_CLOUDS
    return [(k, j, emd_exact(a[i], b[j], squared)) for k, i, j in chunk]


def _emd_exact_pairs(a, b, pairs, squared, workers):
    """Yield (k, j, exact EMD of a[i], b[j]) for (k, i, j) in pairs; over processes when workers > 1.

    POT's network simplex holds the GIL (threads do not help), so the pairs go to forked
    processes, which inherit the clouds instead of receiving a copy per task.
    """
    workers = cpu_count() if workers is None else max(1, int(workers))
    if workers == 1 or len(pairs) < 2:
        for k, i, j in pairs:
            yield k, j, emd_exact(a[i], b[j], squared)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import ot  # noqa: F401  imported once here, not in every worker

    global _POOL_CLOUDS
    size = max(1, min(64, len(pairs) // (8 * workers)))  # small tasks: balanced, with steady progress
    _POOL_CLOUDS = (a, b)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_emd_pair_chunk, pairs[s:s + size], squared) for s in range(0, len(pairs), size)]
            for f in as_completed(futures):
                yield from f.result()
    finally:
        _POOL_CLOUDS = ()


# ---------------------------------------------------------------------------
# Metrics from distance matrices (PointFlow `lgan_mmd_cov` and `knn`)
# ---------------------------------------------------------------------------

def mmd_cov(d_sr: np.ndarray) -> tuple[float, float]:
    """MMD and COV from d_sr[i, j] = distance(sample i, reference j)."""
    d_sr = np.asarray(d_sr)
    mmd = float(d_sr.min(axis=0).mean())  # each reference's closest sample
    covered = np.unique(d_sr.argmin(axis=1))  # each sample's closest reference
    return mmd, len(covered) / d_sr.shape[1]


def one_nna(d_ss: np.ndarray, d_sr: np.ndarray, d_rr: np.ndarray) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy on samples ∪ references."""
    n_s, n_r = d_sr.shape
    full = np.block([[d_ss, d_sr], [d_sr.T, d_rr]]).astype(np.float64)
    np.fill_diagonal(full, np.inf)  # leave one out
    labels = np.r_[np.ones(n_s, bool), np.zeros(n_r, bool)]
    predicted = labels[full.argmin(axis=1)]
    return float((predicted == labels).mean())


def set_metrics(d_ss: np.ndarray, d_sr: np.ndarray, d_rr: np.ndarray) -> dict[str, float]:
    """MMD, COV and 1-NNA from the three matrices of one distance."""
    mmd, cov = mmd_cov(d_sr)
    return {"mmd": mmd, "cov": cov, "nna": one_nna(d_ss, d_sr, d_rr)}


# ---------------------------------------------------------------------------
# 4D: sequences of frame clouds
# ---------------------------------------------------------------------------

def pairwise_frames(a: np.ndarray, b: np.ndarray | None, pairwise, progress=None, **kw) -> np.ndarray:
    """Distance between sequences = mean over frames of the frame-aligned distance (REFERENCE.md "4D").

    a [K, F, N, 3], b [L, F, M, 3] (or None: a against itself); `pairwise` is `pairwise_chamfer`
    or `pairwise_emd`. Frame f of one sequence is compared only with frame f of the other, as the
    official 4D evaluation averages its per-frame Chamfer matrices (its 4D EMD returns zeros; this
    one is computed). Returns [K, L].
    """
    a = np.asarray(a)
    if a.ndim != 4 or (b is not None and (np.ndim(b) != 4 or b.shape[1] != a.shape[1])):
        raise ValueError(f"expected sequences [K, F, N, 3] with equal F, got {a.shape} and "
                         f"{None if b is None else np.shape(b)}")
    total = None
    for f in range(a.shape[1]):
        d = pairwise(a[:, f], None if b is None else b[:, f], progress=progress, **kw)
        total = d if total is None else total + d
    return total / a.shape[1]

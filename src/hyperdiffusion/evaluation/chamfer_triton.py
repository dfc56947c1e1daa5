"""Chamfer matrices on a GPU without materialising distances: one fused Triton kernel.

The torch path (metrics._pairwise_chamfer_blocks) writes every [n, m] distance block to device
memory and reads it back twice for the two minima: at 1000 x 1000 clouds of 2048 points that is
~17 TB of traffic per pass: 18k pairs/s on an H200 (benchmarks/RESULTS.md, GPU check). Here each program
takes BLOCK_N points of one cloud, streams the other cloud through registers in BLOCK_M tiles and
keeps only the running minimum, so memory traffic is the clouds themselves and the cost is the
arithmetic: 2 x K x L x n x m squared distances, from direct differences (no |x|^2 + |y|^2 - 2 x.y
cancellation, no TF32 question).

Determinism: each program writes the sum of its block's minima to its own slot; the slots are
summed on the host side in float64, so a matrix never depends on scheduling.

Imported only where Triton is installed (the CUDA torch wheels ship it; the CPU wheel does not):
`available()` says whether it can run. TRITON_INTERPRET=1 runs the same kernel on the CPU
(tests/test_chamfer_triton.py, when triton is installed).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch

BLOCK_N = 128  # points of the query cloud per program
BLOCK_M = 64  # points of the other cloud per register tile
MAX_PAIRS_PER_LAUNCH = 1 << 16  # bounds the partial-sum buffer (pairs x blocks x 4 bytes)


def available(device: str | torch.device) -> bool:
    """True when the fused kernel can run on `device`: Triton installed, and a CUDA device (or
    Triton's interpreter, TRITON_INTERPRET=1, for tests on a CPU)."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def nearest_sum(a_ptr, b_ptr, ia_ptr, jb_ptr, out_ptr, N, M, n_blocks,
                    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
        """out[pid] = sum over this block's points x of cloud a[ia[p]] of min_y |x - y|^2 over cloud
        b[jb[p]]; clouds stored [K, 3, n] (one row per coordinate, so loads are contiguous)."""
        pid = tl.program_id(0)
        p = pid // n_blocks
        blk = pid % n_blocks
        i = tl.load(ia_ptr + p).to(tl.int64)
        j = tl.load(jb_ptr + p).to(tl.int64)
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        a_base = a_ptr + i * 3 * N
        ax = tl.load(a_base + offs_n, mask=mask_n, other=0.0)
        ay = tl.load(a_base + N + offs_n, mask=mask_n, other=0.0)
        az = tl.load(a_base + 2 * N + offs_n, mask=mask_n, other=0.0)
        best = tl.full((BLOCK_N,), float("inf"), tl.float32)
        b_base = b_ptr + j * 3 * M
        for m0 in range(0, M, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            mask_m = offs_m < M
            # A missing point sits at infinity, so it is never the nearest.
            bx = tl.load(b_base + offs_m, mask=mask_m, other=float("inf"))
            by = tl.load(b_base + M + offs_m, mask=mask_m, other=float("inf"))
            bz = tl.load(b_base + 2 * M + offs_m, mask=mask_m, other=float("inf"))
            dx = ax[:, None] - bx[None, :]
            dy = ay[:, None] - by[None, :]
            dz = az[:, None] - bz[None, :]
            best = tl.minimum(best, tl.min(dx * dx + dy * dy + dz * dz, axis=1))
        tl.store(out_ptr + pid, tl.sum(tl.where(mask_n, best, 0.0), axis=0))

    return nearest_sum


_KERNEL = None


def one_way(a: np.ndarray, b: np.ndarray, device: str, progress=None) -> np.ndarray:
    """D[i, j] = mean over the points x of a[i] of min over b[j] of |x - y|^2, float64 [K, L].

    a [K, n, 3] and b [L, m, 3], computed in float32 on `device` (metrics.pairwise_chamfer adds the
    two directions).
    """
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _kernel()
    progress = progress or (lambda _n: None)
    K, n, _ = a.shape
    L, m, _ = b.shape
    # [K, 3, n]: one row per coordinate, so the kernel's loads are contiguous.
    sa = torch.as_tensor(a, dtype=torch.float32, device=device).transpose(1, 2).contiguous()
    sb = torch.as_tensor(b, dtype=torch.float32, device=device).transpose(1, 2).contiguous()
    n_blocks = -(-n // BLOCK_N)
    rows = max(1, MAX_PAIRS_PER_LAUNCH // L)
    out = torch.empty(K, L, dtype=torch.float64, device=sa.device)
    jj = torch.arange(L, dtype=torch.int32, device=sa.device)
    for r in range(0, K, rows):
        ii = torch.arange(r, min(K, r + rows), dtype=torch.int32, device=sa.device)
        ia, jb = ii.repeat_interleave(L), jj.repeat(len(ii))
        partial = torch.empty(len(ia) * n_blocks, dtype=torch.float32, device=sa.device)
        _KERNEL[(len(partial),)](sa, sb, ia, jb, partial, n, m, n_blocks, BLOCK_N=BLOCK_N, BLOCK_M=BLOCK_M)
        out[r:r + len(ii)] = partial.view(len(ii), L, n_blocks).double().sum(2) / n
        progress(len(ia))
    return out.cpu().numpy()

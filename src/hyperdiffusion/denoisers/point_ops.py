"""Point-cloud operations of PVCNN / PointNet++ in plain torch (no compiled extension).

PVD (Zhou et al., ICCV 2021) and PVCNN (Liu et al., NeurIPS 2019) ship these as CUDA kernels
(`avg_voxelize`, `trilinear_devoxelize`, `furthest_point_sampling`, `ball_query`, `grouping`,
`three_nearest_neighbors_interpolate`). Each function here computes the same result with
ordinary tensor operations, so it runs on any device torch supports. Layout follows PVCNN:
features are channel-first [B, C, N], coordinates [B, 3, N].

Conventions copied from the kernels, because results depend on them:
* voxelisation: centre the cloud, divide by twice the largest distance from the centre, shift
  by 0.5 (so the cloud fits [0, 1]^3), scale by r, clamp to [0, r - 1]; each point goes to the
  cell `round(coordinate)`; a cell holds the mean feature of its points (0 when empty);
* devoxelisation: trilinear interpolation of the grid at the continuous (unrounded) voxel
  coordinates, grid values sitting on integer positions (grid_sample with align_corners=True);
* FPS starts at index 0 and then repeatedly takes the point farthest from those chosen;
* ball query takes, per centre, the first `k` points (in index order) with squared distance
  < radius^2, and pads the remaining slots with the first one found (index 0 when none);
* three-NN interpolation weights the three nearest centres by inverse squared distance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize_voxel_coords(coords: torch.Tensor, resolution: int, normalize: bool = True,
                           eps: float = 0.0) -> torch.Tensor:
    """Continuous voxel coordinates [B, 3, N] in [0, r - 1] (PVCNN `Voxelization`, normalize=True, eps=0)."""
    coords = coords.detach()
    c = coords - coords.mean(dim=2, keepdim=True)
    if normalize:
        c = c / (c.norm(dim=1, keepdim=True).amax(dim=2, keepdim=True) * 2.0 + eps) + 0.5
    else:
        c = (c + 1.0) / 2.0
    return torch.clamp(c * resolution, 0, resolution - 1)


def avg_voxelize(features: torch.Tensor, voxel_coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """Mean feature per cell: [B, C, N] features, [B, 3, N] continuous voxel coords -> [B, C, r, r, r].

    Point n falls in cell round(voxel_coords[:, :, n]); grid axes are (x, y, z) in that order.
    """
    B, C, N = features.shape
    r = resolution
    idx = torch.round(voxel_coords).long()
    flat = (idx[:, 0] * r + idx[:, 1]) * r + idx[:, 2]  # [B, N]
    sums = features.new_zeros(B, C, r ** 3)
    sums.scatter_add_(2, flat[:, None, :].expand(B, C, N), features)
    counts = features.new_zeros(B, 1, r ** 3)
    counts.scatter_add_(2, flat[:, None, :], features.new_ones(B, 1, N))
    return (sums / counts.clamp_min(1)).reshape(B, C, r, r, r)


def trilinear_devoxelize(grid: torch.Tensor, voxel_coords: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of grid [B, C, r, r, r] (axes x, y, z) at voxel coords [B, 3, N] -> [B, C, N].

    grid_sample reads its sampling grid's last dimension as (W, H, D) = (z, y, x) for our grid
    layout, so the coordinates are flipped; align_corners=True puts value (i, j, k) at coordinate
    (i, j, k), as the CUDA kernel does.
    """
    r = grid.shape[-1]
    g = voxel_coords.flip(1).transpose(1, 2) / max(r - 1, 1) * 2.0 - 1.0  # [B, N, 3] in (z, y, x) order
    out = F.grid_sample(grid, g[:, :, None, None, :].to(grid.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out[:, :, :, 0, 0]


def farthest_point_sample(coords: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Indices [B, M] of farthest-point sampling on coords [B, 3, N], starting at index 0."""
    B, _, N = coords.shape
    coords = coords.detach().contiguous()
    idx = torch.zeros(B, n_samples, dtype=torch.long, device=coords.device)
    min_d = torch.full((B, N), float("inf"), dtype=coords.dtype, device=coords.device)
    last = torch.zeros(B, 3, 1, dtype=torch.long, device=coords.device)
    for i in range(1, n_samples):
        # squared distance to the last chosen point, summed per axis like the kernel; [B, N] stays contiguous
        d = (coords - coords.gather(2, last)).square_().sum(dim=1)
        torch.minimum(min_d, d, out=min_d)
        chosen = min_d.argmax(dim=1)  # first maximum on ties
        idx[:, i] = chosen
        last = chosen.view(B, 1, 1).expand(B, 3, 1)
    return idx


def gather(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """features [B, C, N] at indices idx [B, *S] -> [B, C, *S] (PVCNN `grouping` / `gather`)."""
    B, C, _ = features.shape
    flat = idx.reshape(B, 1, -1).expand(B, C, -1)
    return features.gather(2, flat).reshape(B, C, *idx.shape[1:])


def ball_query(centers: torch.Tensor, points: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """Neighbour indices [B, M, k]: per centre [B, 3, M], the first k points of [B, 3, N] (index order)
    within `radius` (squared distance < radius^2), padded with the first one found (0 when none)."""
    N = points.shape[2]
    d2 = square_distance(centers, points)  # [B, M, N]
    order = torch.arange(N, device=points.device).expand_as(d2)
    candidate = torch.where(d2 < radius * radius, order, N)  # N sorts after every real index
    first = torch.topk(candidate, min(k, N), dim=2, largest=False, sorted=True).values
    if first.shape[2] < k:
        first = torch.cat([first, first.new_full((*first.shape[:2], k - N), N)], dim=2)
    pad = first[:, :, :1].where(first[:, :, :1] < N, torch.zeros_like(first[:, :, :1]))
    return torch.where(first < N, first, pad)


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances [B, M, N] between a [B, 3, M] and b [B, 3, N] from coordinate differences (cdist's
    direct mode: no |a|^2 + |b|^2 - 2ab cancellation, so radius tests agree with a loop over points)."""
    return torch.cdist(a.transpose(1, 2), b.transpose(1, 2), compute_mode="donot_use_mm_for_euclid_dist").square()


def three_nn_interpolate(points: torch.Tensor, centers: torch.Tensor, center_features: torch.Tensor) -> torch.Tensor:
    """Features at points [B, 3, N] from the three nearest centres [B, 3, M] with features [B, C, M],
    weighted by inverse squared distance (PVCNN `nearest_neighbor_interpolate`) -> [B, C, N]."""
    # Weights are continuous in the distances, so the fast |a|^2 + |b|^2 - 2ab form is fine here.
    d2 = torch.cdist(points.transpose(1, 2), centers.transpose(1, 2)).square()  # [B, N, M]
    k = min(3, centers.shape[2])
    dist, idx = torch.topk(d2, k, dim=2, largest=False)
    w = 1.0 / dist.clamp(1e-10, 1e10)
    w = w / w.sum(dim=2, keepdim=True)
    neigh = gather(center_features, idx)  # [B, C, N, k]
    return (neigh * w[:, None]).sum(dim=3)

"""The plain-torch point operations of PVCNN against brute-force loops on small random inputs."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from hyperdiffusion.denoisers import point_ops as P


def _cloud(B=2, N=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, 3, N, generator=g, dtype=torch.float64) - 0.5) * 0.9


def test_normalize_voxel_coords_fits_the_grid():
    x = _cloud()
    r = 8
    vc = P.normalize_voxel_coords(x, r)
    assert vc.min() >= 0 and vc.max() <= r - 1
    # by hand for one cloud: centre, divide by twice the largest radius, shift 0.5, scale by r
    c = x[0] - x[0].mean(dim=1, keepdim=True)
    ref = (c / (2 * c.norm(dim=0).max()) + 0.5) * r
    assert torch.allclose(vc[0], ref.clamp(0, r - 1))


def test_avg_voxelize_averages_each_cell():
    x = _cloud(N=200)
    r = 4
    vc = P.normalize_voxel_coords(x, r)
    feats = torch.randn(2, 5, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grid = P.avg_voxelize(feats, vc, r)
    ref = np.zeros((2, 5, r, r, r))
    for b in range(2):
        cells: dict[tuple, list] = {}
        for n in range(200):
            key = tuple(int(np.floor(float(v) + 0.5)) for v in vc[b, :, n])  # round half up; ties have measure 0
            cells.setdefault(key, []).append(feats[b, :, n].numpy())
        for (i, j, k), fs in cells.items():
            ref[b, :, i, j, k] = np.mean(fs, axis=0)
        assert len(cells) > 10  # the check covers many occupied cells and empty ones
    np.testing.assert_allclose(grid.numpy(), ref, atol=1e-12)


def test_trilinear_devoxelize_matches_the_weights():
    g = torch.Generator().manual_seed(2)
    r = 5
    grid = torch.randn(2, 3, r, r, r, generator=g, dtype=torch.float64)
    vc = torch.rand(2, 3, 40, generator=g, dtype=torch.float64) * (r - 1)
    vc[0, :, 0] = torch.tensor([0.0, r - 1.0, 2.0])  # corners and integer positions exactly
    out = P.trilinear_devoxelize(grid, vc)
    ref = np.zeros((2, 3, 40))
    for b, n in itertools.product(range(2), range(40)):
        x, y, z = (float(v) for v in vc[b, :, n])
        lo = [int(np.floor(v)) for v in (x, y, z)]
        for dx, dy, dz in itertools.product((0, 1), repeat=3):
            i, j, k = lo[0] + dx, lo[1] + dy, lo[2] + dz
            w = ((x - lo[0]) if dx else (1 - (x - lo[0]))) * ((y - lo[1]) if dy else (1 - (y - lo[1]))) \
                * ((z - lo[2]) if dz else (1 - (z - lo[2])))
            if w > 0:
                ref[b, :, n] += w * grid[b, :, i, j, k].numpy()
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)


def test_voxelize_then_devoxelize_returns_a_constant_field():
    x = _cloud(N=300)
    vc = P.normalize_voxel_coords(x, 6)
    feats = torch.full((2, 4, 300), 3.5, dtype=torch.float64)
    grid = P.avg_voxelize(feats, vc, 6)
    assert torch.allclose(P.trilinear_devoxelize(grid, torch.round(vc)), feats)


def _naive_fps(pts: np.ndarray, m: int) -> list[int]:
    chosen = [0]
    dist = np.full(len(pts), np.inf)
    for _ in range(1, m):
        dist = np.minimum(dist, ((pts - pts[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(dist)))  # first maximum, as the kernel's reduction and ours
    return chosen


def test_farthest_point_sample_matches_a_naive_loop():
    x = _cloud(B=3, N=150, seed=3)
    idx = P.farthest_point_sample(x, 40)
    for b in range(3):
        assert idx[b].tolist() == _naive_fps(x[b].T.numpy(), 40)
    assert len(set(idx[0].tolist())) == 40  # distinct points


def test_ball_query_matches_brute_force_with_first_index_padding():
    x = _cloud(B=2, N=120, seed=4)
    centers = P.gather(x, P.farthest_point_sample(x, 10))
    centers[1, :, 3] = 5.0  # a centre with no point in reach: every slot is index 0
    radius, k = 0.2, 8
    idx = P.ball_query(centers, x, radius, k)
    assert idx.shape == (2, 10, k)
    saw_padding = False
    for b, m in itertools.product(range(2), range(10)):
        d2 = ((x[b] - centers[b, :, m:m + 1]) ** 2).sum(0).numpy()
        found = [n for n in range(120) if d2[n] < radius ** 2][:k]
        expect = found + [found[0] if found else 0] * (k - len(found))
        saw_padding |= 0 < len(found) < k
        assert idx[b, m].tolist() == expect, (b, m)
    assert saw_padding and idx[1, 3].tolist() == [0] * k


def test_gather_and_three_nn_interpolation_match_loops():
    g = torch.Generator().manual_seed(5)
    pts = torch.rand(2, 3, 30, generator=g, dtype=torch.float64)
    centers = torch.rand(2, 3, 7, generator=g, dtype=torch.float64)
    feats = torch.randn(2, 4, 7, generator=g, dtype=torch.float64)
    out = P.three_nn_interpolate(pts, centers, feats)
    for b, n in itertools.product(range(2), range(30)):
        d2 = ((centers[b] - pts[b, :, n:n + 1]) ** 2).sum(0)
        near = torch.argsort(d2)[:3]
        w = 1 / d2[near]
        ref = (feats[b][:, near] * (w / w.sum())).sum(1)
        assert torch.allclose(out[b, :, n], ref, atol=1e-8)
    # a point on a centre takes that centre's features
    on = P.three_nn_interpolate(centers[:, :, :1], centers, feats)
    assert torch.allclose(on[:, :, 0], feats[:, :, 0], atol=1e-6)
    idx = torch.tensor([[[1, 2], [0, 6]], [[3, 3], [5, 4]]])
    gathered = P.gather(feats, idx)
    assert gathered.shape == (2, 4, 2, 2)
    assert torch.equal(gathered[1, :, 1, 0], feats[1, :, 5])

"""Known-value tests for the point-cloud distances and the MMD / COV / 1-NNA metrics."""

import numpy as np
import pytest
import torch

from hyperdiffusion.evaluation import metrics


def _cloud(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 3))


def test_chamfer_identical_is_zero():
    x = _cloud(100, 0)
    assert metrics.chamfer(x, x) == 0.0
    assert metrics.chamfer(x, x[::-1]) == 0.0


def test_chamfer_hand_computed():
    x = np.array([[0.0, 0, 0], [1, 0, 0]])
    y = np.array([[0.0, 0, 0], [0, 2, 0], [3, 0, 0]])
    # x -> y: nearest squared distances 0 and 1 -> mean 0.5
    # y -> x: 0, min(4, 1 + 4) = 4, min(9, 4) = 4 -> mean 8/3
    assert metrics.chamfer(x, y) == pytest.approx(0.5 + 8 / 3)


@pytest.mark.parametrize("solver", ["pot", "lsa"])
def test_exact_emd_permutation_and_shift(solver):
    x = _cloud(64, 1)
    perm = np.random.default_rng(2).permutation(64)
    assert metrics.emd_exact(x, x[perm], solver=solver) == pytest.approx(0.0, abs=1e-12)
    shift = np.array([0.3, -0.4, 0.0])  # length 0.5
    # A translation's optimal matching is the identity (Brenier), cost = |shift| per point.
    assert metrics.emd_exact(x, x + shift, solver=solver) == pytest.approx(0.5, rel=1e-9)
    assert metrics.emd_exact(x, x + shift, squared=True, solver=solver) == pytest.approx(0.25, rel=1e-9)


def test_exact_emd_rejects_unequal_sizes():
    with pytest.raises(ValueError):
        metrics.emd_exact(_cloud(10, 0), _cloud(11, 1))


@pytest.mark.parametrize("squared", [False, True])
def test_auction_emd_within_bound_of_exact(squared):
    cfg = metrics.AuctionConfig()
    xs = np.stack([_cloud(128, s) for s in range(3)])
    ys = np.stack([_cloud(128, 10 + s) * 1.5 + 0.2 for s in range(3)])
    est, lower = metrics.emd_auction(torch.tensor(xs), torch.tensor(ys), squared=squared, cfg=cfg, with_bound=True)
    for k in range(3):
        exact = metrics.emd_exact(xs[k], ys[k], squared=squared)
        cost = np.linalg.norm(xs[k][:, None] - ys[k][None], axis=-1)
        cmax = (cost**2 if squared else cost).max()
        # eps-complementary slackness: exact <= estimate <= exact + eps_final * max cost
        assert exact - 1e-9 <= est[k].item() <= exact + cfg.eps_final * cmax + 1e-9
        assert lower[k].item() <= exact + 1e-9
        # documented measured error on real shapes is <= 0.1 %; random clouds stay within 1 %
        assert (est[k].item() - exact) / exact < 0.01


def test_auction_emd_zero_for_permuted_cloud():
    x = _cloud(64, 3)
    y = x[np.random.default_rng(0).permutation(64)]
    est = metrics.emd_auction(torch.tensor(x[None]), torch.tensor(y[None]))
    assert est.item() == pytest.approx(0.0, abs=1e-9)


def test_one_nna_far_sets_and_same_distribution():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 64, 3))
    b = rng.normal(size=(40, 64, 3)) + 10.0
    d = lambda p, q=None: metrics.pairwise_chamfer(p, q)
    assert metrics.one_nna(d(a), d(a, b), d(b)) == 1.0
    # Two samples of one distribution: 1-NNA ~ 0.5. With 2 x 60 points the
    # accuracy has a standard deviation of about sqrt(0.25 / 120) = 0.046; allow 4 sigma.
    a = rng.normal(size=(60, 64, 3))
    b = rng.normal(size=(60, 64, 3))
    assert abs(metrics.one_nna(d(a), d(a, b), d(b)) - 0.5) < 4 * 0.046


def test_mmd_cov_hand_case():
    # d_sr[sample, reference]
    d_sr = np.array([[1.0, 5.0, 9.0],
                     [2.0, 3.0, 8.0],
                     [0.5, 6.0, 7.0]])
    mmd, cov = metrics.mmd_cov(d_sr)
    assert mmd == pytest.approx((0.5 + 3.0 + 7.0) / 3)  # each reference's nearest sample
    assert cov == pytest.approx(1 / 3)  # every sample's nearest reference is reference 0


def test_one_nna_hand_case():
    # 2 samples, 2 references; sample 0's nearest is sample 1 (right), sample 1's is ref 0 (wrong),
    # ref 0's nearest is sample 1 (wrong), ref 1's nearest is ref 0 (right) -> 0.5
    d_ss = np.array([[0, 1.0], [1.0, 0]])
    d_sr = np.array([[2.0, 3.0], [0.5, 4.0]])
    d_rr = np.array([[0, 0.8], [0.8, 0]])
    assert metrics.one_nna(d_ss, d_sr, d_rr) == 0.5


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_kdtree_equals_torch_pairwise(dtype, rtol):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 200, 3))
    b = rng.normal(size=(7, 150, 3))
    ref = np.array([[metrics.chamfer(x, y) for y in b] for x in a])
    kd = metrics.pairwise_chamfer(a, b, backend="kdtree")
    # a tiny block budget forces several blocks in both directions
    th = metrics.pairwise_chamfer(a, b, backend="torch", dtype=dtype, max_block_bytes=3 * 200 * 150 * 8)
    np.testing.assert_allclose(kd, ref, rtol=1e-12)
    np.testing.assert_allclose(th, kd, rtol=rtol)
    sym = metrics.pairwise_chamfer(a)
    np.testing.assert_allclose(sym, sym.T)
    np.testing.assert_allclose(np.diag(sym), 0)


def test_pairwise_emd_modes_agree():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 64, 3))
    b = rng.normal(size=(3, 64, 3)) + 0.5
    exact = metrics.pairwise_emd(a, b, mode="exact")
    approx = metrics.pairwise_emd(a, b, mode="approx")
    # The auction's proven bound per pair: exact <= approx <= exact + eps_final x that pair's max cost.
    cmax = np.array([[np.linalg.norm(x[:, None] - y[None], axis=-1).max() for y in b] for x in a])
    assert np.all(approx >= exact - 1e-9)
    assert np.all(approx <= exact + metrics.AuctionConfig().eps_final * cmax + 1e-9)
    sym = metrics.pairwise_emd(a, mode="exact")
    np.testing.assert_allclose(sym, sym.T)
    assert sym[0, 1] == pytest.approx(metrics.emd_exact(a[0], a[1]))


def test_normalisation_modes():
    cloud = np.array([[[0.0, 0, 0], [2, 0, 0], [0, 4, 0], [2, 4, 2]]])
    np.testing.assert_array_equal(metrics.normalize_clouds(cloud, "none"), cloud)
    bbox = metrics.normalize_clouds(cloud, "bbox")
    # box centre (1, 2, 1), longest side 4 -> half is 2
    np.testing.assert_allclose(bbox[0], (cloud[0] - [1, 2, 1]) / 2)
    hd = metrics.normalize_clouds(cloud, "hd")
    mean = cloud[0].mean(axis=0)
    std = cloud[0].reshape(-1).std(ddof=1)  # scalar std of all 12 coordinates
    np.testing.assert_allclose(hd[0], (cloud[0] - mean) / std)
    np.testing.assert_allclose(hd[0].mean(axis=0), 0, atol=1e-12)
    with pytest.raises(ValueError):
        metrics.normalize_clouds(cloud, "unit")


def test_subsample_is_seeded_subset():
    c = np.random.default_rng(0).normal(size=(2, 50, 3))
    s1 = metrics.subsample_clouds(c, 10, seed=3)
    s2 = metrics.subsample_clouds(c, 10, seed=3)
    np.testing.assert_array_equal(s1, s2)
    assert s1.shape == (2, 10, 3)
    assert all(any(np.array_equal(p, q) for q in c[0]) for p in s1[0])


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
def test_pairwise_chamfer_progress_counts_pairs(backend):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 30, 3)), rng.normal(size=(6, 20, 3))
    for x, y, pairs in ((a, b, 24), (a, None, 16)):
        done = []
        metrics.pairwise_chamfer(x, y, backend=backend, progress=done.append, max_block_bytes=2 * 30 * 30 * 4)
        assert sum(done) == pairs and len(done) > 1  # several reports, adding up to K x L


def test_chamfer_backend_names():
    assert metrics.chamfer_backend_name("kdtree") == "scipy-kdtree float64"
    assert metrics.chamfer_backend_name("torch", "cuda", torch.float32) == "torch float32 cuda"
    assert metrics.chamfer_backend_name("torch", "cpu", torch.float64) == "torch float64 cpu"
    with pytest.raises(ValueError):
        metrics.chamfer_backend_name("brute")

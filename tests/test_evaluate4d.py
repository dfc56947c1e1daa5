"""4D evaluation: the sequence distance is the mean of frame-aligned distances; evaluate detects 4D."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyperdiffusion.evaluation import metrics
from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate
from hyperdiffusion.evaluation.evaluate4d import is_4d_source


def test_sequence_chamfer_is_mean_of_frame_distances_hand_case():
    # 2 frames of 2 points. Sequence A: frame 0 {(0,0,0), (1,0,0)}, frame 1 {(0,0,0), (0,2,0)}.
    # Sequence B: frame 0 the same as A's, frame 1 shifted by (0,0,1).
    a = np.array([[[[0, 0, 0], [1, 0, 0]], [[0, 0, 0], [0, 2, 0]]]], float)
    b = a.copy()
    b[0, 1] += [0, 0, 1]
    # frame 0: CD 0; frame 1: every point 1 away in both directions: 1 + 1 = 2 (squared, mean both ways)
    d = metrics.pairwise_frames(a, b, metrics.pairwise_chamfer)
    assert d.shape == (1, 1) and d[0, 0] == pytest.approx((0 + 2) / 2)
    # frame-aligned: swapping B's frames changes the distance (frames are not matched freely)
    swapped = metrics.pairwise_frames(a, b[:, ::-1], metrics.pairwise_chamfer)
    assert swapped[0, 0] != pytest.approx(d[0, 0])


def test_sequence_emd_is_mean_of_frame_emds():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 16, 3)), rng.normal(size=(3, 3, 16, 3))
    d = metrics.pairwise_frames(a, b, metrics.pairwise_emd, mode="exact")
    want = np.mean([[[metrics.emd_exact(a[i, f], b[j, f]) for j in range(3)] for i in range(2)]
                    for f in range(3)], axis=0)
    np.testing.assert_allclose(d, want, rtol=1e-6)
    assert (d > 0).all()  # a real EMD, not the official zeros
    # hand case: one point per frame, frame distances 1 and 3 -> mean 2
    x = np.zeros((1, 2, 1, 3))
    y = np.zeros((1, 2, 1, 3))
    y[0, 0, 0, 0], y[0, 1, 0, 0] = 1.0, 3.0
    assert metrics.pairwise_frames(x, y, metrics.pairwise_emd, mode="exact")[0, 0] == pytest.approx(2.0)
    assert metrics.pairwise_frames(x, y, metrics.pairwise_chamfer)[0, 0] == pytest.approx((2 * 1 + 2 * 9) / 2)


def test_evaluate_detects_4d_and_records_modes(tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(3, 4, 64, 3))
    samples = ref + rng.normal(scale=0.05, size=ref.shape)
    sdir, rdir = tmp_path / "s" / "clouds", tmp_path / "r"
    sdir.mkdir(parents=True)
    rdir.mkdir()
    for i in range(3):
        np.save(sdir / f"s{i}.npy", samples[i].astype(np.float32))
        np.save(rdir / f"r{i}.npy", ref[i].astype(np.float32))
    assert is_4d_source(tmp_path / "s") and is_4d_source(rdir)
    cfg = EvalConfig(norm="none", emd="exact", n_points=64, fpd_net=None, train=str(rdir))
    m = evaluate(tmp_path / "s", rdir, cfg, progress=False)
    assert m["modes"]["kind"] == "4d" and m["modes"]["frames"] == 4 and m["modes"]["emd"]["mode"] == "exact"
    # each sample is its own reference's noisy copy: perfect coverage, nearest = its own source
    assert m["cov_cd"] == 1.0 and m["cov_emd"] == 1.0
    want = metrics.pairwise_frames(samples, ref, metrics.pairwise_chamfer).min(axis=0).mean()
    assert m["mmd_cd"] == pytest.approx(want, rel=1e-5)
    assert [r["train_name"] for r in m["novelty"]["nearest"]] == ["r0", "r1", "r2"]
    json.dumps(m)  # serialisable

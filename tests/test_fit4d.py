"""4D MLPs: weight-vector round trip, the official 4D batch, and an analytic moving-sphere fit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hyperdiffusion.fields import fit4d
from hyperdiffusion.fields.fit import PRESETS, fit_quality, fit_shapes
from hyperdiffusion.fields.mlp import (MLPConfig, OccupancyMLP, batched_forward, default_init, load_weight_set,
                                       mlp4d, save_weight_set, split_weights)


def test_4d_mlp_size_and_round_trip(tmp_path):
    cfg = mlp4d()
    assert cfg.encoded_dim == 36 and cfg.n_params == 37_889  # paper's 4D MLP (REFERENCE.md "4D")
    module = OccupancyMLP(cfg)
    vec = module.to_vector()
    assert vec.shape == (37_889,)
    x = torch.rand(1, 50, 4) - 0.5
    np.testing.assert_allclose(batched_forward(vec[None], x, cfg)[0].detach(), module(x[0]).detach(), atol=1e-5)
    back = OccupancyMLP.from_vector(vec, cfg).to_vector()
    assert torch.equal(back, vec)
    w = default_init(cfg, 3, torch.Generator().manual_seed(0))
    save_weight_set(tmp_path / "w.safetensors", w, ["a", "b", "c"], cfg)
    ws = load_weight_set(tmp_path / "w.safetensors")
    assert ws.mlp == cfg and ws.mlp.t_mode == cfg.t_mode and torch.equal(ws.weights, w)
    # 3D weight files keep their fields; a 4D file without t_mode means the official raw index
    assert "t_mode" not in MLPConfig().to_dict()
    assert MLPConfig.from_dict({"in_dim": 4}).t_mode == "index"
    assert [t.shape for t in split_weights(w, cfg)][0] == (3, 128, 36)


def test_frame_times():
    np.testing.assert_array_equal(mlp4d("index").frame_times(16), np.arange(16))
    t = mlp4d("normalised").frame_times(16)
    assert t.min() > -0.5 and t.max() < 0.5 and torch.allclose(t, -t.flip(0))


def test_official_4d_batch_draw():
    starts = torch.tensor([0, 10, 30, 60])  # 3 frames of 10, 20, 30 points
    idx = fit4d.draw_frame_indices(starts, 200, 7, torch.Generator().manual_seed(0))
    assert idx.shape == (200, 7) and idx.min() >= 0 and idx.max() < 60
    frame = torch.bucketize(idx, starts[1:], right=True)
    # the points of a step come in even groups (3, 2, 2), each group from one frame
    assert (frame[:, 0] == frame[:, 1]).all() and (frame[:, 1] == frame[:, 2]).all()
    assert (frame[:, 3] == frame[:, 4]).all() and (frame[:, 5] == frame[:, 6]).all()
    # frames drawn uniformly with replacement, whatever their sizes: groups differ at times
    counts = torch.bincount(frame[:, 0], minlength=3).float() / 200
    assert (counts > 0.2).all() and (frame[:, 0] != frame[:, 3]).any()


def moving_sphere(n_frames=16, n=2000, n_uniform=8000, seed=0):
    """A sphere moving on a circle and breathing: per-frame samples with exact labels."""
    rng = np.random.default_rng(seed)
    points, occ = [], []
    for f in range(n_frames):
        a = 2 * np.pi * f / n_frames
        c = np.array([0.15 * np.cos(a), 0.1 * np.sin(a), 0.0])
        r = 0.26 + 0.04 * np.sin(a)
        d = rng.normal(size=(n, 3))
        surf = c + r * d / np.linalg.norm(d, axis=1, keepdims=True) + rng.normal(0, 0.01, (n, 3))
        uni = rng.uniform(-0.5, 0.5, (n_uniform, 3))
        p = np.concatenate([surf, uni]).astype(np.float32)
        points.append(p)
        occ.append((np.linalg.norm(p - c, axis=1) < r).astype(np.uint8))
    return np.stack(points), np.stack(occ)


@pytest.mark.parametrize("t_mode", ["normalised"])
def test_moving_sphere_fit(t_mode):
    torch.manual_seed(0)
    points, occ = moving_sphere()
    mlp = mlp4d(t_mode)
    # 400 steps of 1024 points (16 frames x 64), cosine lr; ~2,400 held-out uniform points per frame
    cfg = replace(PRESETS["cpu"], holdout_fraction=0.3, schedule="cosine", max_epochs=16, lr=5e-3)
    seq = fit4d.split_sequence("sphere", points, occ, 2000, mlp.frame_times(16), cfg)
    assert seq.train_points.shape[1] == 4
    init = default_init(mlp, 1, torch.Generator().manual_seed(0))[0]
    weights, records = fit_shapes([seq], init, cfg, mlp)
    q = fit_quality(weights, [seq], mlp)[0]
    assert len(q["iou_frames"]) == 16
    assert q["iou_frame_worst"] >= 0.95, q["iou_frames"]
    assert q["iou_frame_mean"] == pytest.approx(np.mean(q["iou_frames"]))


def test_4d_prepare_fit_mesh_evaluate_end_to_end(tmp_path):
    """The 4D stages through their files: .anime -> prepare -> fit -> mesh -> evaluate."""
    import json

    import trimesh

    from hyperdiffusion.data.animation import write_anime
    from hyperdiffusion.data.prepare import PrepareConfig, prepare
    from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate
    from hyperdiffusion.fields.fit import fit_dataset
    from hyperdiffusion.fields.mesh import MeshConfig, mesh_weights

    src = tmp_path / "src"
    src.mkdir()
    ball = trimesh.creation.icosphere(2, radius=1.0)
    for i in range(3):  # three balls that stretch along x differently over 6 frames
        frames = np.stack([ball.vertices * [1 + (0.1 + 0.1 * i) * k, 1, 1] for k in range(6)])
        write_anime(src / f"s{i}.anime", frames, ball.faces)
    cfg = PrepareConfig(n_surface=400, n_uniform=400, n_cloud=64, workers=1, split_fractions=(1, 0, 0))
    prepare(src, tmp_path / "data", cfg, progress=False)
    fit_cfg = replace(PRESETS["cpu"], max_epochs=6, steps_per_epoch=10, points_per_step=512, schedule="cosine",
                      lr=5e-3)
    weights = fit_dataset(tmp_path / "data", tmp_path / "fit", fit_cfg, split="all", progress=False)
    meta = json.loads((tmp_path / "fit" / "weights.json").read_text())
    assert meta["mlp"]["in_dim"] == 4 and meta["mlp"]["t_mode"] == "normalised"
    quality = json.loads((tmp_path / "fit" / "fit_quality.json").read_text())
    assert len(quality["shapes"]["s0"]["iou_frames"]) == 16 and "frames" in quality["summary"]
    status = mesh_weights(weights, tmp_path / "mesh", MeshConfig(res=20, n_points=64), device="cpu", progress=False)
    assert set(status) == {"s0", "s1", "s2"}
    assert all(s == "ok" for s in status.values()), status
    for n in status:
        assert np.load(tmp_path / "mesh" / "clouds" / f"{n}.npy").shape == (16, 64, 3)
    m = evaluate(tmp_path / "mesh", tmp_path / "data",
                 EvalConfig(split="train", n_points=64, emd="off", fpd_net=None, norm="none"), progress=False)
    assert m["modes"]["kind"] == "4d" and m["modes"]["frames"] == 16 and m["cov_cd"] > 0

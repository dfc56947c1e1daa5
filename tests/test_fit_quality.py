"""Fit evaluation (issue 13): the evaluation set, the scores on known answers, and the two ablation switches."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh

from hyperdiffusion.data.prepare import PrepareConfig, load_eval_set, load_samples, make_eval_set, prepare
from hyperdiffusion.evaluation.surface_scores import EMPTY_DISTANCE, mesh_scores, point_scores, volume_iou
from hyperdiffusion.fields import fit as fit_module
from hyperdiffusion.fields.fit import PRESETS, fit_dataset, random_inits
from hyperdiffusion.fields.fit_eval import ScoreConfig
from hyperdiffusion.fields.mlp import MLPConfig, default_init, load_weight_set

MLP = MLPConfig(hidden=16)
TINY_FIT = replace(PRESETS["cpu"], points_per_step=256, steps_per_epoch=5, max_epochs=2)
TINY_SCORES = ScoreConfig(mesh_res=24, n_points=2000, n_boot=200)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    src = tmp_path_factory.mktemp("meshes")
    trimesh.creation.icosphere(3, radius=1.0).export(src / "ball.ply")
    trimesh.creation.box(extents=(2, 1, 0.5)).export(src / "brick.ply")
    trimesh.creation.cylinder(0.4, 2.0).export(src / "rod.ply")
    return src


# ----------------------------------------------------------------------------- scores with known answers


def _sphere(n: int, r: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    u = d / np.linalg.norm(d, axis=1, keepdims=True)
    return r * u, u


def test_chamfer_normals_fscore_of_concentric_spheres():
    # Every point of the r = 0.30 sphere is 0.02 from the r = 0.32 sphere, along the shared normal:
    # Chamfer-L1 = 0.02 (up to the sample spacing, ~0.004 sideways), normal consistency 1,
    # F-score 0 at tau = 1 % (all distances > 0.01) and 1 at tau = 3 %.
    inner, n_in = _sphere(20_000, 0.30, 0)
    outer, n_out = _sphere(20_000, 0.32, 1)
    s = point_scores(outer, n_out, inner, n_in)
    assert 0.02 <= s["accuracy"] < 0.0215 and 0.02 <= s["completeness"] < 0.0215
    assert s["chamfer_l1"] == pytest.approx(0.5 * (s["accuracy"] + s["completeness"]))
    assert s["normal_consistency"] > 0.999 and s["fscore"] == 0.0
    assert point_scores(outer, n_out, inner, n_in, tau=0.03)["fscore"] == 1.0
    # Orientation is not scored (|cos|); perpendicular normals score 0.
    assert point_scores(outer, -n_out, inner, n_in)["normal_consistency"] > 0.999
    tangent = np.cross(n_out, [0.0, 0.0, 1.0])
    assert point_scores(outer, tangent, inner, n_in)["normal_consistency"] < 0.01


def test_fscore_precision_recall_closed_form():
    # The prediction is the truth plus 1/4 extra points far away: precision 3/4, recall 1,
    # F = 2 * 0.75 / 1.75; accuracy = (1/4) * 0.4 exactly (distance 0 for the rest).
    g = np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 60), np.linspace(-0.4, 0.4, 60), [0.0]), -1).reshape(-1, 3)
    normals = np.tile([0.0, 0.0, 1.0], (len(g), 1))
    far = g[: len(g) // 3] + [0.0, 0.0, 0.4]
    pred = np.concatenate([g, far])
    s = point_scores(pred, np.concatenate([normals, normals[: len(far)]]), g, normals)
    assert s["precision"] == pytest.approx(0.75) and s["recall"] == 1.0
    assert s["fscore"] == pytest.approx(2 * 0.75 / 1.75)
    assert s["accuracy"] == pytest.approx(0.25 * 0.4) and s["completeness"] == 0.0


def test_mesh_scores_of_offset_boxes_and_empty_prediction():
    # Two boxes 0.5 x 0.3 x 0.2, one shifted by 0.004 along x: almost all of the surface lies
    # within 1 % of the other, the faces are parallel; an empty prediction gets the worst values.
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.2))
    moved = box.copy()
    moved.apply_translation([0.004, 0.0, 0.0])
    pts, nrm = trimesh.sample.sample_surface(box, 30_000, seed=0)
    s = mesh_scores(moved, np.asarray(pts), box.face_normals[nrm], n_points=30_000, seed=1)
    assert s["fscore"] > 0.95 and s["normal_consistency"] > 0.97 and s["chamfer_l1"] < 0.004
    empty = mesh_scores(None, np.asarray(pts), box.face_normals[nrm])
    assert empty["chamfer_l1"] == EMPTY_DISTANCE and empty["fscore"] == 0.0 and empty["normal_consistency"] == 0.0


def test_volume_iou_counts_strata_and_interval():
    # One stratum: 30 both, 10 predicted only, 60 neither -> 30 / 40.
    pred = np.r_[np.ones(40, bool), np.zeros(60, bool)]
    true = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    r = volume_iou(pred, true)
    assert r["iou"] == pytest.approx(0.75) and r["n_inside"] == 30 and r["n_union"] == 40
    assert r["ci_low"] < 0.75 < r["ci_high"] and 0.15 < r["ci_high"] - r["ci_low"] < 0.4  # ~ Wilson's 0.27
    # Two strata of volumes 0.1 and 0.9, 100 points each: intersection 0.1 * 0.5,
    # union 0.1 * 0.6 + 0.9 * 0.01 (one predicted-only point in the big stratum).
    pred = np.r_[np.ones(60, bool), np.zeros(40, bool), np.ones(1, bool), np.zeros(99, bool)]
    true = np.r_[np.ones(50, bool), np.zeros(150, bool)]
    stratum = np.repeat([0, 1], 100)
    r = volume_iou(pred, true, stratum, [0.1, 0.9])
    assert r["iou"] == pytest.approx(0.05 / (0.06 + 0.009))
    assert math.isnan(volume_iou(np.zeros(0, bool), np.zeros(0, bool))["iou"])


def test_eval_set_volume_iou_of_shifted_sphere_matches_closed_form():
    # The evaluation set of a sphere (radius 0.3) scores a prediction that is the same sphere shifted
    # by d = 0.06: IoU = lens / (2 V - lens), lens = pi (4R + d)(2R - d)^2 / 12. The shift leaves the
    # shell stratum, so the far stratum's weighting is part of what is checked.
    mesh = trimesh.creation.icosphere(4, radius=0.3)
    ev = make_eval_set(mesh, PrepareConfig(n_surface=20_000, n_uniform=20_000), "ball")
    vol = ev["stratum"] < 2
    x, st, true = ev["points"][vol], ev["stratum"][vol], ev["occ"][vol].astype(bool)
    assert ev["volumes"].sum() == pytest.approx(1.0) and 0 < ev["volumes"][0] < 0.2
    # The stratified volume estimate is unbiased: within 4 standard errors of the mesh's volume.
    frac = [true[st == s].mean() for s in (0, 1)]
    inside_volume = sum(ev["volumes"][s] * frac[s] for s in (0, 1))
    se = math.sqrt(sum(ev["volumes"][s] ** 2 * frac[s] * (1 - frac[s]) / (st == s).sum() for s in (0, 1)))
    assert abs(inside_volume - mesh.volume) < 4 * se and se < 0.01
    R, d = 0.3, 0.06
    pred = np.linalg.norm(x - [d, 0, 0], axis=1) < R
    r = volume_iou(pred, true, st, ev["volumes"])
    lens = math.pi * (4 * R + d) * (2 * R - d) ** 2 / 12
    exact = lens / (2 * 4 / 3 * math.pi * R**3 - lens)
    assert r["ci_low"] - 0.01 < exact < r["ci_high"] + 0.01 and r["iou"] == pytest.approx(exact, abs=0.02)
    assert r["n_inside"] > 1000


# ----------------------------------------------------------------------------- the evaluation set in prepare and fit


def test_eval_set_is_never_a_training_point_and_prepare_adds_it_to_old_datasets(meshes, tmp_path, capsys,
                                                                               monkeypatch):
    data = tmp_path / "data"
    old = PrepareConfig(n_surface=1000, n_uniform=1000, workers=1, split_fractions=(1, 0, 0),
                        n_eval_shell=0, n_eval_far=0, n_eval_surface=0)
    prepare(meshes, data, old, progress=False)  # a dataset as made before the evaluation set existed
    names = ["ball", "brick", "rod"]
    assert all(load_eval_set(data, n) is None for n in names)
    fit_dataset(data, tmp_path / "fit", TINY_FIT, MLP, device="cpu", progress=False, scores=TINY_SCORES)
    assert "no evaluation set" in capsys.readouterr().out
    quality = json.loads((tmp_path / "fit" / "fit_quality.json").read_text())
    assert quality["summary"]["eval"]["n_scored"] == 0

    before = {n: (data / "shapes" / n / "samples.npz").read_bytes() for n in names}
    prepare(meshes, data, replace(old, n_eval_shell=None, n_eval_far=None, n_eval_surface=None), progress=False)
    for n in names:  # the resume step adds eval.npz and keeps the training samples
        assert (data / "shapes" / n / "samples.npz").read_bytes() == before[n]
        ev = load_eval_set(data, n)
        assert len(ev["points"]) == 600 and set(np.unique(ev["stratum"])) == {0, 1, 2}
        train, _, _ = load_samples(data, n)
        overlap = {tuple(p) for p in train.tolist()} & {tuple(p) for p in ev["points"].tolist()}
        assert not overlap

    # The fit reruns into the same folder: scores are added from the stored weights, nothing is refitted.
    monkeypatch.setattr(fit_module, "fit_shapes", lambda *a, **k: pytest.fail("refitted"))
    fit_dataset(data, tmp_path / "fit", TINY_FIT, MLP, device="cpu", progress=False, scores=TINY_SCORES)
    quality = json.loads((tmp_path / "fit" / "fit_quality.json").read_text())
    assert quality["summary"]["eval"]["n_scored"] == 3
    for q in quality["shapes"].values():
        assert q["eval_set"] and q["eval_n_points"] == 450
        assert q["eval_iou_ci"][0] <= q["eval_iou"] <= q["eval_iou_ci"][1]
        assert 0 <= q["fscore"] <= 1 and q["chamfer_l1"] > 0 and q["iou_uniform_ci"][0] <= q["iou_uniform"]
    assert "eval-set IoU" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the ablation switches


def test_multires_0_takes_raw_coordinates_and_trains_downstream(meshes, tmp_path):
    from hyperdiffusion.cli import main
    from hyperdiffusion.diffusion.sample import SampleConfig, sample
    from hyperdiffusion.diffusion.train import TrainConfig, train

    plain = MLPConfig(multires=0)
    assert plain.encoded_dim == 3 and plain.layer_dims()[0] == (3, 128)
    assert plain.n_params == MLPConfig().n_params - 128 * 24  # 27 -> 3 inputs
    data = tmp_path / "data"
    prepare(meshes, data, PrepareConfig(n_surface=500, n_uniform=500, workers=1, split_fractions=(1, 0, 0)),
            progress=False)
    assert main(["fit", str(data), str(tmp_path / "fit"), "--preset", "cpu", "--max-epochs", "1", "--multires", "0",
                 "--hidden", "16", "--score-res", "16", "--score-points", "500", "--no-progress"]) == 0
    ws = load_weight_set(tmp_path / "fit")
    assert ws.mlp.multires == 0 and ws.weights.shape == (3, MLPConfig(multires=0, hidden=16).n_params)
    # The diffusion model and the sampler take the layout from the weight set.
    train(tmp_path / "fit" / "weights.safetensors", tmp_path / "run",
          TrainConfig(preset="cpu", n_embd=32, n_layer=1, n_head=2, batch_size=3, max_steps=2, ckpt_every=2,
                      log_every=1, val_every_epochs=0), progress=False)
    sample(tmp_path / "run", tmp_path / "samples", SampleConfig(n=2, steps=2, batch_size=2, device="cpu", res=12),
           progress=False)
    assert load_weight_set(tmp_path / "samples").mlp == ws.mlp


def test_init_random_starts_each_mlp_from_its_own_init(meshes, tmp_path):
    # lr 0: the fitted weights are the starting points. "first" starts every shape from the first
    # train shape's fit (here its seeded default init); "random" from per-shape inits.
    data = tmp_path / "data"
    prepare(meshes, data, PrepareConfig(n_surface=300, n_uniform=300, workers=1, split_fractions=(1, 0, 0),
                                        n_eval_shell=0, n_eval_far=0, n_eval_surface=0), progress=False)
    frozen = replace(TINY_FIT, max_epochs=1, lr=0.0)
    first = load_weight_set(fit_dataset(data, tmp_path / "first", frozen, MLP, device="cpu", progress=False))
    start = default_init(MLP, 1, torch.Generator().manual_seed(0))[0]
    assert all(torch.equal(w, start) for w in first.weights)
    assert first.meta["extra"]["first_weights_shape"] == "ball"

    rand = load_weight_set(fit_dataset(data, tmp_path / "random", replace(frozen, init="random"), MLP, device="cpu",
                                       progress=False))
    assert torch.equal(rand.weights, random_inits(MLP, rand.names, 0))
    assert not any(torch.equal(w, start) for w in rand.weights)
    assert len({tuple(w[:5].tolist()) for w in rand.weights}) == 3  # three different starts
    assert rand.meta["extra"]["first_weights_shape"] is None and not (tmp_path / "random" / "chunks" /
                                                                       "first.safetensors").exists()
    # Per-shape seeds: the same shape gets the same start in any batch.
    assert torch.equal(random_inits(MLP, ["rod"], 0)[0], random_inits(MLP, ["ball", "rod"], 0)[1])
    with pytest.raises(ValueError, match="init"):
        replace(TINY_FIT, init="zeros")

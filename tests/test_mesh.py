"""Grid evaluation against the plain forward pass, marching-cubes placement, the mesh stage."""

import json

import numpy as np
import pytest
import torch

from hyperdiffusion.fields import mesh as mesh_module
from hyperdiffusion.fields.mesh import MeshConfig, evaluate_grid, extract_meshes, field_to_mesh, mesh_weights
from hyperdiffusion.fields.mlp import MLPConfig, WeightSet, batched_forward, default_init, flatten_weights, save_weight_set

MLP = MLPConfig(hidden=8)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


def _grid_points(res):
    g = torch.linspace(-0.5, 0.5, res)
    return torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)


def octahedron_mlp(radius: float, cfg: MLPConfig = MLP) -> torch.Tensor:
    """An exact ReLU MLP for logit = radius - (|x| + |y| + |z|), using the encoding's raw x, y, z columns."""
    h = cfg.hidden
    w1 = torch.zeros(h, cfg.encoded_dim)
    for d in range(3):  # units 2d, 2d+1 = relu(x_d), relu(-x_d)
        w1[2 * d, d], w1[2 * d + 1, d] = 1.0, -1.0
    eye = torch.eye(h)
    w4 = torch.zeros(1, h)
    w4[0, :6] = -1.0
    tensors = [w1, torch.zeros(h), eye, torch.zeros(h), eye, torch.zeros(h), w4, torch.tensor([radius])]
    return flatten_weights(tensors, cfg)


def constant_mlp(value: float, cfg: MLPConfig = MLP) -> torch.Tensor:
    w = torch.zeros(cfg.n_params)
    w[-1] = value  # the output bias
    return w


def test_evaluate_grid_matches_batched_forward():
    weights = default_init(MLP, 3, torch.Generator().manual_seed(1)) * 3
    res = 9
    grid = evaluate_grid(weights, MLP, res, chunk=2 * res * res)  # several slabs
    ref = batched_forward(weights, _grid_points(res).expand(3, -1, -1), MLP).reshape(3, res, res, res)
    assert torch.allclose(grid, ref, atol=1e-5)
    paper = MLPConfig()
    w = default_init(paper, 1, torch.Generator().manual_seed(2))
    ref = batched_forward(w, _grid_points(5)[None], paper).reshape(1, 5, 5, 5)
    assert torch.allclose(evaluate_grid(w, paper, 5), ref, atol=1e-5)


def test_marching_cubes_places_vertices_on_the_surface():
    res = 48
    p = _grid_points(res).numpy().reshape(res, res, res, 3)
    voxel = 1 / (res - 1)
    # sphere of radius 0.3: every vertex within a fraction of a voxel of the sphere
    mesh, status = field_to_mesh(0.3 - np.linalg.norm(p, axis=-1))
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert status == "ok" and np.abs(r - 0.3).max() < 0.25 * voxel
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.3**3, rel=0.02)  # positive: faces point outwards
    # an off-centre box: bounds per axis catch swapped axes, a wrong origin/spacing or a sheared grid
    c, h = np.array([0.1, -0.05, 0.02]), np.array([0.2, 0.15, 0.1])
    mesh, _ = field_to_mesh(np.min(h - np.abs(p - c), axis=-1))
    assert np.allclose(mesh.bounds, [c - h, c + h], atol=0.5 * voxel)


def test_empty_and_full_fields_warn_with_the_name(tmp_path):
    ws = WeightSet(torch.stack([constant_mlp(-5.0), octahedron_mlp(0.3), constant_mlp(5.0)]),
                   ["hollow", "octa", "solid"], MLP, {})
    with pytest.warns(UserWarning) as caught:
        meshes = extract_meshes(ws, res=16)
    assert meshes[0] is None and meshes[2] is None and meshes[1] is not None
    text = " ".join(str(w.message) for w in caught)
    assert "hollow" in text and "solid" in text and "octa" not in text


def test_non_finite_weights_get_a_status_not_a_traceback(tmp_path):
    bad = octahedron_mlp(0.3).clone()
    bad[5] = float("nan")  # one diverged weight poisons the whole field
    inf = constant_mlp(float("inf"))
    field = np.zeros((4, 4, 4), np.float32)
    field[1, 2, 3] = np.nan
    assert field_to_mesh(field) == (None, "non-finite")
    weights = torch.stack([octahedron_mlp(0.3), bad, inf, octahedron_mlp(0.25)])
    save_weight_set(tmp_path / "w" / "weights.safetensors", weights, ["a", "diverged", "infinite", "d"], MLP)
    out = tmp_path / "m"
    with pytest.warns(UserWarning) as caught:  # the run goes on past the bad samples, in the same batch
        status = mesh_weights(tmp_path / "w", out, MeshConfig(res=16, n_points=64, batch_shapes=4), "cpu",
                              progress=False)
    assert status == {"a": "ok", "diverged": "non-finite", "infinite": "non-finite", "d": "ok"}
    assert json.loads((out / "mesh.json").read_text())["status"] == status
    text = [str(w.message) for w in caught]
    assert len(text) == 2 and text[0].startswith("diverged: ") and text[1].startswith("infinite: ")
    assert sorted(p.name for p in (out / "clouds").iterdir()) == ["a.npy", "d.npy"]


def test_level_logit_moves_the_surface():
    ws = WeightSet(octahedron_mlp(0.3)[None], ["octa"], MLP, {})
    (m0,) = extract_meshes(ws, res=33)
    (m1,) = extract_meshes(ws, res=33, level_logit=0.1)  # |x|+|y|+|z| = 0.2
    assert np.abs(m0.vertices).sum(1).mean() == pytest.approx(0.3, abs=1e-3)
    assert np.abs(m1.vertices).sum(1).mean() == pytest.approx(0.2, abs=1e-3)


def test_mesh_stage_writes_and_resumes(tmp_path, monkeypatch):
    weights = torch.stack([octahedron_mlp(0.3), constant_mlp(-5.0), octahedron_mlp(0.25)])
    save_weight_set(tmp_path / "w" / "weights.safetensors", weights, ["a", "b/../empty", "c"], MLP)
    out = tmp_path / "m"
    cfg = MeshConfig(res=24, n_points=256, batch_shapes=2)
    with pytest.warns(UserWarning, match="empty"):
        status = mesh_weights(tmp_path / "w" / "weights.safetensors", out, cfg, "cpu", progress=False)
    assert status == {"a": "ok", "b/../empty": "empty", "c": "ok"}
    cloud = np.load(out / "clouds" / "a.npy")
    assert cloud.shape == (256, 3) and cloud.dtype == np.float32
    err = np.abs(np.abs(cloud).sum(1) - 0.3)  # samples lie on the octahedron (exact on its faces,
    assert np.median(err) < 1e-4 and err.max() < 1 / 23  # within a voxel where cubes cut its edges)
    assert (out / "meshes" / "c.ply").is_file() and not list(out.glob("meshes/*empty*"))
    assert json.loads((out / "mesh.json").read_text())["status"]["c"] == "ok"

    (out / "meshes" / "c.ply").unlink()  # as if the run died while writing c
    calls = []
    real = mesh_module.evaluate_grid
    monkeypatch.setattr(mesh_module, "evaluate_grid", lambda w, *a, **k: (calls.append(len(w)), real(w, *a, **k))[1])
    mesh_weights(tmp_path / "w", out, cfg, "cpu", progress=False)
    assert calls == [1] and (out / "meshes" / "c.ply").is_file()


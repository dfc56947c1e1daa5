"""4D meshing: a 4D MLP at a fixed frame as a 3D MLP, per-frame meshes, animated GLB and preview."""

from __future__ import annotations

import json
import struct

import numpy as np
import torch
import trimesh

from hyperdiffusion.fields.mesh import MeshConfig
from hyperdiffusion.fields.mesh4d import animated_glb, frame_weights, load_sequence_meshes, mesh_weights_4d
from hyperdiffusion.fields.mlp import batched_forward, default_init, mlp4d, save_weight_set


def test_frame_weights_equal_4d_mlp_at_that_frame():
    cfg = mlp4d("index")
    w = default_init(cfg, 2, torch.Generator().manual_seed(1))
    times = cfg.frame_times(16)
    w3, cfg3 = frame_weights(w, cfg, times)
    assert w3.shape == (32, cfg3.n_params) and cfg3.in_dim == 3
    x = torch.rand(2, 100, 3) - 0.5
    for f in (0, 5, 15):
        x4 = torch.cat([x, torch.full((2, 100, 1), float(times[f]))], dim=2)
        want = batched_forward(w, x4, cfg)
        got = batched_forward(w3[[f, 16 + f]], x, cfg3)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _sphere_mlp(tmp_path):
    """A hand-made 4D 'MLP' whose field is a sphere growing with t (first layer reads |x|^2 via cos)."""
    cfg = mlp4d("normalised", hidden=8)
    tensors = [torch.zeros(1, *s) for _, s in cfg.tensor_shapes()]
    # encoding index of cos(x_d) at frequency 1 is 4 + 4 + d = 8 + d (layout [x, sin x, cos x, ...] per 4 coords)
    # cos(x) ~ 1 - x^2 / 2, so sum_d cos(x_d) - 3 + r^2/2 > 0 inside a sphere of radius r.
    w1, b1 = tensors[0], tensors[1]
    w1[0, 0, 8:11] = 1.0
    w1[0, 0, 8 + 3] = 0.2  # + 0.2 cos(t): t = 0 gives the biggest sphere
    b1[0, 0] = -3.2 + 0.3**2 / 2
    tensors[2][0, 0, 0], tensors[4][0, 0, 0], tensors[6][0, 0, 0] = 1.0, 1.0, 100.0
    tensors[7][0, 0] = -1.0  # logit = 100 relu(h) - 1: inside where h > 0.01 (r = 0.26 at t = 0)
    w = torch.cat([t.reshape(1, -1) for t in tensors], dim=1)
    save_weight_set(tmp_path / "w.safetensors", w, ["ball"], cfg)
    return cfg


def test_mesh_weights_4d_writes_frames_glb_preview(tmp_path):
    _sphere_mlp(tmp_path)
    status = mesh_weights_4d(tmp_path / "w.safetensors", tmp_path / "out", MeshConfig(res=24, n_points=64),
                             progress=False)
    assert status == {"ball": "ok"}
    meshes = load_sequence_meshes(tmp_path / "out" / "sequences" / "ball")
    assert len(meshes) == 16 and all(m is not None for m in meshes)
    radii = [np.abs(m.vertices).max() for m in meshes]
    assert radii[8] > radii[0] and radii[8] > radii[15]  # the sphere is biggest at t ~ 0 (middle frames)
    cloud = np.load(tmp_path / "out" / "clouds" / "ball.npy")
    assert cloud.shape == (16, 64, 3)
    record = json.loads((tmp_path / "out" / "mesh.json").read_text())
    assert record["kind"] == "4d" and record["t_mode"] == "normalised"
    from PIL import Image

    gif = Image.open(tmp_path / "out" / "previews" / "ball.gif")
    # Pillow merges identical consecutive pictures (frames 7 and 8 sit at t = -/+1/32: the same sphere)
    assert 12 <= gif.n_frames <= 16


def test_animated_glb_has_step_animation(tmp_path):
    meshes = [trimesh.creation.box(extents=[0.2 + 0.05 * k] * 3) for k in range(4)] + [None]
    data = animated_glb(meshes, fps=4)
    (tmp_path / "a.glb").write_bytes(data)
    n = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + n])
    anim = gltf["animations"][0]
    assert len(anim["channels"]) == 4 and all(s["interpolation"] == "STEP" for s in anim["samplers"])
    assert struct.unpack_from("<I", data, 8)[0] == len(data)
    scene = trimesh.load(tmp_path / "a.glb")  # trimesh reads it back: 4 frame meshes
    assert len(scene.geometry) == 4

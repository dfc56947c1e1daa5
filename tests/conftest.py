import json

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation cost (10x on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weight_set(tmp_path_factory):
    """8 random-but-fixed tiny MLP weight vectors (nn.Linear's default init; hidden 16, multires 2, one
    hidden layer), as `fit` would write them: (path of weights.safetensors, weights [8, P])."""
    from hyperdiffusion.fields.mlp import MLPConfig, default_init, save_weight_set

    mlp = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)
    path = tmp_path_factory.mktemp("mlps") / "weights.safetensors"
    w = default_init(mlp, 8, torch.Generator().manual_seed(0))
    save_weight_set(path, w, [f"shape_{i}" for i in range(8)], mlp)
    return path, w


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory):
    """A prepared dataset: a sphere, a box and a torus to train on, a cylinder and a cone to test against."""
    import trimesh

    from hyperdiffusion.data.prepare import PrepareConfig, prepare

    src = tmp_path_factory.mktemp("meshes")
    trimesh.creation.icosphere(3).export(src / "sphere.ply")
    trimesh.creation.box(extents=(2, 1, 1)).export(src / "box.ply")
    trimesh.creation.torus(1.0, 0.3).export(src / "torus.ply")
    trimesh.creation.cylinder(0.4, 2.0).export(src / "cylinder.ply")
    trimesh.creation.cone(0.8, 1.5).export(src / "cone.ply")
    split = src / "split.json"
    split.write_text(json.dumps({"train": ["sphere", "box", "torus"], "val": [], "test": ["cylinder", "cone"]}))
    out = tmp_path_factory.mktemp("data") / "ds"
    prepare(src, out, PrepareConfig(n_surface=500, n_uniform=500, split_file=str(split), workers=1), progress=False)
    return out

"""The representation stack: each representation's encode -> decode round trip on a known shape, and a
checkpoint of each that samples with no argument but its path."""

import json

import numpy as np
import pytest
import torch
import trimesh

from hyperdiffusion.cli import main
from hyperdiffusion.data.prepare import PrepareConfig, prepare
from hyperdiffusion.fields.mlp import MLPConfig, default_init, load_weight_set, save_weight_set
from hyperdiffusion.representations import (REPRESENTATIONS, DecodeOptions, detect_representation,
                                            get_representation)
from hyperdiffusion.io import InputError


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def sphere_dataset(tmp_path_factory):
    """A prepared dataset of three spheres (radius 0.475 after normalisation) and a box."""
    src = tmp_path_factory.mktemp("meshes")
    for i in range(3):
        trimesh.creation.icosphere(4, radius=1.0 + i).export(src / f"sphere_{i}.ply")
    trimesh.creation.box(extents=(2, 1, 1)).export(src / "box.ply")
    split = src / "split.json"
    split.write_text(json.dumps({"train": ["sphere_0", "sphere_1", "box"], "val": [], "test": ["sphere_2"]}))
    out = tmp_path_factory.mktemp("data") / "ds"
    prepare(src, out, PrepareConfig(n_surface=500, n_uniform=500, split_file=str(split), workers=1), progress=False)
    return out


def test_registry_names_and_defaults():
    assert {"mlp3d", "voxel"} <= set(REPRESENTATIONS)
    assert REPRESENTATIONS["mlp3d"].default_denoiser == "transformer"
    assert REPRESENTATIONS["voxel"].default_denoiser == "unet3d"
    with pytest.raises(InputError, match="unknown representation"):
        get_representation("nerf")


def test_mlp3d_round_trip(tmp_path):
    mlp = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)
    w = default_init(mlp, 3, torch.Generator().manual_seed(0))
    save_weight_set(tmp_path / "weights.safetensors", w, ["a", "b", "c"], mlp)
    rep = get_representation("mlp3d")
    tset = rep.load(tmp_path / "weights.safetensors")
    assert torch.equal(tset.data, w) and tset.names == ["a", "b", "c"]
    assert sum(tset.layout) == mlp.n_params and tset.sample_shape == (mlp.n_params,)
    out = tmp_path / "samples"
    out.mkdir()
    path = rep.save_samples(out, tset.data, tset.names, tset.info, {"stage": "test"})
    back = load_weight_set(path)
    assert torch.equal(back.weights, w) and back.mlp == mlp
    assert detect_representation(tmp_path) == "mlp3d"


def test_voxel_round_trip_on_spheres(sphere_dataset, tmp_path):
    rep = get_representation("voxel")
    tset = rep.load(sphere_dataset, progress=False)
    assert tset.sample_shape == (1, 24, 24, 24)
    assert set(torch.unique(tset.data).tolist()) == {-1.0, 1.0}
    # Each train shape is normalised to max |coord| 0.475: a sphere fills V = 4/3 pi 0.475^3 of the
    # cube, and the 24^3 grid's cells are pitch^3 with pitch 0.95 / 23. The official recipe ("solid":
    # every voxel the surface touches, then fill) adds at most one layer of voxels outside the surface,
    # so V <= volume <= 4/3 pi (0.475 + pitch)^3 (measured: 1.18 V).
    assert tset.info["voxelisation"] == "solid"
    pitch = 0.95 / 23
    for name, grid in zip(tset.names, tset.data):
        if name.startswith("sphere"):
            volume = float((grid > 0).sum()) * pitch**3
            assert 4 / 3 * np.pi * 0.475**3 <= volume <= 4 / 3 * np.pi * (0.475 + pitch) ** 3, name
    # cached: a second load reads the grids back bit for bit
    assert torch.equal(rep.load(sphere_dataset, progress=False).data, tset.data)
    # decode: samples file -> meshes, clouds and mesh.json, with the sphere's surface back
    out = tmp_path / "s"
    out.mkdir()
    path = rep.save_samples(out, tset.data, tset.names, tset.info, {"stage": "test"})
    status = rep.decode(path, out, DecodeOptions(), progress=False)
    assert set(status.values()) == {"ok"} and len(status) == len(tset.names)
    for name in tset.names:
        cloud = np.load(out / "clouds" / f"{name}.npy")
        assert cloud.shape == (2048, 3)
        if name.startswith("sphere"):  # the surface lies within the outer layer of voxels (measured: 0.500)
            r = np.linalg.norm(cloud - cloud.mean(0), axis=1)
            assert 0.475 - pitch / 2 < np.median(r) < 0.475 + pitch, name
    assert json.loads((out / "mesh.json").read_text())["config"]["representation"] == "voxel"
    with pytest.raises(InputError, match="--representation"):
        detect_representation(sphere_dataset)


def test_non_finite_voxel_sample_gets_a_status(sphere_dataset, tmp_path):
    rep = get_representation("voxel")
    tset = rep.load(sphere_dataset, progress=False)
    x = tset.data[:2].clone()
    x[1, 0, 3, 3, 3] = float("nan")
    path = rep.save_samples(tmp_path, x, ["good", "bad"], tset.info, {})
    assert rep.decode(path, tmp_path, DecodeOptions(), progress=False) == {"good": "ok", "bad": "non-finite"}


@pytest.mark.parametrize("representation", ["mlp3d", "voxel"])
def test_checkpoint_samples_with_no_extra_arguments(representation, sphere_dataset, tmp_path):
    if representation == "mlp3d":
        mlp = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)
        data = tmp_path / "weights.safetensors"
        save_weight_set(data, default_init(mlp, 4, torch.Generator().manual_seed(0)), list("abcd"), mlp)
        extra = ["--n-embd", "32", "--n-layer", "1", "--n-head", "2"]
    else:
        data, extra = sphere_dataset, ["--representation", "voxel"]
    assert main(["train", str(data), str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "2",
                 "--no-progress", *extra]) == 0
    ckpt = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert ckpt["representation"]["name"] == representation and ckpt["version"] == 2
    assert ckpt["denoiser"]["name"] == REPRESENTATIONS[representation].default_denoiser
    assert ckpt["train_config"]["preset"] == "cpu"  # no --preset on a CPU: the CPU preset, not the paper's
    # sample: the checkpoint alone says what it samples and how to mesh it
    assert main(["sample", str(tmp_path / "run"), str(tmp_path / "s"), "--n", "2", "--steps", "2", "--res", "16",
                 "--no-progress"]) == 0
    status = json.loads((tmp_path / "s" / "mesh.json").read_text())["status"]
    assert sorted(status) == ["sample_0000", "sample_0001"]


def test_train_refuses_a_preset_of_another_representation(sphere_dataset, tmp_path):
    assert main(["train", str(sphere_dataset), str(tmp_path / "r"), "--representation", "voxel",
                 "--preset", "cpu"]) == 2


def test_points_round_trip(sphere_dataset, tmp_path):
    from hyperdiffusion.data.prepare import load_cloud

    rep = get_representation("points")
    tset = rep.load(sphere_dataset)
    assert tset.sample_shape == (2048, 3)
    assert np.array_equal(tset.data[0].numpy(), load_cloud(sphere_dataset, tset.names[0]))
    x = tset.data.clone()
    x[1, 5, 0] = float("inf")
    path = rep.save_samples(tmp_path, x, tset.names, tset.info, {})
    status = rep.decode(path, tmp_path, DecodeOptions(), progress=False)
    assert status == {tset.names[0]: "ok", tset.names[1]: "non-finite", tset.names[2]: "ok"}
    assert np.array_equal(np.load(tmp_path / "clouds" / f"{tset.names[0]}.npy"), tset.data[0].numpy())
    assert rep.to_clouds(x, tset.info, DecodeOptions())[1] is None

"""4D HyperDiffusion through the one diffusion stack: 4D MLPs -> train -> sample -> 4D meshes -> evaluate."""

import json
from dataclasses import replace

import numpy as np
import pytest
import trimesh

from hyperdiffusion.cli import main


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    """A 4D dataset: five balls stretching along x at different rates over 6 frames (3 train, 2 test)."""
    from hyperdiffusion.data.animation import write_anime
    from hyperdiffusion.data.prepare import PrepareConfig, prepare

    src = tmp_path_factory.mktemp("anim")
    ball = trimesh.creation.icosphere(2, radius=1.0)
    for i in range(5):  # balls that stretch along x differently over 6 frames
        frames = np.stack([ball.vertices * [1 + (0.1 + 0.1 * i) * k, 1, 1] for k in range(6)])
        write_anime(src / f"s{i}.anime", frames, ball.faces)
    split = src / "split.json"
    split.write_text(json.dumps({"train": ["s0", "s1", "s2"], "val": [], "test": ["s3", "s4"]}))
    data = tmp_path_factory.mktemp("data") / "balls"
    prepare(src, data, PrepareConfig(n_surface=400, n_uniform=400, workers=1, split_file=str(split)),
            progress=False)
    return data


def test_4d_train_sample_evaluate(balls, tmp_path):
    from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate
    from hyperdiffusion.fields.fit import PRESETS, fit_dataset
    from hyperdiffusion.representations import detect_representation

    fit_cfg = replace(PRESETS["cpu"], max_epochs=4, steps_per_epoch=10, points_per_step=512)
    weights = fit_dataset(balls, tmp_path / "fit", fit_cfg, split="train", progress=False)
    assert detect_representation(weights) == "mlp4d"

    # No --representation and no --preset: a 4D weight set on a CPU trains mlp4d with the 4d-cpu preset.
    assert main(["train", str(weights), str(tmp_path / "run"), "--max-steps", "3", "--batch-size", "2",
                 "--n-embd", "32", "--n-layer", "1", "--n-head", "2", "--no-progress"]) == 0
    ckpt = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert ckpt["representation"]["name"] == "mlp4d" and ckpt["representation"]["info"]["mlp"]["in_dim"] == 4
    assert ckpt["train_config"]["preset"] == "cpu" and ckpt["data"]["sample_shape"] == [37_889]
    assert main(["sample", str(tmp_path / "run"), str(tmp_path / "s"), "--n", "2", "--steps", "2", "--res", "16",
                 "--no-progress"]) == 0
    record = json.loads((tmp_path / "s" / "mesh.json").read_text())
    assert record["kind"] == "4d" and sorted(record["status"]) == ["sample_0000", "sample_0001"]
    m = evaluate(tmp_path / "s", balls, EvalConfig(split="test", n_points=64, emd="off",
                                                                    fpd_net=None, norm="none"), progress=False)
    assert m["modes"]["kind"] == "4d" and m["modes"]["frames"] == 16
    assert m["sample_counts"]["generated"] == 2 and np.isfinite(m["mmd_cd"])


def test_4d_presets_are_the_official_ones():
    from hyperdiffusion.diffusion.train import TRAIN_PRESETS

    p = TRAIN_PRESETS["4d"]
    cfg = p.denoiser_config()
    assert p.representation == "mlp4d" and cfg["n_embd"] == 1440 and cfg["n_layer"] == 12
    assert p.lr == 5e-5 and p.lr_gamma == 1.0 and p.batch_size == 32  # official: no lr scheduler


def test_voxel4d_round_trip_and_sampling(balls, tmp_path):
    """The 4D voxel baseline: 16 frames as channels; encode -> decode gives back each frame's ball, and a
    checkpoint samples sequences that `evaluate` scores as 4D."""
    from hyperdiffusion.data.animation import load_sequence_meshes
    from hyperdiffusion.representations import DecodeOptions, get_representation
    from hyperdiffusion.representations.voxel_grid import voxelize

    rep = get_representation("voxel4d")
    tset = rep.load(balls, progress=False)
    assert tset.sample_shape == (16, 24, 24, 24) and tset.info["frames"] == 16
    frames = load_sequence_meshes(balls, tset.names[0])
    for k in (0, 7, 15):  # channel k is frame k's grid
        assert np.array_equal(tset.data[0, k].numpy(), voxelize(frames[k], 24, 0.475, method="solid"))
    path = rep.save_samples(tmp_path, tset.data, tset.names, tset.info, {})
    status = rep.decode(path, tmp_path, DecodeOptions(n_points=64), progress=False)
    assert set(status.values()) == {"ok"}
    clouds = np.load(tmp_path / "clouds" / f"{tset.names[0]}.npy")
    assert clouds.shape == (16, 64, 3)
    # frame k's decoded surface spans frame k's extent along x (the balls stretch over time) within a voxel
    for k in (0, 15):
        want = frames[k].vertices[:, 0].max() - frames[k].vertices[:, 0].min()
        assert abs(np.ptp(clouds[k][:, 0]) - want) < 2 * 0.95 / 23, k
    with pytest.raises(Exception, match="not a 4D dataset"):
        get_representation("voxel4d").load(tmp_path)  # no manifest: refused by name

    assert main(["train", str(balls), str(tmp_path / "run"), "--representation", "voxel4d", "--max-steps", "2",
                 "--batch-size", "2", "--no-progress"]) == 0
    assert main(["sample", str(tmp_path / "run"), str(tmp_path / "s"), "--n", "2", "--steps", "2",
                 "--no-progress"]) == 0
    record = json.loads((tmp_path / "s" / "mesh.json").read_text())
    assert record["kind"] == "4d" and sorted(record["status"]) == ["sample_0000", "sample_0001"]


@pytest.mark.slow
def test_compare_4d_tiny(balls, tmp_path):
    """`compare` on a 4D dataset: HyperDiffusion (4D MLPs) against the 4D voxel baseline, scored as sequences."""
    out = tmp_path / "cmp"
    assert main(["compare", str(balls), str(out), "--preset", "tiny", "--n", "2", "--quiet"]) == 0
    records = json.loads((out / "comparison.json").read_text())
    assert [r["representation"] for r in records] == ["mlp4d", "voxel4d"]
    for r in records:
        assert r["modes"]["kind"] == "4d" and r["modes"]["frames"] == 16 and r["sample_counts"]["generated"] == 2
    assert (out / "comparison.gif").is_file() and (out / "comparison.png").is_file()
    assert main(["compare", str(balls), str(tmp_path / "x"), "--methods", "hd,pvd", "--preset", "tiny"]) == 2

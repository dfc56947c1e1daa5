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


def test_4d_train_sample_evaluate(tmp_path):
    from hyperdiffusion.data.animation import write_anime
    from hyperdiffusion.data.prepare import PrepareConfig, prepare
    from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate
    from hyperdiffusion.fields.fit import PRESETS, fit_dataset
    from hyperdiffusion.representations import detect_representation

    src = tmp_path / "src"
    src.mkdir()
    ball = trimesh.creation.icosphere(2, radius=1.0)
    for i in range(4):  # balls that stretch along x differently over 6 frames
        frames = np.stack([ball.vertices * [1 + (0.1 + 0.1 * i) * k, 1, 1] for k in range(6)])
        write_anime(src / f"s{i}.anime", frames, ball.faces)
    split = src / "split.json"
    split.write_text(json.dumps({"train": ["s0", "s1", "s2"], "val": [], "test": ["s3"]}))
    prepare(src, tmp_path / "data", PrepareConfig(n_surface=400, n_uniform=400, n_cloud=64, workers=1,
                                                  split_file=str(split)), progress=False)
    fit_cfg = replace(PRESETS["cpu"], max_epochs=4, steps_per_epoch=10, points_per_step=512)
    weights = fit_dataset(tmp_path / "data", tmp_path / "fit", fit_cfg, split="train", progress=False)
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
    m = evaluate(tmp_path / "s", tmp_path / "data", EvalConfig(split="test", n_points=64, emd="off",
                                                                    fpd_net=None, norm="none"), progress=False)
    assert m["modes"]["kind"] == "4d" and m["modes"]["frames"] == 16
    assert m["sample_counts"]["generated"] == 2 and np.isfinite(m["mmd_cd"])


def test_4d_presets_are_the_official_ones():
    from hyperdiffusion.diffusion.train import TRAIN_PRESETS

    p = TRAIN_PRESETS["4d"]
    cfg = p.denoiser_config()
    assert p.representation == "mlp4d" and cfg["n_embd"] == 1440 and cfg["n_layer"] == 12
    assert p.lr == 5e-5 and p.lr_gamma == 1.0 and p.batch_size == 32  # official: no lr scheduler

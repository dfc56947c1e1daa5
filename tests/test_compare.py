"""`hyperdiffusion compare --preset tiny`: every method trained, sampled and scored on one protocol."""

import json
import os

import pytest
from PIL import Image

from hyperdiffusion.cli import main
from hyperdiffusion.data.prepare import PrepareConfig, prepare
from hyperdiffusion.evaluation.compare import COMPARE_PRESETS, METHODS


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


@pytest.mark.slow
def test_compare_tiny_end_to_end_and_resume(tmp_path):
    data = tmp_path / "data"
    prepare("builtin:chair", data, PrepareConfig(n_surface=2000, n_uniform=2000, workers=1), count=10, progress=False)
    out = tmp_path / "cmp"
    assert main(["compare", str(data), str(out), "--preset", "tiny", "--n", "4", "--quiet"]) == 0

    records = json.loads((out / "comparison.json").read_text())
    assert [r["method"] for r in records] == ["hd", "voxel"]
    for r in records:
        metrics = json.loads((out / r["method"] / "metrics.json").read_text())
        for key in ("mmd_cd", "cov_cd", "nna_cd", "mmd_emd", "cov_emd", "nna_emd", "fpd", "modes", "sample_counts"):
            assert r[key] == metrics[key], key  # every metrics.json key, as evaluate wrote it
        assert r["sample_counts"]["generated"] == 4
        assert r["modes"]["n_reference"] == 2  # the same test split for both ...
        assert r["modes"]["normalisation"] == "hd"  # ... and the same protocol
        assert r["n_params"] > 0 and r["train_seconds"] > 0 and r["sample_seconds"] >= 0
    assert records[0]["representation"] == "mlp3d" and records[1]["representation"] == "voxel"
    assert records[1]["denoiser"] == "unet3d"
    table = (out / "comparison.md").read_text()
    assert "| HyperDiffusion |" in table and "| Voxel baseline |" in table
    width, height = Image.open(out / "comparison.png").size
    assert width == 6 * 192 and height > 2 * 192  # one row of six samples per method

    # Rerunning resumes: no stage runs again, so nothing is rewritten.
    ckpts = {m: (out / m / "train" / "checkpoints" / "last.safetensors").stat().st_mtime_ns for m in ("hd", "voxel")}
    timing = {m: (out / m / "timing.json").read_text() for m in ("hd", "voxel")}
    assert main(["compare", str(data), str(out), "--preset", "tiny", "--n", "4", "--quiet"]) == 0
    for m in ("hd", "voxel"):
        assert (out / m / "train" / "checkpoints" / "last.safetensors").stat().st_mtime_ns == ckpts[m]
        assert (out / m / "timing.json").read_text() == timing[m]


def test_presets_and_methods_are_complete():
    assert {"tiny", "cpu", "paper"} <= set(COMPARE_PRESETS)
    assert {"hd", "voxel"} <= set(METHODS)
    paper = COMPARE_PRESETS["paper"]
    assert paper.fit_preset == "paper" and paper.ddim_steps is None and paper.mesh_res == 256
    assert paper.train_steps is None and paper.emd_points is None  # full paper budgets, all points


def test_unknown_method_is_a_clear_error(tmp_path):
    prepare("builtin:chair", tmp_path / "d", PrepareConfig(n_surface=200, n_uniform=200, workers=1), count=4,
            progress=False)
    assert main(["compare", str(tmp_path / "d"), str(tmp_path / "o"), "--methods", "hd,pvd"]) == 2
    assert not os.path.exists(tmp_path / "o" / "hd")

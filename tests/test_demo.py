"""The whole pipeline end to end with a tiny configuration: every artefact exists and is valid."""

import json
import math

import numpy as np
import trimesh

from hyperdiffusion.cli import main
from hyperdiffusion.fields.mlp import load_weight_set


def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert main(["demo", str(out), "--tiny"]) == 0

    # Every stage left its self-describing output.
    assert json.loads((out / "config.json").read_text())["demo"]["count"] == 10
    assert (out / "data" / "manifest.json").is_file()
    fitted = load_weight_set(out / "mlps" / "weights.safetensors")
    generated = load_weight_set(out / "samples" / "weights.safetensors")
    assert generated.mlp == fitted.mlp and generated.weights.shape[1] == fitted.weights.shape[1]
    assert torch_isfinite(generated.weights)
    assert (out / "diffusion" / "checkpoints" / "last.safetensors").is_file()

    # Meshes load; clouds have the evaluation shape.
    statuses = json.loads((out / "samples" / "mesh.json").read_text())
    for ply in (out / "samples" / "meshes").glob("*.ply"):
        assert len(trimesh.load(ply, force="mesh").faces) > 0
    for npy in (out / "samples" / "clouds").glob("*.npy"):
        cloud = np.load(npy, allow_pickle=False)
        assert cloud.shape == (2048, 3) and np.isfinite(cloud).all()
    assert statuses  # whatever meshed or not, every sample has a recorded status

    # Metrics are finite and in range, with their modes.
    m = json.loads((out / "metrics.json").read_text())
    for key in ("mmd_cd", "mmd_emd"):
        assert math.isfinite(m[key]) and m[key] >= 0
    for key in ("cov_cd", "nna_cd", "cov_emd", "nna_emd"):
        assert 0.0 <= m[key] <= 1.0
    assert m["fpd"] is None and "reason" in m["modes"]["fpd"]
    assert m["modes"]["normalisation"] == "hd" and m["modes"]["emd"]["mode"] == "exact"
    assert 0.0 <= m["novelty"]["copy_rate"] <= 1.0

    # Pictures and the gallery page.
    for name in ("train_shapes", "fitted_mlps", "samples", "samples_vs_nearest"):
        assert (out / "images" / f"{name}.png").stat().st_size > 1000
    page = (out / "index.html").read_text()
    assert "images/samples.png" in page and (out / "web" / "three.min.js").is_file()


def torch_isfinite(t) -> bool:
    import torch

    return bool(torch.isfinite(t).all())

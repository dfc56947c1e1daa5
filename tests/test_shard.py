"""Sharded fit, mesh, sample and evaluate (2 shards, then the merge) give the unsharded outputs."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from hyperdiffusion import shards
from hyperdiffusion.cli import main
from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate
from hyperdiffusion.fields.fit import FitConfig, fit_dataset
from hyperdiffusion.fields.mesh import MeshConfig, mesh_weights
from hyperdiffusion.fields.mlp import MLPConfig, default_init, load_weight_set, save_weight_set
from hyperdiffusion.io import InputError, load_safetensors, read_json

MLP = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)
FIT = FitConfig(points_per_step=256, steps_per_epoch=4, max_epochs=3, plateau_patience=1, early_stop_patience=2)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


def test_shard_spec_and_torchrun_env():
    assert shards.parse_shard("1/4") == shards.Shard(1, 4)
    assert shards.resolve_shard(None, {"RANK": "2", "WORLD_SIZE": "3"}) == shards.Shard(2, 3)
    assert shards.resolve_shard("0/1", {}) is None and shards.resolve_shard(None, {"WORLD_SIZE": "1"}) is None
    assert shards.Shard(1, 3).take(list(range(8))) == [1, 4, 7]
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(InputError):
            shards.parse_shard(bad)
    with pytest.raises(InputError, match="torchrun"):
        shards.resolve_shard("0/2", {"RANK": "1", "WORLD_SIZE": "2"})


def _quality_without_timing(path):
    q = read_json(path)
    for row in q["shapes"].values():
        row.pop("batch_seconds")
    return q


def test_fit_and_mesh_shards_equal_unsharded(shapes_dataset, tmp_path):
    # No evaluation-set mesh scores (fit_eval.py): not what this test is about, and the slow part.
    kw = dict(cfg=FIT, mlp=MLP, split="all", batch_shapes=2, device="cpu", progress=False, scores=None)
    ref = fit_dataset(shapes_dataset, tmp_path / "one", **kw)
    out = tmp_path / "sharded"
    # Shard 1 alone cannot start: it waits for the first weights of shard 0 (here: timed out at once).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hyperdiffusion.fields.fit.FIRST_WEIGHTS_WAIT_S", 0.0)
        with pytest.raises(InputError, match="first-weights"):
            fit_dataset(shapes_dataset, out, shard="1/2", **kw)
    assert fit_dataset(shapes_dataset, out, shard="0/2", **kw) is None  # fits first weights + its chunks
    assert not (out / "weights.safetensors").exists()
    assert fit_dataset(shapes_dataset, out, shard="1/2", **kw) == out / "weights.safetensors"  # last: merges
    (a, ma), (b, mb) = load_safetensors(ref), load_safetensors(out / "weights.safetensors")
    assert torch.equal(a["weights"], b["weights"]) and ma == mb
    assert _quality_without_timing(tmp_path / "one" / "fit_quality.json") == _quality_without_timing(
        out / "fit_quality.json")
    assert read_json(out / "shards" / "fit" / "1-of-2" / "done.json")["shard"] == "1/2"

    # Mesh: shard statuses in their own folders, files per name in OUT; the merge writes mesh.json.
    cfg = MeshConfig(res=20, n_points=64, batch_shapes=2)
    one = mesh_weights(ref, tmp_path / "m1", cfg, "cpu", progress=False)
    for k in (0, 1):
        mesh_weights(ref, tmp_path / "m2", cfg, "cpu", progress=False, shard=f"{k}/2")
    merged = read_json(tmp_path / "m2" / "mesh.json")
    assert list(merged["status"].items()) == list(one.items())
    assert {k: v for k, v in merged.items() if k not in ("seconds", "shards")} == \
        {k: v for k, v in read_json(tmp_path / "m1" / "mesh.json").items() if k != "seconds"}
    for sub in ("clouds", "meshes"):
        files = sorted(p.name for p in (tmp_path / "m1" / sub).iterdir())
        assert files and files == sorted(p.name for p in (tmp_path / "m2" / sub).iterdir())
        for f in files:
            assert (tmp_path / "m1" / sub / f).read_bytes() == (tmp_path / "m2" / sub / f).read_bytes()


def test_sample_shards_equal_unsharded(tmp_path):
    from hyperdiffusion.diffusion.sample import SampleConfig, sample
    from hyperdiffusion.diffusion.train import TrainConfig, train

    path = tmp_path / "mlps" / "weights.safetensors"
    save_weight_set(path, default_init(MLP, 4, torch.Generator().manual_seed(0)), [f"s{i}" for i in range(4)], MLP)
    train(path, tmp_path / "run", TrainConfig(preset="cpu", n_embd=32, n_layer=1, n_head=2, batch_size=4, max_steps=2,
                                              ckpt_every=2, log_every=1, val_every_epochs=0), progress=False)
    cfg = SampleConfig(n=5, steps=4, batch_size=2, seed=3, device="cpu", res=12)
    sample(tmp_path / "run", tmp_path / "one", cfg, progress=False)
    for k in (1, 0):  # any order: the last to finish merges
        assert sample(tmp_path / "run", tmp_path / "two", cfg, progress=False, shard=f"{k}/2") is None
    a, b = load_weight_set(tmp_path / "one"), load_weight_set(tmp_path / "two")
    assert a.names == b.names and torch.equal(a.weights, b.weights)
    assert read_json(tmp_path / "one" / "mesh.json")["status"] == read_json(tmp_path / "two" / "mesh.json")["status"]
    assert sorted(p.name for p in (tmp_path / "two" / "shards" / "sample").iterdir()) == ["0-of-2", "1-of-2"]


def _clouds(folder, n, seed, scale=1.0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = rng.normal(size=(64, 3))
        p = p / np.linalg.norm(p, axis=1, keepdims=True) * scale * rng.uniform(0.7, 1.3, size=3)
        np.save(folder / f"c{i:02d}.npy", p.astype(np.float32))
    return folder


def _comparable(m):
    m = json.loads(json.dumps(m))
    for key in ("config", "reference_cache"):
        m["modes"].pop(key, None)
    m["modes"]["emd"].pop("workers", None)
    return m


def test_evaluate_shards_and_reference_cache(tmp_path):
    samples, ref = _clouds(tmp_path / "s", 7, 1), _clouds(tmp_path / "r", 6, 2)
    base = ["evaluate", str(samples), str(ref), "--points", "64", "--fpd-net", "none"]
    assert main([*base, "--out", str(tmp_path / "one" / "metrics.json"), "--cache", str(tmp_path / "c1"),
                 "--workers", "2"]) == 0
    one = read_json(tmp_path / "one" / "metrics.json")
    assert len(one["modes"]["reference_cache"]["stored"]) == 2  # Chamfer and EMD reference x reference
    for k in (0, 1):
        assert main([*base, "--out", str(tmp_path / "two" / "metrics.json"), "--cache", str(tmp_path / "c2"),
                     "--workers", "1", "--shard", f"{k}/2"]) == 0
    two = read_json(tmp_path / "two" / "metrics.json")
    assert _comparable(two) == _comparable(one)
    # By hand (shards copied together from several machines): the same file again.
    (tmp_path / "two" / "metrics.json").unlink()
    assert main(["merge", str(tmp_path / "two"), "--only", "evaluate-metrics"]) == 0
    assert read_json(tmp_path / "two" / "metrics.json") == two
    (tmp_path / "two" / "shards" / "evaluate-metrics" / "1-of-2" / "done.json").unlink()
    with pytest.raises(InputError, match="1/2 not finished"):
        shards.merge_all(tmp_path / "two")
    # The second evaluation against the same references reuses both matrices: identical result.
    again = evaluate(samples, ref, EvalConfig(n_points=64, fpd_net=None, cache=str(tmp_path / "c1"), workers=1),
                     progress=False)
    assert sorted(again["modes"]["reference_cache"]["reused"]) == sorted(one["modes"]["reference_cache"]["stored"])
    assert again["modes"]["reference_cache"]["stored"] == []
    assert _comparable(again) == _comparable(one)
    # Sharded against a warm cache: the shards skip rr, the merge reads it.
    for k in (0, 1):
        main([*base, "--out", str(tmp_path / "three" / "metrics.json"), "--cache", str(tmp_path / "c1"),
              "--workers", "1", "--shard", f"{k}/2"])
    three = read_json(tmp_path / "three" / "metrics.json")
    assert _comparable(three) == _comparable(one) and len(three["modes"]["reference_cache"]["reused"]) == 2


def test_auction_error_against_exact_in_metrics(tmp_path):
    samples, ref = _clouds(tmp_path / "s", 4, 3), _clouds(tmp_path / "r", 4, 4, 1.2)
    m = evaluate(samples, ref, EvalConfig(n_points=64, emd="approx", device="cpu", fpd_net=None, emd_check_pairs=3),
                 progress=False)
    check = m["modes"]["emd"]["check"]
    assert check["pairs"] == 3 and check["within_bound"]
    assert 0 <= check["max_abs_error"] <= check["max_bound"] + 1e-12

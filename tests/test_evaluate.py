"""The evaluate stage end to end on tiny folders of .npy clouds."""

import json

import numpy as np
import pytest

from hyperdiffusion.cli import main
from hyperdiffusion.evaluation import metrics
from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate, format_table, load_clouds
from hyperdiffusion.io import InputError

N = 256  # points per cloud: small to stay fast


def _write(folder, clouds):
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(clouds):
        np.save(folder / f"shape{i:02d}.npy", c.astype(np.float32))
    return folder


def _ellipsoids(n, seed, scale):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = rng.normal(size=(N, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        out.append(p * scale * rng.uniform(0.9, 1.1, size=3))
    return np.stack(out)


def test_evaluate_cli_end_to_end(tmp_path):
    ref = _write(tmp_path / "ref", _ellipsoids(6, 0, [1, 1, 1]))
    good = _write(tmp_path / "good", _ellipsoids(8, 1, [1, 1, 1]))  # 8 samples -> seeded subset of 6
    out = tmp_path / "metrics.json"
    rc = main(["evaluate", str(good), str(ref), "--out", str(out), "--points", str(N), "--emd", "exact",
               "--train", str(ref)])
    assert rc == 0
    m = json.loads(out.read_text())
    # The numbers, recomputed pair by pair from the files with the definitions (PointFlow): the
    # 6 samples the protocol kept are named in metrics.json.
    s = metrics.normalize_clouds(np.stack([np.load(good / f"{n}.npy") for n in m["samples"]]), "hd")
    r = metrics.normalize_clouds(np.stack([np.load(ref / f"{n}.npy") for n in m["reference"]]), "hd")
    assert len(s) == 6 and len(set(m["samples"])) == 6
    for key, dist in (("cd", metrics.chamfer), ("emd", metrics.emd_exact)):
        d_sr = np.array([[dist(x, y) for y in r] for x in s])
        mmd = d_sr.min(axis=0).mean()  # each reference's nearest sample
        cov = len(set(d_sr.argmin(axis=1))) / len(r)  # references that are some sample's nearest
        both = np.concatenate([s, r])
        d = np.array([[dist(x, y) if i != j else np.inf for j, y in enumerate(both)] for i, x in enumerate(both)])
        nna = np.mean((d.argmin(axis=1) < 6) == (np.arange(12) < 6))  # leave-one-out 1-NN accuracy
        assert m[f"mmd_{key}"] == pytest.approx(mmd, rel=1e-9)
        assert m[f"cov_{key}"] == cov and m[f"nna_{key}"] == nna
    # FPD (tests/test_fpd.py) is a value with its network, or null with the reason
    assert m["modes"]["fpd"]["reason"] if m["fpd"] is None else m["modes"]["fpd"]["network_id"]
    modes = m["modes"]
    assert modes["normalisation"] == "hd" and modes["emd"]["mode"] == "exact"
    assert modes["n_reference"] == 6 and modes["n_samples_generated"] == 8 and modes["points"] == N
    assert modes["device"] == "cpu" and modes["chamfer_backend"] == "scipy-kdtree float64"
    # novelty covers all 8 generated samples; the reference is its own training set, so its
    # nearest-train distances are 0 and no sample can be closer than that: nothing copies
    assert len(m["novelty"]["nearest"]) == 8 and m["novelty"]["copy_rate"] == 0.0


def test_identical_sets_known_values():
    # Samples equal to the references: every reference has a sample at distance 0 (MMD 0, COV 1),
    # and every cloud's nearest other cloud is its twin in the other set, so 1-NNA is 0.
    ref = _ellipsoids(5, 0, [1, 1, 1])
    m = evaluate(ref.copy(), ref, EvalConfig(n_points=N, emd="exact"), progress=False)
    for key in ("cd", "emd"):
        assert m[f"mmd_{key}"] == pytest.approx(0.0, abs=1e-12)
        assert m[f"cov_{key}"] == 1.0 and m[f"nna_{key}"] == 0.0


def test_sample_counts_account_for_shapes_without_a_surface(tmp_path):
    # A real sample folder from the mesh stage: 4 shapes mesh, one is empty, one full, one non-finite.
    import torch

    from hyperdiffusion.fields.mesh import MeshConfig, mesh_weights
    from hyperdiffusion.fields.mlp import save_weight_set
    from test_mesh import MLP, constant_mlp, octahedron_mlp

    weights = torch.stack([octahedron_mlp(0.2), constant_mlp(-5.0), octahedron_mlp(0.3), constant_mlp(5.0),
                           constant_mlp(float("nan")), octahedron_mlp(0.25), octahedron_mlp(0.35)])
    save_weight_set(tmp_path / "samples" / "weights.safetensors", weights, [f"s{i}" for i in range(7)], MLP)
    with pytest.warns(UserWarning):
        mesh_weights(tmp_path / "samples", tmp_path / "samples", MeshConfig(res=16, n_points=N), "cpu",
                     progress=False)
    ref = _write(tmp_path / "ref", _ellipsoids(3, 0, [0.3, 0.3, 0.3]))
    m = evaluate(tmp_path / "samples", ref, EvalConfig(n_points=N, emd="off"), progress=False)
    assert m["sample_counts"] == {"generated": 7, "with_cloud": 4, "empty": 1, "full": 1, "non-finite": 1,
                                  "not_meshed": 0, "source": "weights.json and mesh.json", "scored": 3,
                                  "in_novelty": 0}
    assert m["modes"]["n_samples_generated"] == 7 and len(m["samples"]) == 3
    assert "7 generated, 4 with a surface (1 empty, 1 full, 1 non-finite), 3 scored" in format_table(m)
    # Too few samples with a surface for the references: the error says where the others went.
    with pytest.raises(InputError, match=r"4 samples \(7 generated; without a surface: 1 empty, 1 full, "
                                         r"1 non-finite\) for 5 reference shapes"):
        evaluate(tmp_path / "samples", _ellipsoids(5, 0, [1, 1, 1]), EvalConfig(n_points=N, emd="off"),
                 progress=False)
    # A plain folder of clouds has no record of what failed: said so, not guessed.
    c = evaluate(tmp_path / "samples" / "clouds", ref, EvalConfig(n_points=N, emd="off"), progress=False)
    assert c["sample_counts"]["generated"] == 4 and c["sample_counts"]["empty"] is None
    assert "no mesh.json" in c["sample_counts"]["source"]


def test_far_samples_score_worse(tmp_path):
    ref = _ellipsoids(6, 0, [1, 1, 1])
    near = _ellipsoids(6, 1, [1, 1, 1])
    far = _ellipsoids(6, 2, [1, 0.1, 0.1])  # needles, not spheres
    cfg = EvalConfig(n_points=N, emd="exact", emd_points=64, norm="hd")
    good, bad = evaluate(near, ref, cfg, progress=False), evaluate(far, ref, cfg, progress=False)
    assert bad["nna_cd"] == 1.0 and bad["nna_emd"] == 1.0
    assert bad["mmd_cd"] > good["mmd_cd"] and bad["mmd_emd"] > good["mmd_emd"]
    assert good["modes"]["emd"]["points"] == 64


def test_fewer_samples_than_references_is_an_error():
    with pytest.raises(InputError, match="at least as many samples"):
        evaluate(_ellipsoids(3, 0, [1, 1, 1]), _ellipsoids(4, 1, [1, 1, 1]), EvalConfig(n_points=N, emd="off"),
                 progress=False)


def test_load_prepared_dataset_split(tmp_path):
    root = tmp_path / "ds"
    clouds = _ellipsoids(3, 0, [1, 1, 1])
    for i, c in enumerate(clouds):
        (root / "shapes" / f"s{i}").mkdir(parents=True)
        np.save(root / "shapes" / f"s{i}" / "cloud.npy", c)
    (root / "manifest.json").write_text(json.dumps({"splits": {"train": ["s0", "s1"], "test": ["s2"]}}))
    got, names, kind = load_clouds(root, "train", n_points=N)
    assert names == ["s0", "s1"] and kind == "dataset:train" and got.shape == (2, N, 3)
    with pytest.raises(InputError, match="no split"):
        load_clouds(root, "val", n_points=N)
    with pytest.raises(InputError, match="fewer than"):
        load_clouds(root, "test", n_points=N + 1)

"""The evaluate stage end to end on tiny folders of .npy clouds."""

import json

import numpy as np
import pytest

from hyperdiffusion.cli import main
from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate, load_clouds
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
    for key in ("mmd_cd", "cov_cd", "nna_cd", "mmd_emd", "cov_emd", "nna_emd"):
        assert m[key] is not None and m[key] >= 0
    assert 0 <= m["cov_cd"] <= 1 and 0 <= m["nna_cd"] <= 1
    assert m["fpd"] is None and "--fpd-net" in m["modes"]["fpd"]["reason"]
    modes = m["modes"]
    assert modes["normalisation"] == "hd" and modes["emd"]["mode"] == "exact"
    assert modes["n_reference"] == 6 and modes["n_samples_generated"] == 8 and modes["points"] == N
    # novelty covers all 8 generated samples; the reference is its own training set, so its
    # nearest-train distances are 0 and no sample can be closer than that: nothing copies
    assert len(m["novelty"]["nearest"]) == 8 and m["novelty"]["copy_rate"] == 0.0


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

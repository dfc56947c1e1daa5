"""FPD: the PointNet++ SSG layout of the public checkpoint, features, the Fréchet distance."""

import json

import numpy as np
import pytest
import torch

from hyperdiffusion.evaluation import fpd
from hyperdiffusion.io import InputError


def test_state_dict_keys_match_public_format():
    keys = fpd.PointNet2SSG(num_classes=40).state_dict()
    expected_shapes = {
        "sa1.mlp_convs.0.weight": (64, 3, 1, 1),
        "sa1.mlp_convs.2.weight": (128, 64, 1, 1),
        "sa1.mlp_bns.0.running_mean": (64,),
        "sa2.mlp_convs.0.weight": (128, 131, 1, 1),
        "sa2.mlp_bns.2.num_batches_tracked": (),
        "sa3.mlp_convs.0.weight": (256, 259, 1, 1),
        "sa3.mlp_convs.2.weight": (1024, 512, 1, 1),
        "fc1.weight": (512, 1024),
        "bn1.running_mean": (512,),
        "bn1.running_var": (512,),
        "fc2.weight": (256, 512),
        "bn2.weight": (256,),
        "fc3.weight": (40, 256),
        "fc3.bias": (40,),
    }
    for k, shape in expected_shapes.items():
        assert tuple(keys[k].shape) == shape, k
    # 3 SA layers x 3 (conv weight, bias + BN weight, bias, mean, var, count) + 3 fc x 2 + 2 BN x 5
    assert len(keys) == 3 * 3 * 7 + 3 * 2 + 2 * 5


def test_load_public_checkpoint_format(tmp_path):
    model = fpd.PointNet2SSG()
    path = tmp_path / "best_model.pth"
    torch.save({"epoch": 1, "model_state_dict": model.state_dict()}, path)
    net = fpd.load_feature_net(path)
    assert net.id == fpd.network_id(model.state_dict())
    bad = {k.replace("mlp_convs", "convs"): v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="missing"):
        fpd.load_feature_net(tmp_path / "bad.pth")


def test_frechet_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 9.0])
    # diagonal covariances: |mu1 - mu2|^2 + sum (sigma1_i - sigma2_i)^2 = 5 + (1 + 1 + 0)
    assert fpd.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(7.0)
    a = np.random.default_rng(0).normal(size=(5, 5))
    s = a @ a.T + np.eye(5)
    assert fpd.frechet_distance(np.zeros(5), s, np.ones(5), s) == pytest.approx(5.0, abs=1e-8)
    # scaled covariance: tr(S + 4S - 2 * 2S) = tr(S)
    assert fpd.frechet_distance(np.zeros(5), s, np.zeros(5), 4 * s) == pytest.approx(np.trace(s), rel=1e-8)


def test_farthest_point_sample_spreads_points():
    x = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [1, 0, 0], [0, 1, 0], [0.05, 0, 0]]])
    idx = fpd.farthest_point_sample(x, 3, torch.Generator().manual_seed(0))
    assert len(set(idx[0].tolist())) == 3
    assert {2, 3} <= set(idx[0].tolist())  # the two far corners are always chosen


def test_ball_query_lowest_indices_within_radius():
    xyz = torch.tensor([[[0.0, 0, 0], [5, 0, 0], [0.1, 0, 0], [0.2, 0, 0]]])
    idx = fpd.ball_query(0.15, 3, xyz, xyz[:, :1])
    assert idx[0, 0].tolist() == [0, 2, 0]  # points 0 and 2 inside, padded with the first


def test_fpd_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(0)
    model = fpd.PointNet2SSG(num_classes=3).eval()
    net = fpd.FeatureNet(model, fpd.network_id(model.state_dict()), ["a", "b", "c"], "hd", "test")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 512, 3))
    b = rng.uniform(-1, 1, size=(4, 512, 3)) * [1, 0.2, 1]
    same = fpd.fpd(a, a, net, seed=0)
    assert same["value"] == pytest.approx(0.0, abs=1e-6)
    assert same["network_id"] == net.id
    assert fpd.fpd(a, b, net, seed=0)["value"] > 1e-4


def test_fpd_refuses_sets_too_small_for_a_covariance():
    torch.manual_seed(0)
    model = fpd.PointNet2SSG(num_classes=2, arch=fpd.PointNet2Arch(width=0.25)).eval()
    net = fpd.FeatureNet(model, fpd.network_id(model.state_dict()), ["a", "b"], "hd", "test")
    clouds = np.random.default_rng(0).normal(size=(3, 600, 3))
    with pytest.raises(InputError, match="at least 2 clouds"):
        fpd.fpd(clouds[:1], clouds, net)
    # one sample's covariance is NaN; scipy's sqrtm would not return on it
    mu, _ = fpd.gaussian_stats(np.ones((1, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        fpd.frechet_distance(mu, np.full((4, 4), np.nan), mu, np.eye(4))


def _tiny_dataset(root, name, flat, n=3):
    rng = np.random.default_rng(len(name))
    names = [f"{name}{i}" for i in range(n)]
    for nm in names:
        c = rng.normal(size=(600, 3)) * ([1, 0.1, 1] if flat else [0.3, 1, 0.3])
        (root / name / "shapes" / nm).mkdir(parents=True)
        np.save(root / name / "shapes" / nm / "cloud.npy", c.astype(np.float32))
    manifest = {"format": "hyperdiffusion-dataset", "version": 1,
                "splits": {"train": names[:2], "val": [], "test": names[2:]}}
    (root / name / "manifest.json").write_text(json.dumps(manifest))
    return root / name


def test_fpd_train_end_to_end(tmp_path):
    from hyperdiffusion.cli import main

    a = _tiny_dataset(tmp_path, "flat", True)
    b = _tiny_dataset(tmp_path, "tall", False)
    out = tmp_path / "net"
    rc = main(["fpd-train", str(a), str(b), str(out), "--epochs", "1", "--batch-size", "4", "--n-points", "512"])
    assert rc == 0
    info = json.loads((out / "fpd_net.json").read_text())
    assert info["classes"] == ["flat", "tall"] and info["n_train"] == [2, 2]
    net = fpd.load_feature_net(out / "fpd_net.safetensors")
    assert net.id == info["network_id"] and net.classes == ["flat", "tall"]


def test_fpd_train_grouped_classes_narrow_float16(tmp_path):
    """NAME=DIR,DIR makes one class of several datasets; a narrow net stored in float16 reloads as scored."""
    from safetensors import safe_open

    from hyperdiffusion.cli import main

    a = _tiny_dataset(tmp_path, "flat", True)
    a2 = _tiny_dataset(tmp_path, "flat2", True)
    b = _tiny_dataset(tmp_path, "tall", False)
    out = tmp_path / "net"
    rc = main(["fpd-train", f"wide={a},{a2}", str(b), str(out), "--epochs", "2", "--batch-size", "4",
               "--n-points", "512", "--width", "0.25", "--storage", "float16", "--schedule", "cosine"])
    assert rc == 0
    info = json.loads((out / "fpd_net.json").read_text())
    assert info["classes"] == ["wide", "tall"] and info["n_train"] == [4, 2] and info["n_test"] == [2, 1]
    assert [d["class"] for d in info["datasets"]] == ["wide", "wide", "tall"]
    assert info["arch"] == {"width": 0.25} and len(info["test"]["confusion"]) == 2
    assert sum(map(sum, info["test_full_clouds"]["confusion"])) == 3 and info["test_points"] == 600
    with safe_open(str(out / "fpd_net.safetensors"), "pt") as f:
        assert f.get_tensor("fc2.weight").dtype == torch.float16
        assert f.get_tensor("sa1.mlp_convs.0.weight").shape == (16, 3, 1, 1)  # 64 x 0.25
        assert f.get_tensor("sa1.mlp_bns.0.num_batches_tracked").dtype == torch.int64
    net = fpd.load_feature_net(out / "fpd_net.safetensors")
    # the id was taken after rounding to float16, so the loaded (float32) network has the same one
    assert net.id == info["network_id"] and net.model.arch.width == 0.25
    assert net.model.fc2.weight.dtype == torch.float32
    assert net.model.features(torch.zeros(2, 600, 3).normal_()).shape == (2, 256)
    with pytest.raises(InputError, match="distinct"):
        fpd.train_feature_net([a, a], tmp_path / "dup")


# ---------------------------------------------------------------------------
# The shipped default network (benchmarks/train_fpd_net.py; docs/EVALUATION.md "FPD")
# ---------------------------------------------------------------------------

# The shipped file must never change silently: a new network changes every FPD value.
SHIPPED_SHA256 = "4e3e57d1e5f454fee6de937e21cebdc0d15b731af35e16e87b88c435c4d19f8f"


def test_shipped_network_is_pinned_and_loads():
    import hashlib

    path = fpd.DEFAULT_NET
    assert path.stat().st_size < 4 << 20  # a few MB at most: it is installed with the package
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHIPPED_SHA256
    info = json.loads(path.with_suffix(".json").read_text())
    net = fpd.load_feature_net(path)
    assert net.id == info["network_id"] and net.classes == info["classes"] == ["chair", "table", "airplane"]
    assert net.source.endswith("(shipped default)") and net.input_norm == "hd"
    # the accuracy it was shipped with: held out (test splits), both at the training points and on full clouds
    assert info["test_accuracy"] >= 0.9 and info["test_accuracy_full_clouds"] >= 0.9


def test_shipped_network_classifies_unseen_builtin_shapes():
    """Built-in shapes with seeds far from the 0..99 it was trained and tested on, at its 1024 training points."""
    import trimesh

    from hyperdiffusion.data.shapes import make_shape
    from hyperdiffusion.evaluation.metrics import normalize_clouds

    net = fpd.load_feature_net(fpd.DEFAULT_NET)
    clouds, labels = [], []
    for label, family in enumerate(net.classes):
        for seed in (1000, 1001, 1002):
            cloud, _ = trimesh.sample.sample_surface(make_shape(family, seed), 1024, seed=seed)
            clouds.append(cloud), labels.append(label)
    x = torch.as_tensor(normalize_clouds(np.stack(clouds), "hd"), dtype=torch.float32)
    with torch.no_grad():
        pred = net.model(x, torch.Generator().manual_seed(0)).argmax(1).tolist()
    assert pred == labels


def test_evaluate_uses_shipped_network_by_default(tmp_path):
    from hyperdiffusion.cli import main
    from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 2048, 3)) * [0.3, 1.0, 0.3]
    b = rng.normal(size=(6, 2048, 3)) * [1.0, 0.2, 1.0]
    shipped = fpd.load_feature_net(fpd.DEFAULT_NET)
    m = evaluate(a, b, EvalConfig(emd="off", device="cpu"), progress=False)
    assert np.isfinite(m["fpd"]) and m["fpd"] > 0
    assert m["modes"]["fpd"]["network_id"] == shipped.id and m["modes"]["fpd"]["network"] == "default"
    assert m["modes"]["fpd"]["classes"] == ["chair", "table", "airplane"]
    same = evaluate(a, a, EvalConfig(emd="off", device="cpu"), progress=False)
    assert same["fpd"] == pytest.approx(0.0, abs=1e-4)  # 6 clouds: singular covariances, sqrtm round-off
    # an explicit --fpd-net none turns it off, and says so
    for d in (tmp_path / "a", tmp_path / "b"):
        d.mkdir()
    for i in range(6):
        np.save(tmp_path / "a" / f"{i}.npy", a[i]), np.save(tmp_path / "b" / f"{i}.npy", b[i])
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--emd", "off",
                 "--device", "cpu", "--fpd-net", "none"]) == 0
    off = json.loads(out.read_text())
    assert off["fpd"] is None and "--fpd-net none" in off["modes"]["fpd"]["reason"]

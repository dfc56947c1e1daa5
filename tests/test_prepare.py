"""The prepare stage: normalisation, sampling, splits, manifest, bad input, resume, sources, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from hyperdiffusion.data import prepare as prep
from hyperdiffusion.cli import main
from hyperdiffusion.io import InputError

SMALL = prep.PrepareConfig(n_surface=2000, n_uniform=2000, n_cloud=256, workers=1)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _box(path: Path, extents=(2.0, 1.0, 0.5), offset=(10.0, -3.0, 4.0)) -> Path:
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(offset)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    return path


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# --- normalisation -----------------------------------------------------------


def test_normalise_mean_centres_vertex_mean_and_scales_to_0475():
    # Asymmetric vertex distribution: the vertex mean is not the box centre.
    v = np.array([[0, 0, 0], [4, 0, 0], [0, 2, 0], [0, 0, 1], [4, 2, 1], [1, 1, 1]], float) + 7
    mesh = trimesh.Trimesh(v, [[0, 1, 2], [0, 1, 3], [1, 4, 2], [3, 5, 4]], process=False)
    out, centre, factor = prep.normalise(mesh, "mean")
    np.testing.assert_allclose(centre, v.mean(axis=0))
    np.testing.assert_allclose(out.vertices.mean(axis=0), 0, atol=1e-12)
    assert np.abs(out.vertices).max() == pytest.approx(0.475)
    np.testing.assert_allclose(out.vertices, (v - centre) * factor)


def test_normalise_bbox_centres_the_box():
    v = np.array([[0, 0, 0], [4, 0, 0], [0, 2, 0], [0, 0, 1], [4, 2, 1], [1, 1, 1]], float) - 3
    mesh = trimesh.Trimesh(v, [[0, 1, 2], [0, 1, 3], [1, 4, 2], [3, 5, 4]], process=False)
    out, centre, _ = prep.normalise(mesh, "bbox")
    np.testing.assert_allclose(centre, [-1, -2, -2.5])
    np.testing.assert_allclose(out.vertices.min(axis=0) + out.vertices.max(axis=0), 0, atol=1e-12)
    assert np.abs(out.vertices).max() == pytest.approx(0.475)
    # longest side (x, length 4) spans exactly [-0.475, 0.475]
    assert out.vertices[:, 0].min() == pytest.approx(-0.475) and out.vertices[:, 0].max() == pytest.approx(0.475)


@pytest.mark.parametrize("mode", ["mean", "bbox"])
def test_prepared_mesh_and_samples_are_normalised(tmp_path, mode):
    _box(tmp_path / "src" / "box.obj")
    cfg = prep.PrepareConfig(**{**SMALL.__dict__, "normalise": mode})
    prep.prepare(tmp_path / "src", tmp_path / "out", cfg, progress=False)
    mesh = trimesh.load(prep.mesh_path(tmp_path / "out", "box"), process=False)
    assert np.abs(mesh.vertices).max() == pytest.approx(0.475, abs=1e-6)
    centre = mesh.vertices.mean(axis=0) if mode == "mean" else (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    np.testing.assert_allclose(centre, 0, atol=1e-6)
    points, occ, n_surface = prep.load_samples(tmp_path / "out", "box")
    assert points.shape == (4000, 3) and points.dtype == np.float32
    assert occ.shape == (4000,) and occ.dtype == np.uint8 and n_surface == 2000
    # The uniform half lies in the cube; the near-surface half hugs the box
    # (noise sigma 0.01: nothing farther than 0.06 from the surface).
    assert np.abs(points[n_surface:]).max() <= 0.5
    d = np.abs(trimesh.proximity.signed_distance(mesh, points[:500].astype(np.float64)))
    assert d.max() < 0.06 and 0.005 < d.mean() < 0.015
    # Box 2 x 1 x 0.5 scaled by 0.475: volume 0.95 * 0.475 * 0.2375; the
    # uniform points inside estimate it (2000 samples: +-4 sigma).
    vol = 0.95 * 0.475 * 0.2375
    assert abs(occ[n_surface:].mean() - vol) < 4 * np.sqrt(vol * (1 - vol) / 2000)
    # Surface samples with noise: about half inside.
    assert 0.35 < occ[:n_surface].mean() < 0.65
    cloud = prep.load_cloud(tmp_path / "out", "box")
    assert cloud.shape == (256, 3) and cloud.dtype == np.float32
    assert np.abs(trimesh.proximity.signed_distance(mesh, cloud.astype(np.float64))).max() < 1e-5


def test_samples_depend_on_seed_and_name_not_order(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=2)
    a = prep.sample_points(mesh, SMALL, prep.shape_rng(0, "x"))[0]
    b = prep.sample_points(mesh, SMALL, prep.shape_rng(0, "x"))[0]
    c = prep.sample_points(mesh, SMALL, prep.shape_rng(0, "y"))[0]
    d = prep.sample_points(mesh, SMALL, prep.shape_rng(1, "x"))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


# --- splits ------------------------------------------------------------------


def test_splits_are_deterministic_and_follow_fractions():
    names = [f"s{i:03d}" for i in range(100)]
    a = prep.assign_splits(names, (0.8, 0.05, 0.15), seed=3)
    b = prep.assign_splits(list(reversed(names)), (0.8, 0.05, 0.15), seed=3)
    c = prep.assign_splits(names, (0.8, 0.05, 0.15), seed=4)
    assert a == b and a != c
    assert [len(a[s]) for s in prep.SPLITS] == [80, 5, 15]
    assert sorted(a["train"] + a["val"] + a["test"]) == names


def test_user_split_file(tmp_path):
    for n in ("a", "b", "c"):
        _box(tmp_path / "src" / f"{n}.obj")
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps({"train": ["a", "b"], "val": [], "test": ["c", "missing"]}))
    cfg = prep.PrepareConfig(**{**SMALL.__dict__, "split_file": str(split_file)})
    result = prep.prepare(tmp_path / "src", tmp_path / "out", cfg, progress=False)
    ds = prep.load_dataset(tmp_path / "out")
    assert ds.names("train") == ["a", "b"] and ds.names("val") == [] and ds.names("test") == ["c"]
    assert ds.shapes["c"]["split"] == "test"
    assert any("missing" in w for w in result.warnings)
    split_file.write_text(json.dumps({"train": ["a"], "test": ["a"]}))
    with pytest.raises(InputError, match="both"):
        prep.read_split_file(split_file)


# --- manifest and loader -----------------------------------------------------


def test_manifest_contents_and_loader(tmp_path):
    for i in range(5):
        _box(tmp_path / "src" / f"m{i}.ply", extents=(1 + i, 1, 1))
    cfg = prep.PrepareConfig(**{**SMALL.__dict__, "seed": 7})
    prep.prepare(tmp_path / "src", tmp_path / "out", cfg, progress=False)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["format"] == "hyperdiffusion-dataset" and m["version"] == 1 and m["complete"]
    assert m["config"]["n_surface"] == 2000 and m["config"]["seed"] == 7 and m["config"]["workers"] == 1
    assert m["splits"] == prep.assign_splits([f"m{i}" for i in range(5)], (0.8, 0.05, 0.15), 7)
    e = m["shapes"]["m0"]
    assert set(e) == {"source", "status", "reason", "n_vertices", "n_faces", "inside_fraction", "seconds", "split"}
    assert e["status"] == "ok" and e["reason"] is None and e["n_vertices"] == 8 and e["n_faces"] == 12
    assert e["source"].endswith("m0.ply") and 0 < e["inside_fraction"] < 1 and e["seconds"] > 0
    meta = json.loads((tmp_path / "out" / "shapes" / "m0" / "meta.json").read_text())
    assert meta["config"]["n_surface"] == 2000 and meta["status"] == "ok"

    ds = prep.load_dataset(tmp_path / "out")
    assert ds.names("all") == [f"m{i}" for i in range(5)]
    assert sorted(ds.names("train") + ds.names("val") + ds.names("test")) == ds.names("all")
    assert ds.config.n_surface == 2000
    with pytest.raises(ValueError):
        ds.names("training")
    with pytest.raises(InputError, match="samples.npz"):
        prep.load_samples(tmp_path / "out", "nope")
    (tmp_path / "out" / "shapes" / "m1" / "cloud.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cloud.npy"):
        prep.load_cloud(tmp_path / "out", "m1")
    with pytest.raises(InputError, match="manifest.json"):
        prep.load_dataset(tmp_path / "src")
    m["complete"] = False  # what a crashed run leaves: later stages must not read it
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="did not finish"):
        prep.load_dataset(tmp_path / "out")


# --- bad input ---------------------------------------------------------------


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "src"
    _box(src / "good.obj")
    rng = np.random.default_rng(0)
    (src / "random_bytes.ply").write_bytes(rng.bytes(2000))
    (src / "random_bytes_obj.obj").write_bytes(rng.bytes(2000))
    ply = trimesh.creation.icosphere().export(file_type="ply")
    (src / "truncated.ply").write_bytes(ply[: len(ply) // 2])
    (src / "empty.obj").write_text("")
    (src / "nan.obj").write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\nf 2 3 4\nf 1 2 4\n")
    (src / "index_obj.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 7\n")
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n")
    (src / "index_ply.ply").write_bytes(header + np.eye(3, dtype="<f4").tobytes() + bytes([3])
                                        + np.array([0, 1, 9], "<i4").tobytes())
    (src / "collinear.obj").write_text("v 0 0 0\nv 1 1 1\nv 2 2 2\nv 3 3 3\nf 1 2 3\nf 2 3 4\n")
    (src / "point.obj").write_text("v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n")
    (src / "scene.dae").write_text("<COLLADA/>")
    (src / "texture.png").write_bytes(b"not a mesh, ignored")
    (src / "sheet.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n")
    trimesh.creation.icosphere(subdivisions=3).export(src / "big.stl")  # 1280 faces

    cfg = prep.PrepareConfig(**{**SMALL.__dict__, "max_faces": 200})
    result = prep.prepare(src, tmp_path / "out", cfg, progress=False)
    shapes = result.manifest["shapes"]
    reasons = {n: e["reason"] for n, e in shapes.items()}
    assert "texture" not in shapes
    assert {n for n, e in shapes.items() if e["status"] == "ok"} == {"good", "sheet", "big"}
    assert reasons["random_bytes"].startswith("unreadable")
    assert reasons["random_bytes_obj"].startswith("empty mesh")  # trimesh reads garbage OBJ as nothing
    assert reasons["truncated"].startswith("unreadable")
    assert reasons["empty"].startswith("empty mesh")
    assert reasons["nan"] == "non-finite: 1 vertices have NaN/Inf coordinates"
    assert reasons["index_obj"].startswith("bad faces: face index out of range")
    assert reasons["index_ply"] == "bad faces: face index 9 out of range for 3 vertices"
    assert reasons["collinear"].startswith("degenerate") and reasons["point"].startswith("degenerate")
    assert reasons["scene"].startswith("unsupported format: .dae")
    assert reasons["sheet"].startswith("flat mesh")
    assert reasons["big"].startswith("decimated from 1280 to") and shapes["big"]["n_faces"] <= 200
    # Skipped shapes leave no files; prepared ones are complete.
    assert sorted(p.name for p in (tmp_path / "out" / "shapes").iterdir()) == ["big", "good", "sheet"]
    summary = prep.summary(result)
    assert "prepared 3 shapes" in summary and "skipped 10" in summary and "nan: non-finite: 1 vertices" in summary
    assert "unreadable (2)" in summary and "degenerate (2)" in summary


def test_failed_decimation_skips_the_shape(tmp_path, monkeypatch):
    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "ball.ply")  # 320 faces

    def fail(self, **kwargs):
        raise RuntimeError("simplifier exploded")

    monkeypatch.setattr(trimesh.Trimesh, "simplify_quadric_decimation", fail)
    cfg = prep.PrepareConfig(**{**SMALL.__dict__, "max_faces": 100})
    result = prep.prepare(tmp_path / "ball.ply", tmp_path / "out", cfg, progress=False)
    assert result.skipped == {"ball": "too many faces: 320 > max_faces 100 and decimation failed (simplifier exploded)"}


# --- resume ------------------------------------------------------------------


def test_rerun_redoes_only_unfinished_shapes(tmp_path):
    for n in ("a", "b", "c"):
        _box(tmp_path / "src" / f"{n}.off")
    out = tmp_path / "out"
    prep.prepare(tmp_path / "src", out, SMALL, progress=False)
    first = json.loads((out / "manifest.json").read_text())
    samples_b = (out / "shapes" / "b" / "samples.npz").read_bytes()
    # Simulate a crash: b lost its meta.json and half its files; c never started.
    (out / "shapes" / "b" / "meta.json").unlink()
    (out / "shapes" / "b" / "cloud.npy").unlink()
    for f in (out / "shapes" / "c").iterdir():
        f.unlink()
    (out / "shapes" / "c").rmdir()
    before = _mtimes(out / "shapes" / "a")
    os.utime(out / "shapes" / "a" / "meta.json", ns=(1, 1))  # reused entries come from meta.json
    before["meta.json"] = 1

    result = prep.prepare(tmp_path / "src", out, SMALL, progress=False)
    assert result.n_reused == 1 and result.n_new == 2
    assert _mtimes(out / "shapes" / "a") == before
    assert (out / "shapes" / "b" / "samples.npz").read_bytes() == samples_b  # same seed, same samples
    second = json.loads((out / "manifest.json").read_text())
    assert second["splits"] == first["splits"]
    assert second["shapes"]["a"] == first["shapes"]["a"]


def test_rerun_with_other_settings_is_refused(tmp_path):
    _box(tmp_path / "src" / "a.obj")
    prep.prepare(tmp_path / "src", tmp_path / "out", SMALL, progress=False)
    other = prep.PrepareConfig(**{**SMALL.__dict__, "n_surface": 1000})
    with pytest.raises(InputError, match="n_surface 2000 -> 1000"):
        prep.prepare(tmp_path / "src", tmp_path / "out", other, progress=False)
    # Changing only the worker count or the split fractions is fine.
    ok = prep.PrepareConfig(**{**SMALL.__dict__, "split_fractions": (0.5, 0.0, 0.5), "workers": 2})
    assert prep.prepare(tmp_path / "src", tmp_path / "out", ok, progress=False).n_reused == 1


def test_worker_count_does_not_change_results(tmp_path):
    for n in ("a", "b"):
        _box(tmp_path / "src" / f"{n}.obj", extents=(1, 2, 3))
    prep.prepare(tmp_path / "src", tmp_path / "one", SMALL, progress=False)
    two = prep.PrepareConfig(**{**SMALL.__dict__, "workers": 2})
    prep.prepare(tmp_path / "src", tmp_path / "two", two, progress=False)
    for n in ("a", "b"):
        for f in ("samples.npz", "cloud.npy"):
            assert (tmp_path / "one" / "shapes" / n / f).read_bytes() == (tmp_path / "two" / "shapes" / n / f).read_bytes()


# --- sources -----------------------------------------------------------------


def test_shapenet_layout_v1_and_v2(tmp_path):
    _box(tmp_path / "v1" / "1a2b" / "model.obj")
    _box(tmp_path / "v1" / "3c4d" / "model.obj")
    (tmp_path / "v1" / "1a2b" / "model.mtl").write_text("newmtl x\n")
    _box(tmp_path / "v2" / "02691156" / "9f8e" / "models" / "model_normalized.obj")
    (tmp_path / "v2" / "02691156" / "9f8e" / "models" / "model_normalized.json").write_text("{}")
    sources, layout = prep.find_sources(tmp_path / "v1")
    assert layout == "shapenet" and [s.name for s in sources] == ["1a2b", "3c4d"]
    sources, layout = prep.find_sources(tmp_path / "v2")
    assert layout == "shapenet" and [s.name for s in sources] == ["9f8e"]


def test_folder_names_are_safe_and_unique(tmp_path):
    _box(tmp_path / "a.obj")
    _box(tmp_path / "a.ply")
    _box(tmp_path / "sub dir" / "b.stl")
    sources, layout = prep.find_sources(tmp_path)
    assert layout == "folder" and [s.name for s in sources] == ["a_obj", "a_ply", "sub_dir_b"]
    # An output folder inside the source folder is not read back as input.
    prep.prepare(tmp_path, tmp_path / "out", SMALL, progress=False)
    assert [s.name for s in prep.find_sources(tmp_path, exclude=tmp_path / "out")[0]] == ["a_obj", "a_ply", "sub_dir_b"]
    assert prep.prepare(tmp_path, tmp_path / "out", SMALL, progress=False).n_reused == 3


def test_multi_part_glb_is_concatenated(tmp_path):
    scene = trimesh.Scene([trimesh.creation.box(), trimesh.creation.icosphere().apply_translation([3, 0, 0])])
    scene.export(tmp_path / "two.glb")
    mesh = prep.load_mesh(str(tmp_path / "two.glb"))
    assert len(mesh.faces) == 12 + 1280


def test_builtin_source(tmp_path):
    sources, layout = prep.find_sources("builtin:chair", count=3, seed=10)
    assert layout == "builtin"
    assert [(s.name, s.source) for s in sources] == [(f"chair_000{i}", f"builtin:chair:{10 + i}") for i in range(3)]
    result = prep.prepare("builtin:chair", tmp_path / "out", SMALL, count=2, progress=False)
    assert result.n_ok == 2
    with pytest.raises(InputError, match="--count"):
        prep.find_sources("builtin:chair")
    with pytest.raises(InputError, match="unknown built-in family"):
        prep.find_sources("builtin:teapot", count=1)


# --- CLI ---------------------------------------------------------------------

SMALL_ARGS = ["--n-surface", "500", "--n-uniform", "500", "--n-cloud", "64", "--workers", "1", "--no-progress"]


def test_cli_exit_codes(tmp_path, capsys):
    _box(tmp_path / "src" / "a.obj")
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "out"), *SMALL_ARGS]) == 0
    assert "prepared 1 shapes" in capsys.readouterr().out

    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "out2"), *SMALL_ARGS]) == 2
    err = capsys.readouterr().err
    assert "nowhere: no such file or folder" in err and len(err.strip().splitlines()) == 1

    (tmp_path / "file").write_text("x")
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "file" / "out"), *SMALL_ARGS]) == 2
    assert "not writable" in capsys.readouterr().err

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.obj").write_text("")
    assert main(["prepare", str(tmp_path / "bad"), str(tmp_path / "out3"), *SMALL_ARGS]) == 1
    captured = capsys.readouterr()
    assert "nothing was prepared" in captured.err and "empty mesh" in captured.out

    (tmp_path / "nomesh").mkdir()
    assert main(["prepare", str(tmp_path / "nomesh"), str(tmp_path / "out4"), *SMALL_ARGS]) == 2


@pytest.mark.skipif(not (DATA / "meshes" / "sweethome3d-chair").is_dir(), reason="shared data not present")
def test_real_chairs(tmp_path):
    folder = DATA / "meshes" / "sweethome3d-chair"
    result = prep.prepare(folder, tmp_path / "out", SMALL, count=2, progress=False)
    assert result.n_ok == 2
    for name in prep.load_dataset(tmp_path / "out").names():
        mesh = trimesh.load(prep.mesh_path(tmp_path / "out", name), process=False)
        assert np.abs(mesh.vertices).max() == pytest.approx(0.475, abs=1e-6)


def test_manifest_records_the_labelling_method(tmp_path):
    from hyperdiffusion.data.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(n_surface=500, n_uniform=500, n_cloud=64, workers=1)
    prepare("builtin:table", tmp_path / "ds", cfg, count=1, progress=False)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["labelling"]["occupancy"]["method"] == "auto"
    meta = json.loads(next((tmp_path / "ds" / "shapes").glob("*/meta.json")).read_text())
    assert meta["labelling"] == manifest["labelling"]


def test_meta_records_which_labeller_was_used(tmp_path):
    from hyperdiffusion.data.prepare import PrepareConfig, prepare

    src = tmp_path / "src"
    src.mkdir()
    box = trimesh.creation.box(extents=(0.9, 0.6, 0.4))
    box.export(src / "closed.ply")
    trimesh.Trimesh(box.vertices, box.faces[2:], process=False).export(src / "open.ply")  # one side missing
    cfg = PrepareConfig(n_surface=500, n_uniform=500, n_cloud=64, workers=1)
    prepare(src, tmp_path / "ds", cfg, progress=False)
    used = {name: json.loads((tmp_path / "ds" / "shapes" / name / "meta.json").read_text())["labeller"]
            for name in ("closed", "open")}
    assert used == {"closed": "fast", "open": "robust"}

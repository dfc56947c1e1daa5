"""The whole pipeline end to end with a tiny configuration: every artefact exists and is valid.

Three runs: a built-in family with the user's sizes on top of --tiny, an animated family
(the 4D pipeline), and a folder of the user's own meshes (--data). Each takes under a
minute on 2 cores.
"""

import json
import math

import numpy as np
import pytest
import trimesh

from hyperdiffusion.cli import build_parser, main
from hyperdiffusion.demo import DemoConfig, config_from_args
from hyperdiffusion.fields.mlp import load_weight_set
from hyperdiffusion.io import InputError


def test_tiny_demo_end_to_end_with_the_users_sizes(tmp_path):
    out = tmp_path / "run"
    # --tiny supplies only what the user did not give: family, count, steps and samples are the user's.
    assert main(["demo", str(out), "--tiny", "--family", "table", "--count", "8", "--train-steps", "7",
                 "--samples", "3"]) == 0

    # Every stage left its self-describing output, with the user's settings.
    config = json.loads((out / "config.json").read_text())["demo"]
    assert {k: config[k] for k in ("family", "count", "train_steps", "n_samples")} == \
        {"family": "table", "count": 8, "train_steps": 7, "n_samples": 3}
    assert config["n_surface"] == DemoConfig.tiny().n_surface  # the rest stays tiny
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert sorted(manifest["shapes"]) == [f"table_{i:04d}" for i in range(8)]
    fitted = load_weight_set(out / "mlps" / "weights.safetensors")
    assert fitted.names == manifest["splits"]["train"]
    assert json.loads((out / "diffusion" / "checkpoints" / "last.json").read_text())["step"] == 7
    generated = load_weight_set(out / "samples" / "weights.safetensors")
    assert generated.mlp == fitted.mlp and generated.weights.shape == (3, fitted.weights.shape[1])
    assert torch_isfinite(generated.weights)
    _check_meshes_and_clouds(out / "samples", generated.names)

    # Metrics are finite and in range, with their modes, and every sample is accounted for.
    m = json.loads((out / "metrics.json").read_text())
    for key in ("mmd_cd", "mmd_emd"):
        assert math.isfinite(m[key]) and m[key] >= 0
    for key in ("cov_cd", "nna_cd", "cov_emd", "nna_emd"):
        assert 0.0 <= m[key] <= 1.0
    assert m["modes"]["fpd"]["reason"] if m["fpd"] is None else math.isfinite(m["fpd"])
    assert m["modes"]["normalisation"] == "hd" and m["modes"]["emd"]["mode"] == "exact"
    assert 0.0 <= m["novelty"]["copy_rate"] <= 1.0
    counts = m["sample_counts"]
    assert counts["generated"] == 3 and counts["scored"] == len(manifest["splits"]["test"])
    assert counts["with_cloud"] + counts["empty"] + counts["full"] + counts["non-finite"] == 3

    # Pictures and the gallery page.
    for name in ("train_shapes", "fitted_mlps", "samples", "samples_vs_nearest"):
        assert (out / "images" / f"{name}.png").stat().st_size > 1000
    page = (out / "index.html").read_text()
    assert "images/samples.png" in page and (out / "web" / "three.min.js").is_file()


def test_tiny_4d_demo_end_to_end(tmp_path):
    """An animated family runs the 4D pipeline: 4D MLPs, the mlp4d preset, sequences scored, GIF previews."""
    from PIL import Image

    out = tmp_path / "run"
    assert main(["demo", str(out), "--tiny", "--family", "walker"]) == 0
    tiny = DemoConfig.tiny(family="walker")
    config = json.loads((out / "config.json").read_text())["demo"]
    assert config["n_surface"] == tiny.n_surface < DemoConfig.tiny().n_surface  # 4D's own tiny sizes
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["kind"] == "4d" and sorted(manifest["shapes"]) == [f"walker_{i:04d}" for i in range(tiny.count)]
    fitted = load_weight_set(out / "mlps" / "weights.safetensors")
    assert fitted.mlp.in_dim == 4 and fitted.names == manifest["splits"]["train"]
    # Only the fitted MLPs the preview shows are meshed, 16 frames each.
    shown = sorted(p.name for p in (out / "mlps" / "sequences").iterdir())
    assert shown == fitted.names[:4] and len(list((out / "mlps" / "sequences" / shown[0]).glob("*.ply"))) == 16
    last = json.loads((out / "diffusion" / "checkpoints" / "last.json").read_text())
    assert last["step"] == tiny.train_steps
    run_cfg = json.loads((out / "diffusion" / "config.json").read_text())
    assert run_cfg["train_config"]["representation"] == "mlp4d"
    generated = load_weight_set(out / "samples" / "weights.safetensors")
    assert generated.mlp == fitted.mlp and generated.weights.shape == (tiny.n_samples, fitted.weights.shape[1])

    # Every sample is accounted for: 16 frame meshes and a [16, 2048, 3] cloud, or a status saying why not.
    statuses = json.loads((out / "samples" / "mesh.json").read_text())["status"]
    assert sorted(statuses) == generated.names
    for name, st in statuses.items():
        cloud = out / "samples" / "clouds" / f"{name}.npy"
        assert cloud.is_file() == (st == "ok")
        if st == "ok":
            assert np.load(cloud, allow_pickle=False).shape == (16, 2048, 3)
            assert len(list((out / "samples" / "sequences" / name).glob("frame_*.ply"))) == 16
    m = json.loads((out / "metrics.json").read_text())
    assert m["modes"]["kind"] == "4d" and m["modes"]["normalisation"].startswith("none")
    counts = m["sample_counts"]
    assert counts["generated"] == tiny.n_samples
    assert counts["with_cloud"] + counts["empty_or_full_frames"] + counts["non-finite"] == tiny.n_samples
    assert counts["with_cloud"] == sum(st == "ok" for st in statuses.values())
    assert counts["scored"] == len(manifest["splits"]["test"])
    for key in ("mmd_cd", "mmd_emd"):
        assert math.isfinite(m[key]) and m[key] >= 0
    nearest = {r["sample"]: r["train_name"] for r in m["novelty"]["nearest"]}
    assert len(nearest) == counts["with_cloud"] and set(nearest.values()) <= set(fitted.names)

    # Animated previews (16 frames each), their middle frames, and a gallery that shows the GIFs.
    for name in ("samples_vs_nearest", "train_vs_fitted"):
        with Image.open(out / "images" / f"{name}.gif") as gif:
            assert gif.format == "GIF" and gif.n_frames == 16
        assert (out / "images" / f"{name}.png").stat().st_size > 1000
    page = (out / "index.html").read_text()
    assert '<img src="images/samples_vs_nearest.gif"' in page and '<img src="images/train_vs_fitted.gif"' in page
    meshes_js = (out / "web" / "meshes.js").read_text()  # the 3D viewer gets whole sequences to play
    assert meshes_js.count('"frames":') >= 1 and '"train ' in meshes_js


def test_demo_on_a_folder_of_the_users_meshes(tmp_path):
    data = tmp_path / "my meshes"
    (data / "round").mkdir(parents=True)
    shapes = {"box": trimesh.creation.box((0.6, 0.4, 0.3)), "round/ball": trimesh.creation.icosphere(2, 0.3),
              "cylinder": trimesh.creation.cylinder(0.2, 0.6), "round/capsule": trimesh.creation.capsule(0.4, 0.15),
              "cone": trimesh.creation.cone(0.3, 0.5)}
    for name, mesh in shapes.items():
        mesh.export(data / f"{name}.ply")
    out = tmp_path / "run"
    assert main(["demo", str(out), "--data", str(data), "--tiny", "--train-steps", "5"]) == 0

    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert sorted(manifest["shapes"]) == ["box", "cone", "cylinder", "round_ball", "round_capsule"]
    assert all(e["status"] == "ok" for e in manifest["shapes"].values())
    assert json.loads((out / "config.json").read_text())["demo"]["data"] == str(data)
    fitted = load_weight_set(out / "mlps" / "weights.safetensors")
    assert fitted.names == manifest["splits"]["train"] and len(fitted.names) == 4
    generated = load_weight_set(out / "samples" / "weights.safetensors")
    assert len(generated.names) == DemoConfig.tiny().n_samples
    _check_meshes_and_clouds(out / "samples", generated.names)
    m = json.loads((out / "metrics.json").read_text())
    assert m["reference"] == manifest["splits"]["test"] and math.isfinite(m["mmd_cd"])
    assert (out / "index.html").is_file()


def test_demo_options_are_checked_before_any_work(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["demo", str(tmp_path / "r"), "--data", str(tmp_path), "--family", "table"])
    with pytest.raises(InputError, match="not both"):
        config_from_args(args)
    # Without --tiny, --data takes all of the user's meshes; with it, the tiny count unless given.
    full = config_from_args(parser.parse_args(["demo", "--data", str(tmp_path)]))
    assert full.count is None and full.train_steps == DemoConfig().train_steps
    tiny = config_from_args(parser.parse_args(["demo", "--data", str(tmp_path), "--tiny", "--samples", "2"]))
    assert tiny.count == DemoConfig.tiny().count and tiny.n_samples == 2
    assert config_from_args(parser.parse_args(["demo", "--count", "12"])).count == 12
    # An animated family gets the 4D sizes (the user's choices still win); 3D families keep theirs.
    walker = config_from_args(parser.parse_args(["demo", "--family", "walker", "--train-steps", "9"]))
    assert walker.is_4d and walker.n_surface == 4000 and walker.mesh_res == 64 and walker.train_steps == 9
    assert not config_from_args(parser.parse_args(["demo"])).is_4d
    assert config_from_args(parser.parse_args(["demo", "--family", "chair"])) == DemoConfig(family="chair")
    assert config_from_args(parser.parse_args(["demo", "--tiny"])) == DemoConfig.tiny()
    for argv, message in ((["--samples", "0"], "n-samples"), (["--data", str(tmp_path / "nope")], "folder"),
                          (["--data", str(tmp_path)], "inside --data")):
        assert main(["demo", str(tmp_path / "run"), "--tiny", *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _check_meshes_and_clouds(folder, names):
    """Every sample has a status; each 'ok' one has a mesh with faces and a 2048-point finite cloud."""
    statuses = json.loads((folder / "mesh.json").read_text())["status"]
    assert sorted(statuses) == sorted(names)
    ok = sorted(n for n, s in statuses.items() if s == "ok")
    plys, npys = sorted((folder / "meshes").glob("*.ply")), sorted((folder / "clouds").glob("*.npy"))
    # The loops below must run over exactly the meshed samples, not over whatever (or nothing) is there.
    assert [p.stem for p in plys] == ok and [p.stem for p in npys] == ok
    for ply in plys:
        assert len(trimesh.load(ply, force="mesh").faces) > 0
    for npy in npys:
        cloud = np.load(npy, allow_pickle=False)
        assert cloud.shape == (2048, 3) and np.isfinite(cloud).all()


def torch_isfinite(t) -> bool:
    import torch

    return bool(torch.isfinite(t).all())

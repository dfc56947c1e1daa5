"""Training and sampling end to end on a tiny model: memorisation, exact resume, file round trips."""

import json
from dataclasses import replace

import pytest
import torch

from hyperdiffusion.io import InputError
from hyperdiffusion.fields.mlp import MLPConfig, default_init, load_weight_set, save_weight_set
from hyperdiffusion.diffusion.sample import SampleConfig, sample_weights
from hyperdiffusion.diffusion.train import TrainConfig, load_denoiser, read_checkpoint, train

MLP = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)  # the MLPs of tests/conftest.py's weight_set
TINY = TrainConfig(preset="cpu", n_embd=64, n_layer=2, n_head=4, lr=3e-3, batch_size=8, max_steps=8,
                   ema_decay=0.99, log_every=2, ckpt_every=4, val_every_epochs=0)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


def test_memorises_training_set(weight_set, tmp_path):
    path, w = weight_set
    cfg = replace(TINY, max_steps=500, standardize=True, ckpt_every=500, log_every=100)
    summary = train(path, tmp_path / "run", cfg, progress=False)
    assert summary["step"] == 500
    out = sample_weights(tmp_path / "run", tmp_path / "samples", SampleConfig(n=8, steps=20, mesh=False), progress=False)
    s = load_weight_set(out).weights
    nn_dist, nn_idx = torch.cdist(s, w).min(dim=1)
    spread = torch.pdist(w).min()
    # Samples land on training vectors: their distance to the nearest one is a small fraction of the
    # smallest distance between two training vectors (measured: ~0.1-0.5 against 3.3).
    assert nn_dist.max() < 0.25 * spread, (nn_dist, spread)
    assert len(set(nn_idx.tolist())) >= 4  # not collapsed onto one shape


def _state(run):
    tensors, meta = read_checkpoint(run)
    return tensors, meta


def test_exact_resume(weight_set, tmp_path):
    path, _ = weight_set
    train(path, tmp_path / "straight", TINY, progress=False)
    # Stop after 4 steps (a checkpoint), then rerun the same command to finish.
    train(path, tmp_path / "resumed", replace(TINY, max_steps=4), progress=False)
    assert _state(tmp_path / "resumed")[1]["step"] == 4
    train(path, tmp_path / "resumed", TINY, progress=False)
    a, ma = _state(tmp_path / "straight")
    b, mb = _state(tmp_path / "resumed")
    assert ma["step"] == mb["step"] == 8
    assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a) and any(k.startswith("ema.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise
    assert ma["scheduler"] == mb["scheduler"] and ma["optimizer"] == mb["optimizer"]
    # The metrics log holds each logged step once, with the same losses as the straight run.
    losses = [[(r["step"], r["train/loss"]) for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())]
              for d in ("straight", "resumed")]
    assert losses[0] == losses[1] and [s for s, _ in losses[0]] == [2, 4, 6, 8]


def test_resume_refuses_changed_settings(weight_set, tmp_path):
    path, _ = weight_set
    train(path, tmp_path / "run", replace(TINY, max_steps=2), progress=False)
    with pytest.raises(InputError, match="lr"):
        train(path, tmp_path / "run", replace(TINY, lr=1e-2), progress=False)


def test_checkpoint_round_trip(weight_set, tmp_path):
    path, w = weight_set
    for standardize in (False, True):
        run = tmp_path / f"run_{standardize}"
        train(path, run, replace(TINY, max_steps=3, standardize=standardize), progress=False)
        tensors, meta = read_checkpoint(run)
        assert (run / "checkpoints" / "last.json").is_file() and meta["step"] == 3
        assert meta["standardize"] is standardize and ("norm.mean" in tensors) is standardize
        if standardize:
            torch.testing.assert_close(tensors["norm.mean"], w.mean(0))
        model, diffusion, norm, meta2 = load_denoiser(run)
        assert meta2["weights_used"] == "ema"
        ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        for k, v in model.state_dict().items():
            assert torch.equal(v, ema[k]), k
        assert diffusion.num_timesteps == 500 and diffusion.mean_type.value == "x0"
        raw, *_ = load_denoiser(run, use_ema=False)
        assert torch.equal(next(iter(raw.state_dict().values())), tensors["model." + next(iter(raw.state_dict()))])
    # No pickle: the checkpoint is plain safetensors with JSON metadata.
    assert (tmp_path / "run_False" / "checkpoints" / "last.safetensors").read_bytes()[8:9] == b"{"


def test_sample_writes_weight_set_and_resumes(weight_set, tmp_path):
    path, _ = weight_set
    train(path, tmp_path / "run", replace(TINY, max_steps=2), progress=False)
    cfg = SampleConfig(n=5, steps=5, batch_size=2, mesh=False, seed=3)
    out = sample_weights(tmp_path / "run" / "checkpoints" / "last.safetensors", tmp_path / "s", cfg, progress=False)
    ws = load_weight_set(out)
    assert ws.names == [f"sample_{i:04d}" for i in range(5)] and ws.mlp == MLP
    assert ws.weights.shape == (5, MLP.n_params) and torch.isfinite(ws.weights).all()
    assert sorted(p.name for p in (tmp_path / "s" / "batches").iterdir()) == [f"batch_{b:04d}.safetensors" for b in range(3)]
    # A crash after batch 0: remove the later batches and the final file, rerun, same result.
    for p in [out, *sorted((tmp_path / "s" / "batches").iterdir())[1:]]:
        p.unlink()
    again = load_weight_set(sample_weights(tmp_path / "run", tmp_path / "s", cfg, progress=False))
    assert torch.equal(again.weights, ws.weights)
    # Another seed gives other samples.
    other = load_weight_set(sample_weights(tmp_path / "run", tmp_path / "s2", replace(cfg, seed=4), progress=False))
    assert not torch.allclose(other.weights, ws.weights)


def test_cli_train_and_sample(weight_set, tmp_path):
    from hyperdiffusion.cli import main

    path, _ = weight_set
    args = ["train", str(path), str(tmp_path / "run"), "--preset", "cpu", "--n-embd", "32", "--n-layer", "1",
            "--n-head", "2", "--max-steps", "2", "--batch-size", "4", "--no-progress"]
    assert main(args) == 0
    assert main(["sample", str(tmp_path / "run"), str(tmp_path / "s"), "--n", "3", "--steps", "4",
                 "--no-mesh", "--no-progress"]) == 0
    assert load_weight_set(tmp_path / "s").weights.shape == (3, MLP.n_params)
    assert main(["train", str(tmp_path / "missing"), str(tmp_path / "run2"), "--preset", "cpu"]) == 2


def _sphere_mlp(mlp: MLPConfig) -> torch.Tensor:
    """Weights of a small MLP fitted to a sphere of radius 0.3 (seconds on one thread)."""
    import numpy as np

    from hyperdiffusion.fields.fit import FitConfig, fit_shapes, split_samples

    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.5, 0.5, (8000, 3)).astype(np.float32)
    occ = (np.linalg.norm(pts, axis=1) < 0.3).astype(np.uint8)
    cfg = FitConfig(points_per_step=512, steps_per_epoch=25, max_epochs=12)
    shape = split_samples("sphere", pts, occ, 0, cfg)
    w, _ = fit_shapes([shape], default_init(mlp, 1, torch.Generator().manual_seed(0))[0], cfg, mlp)
    return w[0]


def test_validation_scores_samples_against_a_reference(weight_set, tmp_path):
    """A denoiser that always predicts one sphere MLP (x0 prediction) makes DDIM return that MLP, so
    validation must mesh every sample and score them; the scores are checked against a direct computation."""
    import numpy as np
    import trimesh

    from hyperdiffusion.diffusion.gaussian import GaussianDiffusion
    from hyperdiffusion.diffusion.standardize import Standardizer
    from hyperdiffusion.diffusion.train import validate
    from hyperdiffusion.evaluation import metrics
    from hyperdiffusion.representations import get_representation

    sphere = _sphere_mlp(MLP)
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(2):  # two spheres of radius 0.3: the samples' own shape
        m = trimesh.creation.icosphere(4, radius=0.3)
        np.save(ref / f"s{i}.npy", np.asarray(trimesh.sample.sample_surface(m, 2048, seed=i)[0], np.float32))
    tset = get_representation("mlp3d").load(weight_set[0])
    cfg = replace(TINY, val_samples=2, val_ddim_steps=3, val_res=32, val_reference=str(ref))
    model = lambda x, t: sphere.expand(len(x), -1)  # noqa: E731
    out = validate(model, GaussianDiffusion(), Standardizer(), tset, cfg, step=0, device=torch.device("cpu"))
    assert out["val/nonempty_fraction"] == 1.0
    # Both samples are the same sphere, so both have the same nearest reference: COV is 1/2.
    assert out["val/cov_cd"] == 0.5
    # nn_dist is the distance from the sphere MLP to its nearest training vector, exactly
    assert out["val/nn_dist"] == pytest.approx(torch.cdist(sphere[None], tset.data).min().item(), rel=1e-5)
    # The tiny MLP's sphere scores 0.11 against exact spheres (hd normalisation); a box scores 0.38.
    assert out["val/mmd_cd"] < 0.2


def test_score_validation_on_known_meshes(tmp_path):
    import numpy as np
    import trimesh

    from hyperdiffusion.diffusion.train import _score_validation

    ref = tmp_path / "ref"
    ref.mkdir()
    shapes = [trimesh.creation.icosphere(3, radius=0.3), trimesh.creation.box(extents=(0.5, 0.2, 0.4))]
    for i, m in enumerate(shapes):
        np.save(ref / f"s{i}.npy", np.asarray(trimesh.sample.sample_surface(m, 2048, seed=i)[0], np.float32))
    clouds = [np.asarray(trimesh.sample.sample_surface(m, 2048, seed=10 + i)[0], np.float32)
              for i, m in enumerate(shapes)]
    scores = _score_validation(clouds, replace(TINY, val_reference=str(ref)))
    # Generated = reference shapes: each reference is matched (COV 1) at a small distance, and
    # each generated cloud's nearest neighbour is its own reference: 1-NNA 0 (the classifier is always wrong).
    assert scores["val/cov_cd"] == 1.0
    assert 0 <= scores["val/mmd_cd"] < 0.05
    assert scores["val/nna_cd"] == 0.0


def test_cli_options_come_from_the_config(tmp_path, capsys):
    """Every TrainConfig field is an option; booleans can be turned off; no preset on a CPU is the CPU preset."""
    import argparse
    from dataclasses import fields

    from hyperdiffusion.diffusion.train import TRAIN_PRESETS, config_from_args, register

    w = str(tmp_path / "w.safetensors")
    save_weight_set(w, default_init(MLP, 2, torch.Generator().manual_seed(0)), ["a", "b"], MLP)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in help_text, f.name
    args = parser.parse_args(["train", w, "out", "--device", "cpu"])
    cfg, note = config_from_args(args)
    assert cfg == replace(TRAIN_PRESETS["cpu"], device="cpu") and "default on a CPU" in note
    assert cfg.standardize is True
    args = parser.parse_args(["train", w, "out", "--preset", "cpu", "--no-standardize",
                              "--val-level", "0.8", "--schedule", "cosine"])
    cfg, _ = config_from_args(args)
    assert cfg.standardize is False and cfg.val_level == 0.8 and cfg.diffusion_config().schedule == "cosine"
    with pytest.raises(InputError, match="probability"):
        replace(cfg, val_level=1.386)  # a logit where a probability belongs is refused, not misread

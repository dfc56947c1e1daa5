"""PVD's PVCNN2 denoiser: sizes, the interface, and that the diffusion model learns a few clouds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyperdiffusion.denoisers import build_denoiser, count_parameters, get_denoiser
from hyperdiffusion.denoisers.pvcnn import PVCNN_PRESETS, PVCNNConfig, preset, timestep_embedding
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from hyperdiffusion.evaluation.metrics import pairwise_chamfer


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


def _model(preset="tiny", n_points=2048):
    torch.manual_seed(0)
    return build_denoiser("pvcnn2", get_denoiser("pvcnn2").config(preset), (n_points, 3))


def test_output_shape_and_time_dependence():
    model = _model().eval()
    x = torch.randn(2, 2048, 3) * 0.3
    with torch.no_grad():
        y = model(x, torch.tensor([0, 999]))
        y_same_t = model(x, torch.tensor([999, 999]))
    assert y.shape == (2, 2048, 3) and torch.isfinite(y).all()
    assert torch.allclose(y[1], y_same_t[1], atol=1e-5)  # each cloud depends only on its own t ...
    assert not torch.allclose(y[0], y_same_t[0], atol=1e-4)  # ... and on it


def test_permuting_points_barely_changes_the_prediction():
    # FPS starts at index 0 and ball query keeps the first neighbours in index order, so PVCNN2 is
    # permutation-equivariant only up to those choices: with point 0 kept, a permutation of the rest
    # changes the (permuted) output by little compared with its size.
    model = _model().eval()
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(1, 2048, 3, generator=g) - 0.5) * 0.9
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(2047, generator=g)])
    with torch.no_grad():
        y, yp = model(x, torch.tensor([10])), model(x[:, perm], torch.tensor([10]))
    assert (yp - y[:, perm]).abs().mean() < 0.2 * y.abs().mean()


def test_paper_preset_has_pvds_size_and_configs_round_trip():
    paper = build_denoiser("pvcnn2", get_denoiser("pvcnn2").config("paper"), (2048, 3))
    n = count_parameters(paper)
    assert 27.5e6 < n < 27.7e6, n  # PVD's PVCNN2: about 27.6 M
    assert set(PVCNN_PRESETS) == {"paper", "cpu", "tiny"}
    for cfg in PVCNN_PRESETS.values():
        assert PVCNNConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # voxel attention only in the second SA stage; the global attention on 512 channels
    assert paper.sa[1].convs[0].voxel_layers[6].__class__.__name__ == "Attention"
    assert paper.global_att.q.in_channels == 512
    assert [len(s.convs) for s in paper.sa] == [2, 1, 1, 0]
    assert [s.sa.n_centers for s in paper.sa] == [1024, 256, 64, 16]
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        build_denoiser("pvcnn2", PVCNN_PRESETS["tiny"].to_dict(), (24, 24, 24))


def test_timestep_embedding_is_pvds():
    e = timestep_embedding(torch.tensor([0, 7]), 8)
    f = np.exp(-np.arange(4) * np.log(10000) / 3)
    np.testing.assert_allclose(e[1].numpy(), np.concatenate([np.sin(7 * f), np.cos(7 * f)]), rtol=1e-6)
    np.testing.assert_allclose(e[0].numpy(), [0, 0, 0, 0, 1, 1, 1, 1])


def test_data_scale_is_applied_in_training_and_undone_in_sampling():
    model = _model(n_points=64).eval()
    assert model.cfg.data_scale == 5.0 == PVCNN_PRESETS["paper"].data_scale
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=10, prediction="eps", variance="fixed_small"))
    x0, noise, t = torch.rand(2, 64, 3) - 0.5, torch.randn(2, 64, 3), torch.tensor([3, 7])
    with torch.no_grad():
        assert torch.equal(model.training_loss(diffusion, x0, t, noise),
                           diffusion.training_loss(model, 5.0 * x0, t, noise))
        a = model.sample(diffusion, (2, 64, 3), sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
        b = diffusion.sample(model, (2, 64, 3), sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a * 5.0, b)


def test_input_skip_lets_eps_follow_the_scale_and_mean_of_x_t():
    # PVD's network sees a cloud only up to its mean and scale (per-cloud voxel normalisation, GroupNorm
    # over the points); at large t eps ~ x_t, so eps must follow both. Without the skip (the paper
    # preset, as the authors) a 10 % larger or shifted x_t barely moves the prediction; with it (g = 1
    # at init) the prediction moves by about what a model with eps = x_t would.
    x, t = torch.randn(2, 256, 3, generator=torch.Generator().manual_seed(3)), torch.tensor([999, 999])
    for skip, lo, hi in ((False, 0.0, 0.05), (True, 0.08, 0.12)):
        torch.manual_seed(0)
        model = build_denoiser("pvcnn2", preset("tiny", dropout=0.0, input_skip=skip).to_dict(), (256, 3)).eval()
        with torch.no_grad():
            e = model(x, t)
            scaled, shifted = model(1.1 * x, t) - e, model(x + 0.1, t) - e
        rms = lambda a: a.square().mean().sqrt().item()  # noqa: E731
        assert lo <= rms(scaled) / rms(x) < hi, (skip, rms(scaled) / rms(x))  # ideal (eps = x_t): 0.1
        assert lo <= abs(shifted.mean().item()) < hi, (skip, shifted.mean().item())  # ideal: 0.1
    assert PVCNN_PRESETS["cpu"].input_skip and PVCNN_PRESETS["tiny"].input_skip
    assert not PVCNN_PRESETS["paper"].input_skip


# ----------------------------------------------------------------------------- it learns


def four_clouds(points: int) -> torch.Tensor:
    """The DPC overfit test's shapes (sphere, 2x0.6x0.6 box, torus, cylinder), centred and scaled to the
    dataset's range (max |coordinate| 0.45): [4, points, 3]."""
    import trimesh

    meshes = [trimesh.creation.icosphere(3), trimesh.creation.box((2, 0.6, 0.6)), trimesh.creation.torus(1.0, 0.3),
              trimesh.creation.cylinder(0.3, 2.0)]
    x = np.stack([trimesh.sample.sample_surface(m, points, seed=i)[0] for i, m in enumerate(meshes)])
    x = x - x.mean(axis=1, keepdims=True)
    return torch.tensor(x / np.abs(x).max() * 0.45, dtype=torch.float32)


def test_overfits_four_clouds():
    """Samples of a tiny PVCNN2 trained on 4 clouds are closer (squared Chamfer) to them than Gaussian
    clouds with the training clouds' global std are (what a model that learned only the data's first
    two moments gives; stricter than uniform clouds in the data's cube).

    The tiny preset (with `input_skip`, `data_scale` 5) without dropout; PVD's eps loss, Adam betas
    (0.5, 0.999), but T = 100 (betas 1e-4 -> 0.05) instead of 1000 so that 200 steps suffice
    (benchmarks/RESULTS.md, "PVD diagnosis"; without `input_skip` the ratio stays near 1)."""
    torch.manual_seed(0)
    x = four_clouds(128)
    model = build_denoiser("pvcnn2", preset("tiny", dropout=0.0).to_dict(), (128, 3))
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100, beta_start=1e-4, beta_end=0.05, prediction="eps",
                                                  variance="fixed_small"))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        t = torch.randint(0, 100, (4,), generator=g)
        loss = model.training_loss(diffusion, x, t, torch.randn(x.shape, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        samples = model.eval().sample(diffusion, (8, 128, 3), sampler="ddim", steps=20,
                                      generator=torch.Generator().manual_seed(1)).numpy()
    gaussian = (torch.randn(8, 128, 3, generator=torch.Generator().manual_seed(2)) * x.std()).numpy()
    d_samples = pairwise_chamfer(samples, x.numpy()).min(axis=1)
    d_random = pairwise_chamfer(gaussian, x.numpy()).min(axis=1)
    assert np.isfinite(samples).all() and 0.5 * x.std() < samples.std() < 1.5 * x.std(), samples.std()
    assert d_samples.mean() < 0.75 * d_random.mean(), (d_samples, d_random)
    assert np.median(d_samples) < d_random.min(), (d_samples, d_random)


# ----------------------------------------------------------------------------- the stages


def test_cli_train_then_sample(shapes_dataset, tmp_path):
    from hyperdiffusion.cli import main

    run = tmp_path / "run"
    assert main(["train", str(shapes_dataset), str(run), "--representation", "points", "--preset", "pvd-tiny",
                 "--max-steps", "2", "--no-progress"]) == 0
    ckpt = json.loads((run / "checkpoints" / "last.json").read_text())
    assert ckpt["denoiser"] == {"name": "pvcnn2", "config": PVCNN_PRESETS["tiny"].to_dict()}
    assert ckpt["diffusion_config"]["timesteps"] == 1000 and ckpt["diffusion_config"]["prediction"] == "eps"
    assert ckpt["diffusion_config"]["variance"] == "fixed_small" and ckpt["step"] == 2 and not ckpt["has_ema"]
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["betas"] == [0.5, 0.999] and group["weight_decay"] == 0.0
    assert main(["sample", str(run), str(tmp_path / "s"), "--n", "2", "--steps", "2", "--no-progress"]) == 0
    status = json.loads((tmp_path / "s" / "mesh.json").read_text())["status"]
    assert status == {"sample_0000": "ok", "sample_0001": "ok"}
    cloud = np.load(tmp_path / "s" / "clouds" / "sample_0000.npy")
    assert cloud.shape == (2048, 3) and np.isfinite(cloud).all()


def test_points_default_to_the_pvd_presets(shapes_dataset, tmp_path):
    from hyperdiffusion.cli import main
    from hyperdiffusion.diffusion.train import DEFAULT_PRESETS, TRAIN_PRESETS

    assert DEFAULT_PRESETS["points"] == ("pvd", "pvd-cpu")
    paper = TRAIN_PRESETS["pvd"]
    assert (paper.optimizer, paper.lr, paper.adam_beta1, paper.lr_schedule, paper.lr_gamma, paper.batch_size,
            paper.ema_decay, paper.beta_start, paper.beta_end) == ("adam", 2e-4, 0.5, "exponential", 0.998, 16,
                                                                   0.0, 1e-4, 0.02)
    plane = TRAIN_PRESETS["pvd-plane"]
    assert (plane.schedule, plane.beta_start, plane.beta_end) == ("warm0.1", 1e-5, 0.008)
    assert main(["train", str(shapes_dataset), str(tmp_path / "r"), "--representation", "points",
                 "--max-steps", "1", "--batch-size", "1", "--no-progress"]) == 0
    tc = json.loads((tmp_path / "r" / "checkpoints" / "last.json").read_text())["train_config"]
    assert tc["preset"] == "cpu" and tc["timesteps"] == 1000 and tc["optimizer"] == "adam"


def test_compare_runs_pvd(shapes_dataset, tmp_path):
    import math

    from hyperdiffusion.cli import main
    from hyperdiffusion.io import load_safetensors

    out = tmp_path / "cmp"
    assert main(["compare", str(shapes_dataset), str(out), "--methods", "pvd", "--preset", "tiny", "--n", "2",
                 "--quiet"]) == 0
    (record,) = json.loads((out / "comparison.json").read_text())
    assert record["method"] == "pvd" and record["denoiser"] == "pvcnn2" and record["representation"] == "points"
    assert record["n_params"] == count_parameters(_model())
    assert math.isfinite(record["mmd_cd"]) and 0.0 <= record["cov_cd"] <= 1.0
    ckpt = json.loads((out / "pvd" / "train" / "checkpoints" / "last.json").read_text())
    assert ckpt["step"] == 10 and ckpt["train_config"]["batch_size"] == 4  # the tiny compare preset's budget
    batch = load_safetensors(out / "pvd" / "samples" / "batches" / "batch_0000.safetensors")[1]["batch"]
    assert batch["config"]["sampler"] == "ddim" and batch["config"]["steps"] == 4
    assert (out / "comparison.png").is_file()

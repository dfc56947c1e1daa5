"""Class-conditional diffusion, classifier-free guidance, interpolation and completion on tiny models."""

from dataclasses import replace

import pytest
import torch

from hyperdiffusion.diffusion.sample import SampleConfig, sample_weights
from hyperdiffusion.diffusion.train import TrainConfig, load_denoiser, read_checkpoint, train
from hyperdiffusion.fields.mlp import MLPConfig, default_init, load_weight_set, save_weight_set
from hyperdiffusion.io import InputError

MLP = MLPConfig(hidden=16, multires=2, n_hidden_layers=1)  # 545 parameters, 6 tokens
TINY = TrainConfig(preset="cpu", n_embd=32, n_layer=1, n_head=2, lr=3e-3, batch_size=8, max_steps=24,
                   ema_decay=0.9, log_every=12, ckpt_every=24, val_every_epochs=0, timesteps=100,
                   standardize=True, condition="class")


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """Two weight sets, "round" and "boxy" (their folder names), 4 MLPs each, and a conditional model on them."""
    root = tmp_path_factory.mktemp("cond")
    paths = []
    for i, name in enumerate(("round", "boxy")):
        w = default_init(MLP, 4, torch.Generator().manual_seed(i)) + 0.5 * i
        path = root / name / "weights.safetensors"
        save_weight_set(path, w, [f"{name}_{k}" for k in range(4)], MLP)
        paths.append(path.parent)
    out = root / "run"
    train([str(p) for p in paths], out, TINY, progress=False)
    return paths, out


def test_classes_are_recorded_and_the_model_has_a_class_token(two_classes):
    paths, out = two_classes
    _, meta = read_checkpoint(out)
    assert meta["condition"]["classes"] == ["round", "boxy"] and meta["condition"]["counts"] == [4, 4]
    assert meta["condition"]["drop_prob"] == 0.1 and meta["denoiser"]["config"]["num_classes"] == 2
    model, *_ = load_denoiser(out)
    assert model.class_embed.weight.shape == (3, 32)  # two classes and the null class
    with pytest.raises(InputError, match="condition class"):  # several datasets need a condition
        train([str(p) for p in paths], out.parent / "x", replace(TINY, condition=None), progress=False)
    with pytest.raises(InputError, match="classes"):  # resuming with the datasets swapped is refused
        train([str(p) for p in reversed(paths)], out, TINY, progress=False)


def test_guidance_zero_is_the_unconditional_sampler(two_classes, tmp_path):
    _, out = two_classes
    cfg = SampleConfig(n=3, steps=10, batch_size=3, mesh=False, device="cpu", seed=5)
    uncond = load_weight_set(sample_weights(out, tmp_path / "u", cfg, progress=False)).weights
    w0 = load_weight_set(sample_weights(out, tmp_path / "g0", replace(cfg, class_name="boxy", guidance=0.0),
                                        progress=False)).weights
    assert torch.equal(uncond, w0)
    w1 = load_weight_set(sample_weights(out, tmp_path / "g1", replace(cfg, class_name="boxy", guidance=1.0),
                                        progress=False)).weights
    w3 = load_weight_set(sample_weights(out, tmp_path / "g3", replace(cfg, class_name="boxy", guidance=3.0),
                                        progress=False)).weights
    assert not torch.equal(w1, uncond) and not torch.equal(w3, w1)
    with pytest.raises(InputError, match="unknown class"):
        sample_weights(out, tmp_path / "x", replace(cfg, class_name="chair"), progress=False)


def test_guidance_combines_the_two_predictions():
    from hyperdiffusion.diffusion.guidance import guided

    def model(x, t, y=None):  # the null class (2) predicts 0, the others their label
        return torch.zeros_like(x) if y is None or int(y[0]) == 2 else torch.full_like(x, float(y[0]) + 1)

    x, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    assert torch.equal(guided(model, 1, 2.5, 2)(x, t), torch.full((2, 3), 5.0))  # 0 + 2.5 (2 - 0)
    assert torch.equal(guided(model, 0, 0.0, 2)(x, t), torch.zeros(2, 3))


def test_conditional_voxel_unet_takes_a_class():
    from hyperdiffusion.denoisers import build_denoiser, get_denoiser

    cfg = get_denoiser("unet3d").config("cpu", num_classes=3)
    net = build_denoiser("unet3d", cfg, (1, 8, 8, 8)).eval()
    for p in net.parameters():  # the zero-initialised convolutions would hide the class
        torch.nn.init.normal_(p, std=0.2)
    x, t = torch.randn(2, 1, 8, 8, 8), torch.tensor([3, 3])
    a, b = net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 1]))
    assert not torch.allclose(a, b) and torch.equal(net(x, t), net(x, t, torch.tensor([3, 3])))


def test_straight_interpolation_ends_exactly_at_a_and_b():
    from hyperdiffusion.diffusion.interpolate import alphas, linear_path

    a, b = default_init(MLP, 2, torch.Generator().manual_seed(3))
    path = linear_path(a, b, alphas(8))
    assert path.shape == (8, MLP.n_params)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert torch.allclose(path[3], a + 3 / 7 * (b - a), atol=1e-6)


def test_ddim_inversion_then_decoding_reconstructs_a_and_b():
    """The exact x0-predictor for Gaussian data N(mu, s^2 I) as the model (its DDIM ODE is the
    probability-flow ODE): over all T = 500 steps, decoding the inverted noise gives A and B back within
    0.5 % (relative L2 of the weight vectors; measured 0.38 %: the eta = 0 update is a first-order
    step, the error halves as the steps double); slerp at 0 and 1 is the two noises."""
    from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
    from hyperdiffusion.diffusion.interpolate import ddim_path, slerp
    from hyperdiffusion.diffusion.standardize import Standardizer

    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=500))
    g = torch.Generator().manual_seed(0)
    mu, s = torch.randn(MLP.n_params, generator=g), 0.5

    def model(x, t):  # E[x0 | x_t] for x0 ~ N(mu, s^2 I) (Gaussian conditioning)
        ab = diffusion.alphas_cumprod[t].float().unsqueeze(1)
        return mu + ab.sqrt() * s**2 / (ab * s**2 + 1 - ab) * (x - ab.sqrt() * mu)

    a, b = mu + s * torch.randn(2, MLP.n_params, generator=g)
    path, z = ddim_path(model, diffusion, Standardizer(), a, b, [0.0, 0.5, 1.0], None, torch.device("cpu"))
    for got, want in ((path[0], a), (path[-1], b)):
        assert float((got - want).norm() / want.norm()) < 0.005
    assert torch.allclose(slerp(z[0], z[1], 0.0), z[0]) and torch.allclose(slerp(z[0], z[1], 1.0), z[1])
    assert 0.7 < float(z.std()) < 1.3  # the inverted points are noise-like (unit variance), not the data


def test_completion_guidance_pulls_the_surface_to_the_observed_points(two_classes):
    """Same seed, same noise: with reconstruction guidance the decoded MLPs' logits at the observed
    points are far closer to the surface level than without (median over 4 samples, > 10x)."""
    from hyperdiffusion.diffusion.complete import CompleteConfig, complete_weights, level_error

    _, out = two_classes
    g = torch.Generator().manual_seed(0)
    pts = torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=1) * 0.4
    pts = pts[pts[:, 2] > 0].numpy()  # the front half of a sphere
    cfg = CompleteConfig(n=4, strength=0.0, ddim_steps=20, device="cpu", seed=1)
    plain, _ = complete_weights(out, pts, cfg)
    guided, _ = complete_weights(out, pts, replace(cfg, strength=1000.0))
    err_plain = level_error(plain, torch.as_tensor(pts)[None], MLP, 0.0)
    err_guided = level_error(guided, torch.as_tensor(pts)[None], MLP, 0.0)
    assert err_guided.median() < 0.1 * err_plain.median(), (err_plain, err_guided)


def test_interpolate_and_complete_commands_write_their_files(two_classes, tmp_path):
    import json

    import numpy as np
    import trimesh

    from hyperdiffusion.cli import main

    paths, out = two_classes
    assert main(["interpolate", str(out), f"{paths[0]}:round_0", f"{paths[1]}:3", str(tmp_path / "i"), "--steps", "3",
                 "--ddim-steps", "10", "--res", "16", "--device", "cpu", "--no-progress"]) == 0
    s = json.loads((tmp_path / "i" / "interpolation.json").read_text())
    assert set(s["methods"]) == {"linear", "ddim"} and len(s["methods"]["ddim"]["components"]) == 3
    for f in ("strips.png", "preview.gif", "linear/strip.png", "ddim/weights.safetensors"):
        assert (tmp_path / "i" / f).is_file(), f
    assert torch.equal(load_weight_set(tmp_path / "i" / "linear").weights[0], load_weight_set(paths[0]).weights[0])
    pts = np.random.default_rng(0).normal(size=(50, 3)) * 0.3
    trimesh.PointCloud(pts).export(tmp_path / "partial.ply")
    assert main(["complete", str(out), str(tmp_path / "partial.ply"), str(tmp_path / "c"), "--n", "2",
                 "--ddim-steps", "5", "--res", "16", "--class", "round", "--device", "cpu", "--no-progress"]) == 0
    c = json.loads((tmp_path / "c" / "completion.json").read_text())
    assert len(c["rms_logit_error"]) == 2 and c["n_observed"] == 50
    assert main(["interpolate", str(out), "nowhere:1", f"{paths[1]}:3", str(tmp_path / "x")]) == 2


def test_sources_of_one_kind_join_even_when_their_info_names_the_dataset(tmp_path):
    """The voxel representation records its dataset in the sample info: two datasets are still one kind."""
    from hyperdiffusion.diffusion.guidance import load_training_data
    from hyperdiffusion.representations import TrainingSet

    class Grids:
        def load(self, source, progress=True):
            return TrainingSet(torch.zeros(2, 1, 4, 4, 4), ["a", "b"], {"res": 4, "dataset": str(source)})

    for name in ("chairs", "tables"):
        (tmp_path / name).mkdir()
    tset, cond = load_training_data(Grids(), [tmp_path / "chairs", tmp_path / "tables"], "class", 0.1)
    assert cond.classes == ["chairs", "tables"] and cond.labels.tolist() == [0, 0, 1, 1]
    assert tset.info == {"res": 4, "dataset": [str(tmp_path / "chairs"), str(tmp_path / "tables")]}

"""DPC (denoisers/dpc.py): each piece against an independent reference on small random inputs, the
whole loss and sampler against the authors' formulas, a tiny overfit, and the train/sample stages."""

import json
import math

import numpy as np
import pytest
import torch
import trimesh

from hyperdiffusion.cli import main
from hyperdiffusion.denoisers import build_denoiser, count_parameters, get_denoiser
from hyperdiffusion.denoisers.dpc import (DPC, DPC_PRESETS, AffineCoupling, ConcatSquashLinear, DPCConfig,
                                          LatentFlow, gaussian_entropy, shape_unit, standard_normal_logprob)
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from hyperdiffusion.diffusion.train import TRAIN_PRESETS, TrainConfig, make_optimizer, make_scheduler, train
from hyperdiffusion.evaluation.metrics import pairwise_chamfer
from hyperdiffusion.io import load_safetensors

DPC_DIFFUSION = DiffusionConfig(timesteps=100, beta_start=1e-4, beta_end=0.02, prediction="eps", variance="fixed_small")


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


# ----------------------------------------------------------------------------- the flow prior


def test_flow_inverts_and_its_log_determinant_is_the_jacobians():
    torch.manual_seed(0)
    flow = LatentFlow(dim=6, depth=4, hidden=8).double()
    for p in flow.parameters():  # larger weights than the init: scales spread over 0.27 .. 0.996
        p.data.normal_(0, 0.5)
    z = torch.randn(5, 6, dtype=torch.float64)
    w, logdet = flow(z)
    assert not torch.allclose(w, z)
    torch.testing.assert_close(flow.inverse(w), z, rtol=0, atol=1e-12)
    for i in range(len(z)):  # log |det dw/dz| of each row against torch's autograd Jacobian
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        sign, ref = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(logdet[i], ref, rtol=0, atol=1e-10)
    # Alternating halves: after two layers every coordinate has been transformed.
    two = LatentFlow(dim=6, depth=2, hidden=8).double()
    for p in two.parameters():
        p.data.normal_(0, 0.5)
    assert ((two(z)[0] - z).abs() > 1e-6).all()
    one = AffineCoupling(6, 8, swap=False).double()
    for p in one.parameters():
        p.data.normal_(0, 0.5)
    y, _ = one(z)
    assert torch.equal(y[:, :3], z[:, :3]) and not torch.allclose(y[:, 3:], z[:, 3:])  # first half conditions


def test_log_densities_against_torch_distributions():
    torch.manual_seed(1)
    mu, logvar, w = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    normal = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    torch.testing.assert_close(gaussian_entropy(logvar), normal.entropy().sum(1))
    torch.testing.assert_close(standard_normal_logprob(w), torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(1))
    flow = LatentFlow(dim=4, depth=3, hidden=8).double()
    z = torch.randn(3, 4, dtype=torch.float64)
    out, logdet = flow(z)
    torch.testing.assert_close(flow.log_prob(z), standard_normal_logprob(out) + logdet)


# ----------------------------------------------------------------------------- the decoder


def test_concat_squash_linear_is_its_formula():
    torch.manual_seed(2)
    layer = ConcatSquashLinear(3, 5, 7).double()
    x, ctx = torch.randn(2, 6, 3, dtype=torch.float64), torch.randn(2, 1, 7, dtype=torch.float64)
    W, b = layer.layer.weight, layer.layer.bias
    G, g, H = layer.hyper_gate.weight, layer.hyper_gate.bias, layer.hyper_bias.weight
    gate = 1.0 / (1.0 + torch.exp(-(ctx @ G.T + g)))
    ref = (x @ W.T + b) * gate + ctx @ H.T
    torch.testing.assert_close(layer(x, ctx), ref)
    assert layer.hyper_bias.bias is None  # the context bias has no bias of its own (FFJORD, the authors)


def test_paper_preset_has_the_authors_layers_and_parameter_count():
    model = build_denoiser("dpc", get_denoiser("dpc").config("paper"), (2048, 3))
    lin = lambda a, b: a * b + b  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    encoder = sum(lin(a, b) + bn(b) for a, b in [(3, 128), (128, 128), (128, 256), (256, 512)])
    encoder += 2 * (lin(512, 256) + bn(256) + lin(256, 128) + bn(128) + lin(128, 256))
    flow = 14 * (lin(128, 256) + lin(256, 256) + lin(256, 256))
    widths = [3, 128, 256, 512, 256, 128, 3]
    decoder = sum(lin(a, b) + lin(259, b) + 259 * b for a, b in zip(widths[:-1], widths[1:]))
    assert count_parameters(model) == encoder + flow + decoder == 3_879_832  # "about 3.9 M" (REFERENCE.md)


# ----------------------------------------------------------------------------- loss and sampler


def test_training_loss_is_the_authors_formula():
    """Diffusion MSE at x_t = sqrt(abar) x0 + sqrt(1 - abar) eps with beta_t as the time input, plus
    kl_weight * (-log p(z) - H[q]), recomputed here from the parts and an independent schedule."""
    torch.manual_seed(3)
    cfg = DPCConfig(latent_dim=8, encoder_channels=(16, 32), encoder_head=(16,), flow_depth=2, flow_hidden=16,
                    decoder_widths=(16, 16), kl_weight=0.3)
    model, diffusion = DPC(cfg), GaussianDiffusion(DPC_DIFFUSION)
    x0 = torch.randn(3, 50, 3) * torch.tensor([1.0, 2.0, 0.5]) + 0.3
    t, noise = torch.tensor([0, 41, 99]), torch.randn(3, 50, 3)
    torch.manual_seed(7)
    loss = model.training_loss(diffusion, x0, t, noise)

    xn = (x0 - x0.mean(1, keepdim=True)) / x0.reshape(3, -1).std(1)[:, None, None]  # shape_unit
    torch.manual_seed(7)
    mu, logvar = model.encoder(xn)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape)
    w, logdet = model.flow(z)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(1) + logdet
    entropy = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).entropy().sum(1)
    betas = torch.linspace(1e-4, 0.02, 100, dtype=torch.float64)  # the authors' schedule, t = 1..100 -> 0..99
    abar = torch.cumprod(1 - betas, 0)[t].float()[:, None, None]
    x_t = abar.sqrt() * xn + (1 - abar).sqrt() * noise
    eps = model.decoder(x_t, betas[t].float(), z)
    ref = torch.mean((eps - noise) ** 2) + 0.3 * (-log_pz.mean() - entropy.mean())
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


def test_ddpm_sampler_is_the_authors_update():
    """x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z, sigma_t^2 =
    beta_t (1 - abar_{t-1}) / (1 - abar_t) (their `flexibility` 0), from a latent w ~ N(0, I) through the flow."""
    torch.manual_seed(4)
    T = 10
    model = DPC(DPC_PRESETS["tiny"]).eval()
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=T, beta_start=1e-4, beta_end=0.02, prediction="eps",
                                                  variance="fixed_small"))
    got = model.sample(diffusion, (2, 30, 3), sampler="ddpm", generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    with torch.no_grad():
        z = model.flow.inverse(torch.randn(2, model.cfg.latent_dim, generator=g))
        x = torch.randn(2, 30, 3, generator=g).double()
        for i in range(T - 1, -1, -1):
            eps = model.decoder(x.float(), betas[[i, i]].float(), z).double()
            x = (x - (1 - alphas[i]) / torch.sqrt(1 - abar[i]) * eps) / torch.sqrt(alphas[i])
            if i > 0:
                sigma = torch.sqrt(betas[i] * (1 - abar[i - 1]) / (1 - abar[i]))
                x = x + sigma * torch.randn(2, 30, 3, generator=g).double()
    torch.testing.assert_close(got.double(), x, rtol=1e-4, atol=1e-4)


def test_a_batch_of_one_cloud_trains():
    model, diffusion = DPC(DPC_PRESETS["tiny"]), GaussianDiffusion(DPC_DIFFUSION)
    loss = model.training_loss(diffusion, torch.randn(1, 64, 3), torch.tensor([5]), torch.randn(1, 64, 3))
    loss.backward()
    assert torch.isfinite(loss)


def test_train_points_uses_a_subset_and_forward_refuses():
    model, diffusion = DPC(DPCConfig(**{**DPC_PRESETS["tiny"].to_dict(), "train_points": 16})), GaussianDiffusion(DPC_DIFFUSION)
    seen = []
    model.encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model.training_loss(diffusion, torch.randn(2, 64, 3), torch.tensor([1, 2]), torch.randn(2, 64, 3))
    assert seen == [torch.Size([2, 16, 3])]
    with pytest.raises(TypeError, match="shape latent"):
        model(torch.randn(2, 64, 3), torch.tensor([1, 2]))


def test_linear_lr_schedule_is_the_authors():
    cfg = TrainConfig(optimizer="adam", lr=2e-3, lr_schedule="linear", lr_end=1e-4, lr_decay_start=4, lr_decay_end=8)
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = make_scheduler(opt, cfg)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [2e-3] * 5 + [2e-3 + (1e-4 - 2e-3) * k / 4 for k in (1, 2, 3, 4)] + [1e-4]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)


# ----------------------------------------------------------------------------- it learns


def test_overfits_four_clouds():
    """Samples of a tiny DPC trained on 4 clouds are closer (Chamfer) to them than random clouds are."""
    torch.manual_seed(0)
    meshes = [trimesh.creation.icosphere(3), trimesh.creation.box((2, 0.6, 0.6)), trimesh.creation.torus(1.0, 0.3),
              trimesh.creation.cylinder(0.3, 2.0)]
    x = shape_unit(torch.tensor(np.stack([trimesh.sample.sample_surface(m, 128, seed=i)[0]
                                          for i, m in enumerate(meshes)]), dtype=torch.float32))
    model, diffusion = DPC(DPC_PRESETS["tiny"]), GaussianDiffusion(DPC_DIFFUSION)
    opt = torch.optim.Adam(model.parameters(), 4e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        loss = model.training_loss(diffusion, x, torch.randint(0, 100, (4,), generator=g), torch.randn(x.shape, generator=g))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
    samples = model.eval().sample(diffusion, (8, 128, 3), generator=torch.Generator().manual_seed(1)).numpy()
    random = shape_unit(torch.randn(8, 128, 3, generator=torch.Generator().manual_seed(2))).numpy()
    d_samples = pairwise_chamfer(samples, x.numpy()).min(axis=1)
    d_random = pairwise_chamfer(random, x.numpy()).min(axis=1)
    assert np.isfinite(d_samples).all()
    assert d_samples.mean() < 0.75 * d_random.mean(), (d_samples, d_random)
    assert np.median(d_samples) < d_random.min(), (d_samples, d_random)


# ----------------------------------------------------------------------------- the stages


def test_cli_train_then_sample_with_no_extra_arguments(shapes_dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(shapes_dataset), str(run), "--representation", "points", "--denoiser", "dpc",
                 "--preset", "dpc-tiny", "--max-steps", "3", "--no-progress"]) == 0
    ckpt = json.loads((run / "checkpoints" / "last.json").read_text())
    assert ckpt["denoiser"] == {"name": "dpc", "config": DPC_PRESETS["tiny"].to_dict()}
    assert ckpt["diffusion_config"] == DPC_DIFFUSION.to_dict() and ckpt["step"] == 3
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 2e-3 and not ckpt["has_ema"]
    assert main(["sample", str(run), str(tmp_path / "s"), "--n", "2", "--no-progress"]) == 0
    status = json.loads((tmp_path / "s" / "mesh.json").read_text())["status"]
    assert status == {"sample_0000": "ok", "sample_0001": "ok"}
    cloud = np.load(tmp_path / "s" / "clouds" / "sample_0000.npy")
    assert cloud.shape == (2048, 3) and np.isfinite(cloud).all()


def test_no_preset_with_denoiser_dpc_picks_the_dpc_cpu_preset(shapes_dataset, tmp_path):
    assert main(["train", str(shapes_dataset), str(tmp_path / "r"), "--representation", "points", "--denoiser", "dpc",
                 "--max-steps", "1", "--batch-size", "2", "--no-progress"]) == 0
    tc = json.loads((tmp_path / "r" / "checkpoints" / "last.json").read_text())["train_config"]
    assert tc["preset"] == "cpu" and tc["timesteps"] == 100 and tc["grad_clip"] == 10.0


def test_resume_is_exact(shapes_dataset, tmp_path):
    """The latent's reparameterisation noise and the per-step lr schedule survive a stop and resume bit for bit."""
    from dataclasses import replace

    cfg = replace(TRAIN_PRESETS["dpc-tiny"], max_steps=4, lr_decay_start=1, lr_decay_end=3, batch_size=2,
                  ckpt_every=2)
    train(shapes_dataset, tmp_path / "full", cfg, progress=False)
    train(shapes_dataset, tmp_path / "part", replace(cfg, max_steps=2), progress=False)
    train(shapes_dataset, tmp_path / "part", cfg, progress=False)
    a, meta_a = load_safetensors(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b, meta_b = load_safetensors(tmp_path / "part" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert meta_a["checkpoint"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert meta_a["checkpoint"]["scheduler"] == meta_b["checkpoint"]["scheduler"]


def test_compare_runs_dpc(shapes_dataset, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", str(shapes_dataset), str(out), "--methods", "dpc", "--preset", "tiny", "--n", "2",
                 "--quiet"]) == 0
    (record,) = json.loads((out / "comparison.json").read_text())
    assert record["method"] == "dpc" and record["denoiser"] == "dpc" and record["representation"] == "points"
    assert record["n_params"] == count_parameters(DPC(DPC_PRESETS["tiny"]))
    assert math.isfinite(record["mmd_cd"]) and 0.0 <= record["cov_cd"] <= 1.0
    ckpt = json.loads((out / "dpc" / "train" / "checkpoints" / "last.json").read_text())
    assert ckpt["step"] == 10 and ckpt["train_config"]["batch_size"] == 4  # the tiny compare preset's budget
    batch = load_safetensors(out / "dpc" / "samples" / "batches" / "batch_0000.safetensors")[1]["batch"]
    assert batch["config"]["sampler"] == "ddpm" and batch["config"]["steps"] is None  # the authors' sampler
    assert sorted(p.name for p in (out / "dpc" / "samples" / "clouds").glob("*.npy")) == ["sample_0000.npy",
                                                                                          "sample_0001.npy"]

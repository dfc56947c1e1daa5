"""Paper-size hardening: EMA-only weights file, free-disk check, device and bf16 errors, TF32 guard,
the auction's round cap."""

import shutil
from collections import namedtuple
from dataclasses import replace

import numpy as np
import pytest
import torch

from hyperdiffusion.diffusion import checkpoint as ckpt_module
from hyperdiffusion.diffusion.checkpoint import ema_weights_path, load_denoiser, read_checkpoint
from hyperdiffusion.diffusion.runtime import require_bf16, resolve_device
from hyperdiffusion.diffusion.train import TrainConfig, train
from hyperdiffusion.evaluation import metrics
from hyperdiffusion.io import InputError

TINY = TrainConfig(preset="cpu", n_embd=32, n_layer=1, n_head=2, batch_size=4, max_steps=2, ema_decay=0.99,
                   log_every=1, ckpt_every=2, val_every_epochs=0, device="cpu")


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def weights(weight_set):  # tests/conftest.py: 8 tiny MLPs
    return weight_set[0]


def test_ema_weights_file_is_written_and_preferred(weights, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(weights, run, TINY, progress=False)
    full = run / "checkpoints" / "last.safetensors"
    light = ema_weights_path(full)
    assert light.name == "last.ema.safetensors" and light.is_file()
    t_full, m_full = read_checkpoint(full)
    t_light, m_light = read_checkpoint(light)
    assert sorted(t_light) == sorted(k for k in t_full if k.startswith(("ema.", "norm.")))
    assert all(torch.equal(t_light[k], t_full[k]) for k in t_light)
    assert m_light["step"] == m_full["step"] == 2 and "optimizer" not in m_light and "optimizer" in m_full
    assert light.stat().st_size < full.stat().st_size / 2  # no raw weights, no Adam moments

    read = []
    real = ckpt_module.read_checkpoint
    monkeypatch.setattr(ckpt_module, "read_checkpoint", lambda p, prefixes=None: read.append(p) or real(p, prefixes))
    model, *_ = load_denoiser(run)
    assert read[-1] == light  # sampling reads the small file
    for k, v in model.state_dict().items():
        assert torch.equal(v, t_full["ema." + k])
    raw, *_ = load_denoiser(run, use_ema=False)
    assert read[-1] == full
    with pytest.raises(InputError, match="EMA weights only"):
        load_denoiser(light, use_ema=False)

    # A stale EMA file (an older step than the full checkpoint) is ignored.
    stale = dict(t_light)
    ckpt_module.save_safetensors(light, stale, {"checkpoint": {**m_light, "step": 1}})
    load_denoiser(run)
    assert read[-1] == full


def test_checkpoint_refuses_a_full_disk(weights, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(weights, run, replace(TINY, max_steps=1, ckpt_every=1), progress=False)
    before = (run / "checkpoints" / "last.safetensors").read_bytes()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(InputError, match="not enough free disk space.*GB are free"):
        train(weights, run, replace(TINY, max_steps=2, ckpt_every=1), progress=False)
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == before  # the old one is intact


def test_device_and_bf16_errors(monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(InputError, match="bf16 is not supported on Tesla V100"):
        require_bf16(torch.device("cuda", 0))
    require_bf16(torch.device("cpu"))  # CPU autocast has bf16


def test_exact_fp32_matmul_restores_the_setting():
    matmul = torch.backends.cuda.matmul
    old = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        with metrics.exact_fp32_matmul():
            assert matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = old
    # The guarded torch path still agrees with the float64 kd-tree (here on the CPU).
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 64, 3)), rng.normal(size=(4, 64, 3))
    np.testing.assert_allclose(metrics.pairwise_chamfer(a, b, backend="torch"), metrics.pairwise_chamfer(a, b),
                               rtol=1e-5)


def test_auction_round_cap_and_non_finite_input():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 32, 3, generator=g, dtype=torch.float64), torch.randn(2, 32, 3, generator=g, dtype=torch.float64)
    ok = metrics.emd_auction(x, y)
    assert torch.isfinite(ok).all()
    with pytest.raises(RuntimeError, match="still unassigned after 3 bidding rounds"):
        metrics.emd_auction(x, y, cfg=metrics.AuctionConfig(max_rounds=3))
    x[0, 5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.emd_auction(x, y)

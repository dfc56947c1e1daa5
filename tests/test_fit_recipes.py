"""Fit recipe options (issue 13, part 2): lr warm-up and hard-example mining, with the MLP unchanged."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from hyperdiffusion.fields.fit import FitConfig, _mine_hard, fit_quality, fit_shapes, split_samples, warmup_factor
from hyperdiffusion.fields.mlp import MLPConfig, default_init

MLP = MLPConfig(hidden=32)
CFG = FitConfig(points_per_step=512, steps_per_epoch=25, max_epochs=2, plateau_patience=3, early_stop_patience=6)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield


def _sphere(name: str = "sphere", n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n // 2, 3))
    surface = 0.3 * d / np.linalg.norm(d, axis=1, keepdims=True) + rng.normal(scale=0.01, size=(n // 2, 3))
    points = np.concatenate([surface, rng.uniform(-0.5, 0.5, (n // 2, 3))]).astype(np.float32)
    occ = (np.linalg.norm(points, axis=1) < 0.3).astype(np.uint8)
    return split_samples(name, points, occ, n // 2, CFG)


def _init() -> torch.Tensor:
    return default_init(MLP, 1, torch.Generator().manual_seed(0))[0]


def test_warmup_factor_ramps_then_stays_at_one():
    cfg = FitConfig(warmup_epochs=4)
    assert [warmup_factor(cfg, e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(FitConfig(), 0) == 1.0   # the paper: no warm-up
    with pytest.raises(ValueError):
        FitConfig(hard_fraction=1.5)


def test_hard_mining_draws_the_points_the_mlp_gets_wrong():
    shape = _sphere()
    weights = _init().unsqueeze(0).clone()
    weights[0, -1] = 6.0   # last entry: the output bias, so every point reads "inside" (logit ~ 6)
    cfg = replace(CFG, hard_fraction=0.5)
    idx = [torch.zeros(CFG.steps_per_epoch, CFG.points_per_step, dtype=torch.long)]
    _mine_hard([shape], np.array([0]), idx, weights, cfg, MLP, [torch.Generator().manual_seed(0)], "cpu")
    mined = idx[0][:, :256].reshape(-1)
    assert (idx[0][:, 256:] == 0).all()                       # the uniform half is left alone
    # The wrong points are the outside ones (loss ~6 vs ~0.0025); about 89 % of the pool.
    assert shape.train_occ[mined].mean() < 0.01
    assert shape.train_occ.mean() > 0.05


def test_hard_mining_and_warmup_keep_batching_independent_and_still_fit():
    cfg = replace(CFG, hard_fraction=0.5, warmup_epochs=1, schedule="cosine")
    shapes = [_sphere("a", seed=1), _sphere("b", seed=2)]
    batched, _ = fit_shapes(shapes, _init(), cfg, MLP)
    alone, _ = fit_shapes(shapes[1:], _init(), cfg, MLP)
    assert torch.allclose(batched[1], alone[0], atol=1e-5, rtol=0)
    assert fit_quality(batched, shapes, MLP)[0]["iou_uniform"] > 0.5   # 2 short epochs; not a quality bar


def test_on_weights_sees_every_shapes_current_weights_and_ends_at_the_result():
    # A shape that stops early keeps its final weights in later snapshots (fit_recipes.py curves).
    cfg = replace(CFG, max_epochs=3, early_stop_patience=1, plateau_threshold=0.9)
    seen = {}
    shapes = [_sphere("a", n=4000, seed=1), _sphere("b", n=4000, seed=2)]
    result, records = fit_shapes(shapes, _init(), cfg, MLP, on_weights=lambda e, w: seen.update({e: w.clone()}))
    assert sorted(seen) == list(range(1, max(r.epochs for r in records) + 1))
    assert torch.equal(seen[max(seen)], result)
    assert not torch.equal(seen[1], result)


def test_fast_presets_are_paper_and_cpu_with_a_cosine_schedule():
    from hyperdiffusion.fields.fit import PRESETS, cosine_lr

    paper, fast = PRESETS["paper"], PRESETS["fast"]
    assert fast.schedule == "cosine" and fast.max_epochs * fast.steps_per_epoch == 2910
    # Everything the diffusion model sees (MLP, points, lr, init) stays the paper's.
    assert replace(fast, schedule="plateau", max_epochs=paper.max_epochs) == paper
    assert cosine_lr(fast, 0) == fast.lr and cosine_lr(fast, fast.max_epochs) == fast.min_lr
    cpu, fast_cpu = PRESETS["cpu"], PRESETS["fast-cpu"]
    assert (fast_cpu.points_per_step, fast_cpu.steps_per_epoch, fast_cpu.max_epochs) == \
        (cpu.points_per_step, cpu.steps_per_epoch, cpu.max_epochs)
    assert fast_cpu.schedule == "cosine"

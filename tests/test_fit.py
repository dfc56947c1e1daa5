"""Per-shape fitting: schedules against PyTorch's, fit quality, batching determinism, resume."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperdiffusion.fields import fit as fit_module
from hyperdiffusion.fields.fit import (BatchedAdam, FitConfig, PlateauSchedules, fit_dataset, fit_quality, fit_shapes,
                                iou, split_samples)
from hyperdiffusion.io import save_npz, write_json
from hyperdiffusion.fields.mlp import MLPConfig, OccupancyMLP, batched_forward, default_init, load_weight_set

# Small on purpose: a width-32 MLP and ~600 steps of 512 points fit a sphere or a box in seconds.
MLP = MLPConfig(hidden=32)


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield
CFG = FitConfig(points_per_step=512, steps_per_epoch=25, max_epochs=30, plateau_patience=3, early_stop_patience=6)


# ----------------------------------------------------------------------------- analytic shapes


def _samples(kind: str, n: int = 20_000, seed: int = 0):
    """Near-surface (noise 0.01) then uniform samples of an analytic sphere / box / random labels."""
    rng = np.random.default_rng(seed)
    m = n // 2
    uniform = rng.uniform(-0.5, 0.5, (m, 3))
    if kind == "sphere":
        d = rng.normal(size=(m, 3))
        surface = 0.3 * d / np.linalg.norm(d, axis=1, keepdims=True)
    else:  # box half-extents; the "noise" shape reuses the box points with random labels
        h = np.array([0.35, 0.3, 0.2])
        surface = rng.uniform(-1, 1, (m, 3)) * h
        face = rng.integers(0, 3, m)
        surface[np.arange(m), face] = rng.choice([-1, 1], m) * h[face]
    points = np.concatenate([surface + rng.normal(scale=0.01, size=(m, 3)), uniform]).astype(np.float32)
    if kind == "sphere":
        occ = np.linalg.norm(points, axis=1) < 0.3
    elif kind == "box":
        occ = np.all(np.abs(points) < [0.35, 0.3, 0.2], axis=1)
    else:
        occ = rng.random(n) < 0.5
    return points, occ.astype(np.uint8), m


def _shape(kind: str, cfg: FitConfig = CFG):
    return split_samples(kind, *_samples(kind), cfg)


def _init(mlp: MLPConfig = MLP) -> torch.Tensor:
    return default_init(mlp, 1, torch.Generator().manual_seed(0))[0]


def _write_dataset(root: Path, kinds: list[str]) -> Path:
    """A prepared dataset in the docs/FORMATS.md layout, without running `prepare`."""
    for k in kinds:
        points, occ, n_surface = _samples(k)
        save_npz(root / "shapes" / k / "samples.npz", points=points, occ=occ, n_surface=np.array(n_surface))
        write_json(root / "shapes" / k / "meta.json", {"name": k})
    write_json(root / "manifest.json", {
        "format": "hyperdiffusion-dataset", "version": 1, "complete": True, "config": {},
        "splits": {"train": sorted(kinds), "val": [], "test": []},
        "shapes": {k: {"status": "ok", "split": "train"} for k in kinds}})
    return root


# ----------------------------------------------------------------------------- optimiser and schedules


def test_batched_adam_matches_torch_adam():
    torch.manual_seed(0)
    p0 = torch.randn(3, 10)
    lrs = torch.tensor([1e-2, 3e-3, 1e-3])
    ours = p0.clone()
    adam = BatchedAdam(3, 10, 0.9, 0.999, 1e-8, "cpu")
    ref = [torch.nn.Parameter(p0[i].clone()) for i in range(3)]
    opts = [torch.optim.Adam([ref[i]], lr=float(lrs[i]), betas=(0.9, 0.999), eps=1e-8) for i in range(3)]
    for _ in range(20):
        g = torch.randn(3, 10)
        adam.step(ours, g, lrs)
        for i in range(3):
            ref[i].grad = g[i].clone()
            opts[i].step()
    assert torch.allclose(ours, torch.stack([r.detach() for r in ref]), atol=1e-6, rtol=1e-5)


def test_plateau_schedule_matches_torch_reduce_lr_on_plateau():
    cfg = FitConfig(plateau_patience=2, early_stop_patience=5, min_lr=2e-3)
    losses = [5, 4, 4, 4, 4, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9]
    ours = PlateauSchedules(1, cfg)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                                                     threshold=0.0, min_lr=cfg.min_lr)
    stops = []
    for x in losses:
        _, stop = ours.update(np.array([x], float))
        ref.step(x)
        stops.append(bool(stop[0]))
        assert ours.lr[0] == pytest.approx(opt.param_groups[0]["lr"])
    assert ours.lr[0] < cfg.lr  # the schedule did reduce
    # Early stop after 5 epochs without a new best: the best was epoch 6 (3.9), so epoch 11.
    assert stops.index(True) == 10


def test_iou_known_values():
    t = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    assert iou(torch.tensor([1, 0, 1, 0], dtype=torch.bool), t) == pytest.approx(1 / 3)
    assert iou(torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)) == 1.0


def test_holdout_is_disjoint_and_stratified():
    s = _shape("sphere")
    assert len(s.train_points) + len(s.eval_points) == 20_000
    assert int(s.eval_surface.sum()) == 1000 and int((~s.eval_surface).sum()) == 1000
    train = {tuple(p) for p in s.train_points.numpy().tolist()}
    assert not any(tuple(p) in train for p in s.eval_points.numpy().tolist()[:200])


# ----------------------------------------------------------------------------- fitting


def test_fit_sphere_and_box_quality():
    shapes = [_shape("sphere"), _shape("box")]
    weights, records = fit_shapes(shapes, _init(), CFG, MLP)
    quality = fit_quality(weights, shapes, MLP)
    # Floors with a margin for another CPU's floating-point order: this machine gives uniform
    # 0.98 / 0.99 and near-surface 0.93 / 0.93; a fresh environment elsewhere gave 0.81 near
    # the surface. The robust fact is the relative one below: training keeps improving.
    for q in quality:
        assert q["iou_uniform"] >= 0.93, q
        assert q["iou_surface"] >= 0.75, q
    _, early = fit_shapes(shapes, _init(), replace(CFG, max_epochs=3), MLP)
    for full, short in zip(records, early):  # here 27 vs 85 (sphere), 31 vs 147 (box)
        assert full.final_loss < 0.5 * short.final_loss, (full.final_loss, short.final_loss)
    # the fitted vectors are plain nn.Module weights: exact round trip, same logits
    module = OccupancyMLP.from_vector(weights[0], MLP)
    assert torch.equal(module.to_vector(), weights[0])
    x = torch.rand(1, 100, 3) - 0.5
    assert torch.allclose(module(x[0]), batched_forward(weights[:1], x, MLP)[0], atol=1e-5)


def test_batched_fit_equals_one_at_a_time():
    # Shapes never interact, so only float rounding in the batched kernels (~1e-8 per step) differs.
    # Training amplifies such rounding over hundreds of steps, so compare a short run tightly.
    cfg = replace(CFG, max_epochs=2)
    shapes = [_shape("sphere", cfg), _shape("noise", cfg), _shape("box", cfg)]
    batched, rec_b = fit_shapes(shapes, _init(), cfg, MLP)
    for i, s in enumerate(shapes):
        w, rec = fit_shapes([s], _init(), cfg, MLP)
        assert torch.allclose(batched[i], w[0], atol=1e-5, rtol=0), (i, (batched[i] - w[0]).abs().max())
        assert rec[0].final_loss == pytest.approx(rec_b[i].final_loss, rel=1e-5)


def test_early_stopped_shape_is_frozen_while_others_continue():
    cfg = replace(CFG, max_epochs=14, early_stop_patience=2)
    shapes = [_shape("sphere", cfg), _shape("noise", cfg)]
    weights, rec = fit_shapes(shapes, _init(), cfg, MLP)
    first, other = sorted(range(2), key=lambda i: rec[i].epochs)
    k = rec[first].epochs
    assert rec[first].stopped == "early" and k < rec[other].epochs
    # Stopping both at epoch k gives the stopped shape's weights bit for bit: nothing touched them after.
    upto_k, _ = fit_shapes(shapes, _init(), replace(cfg, max_epochs=k), MLP)
    assert torch.equal(weights[first], upto_k[first])
    assert not torch.equal(weights[other], upto_k[other])  # while the other shape went on training


def test_keep_best_returns_weights_of_best_epoch():
    # Random labels: the epoch loss wanders around 512 log 2 = 355, so the best epoch is not the last.
    cfg = replace(CFG, max_epochs=6, early_stop_patience=100)
    s = _shape("noise", cfg)
    # The plateau schedule looks only at past epochs, so a run cut at k epochs is exactly the first
    # k epochs of a longer one: its final weights are the longer run's weights after epoch k.
    losses, after = [], []
    for k in range(1, cfg.max_epochs + 1):
        w, rec = fit_shapes([s], _init(), replace(cfg, max_epochs=k), MLP)
        losses.append(rec[0].final_loss)
        after.append(w)
    best = int(np.argmin(losses))
    assert best < cfg.max_epochs - 1, losses  # else this case could not tell best from final
    w_best, rec = fit_shapes([s], _init(), replace(cfg, keep="best"), MLP)
    assert rec[0].best_loss == losses[best] and rec[0].final_loss == losses[-1]
    assert torch.equal(w_best, after[best])  # the weights as they were after the best epoch, bit for bit
    assert not torch.equal(w_best, after[-1])


# ----------------------------------------------------------------------------- the stage


def test_fit_dataset_chunks_resume(tmp_path, monkeypatch):
    data = _write_dataset(tmp_path / "data", ["box", "noise", "sphere"])
    cfg = replace(CFG, max_epochs=3)
    out = tmp_path / "fit"
    real = fit_module.fit_shapes
    calls = []

    def crash_on_third(*a, **k):
        calls.append(a[0][0].name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fit_module, "fit_shapes", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        fit_dataset(data, out, cfg, MLP, batch_shapes=1, device="cpu")
    # first weights from the first train shape ("box"), then one chunk per shape
    assert calls == ["box", "noise", "sphere"]
    assert sorted(p.name for p in (out / "chunks").glob("*.safetensors")) == ["chunk_00000.safetensors",
                                                                               "first.safetensors"]
    calls.clear()
    monkeypatch.setattr(fit_module, "fit_shapes", lambda *a, **k: (calls.append(a[0][0].name), real(*a, **k))[1])
    fit_dataset(data, out, cfg, MLP, batch_shapes=1, device="cpu")
    assert calls == ["sphere"]  # the finished chunks were read back, not refitted

    ws = load_weight_set(out / "weights.safetensors")
    assert ws.names == ["box", "noise", "sphere"] and ws.weights.shape == (3, MLP.n_params)
    assert ws.meta["extra"]["fit"] == asdict(cfg) and ws.meta["extra"]["first_weights_shape"] == "box"
    quality = json.loads((out / "fit_quality.json").read_text())
    assert set(quality["shapes"]) == {"box", "noise", "sphere"}
    assert quality["summary"]["n_shapes"] == 3

    # a rerun with other settings into the same folder is refused, not mixed
    with pytest.raises(Exception, match="other shapes or settings"):
        fit_dataset(data, out, replace(cfg, lr=5e-3), MLP, batch_shapes=1, device="cpu")


def test_fit_progress_counts_shape_epochs_over_the_stage(tmp_path, capsys):
    # Not a terminal (pytest captures stderr): plain lines, no carriage-return redraws. The count is
    # shape-epochs over the whole stage; a shape that stops early takes its unused budget out of the
    # total, so the last line ends at exactly the epochs trained, 100 %.
    data = _write_dataset(tmp_path / "data", ["box", "noise", "sphere"])
    cfg = replace(CFG, max_epochs=12, early_stop_patience=2)
    fit_dataset(data, tmp_path / "fit", cfg, MLP, batch_shapes=2, device="cpu")
    err = capsys.readouterr().err
    shapes = json.loads((tmp_path / "fit" / "fit_quality.json").read_text())["shapes"]
    trained = sum(q["epochs"] for q in shapes.values())
    assert trained < 3 * cfg.max_epochs, shapes  # a shape did stop early (else the case shows nothing)
    lines = [line for line in err.splitlines() if line.startswith("fit: ")]
    assert lines and lines[-1].startswith(f"fit: {trained}/{trained} shape-epochs (100.0%)"), err
    assert "shapes=3/3" in lines[-1] and "\r" not in err


def test_cosine_schedule_values():
    from hyperdiffusion.fields.fit import cosine_lr

    cfg = FitConfig(lr=1e-2, min_lr=1e-4, max_epochs=10, schedule="cosine")
    assert cosine_lr(cfg, 0) == pytest.approx(1e-2)
    assert cosine_lr(cfg, 5) == pytest.approx((1e-2 + 1e-4) / 2)
    assert cosine_lr(cfg, 10) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="schedule"):
        FitConfig(schedule="linear")


def test_old_stamps_resume_as_init_first():
    """Chunks stamped before `init` and the recipe options existed still match the same settings."""
    from hyperdiffusion.fields.fit import PRESETS, same_stamp

    cfg = PRESETS["cpu"]
    stamp = {"fit": cfg.to_dict(), "mlp": MLPConfig().to_dict(), "precision": "fp32"}
    old_fit = {k: v for k, v in cfg.to_dict().items() if k not in ("init", "warmup_epochs", "hard_fraction", "hard_pool")}
    old = {**stamp, "fit": {**old_fit, "first_weights": True}}
    assert same_stamp(stamp, stamp) and same_stamp(old, stamp)
    assert not same_stamp({**stamp, "fit": {**old_fit, "first_weights": False}}, stamp)  # not today's "random"
    assert not same_stamp({**old, "fit": {**old["fit"], "lr": 1e-3}}, stamp)
    assert not same_stamp(old, {**stamp, "fit": {**cfg.to_dict(), "warmup_epochs": 2}})
    assert not same_stamp(None, stamp)

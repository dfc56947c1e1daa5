"""The `compare` stage: HyperDiffusion against its baselines on one dataset, one protocol (paper Table 1).

`hyperdiffusion compare DATASET OUT --methods hd,voxel --preset cpu` trains every method on the
train split of a prepared dataset, samples the same number of shapes from each, evaluates all of
them against the same test split with the same settings (evaluation/evaluate.py), and writes

    OUT/<method>/...          each method's own stage outputs (fit, train, samples, metrics.json)
    OUT/comparison.json       one record per method: every metrics.json key, copy rate,
                              parameters, train and sample seconds
    OUT/comparison.md         the paper's Table 1 layout
    OUT/comparison.png        samples of each method, one row per method

Every stage it runs resumes, so a method that was interrupted continues where it stopped and a
method that finished is not rerun; `timing.json` per method keeps the seconds of the run that
did each stage. Methods are registered in `METHODS`: a new baseline is one function that turns
(dataset, method folder, preset) into a samples folder, and one entry.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from hyperdiffusion.io import InputError, ensure_writable_dir, read_json, write_bytes, write_json


@dataclass(frozen=True)
class ComparePreset:
    """One size for every method, so that the comparison is like for like."""

    fit_preset: str  # fields/fit.py PRESETS
    fit_epochs: int | None  # None = the fit preset's
    hd_train: str  # diffusion/train.py TRAIN_PRESETS, for HyperDiffusion
    voxel_train: str  # ... and for the voxel baseline
    train_steps: int | None  # None = the train presets' epochs
    ddim_steps: int | None  # None = all T (the paper)
    mesh_res: int  # marching cubes for MLP samples
    emd_points: int | None  # None = all 2048 points (exact EMD); fewer keeps CPU runs short
    small_transformer: bool = False  # tiny: a 2-layer width-64 transformer, for the test suite
    train_batch: int | None = None  # None = the train presets' batch size
    dpc_train: str = "dpc-cpu"  # diffusion/train.py TRAIN_PRESETS, for DPC
    pvd_train: str = "pvd-cpu"  # ... and for PVD
    pvd_steps: int | None = None  # PVD's optimiser steps when they differ from train_steps (its CPU step is slow)
    voxel_steps: int | None = None  # the same for the voxel baseline's 3D UNet
    pvd_sampler: str = "ddim"  # "ddpm": all T steps as the authors sample; "ddim": ddim_steps


COMPARE_PRESETS: dict[str, ComparePreset] = {
    # The paper's settings (a GPU); the transformer size for the category is --hd-preset.
    "paper": ComparePreset("paper", None, "plane", "voxel", None, None, 256, None, dpc_train="dpc",
                           pvd_train="pvd", pvd_sampler="ddpm"),
    # Minutes per method on a 2-core CPU: the demo's sizes.
    "cpu": ComparePreset("cpu", None, "cpu", "voxel-cpu", 2000, 50, 96, 512, pvd_steps=500, voxel_steps=1000),
    # Seconds: for tests; every stage runs, nothing is meant to look good.
    "tiny": ComparePreset("cpu", 3, "cpu", "voxel-cpu", 10, 4, 32, 128, small_transformer=True, train_batch=4,
                          dpc_train="dpc-tiny", pvd_train="pvd-tiny"),
}


@dataclass(frozen=True)
class CompareConfig:
    methods: tuple[str, ...] = ("hd", "voxel")
    preset: str = "cpu"
    hd_preset: str | None = None  # overrides the preset's HyperDiffusion train preset (plane, chair, car)
    n_samples: int | None = None  # None = max(test split size, 16), the same for every method
    seed: int = 0
    device: str = "auto"


# ----------------------------------------------------------------------------- methods


def _timed(folder: Path, stage: str, run: Callable[[], Any]) -> Any:
    """Run a (resumable) stage; record its seconds in folder/timing.json unless an earlier run did."""
    path = folder / "timing.json"
    timing = read_json(path) if path.is_file() else {}
    t0 = time.perf_counter()
    result = run()
    if stage not in timing:
        timing[stage] = round(time.perf_counter() - t0, 2)
        write_json(path, timing)
    return result


def _train_config(name: str, p: ComparePreset, cfg: CompareConfig):
    from hyperdiffusion.diffusion.train import TRAIN_PRESETS

    tc = replace(TRAIN_PRESETS[name], seed=cfg.seed, device=cfg.device, val_every_epochs=0)
    if p.train_steps is not None:
        tc = replace(tc, max_steps=p.train_steps)
    if p.train_batch is not None:
        tc = replace(tc, batch_size=p.train_batch)
    if p.small_transformer and tc.representation in ("mlp3d", "mlp4d"):
        tc = replace(tc, n_embd=64, n_layer=2, n_head=4)
    return tc


def _sample(folder: Path, ckpt: Path, n: int, p: ComparePreset, cfg: CompareConfig, sampler: str = "ddim") -> Path:
    from hyperdiffusion.diffusion.sample import SampleConfig, sample

    steps = p.ddim_steps if sampler == "ddim" else None  # DDPM runs every step
    sc = SampleConfig(n=n, sampler=sampler, steps=steps, batch_size=min(n, 100), seed=cfg.seed, res=p.mesh_res,
                      device=cfg.device)
    _timed(folder, "sample", lambda: sample(ckpt, folder / "samples", sc, progress=False))
    return folder / "samples"


def run_hd(dataset: Path, folder: Path, n: int, p: ComparePreset, cfg: CompareConfig) -> Path:
    """HyperDiffusion: fit one MLP per train shape, train the weight-space transformer, sample."""
    from hyperdiffusion.diffusion.train import train
    from hyperdiffusion.fields.fit import PRESETS as FIT_PRESETS, fit_dataset

    fc = replace(FIT_PRESETS[p.fit_preset], seed=cfg.seed)
    if p.fit_epochs is not None:
        fc = replace(fc, max_epochs=p.fit_epochs)
    from hyperdiffusion.fields.fit_eval import ScoreConfig

    # Fit quality: evaluation-set IoU only; mesh scores (~5 s a paper MLP at 128^3 on a CPU) are `fit`'s job.
    weights = _timed(folder, "fit", lambda: fit_dataset(dataset, folder / "mlps", fc, split="train",
                                                        device=cfg.device, progress=False,
                                                        scores=ScoreConfig(mesh_res=0)))
    tc = _train_config(cfg.hd_preset or p.hd_train, p, cfg)
    _timed(folder, "train", lambda: train(weights, folder / "train", tc, progress=False))
    return _sample(folder, folder / "train", n, p, cfg)


def run_voxel(dataset: Path, folder: Path, n: int, p: ComparePreset, cfg: CompareConfig) -> Path:
    """The paper's voxel baseline: a 3D UNet diffusion over 24^3 grids of the same train shapes."""
    from hyperdiffusion.diffusion.train import train

    tc = _train_config(p.voxel_train, p, cfg)
    if p.voxel_steps is not None:
        tc = replace(tc, max_steps=p.voxel_steps)
    _timed(folder, "train", lambda: train(dataset, folder / "train", tc, progress=False))
    return _sample(folder, folder / "train", n, p, cfg)


def run_dpc(dataset: Path, folder: Path, n: int, p: ComparePreset, cfg: CompareConfig) -> Path:
    """DPC (Luo & Hu 2021): its FlowVAE on the train shapes' 2048-point reference clouds, sampled as the
    authors sample (DDPM over all 100 steps), whatever the preset's DDIM steps."""
    from hyperdiffusion.diffusion.train import train

    tc = _train_config(p.dpc_train, p, cfg)
    _timed(folder, "train", lambda: train(dataset, folder / "train", tc, progress=False))
    return _sample(folder, folder / "train", n, p, cfg, sampler="ddpm")


def run_pvd(dataset: Path, folder: Path, n: int, p: ComparePreset, cfg: CompareConfig) -> Path:
    """PVD (Zhou et al. 2021): PVCNN2 diffusion on the train shapes' 2048-point reference clouds. The paper
    preset samples as the authors (DDPM over all 1000 steps); cpu and tiny use the preset's DDIM steps,
    because 1000 steps of PVCNN2 take tens of minutes on a CPU (docs/BASELINES.md)."""
    from hyperdiffusion.diffusion.train import train

    tc = _train_config(p.pvd_train, p, cfg)
    if p.pvd_steps is not None:
        tc = replace(tc, max_steps=p.pvd_steps)
    _timed(folder, "train", lambda: train(dataset, folder / "train", tc, progress=False))
    return _sample(folder, folder / "train", n, p, cfg, sampler=p.pvd_sampler)


# name -> (label in tables, runner). Point-cloud baselines join here by name.
METHODS: dict[str, tuple[str, Callable[..., Path]]] = {
    "hd": ("HyperDiffusion", run_hd),
    "voxel": ("Voxel baseline", run_voxel),
    "dpc": ("DPC", run_dpc),
    "pvd": ("PVD", run_pvd),
}


# Methods that generate animations, and the 4D train preset that stands in for each 3D one on a
# 4D dataset (paper Sec. 4.4: HyperDiffusion against the 4D voxel baseline).
METHODS_4D = ("hd", "voxel")
PRESETS_4D = {"plane": "4d", "chair": "4d", "car": "4d", "cpu": "4d-cpu", "voxel": "voxel4d",
              "voxel-cpu": "voxel4d-cpu"}


# ----------------------------------------------------------------------------- the stage


def compare(dataset: str | Path, out: str | Path, cfg: CompareConfig = CompareConfig(), *,
            progress: bool = True) -> list[dict[str, Any]]:
    """Train, sample and evaluate each method of `cfg.methods` on `dataset`; returns the comparison records."""
    from hyperdiffusion.data.animation import is_4d_dataset
    from hyperdiffusion.data.prepare import load_dataset
    from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate, format_table

    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if cfg.preset not in COMPARE_PRESETS:
        raise InputError(f"unknown preset {cfg.preset!r}; choose one of {', '.join(COMPARE_PRESETS)}")
    p = COMPARE_PRESETS[cfg.preset]
    dataset = Path(dataset)
    ds = load_dataset(dataset)
    if is_4d_dataset(dataset):  # animations: the 4D presets of the same methods, scored as sequences
        not_4d = [m for m in cfg.methods if m not in METHODS_4D]
        if not_4d:
            raise InputError(f"{dataset}: a 4D dataset; {', '.join(not_4d)} generate 3D shapes only "
                             f"(4D methods: {', '.join(METHODS_4D)})")
        p = replace(p, hd_train=PRESETS_4D[p.hd_train], voxel_train=PRESETS_4D[p.voxel_train])
        cfg = replace(cfg, hd_preset=PRESETS_4D.get(cfg.hd_preset, cfg.hd_preset) if cfg.hd_preset else None)
    n_test = len(ds.names("test"))
    if n_test < 2:
        raise InputError(f"{dataset}: the test split has {n_test} shapes; the protocol needs at least 2")
    n = cfg.n_samples or max(n_test, 16)
    out = ensure_writable_dir(out)
    write_json(out / "compare_config.json", {"compare": asdict(cfg), "preset": asdict(p), "n_samples": n,
                                             "dataset": str(dataset)})
    # Every method is scored against the same test split: the reference x reference matrices once.
    eval_cfg = EvalConfig(split="test", train=str(dataset), emd_points=p.emd_points, seed=cfg.seed,
                          device=cfg.device, cache=str(out / "reference_cache"))
    records = []
    for method in cfg.methods:
        label, runner = METHODS[method]
        folder = ensure_writable_dir(out / method)
        if progress:
            print(f"\n== {label} ({method}), preset {cfg.preset}", flush=True)
        samples = runner(dataset, folder, n, p, cfg)
        metrics_path = folder / "metrics.json"
        if metrics_path.is_file():
            metrics = read_json(metrics_path)
        else:
            metrics = _timed(folder, "evaluate", lambda: evaluate(samples, dataset, eval_cfg, progress=False))
            metrics["modes"]["config"] = asdict(eval_cfg)
            write_json(metrics_path, metrics)
        if progress:
            print(format_table(metrics))
        records.append(_record(method, label, folder, metrics))
    write_json(out / "comparison.json", records)
    write_bytes(out / "comparison.md", comparison_table(records, cfg.preset, str(dataset)).encode())
    _picture(out, records)
    if progress:
        print("\n" + comparison_table(records, cfg.preset, str(dataset)))
    return records


def _record(method: str, label: str, folder: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    ckpt = read_json(folder / "train" / "checkpoints" / "last.json")
    timing = read_json(folder / "timing.json")
    novelty = metrics.get("novelty") or {}
    return {"method": method, "label": label, **{k: v for k, v in metrics.items() if k not in ("samples", "reference")},
            "copy_rate": novelty.get("copy_rate"), "n_params": ckpt.get("n_model_params"),
            "representation": ckpt["representation"]["name"], "denoiser": ckpt["denoiser"]["name"],
            "train_seconds": round(timing.get("fit", 0) + timing.get("train", 0), 2),
            "sample_seconds": timing.get("sample"), "timing": timing}


def comparison_table(records: list[dict[str, Any]], preset: str, dataset: str) -> str:
    """Markdown in the layout of the paper's Table 1: MMD (lower is better), COV (higher), 1-NNA (closer to 50 %)."""
    def f(v, scale=1.0, fmt="{:.4g}"):
        return "n/a" if v is None else fmt.format(v * scale)

    head = ("| Method | MMD-CD | MMD-EMD | COV-CD % | COV-EMD % | 1-NNA-CD % | 1-NNA-EMD % | FPD "
            "| copy rate | parameters | train s | sample s |")
    rows = [f"Preset `{preset}`, dataset `{dataset}`; one protocol for every method "
            f"(normalisation {records[0]['modes']['normalisation'] if records else '?'}, test split). "
            "MMD: lower is better; COV: higher; 1-NNA: closer to 50 % is better.", "", head,
            "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        rows.append(f"| {r['label']} | {f(r['mmd_cd'])} | {f(r['mmd_emd'])} | {f(r['cov_cd'], 100, '{:.1f}')} "
                    f"| {f(r['cov_emd'], 100, '{:.1f}')} | {f(r['nna_cd'], 100, '{:.1f}')} "
                    f"| {f(r['nna_emd'], 100, '{:.1f}')} | {f(r.get('fpd'))} | {f(r['copy_rate'], 100, '{:.0f} %')} "
                    f"| {r['n_params']:,} | {r['train_seconds']:.0f} | {f(r['sample_seconds'], 1, '{:.0f}')} |")
    return "\n".join(rows) + "\n"


def _picture(out: Path, records: list[dict[str, Any]], per_method: int = 6) -> None:
    """One row per method: its first samples with a surface (an empty tile where fewer have one); point-cloud
    methods (no meshes) show their clouds as point splats."""
    import numpy as np
    import trimesh

    from hyperdiffusion.pictures.render import render_grid, render_points

    if any((out / r["method"] / "samples" / "sequences").is_dir() for r in records):
        return _animation(out, records, per_method)
    tiles, titles = [], []
    for r in records:
        samples = out / r["method"] / "samples"
        items = sorted((samples / "meshes").glob("*.ply"))[:per_method]
        as_points = not items and r.get("representation") == "points"
        if as_points:
            items = sorted((samples / "clouds").glob("*.npy"))[:per_method]
        for i in range(per_method):
            if i >= len(items):
                tiles.append(None)
            elif as_points:
                tiles.append(render_points(np.load(items[i], allow_pickle=False), size=192))
            else:
                tiles.append(trimesh.load(items[i], force="mesh"))
            titles.append(f"{r['label']}: {items[i].stem}" if i < len(items) else f"{r['label']}: -")
    render_grid(tiles, out / "comparison.png", ncols=per_method, titles=titles, size=192)


# ----------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    d = CompareConfig()
    p = subparsers.add_parser("compare", help="HyperDiffusion vs baselines on one dataset and protocol (Table 1)",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dataset", help="prepared dataset (from `prepare`)")
    p.add_argument("out", help="output folder")
    p.add_argument("--methods", default=",".join(d.methods), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--preset", default=d.preset, choices=sorted(COMPARE_PRESETS),
                   help="tiny (seconds, tests), cpu (minutes per method on 2 cores), paper (GPU)")
    p.add_argument("--hd-preset", default=None, help="HyperDiffusion's transformer preset (plane, chair, car)")
    p.add_argument("--n", dest="n_samples", type=int, default=None,
                   help="samples per method (default: max(test split size, 16))")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--quiet", action="store_true", help="no per-method tables while running")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = CompareConfig(methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), preset=args.preset,
                        hd_preset=args.hd_preset, n_samples=args.n_samples, seed=args.seed, device=args.device)
    records = compare(args.dataset, args.out, cfg, progress=not args.quiet)
    print(json.dumps([{k: r[k] for k in ("method", "mmd_cd", "cov_cd", "nna_cd")} for r in records]))
    return 0


def _animation(out: Path, records: list[dict[str, Any]], per_method: int) -> None:
    """4D: comparison.gif plays each method's first sequences side by side (one row per method), and
    comparison.png is their middle frame."""
    from hyperdiffusion.fields.mesh4d import animation_frames, load_sequence_meshes, save_animation
    from PIL import Image

    from hyperdiffusion.io import atomic_path

    sequences, titles = [], []
    for r in records:
        folders = sorted(p for p in (out / r["method"] / "samples" / "sequences").glob("*") if p.is_dir())
        for i in range(per_method):
            sequences.append(load_sequence_meshes(folders[i]) if i < len(folders) else [None])
            titles.append(f"{r['label']}: {folders[i].name}" if i < len(folders) else f"{r['label']}: -")
    frames = animation_frames(sequences, ncols=per_method, titles=titles, size=160)
    save_animation(frames, out / "comparison.gif")
    with atomic_path(out / "comparison.png", suffix=".png") as tmp:
        Image.fromarray(frames[len(frames) // 2]).save(tmp, format="PNG")

"""`hyperdiffusion demo`: the whole pipeline on a built-in family or your meshes, sized for a laptop CPU.

prepare -> fit -> train -> sample -> mesh -> evaluate, then pictures and a gallery page.
`--data DIR` runs it on a folder of your own meshes (anything `prepare` reads: obj,
off, ply, stl, glb, searched recursively) instead of a built-in family.
An animated family (`--family walker` or `figure`) runs the 4D pipeline (paper Sec. 4.4,
docs/4D.md): one MLP over (x, y, z, t) per 16-frame animation, the `4d-cpu` training
preset, sequences scored frame by frame, and animated GIF previews.
Every step is the same stage function the CLI runs, writing into one run folder, so
a demo that was interrupted resumes where it stopped when run again, and any stage
can be rerun alone on the demo's files.

The sizes are NOT the paper's (see README "Paper scale"): a few dozen shapes, a
short MLP fit, a 10 M-parameter transformer trained for a few minutes, and DDIM
with few steps, chosen by measurement to finish in about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from hyperdiffusion.data.animated_shapes import FAMILIES as ANIMATED_FAMILIES
from hyperdiffusion.io import InputError, ensure_writable_dir, read_json, write_json


@dataclass
class DemoConfig:
    family: str = "chair"
    data: str | None = None  # a folder of the user's meshes, used instead of the built-in family
    count: int | None = 40  # shapes prepared (80/5/15 split): built-in shapes made, or the first N of `data`
    n_surface: int = 20_000  # occupancy samples per shape (paper: 100k + 100k)
    n_uniform: int = 20_000
    fit_preset: str = "fast-cpu"  # fields/fit.py PRESETS: 1000 steps of 1024 points, cosine lr
    fit_max_epochs: int | None = None  # None: the preset's (fast-cpu: 40 epochs of 25 steps)
    fit_batch_shapes: int = 16
    # Fit quality on the evaluation set (fields/fit_eval.py): meshes at 64^3 and 20k points per surface
    # score 32 chairs in ~20 s (the paper-scale default, 128^3 and 100k, would take ~2.5 minutes here).
    score_res: int = 64
    score_points: int = 20_000
    train_steps: int = 2000
    n_samples: int = 16
    ddim_steps: int = 50
    mesh_res: int = 96
    emd: str = "exact"
    emd_points: int = 512  # exact EMD on 512-point subsamples keeps the demo fast (recorded in metrics.json)
    seed: int = 0
    device: str = "auto"

    @classmethod
    def tiny(cls, **given: Any) -> "DemoConfig":
        """For tests and a first try: every stage runs in seconds, nothing is meant to look good.

        `given` (what the user chose) overrides the tiny sizes.
        """
        return cls.for_run(tiny=True, **given)

    @classmethod
    def for_run(cls, tiny: bool = False, **given: Any) -> "DemoConfig":
        """The demo's sizes for what the user gave: 3D or 4D (an animated family), tiny or not."""
        sizes = dict(TINY_3D) if tiny else {}
        if given.get("data") is None and given.get("family") in ANIMATED_FAMILIES:
            sizes.update(TINY_4D if tiny else SIZES_4D)
        return cls(**{**sizes, **given})

    @property
    def is_4d(self) -> bool:
        """An animated built-in family: the 4D pipeline (docs/4D.md)."""
        return self.data is None and self.family in ANIMATED_FAMILIES

    @property
    def source(self) -> str:
        """What `prepare` reads: the user's folder or the built-in family."""
        return self.data if self.data is not None else f"builtin:{self.family}"


TINY_3D = dict(count=10, n_surface=2000, n_uniform=2000, fit_max_epochs=10, fit_batch_shapes=8,
               score_res=16, score_points=1000, train_steps=30, n_samples=4, ddim_steps=5, mesh_res=32, emd_points=128)
# 4D: every sequence is 16 frames, so per-frame samples, meshing and scoring cost 16x a 3D shape's.
# The paper's 100k + 100k samples per frame would take minutes per sequence here; 4000 + 4000 per
# frame (64k per sequence) and marching cubes at 64^3 keep the run near 10 minutes on 2 cores
# (benchmarks/RESULTS.md "4D demo").
# The 4D demo keeps the `cpu` fit preset it was measured with (the cosine `fast-cpu` was measured in 3D).
SIZES_4D = dict(fit_preset="cpu", count=24, n_surface=4000, n_uniform=4000, fit_batch_shapes=24, train_steps=1500, n_samples=8,
                ddim_steps=50, mesh_res=64, emd_points=256)
N_SHOWN_4D = 4  # training sequences shown beside their fitted MLPs (and meshed for that)
TINY_4D = dict(fit_preset="cpu", count=8, n_surface=1000, n_uniform=1000, fit_max_epochs=4, fit_batch_shapes=8, train_steps=10,
               n_samples=4, ddim_steps=5, mesh_res=24, emd_points=64)


def _stage(name: str, log: list[dict[str, Any]]):
    """Context-free timer: call the returned function when the stage is done."""
    start = time.perf_counter()
    print(f"\n== {name}", flush=True)

    def done(**info: Any) -> None:
        log.append({"stage": name, "seconds": round(time.perf_counter() - start, 1), **info})

    return done


def run_demo(out: str | Path = "demo-run", cfg: DemoConfig = DemoConfig(), *, progress: bool = True) -> dict[str, Any]:
    """Run the whole pipeline into `out`; return the metrics dict (also in out/metrics.json)."""
    from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate, format_table
    from hyperdiffusion.fields.fit import PRESETS as FIT_PRESETS, fit_dataset
    from hyperdiffusion.fields.fit_eval import ScoreConfig
    from hyperdiffusion.fields.mesh import MeshConfig, mesh_weights
    from hyperdiffusion.data.prepare import PrepareConfig, prepare
    from hyperdiffusion.diffusion.sample import SampleConfig, sample
    from hyperdiffusion.diffusion.train import TRAIN_PRESETS, train

    _check(cfg)
    if cfg.data is not None and Path(out).resolve().is_relative_to(Path(cfg.data).resolve()):
        raise InputError(f"{out}: the run folder is inside --data {cfg.data}; its meshes would be read as data")
    out = ensure_writable_dir(out)
    write_json(out / "config.json", {"demo": asdict(cfg)})
    timings: list[dict[str, Any]] = []
    torch.manual_seed(cfg.seed)

    four = cfg.is_4d
    unit = "sequences" if four else "shapes"
    done = _stage(f"prepare {cfg.source}" + (f" x {cfg.count}" if cfg.count else "")
                  + (" (16-frame animations)" if four else ""), timings)
    prep_cfg = PrepareConfig(n_surface=cfg.n_surface, n_uniform=cfg.n_uniform, seed=cfg.seed)
    # 4D (builtin:walker, builtin:figure): prepare takes the official 4D route itself (AnimationConfig defaults).
    result = prepare(cfg.source, out / "data", prep_cfg, count=cfg.count, progress=progress)
    splits = result.manifest["splits"]
    if not splits["train"] or not splits["test"]:
        skipped = f", {len(result.skipped)} skipped (reasons in {out / 'data' / 'manifest.json'})" \
            if result.skipped else ""
        raise InputError(f"{cfg.source}: {result.n_ok} {unit} prepared{skipped}; the demo needs at least 4 "
                         f"(its 80/5/15 split must give both a train and a test {unit[:-1]})")
    if len(splits["test"]) > cfg.n_samples:  # the protocol scores at least as many samples as references
        print(f"{len(splits['test'])} test shapes: sampling {len(splits['test'])} instead of {cfg.n_samples}")
        cfg = replace(cfg, n_samples=len(splits["test"]))
        write_json(out / "config.json", {"demo": asdict(cfg)})
    done(prepared=result.n_ok)

    done = _stage("fit one MLP over (x, y, z, t) per train sequence" if four else "fit one MLP per train shape",
                  timings)
    fit_cfg = replace(FIT_PRESETS[cfg.fit_preset], seed=cfg.seed)
    if cfg.fit_max_epochs is not None:
        fit_cfg = replace(fit_cfg, max_epochs=cfg.fit_max_epochs)
    weights = fit_dataset(out / "data", out / "mlps", fit_cfg, split="train", batch_shapes=cfg.fit_batch_shapes,
                          device=cfg.device, progress=progress,
                          scores=ScoreConfig(mesh_res=cfg.score_res, n_points=cfg.score_points, seed=cfg.seed))
    done()

    done = _stage("mesh the fitted MLPs (for the previews)", timings)
    mesh_cfg = MeshConfig(res=cfg.mesh_res, seed=cfg.seed)
    if four:
        # 16 meshes per MLP (~5-9 s a sequence at 64^3 on one core): only the ones the previews show,
        # and no per-sequence GIFs (the demo draws its own side by side). `hyperdiffusion mesh` on
        # mlps/weights.safetensors meshes them all.
        from hyperdiffusion.fields.mesh4d import mesh_weights_4d
        from hyperdiffusion.fields.mlp import load_weight_set, save_weight_set

        ws = load_weight_set(weights)
        shown = out / "mlps" / "shown.safetensors"
        save_weight_set(shown, ws.weights[:N_SHOWN_4D], ws.names[:N_SHOWN_4D], ws.mlp)
        mesh_weights_4d(shown, out / "mlps", mesh_cfg, device=cfg.device, progress=progress, previews=False)
    else:
        mesh_weights(weights, out / "mlps", mesh_cfg, device=cfg.device, progress=progress)
    done()

    done = _stage(f"train the weight-space diffusion model ({cfg.train_steps} steps)", timings)
    # 4D weight sets need the mlp4d representation: its CPU preset, not the 3D "cpu" one.
    train_cfg = replace(TRAIN_PRESETS["4d-cpu" if four else "cpu"], max_steps=cfg.train_steps, seed=cfg.seed, device=cfg.device)
    train(weights, out / "diffusion", train_cfg, progress=progress)
    done()

    done = _stage(f"sample {cfg.n_samples} new MLPs (DDIM, {cfg.ddim_steps} steps) and mesh them", timings)
    sample_cfg = SampleConfig(n=cfg.n_samples, steps=cfg.ddim_steps, batch_size=cfg.n_samples, seed=cfg.seed,
                              res=cfg.mesh_res, device=cfg.device)
    sample(out / "diffusion" / "checkpoints" / "last.safetensors", out / "samples", sample_cfg, progress=progress)
    done()

    done = _stage("evaluate: MMD, COV, 1-NNA (CD, EMD), " + ("novelty; sequences, frame by frame" if four
                                                             else "FPD, novelty"), timings)
    # 4D: the official protocol normalises nothing (docs/4D.md); the prepared sequences are already
    # centred per frame and scaled per sequence, and the samples live in the same frame.
    eval_cfg = EvalConfig(emd=cfg.emd, emd_points=cfg.emd_points, split="test", train=str(out / "data"),
                          seed=cfg.seed, device=cfg.device, **({"norm": "none"} if four else {}))
    metrics = evaluate(out / "samples", out / "data", eval_cfg, progress=progress)
    metrics["modes"]["config"] = asdict(eval_cfg)
    write_json(out / "metrics.json", metrics)
    print(format_table(metrics))
    done()

    done = _stage("pictures and gallery" + (" (animated previews)" if four else ""), timings)
    (_pictures_4d if four else _pictures)(out, metrics)
    done()

    write_json(out / "timings.json", timings)
    _print_table(metrics, timings)
    print(f"\nRun folder: {out}  (open {out / 'index.html'} in a browser)")
    return metrics


def _check(cfg: DemoConfig) -> None:
    """Refuse settings that would fail only after minutes of work."""
    for key in ("train_steps", "n_samples", "ddim_steps", "mesh_res"):
        if getattr(cfg, key) < 1:
            raise InputError(f"demo: {key.replace('_', '-')} must be at least 1, not {getattr(cfg, key)}")
    if cfg.count is not None and cfg.count < 1:
        raise InputError(f"demo: --count must be at least 1, not {cfg.count}")
    if cfg.data is None and cfg.count is None:
        raise InputError("demo: a built-in family needs --count")
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise InputError(f"{cfg.data}: --data must be a folder of meshes")


def _pictures(out: Path, metrics: dict[str, Any]) -> None:
    """(a) training shapes, (b) their fitted MLPs, (c) samples beside their nearest training shape."""
    import trimesh

    from hyperdiffusion.pictures.gallery import write_gallery
    from hyperdiffusion.data.prepare import load_dataset, mesh_path
    from hyperdiffusion.pictures.render import render_grid

    images = out / "images"
    images.mkdir(exist_ok=True)
    ds = load_dataset(out / "data")
    train_names = ds.names("train")[:8]
    train_meshes = [trimesh.load(mesh_path(out / "data", n), force="mesh") for n in train_names]
    render_grid(train_meshes, images / "train_shapes.png", ncols=4, titles=train_names)
    fitted = [_load_or_none(out / "mlps" / "meshes" / f"{n}.ply") for n in train_names]
    render_grid(fitted, images / "fitted_mlps.png", ncols=4, titles=[f"MLP of {n}" for n in train_names])

    nearest = {row["sample"]: row["train_name"] for row in (metrics.get("novelty") or {}).get("nearest", [])}
    sample_names = sorted(p.stem for p in (out / "samples" / "meshes").glob("*.ply"))
    tiles, titles, gallery_meshes = [], [], {}
    for name in sample_names:
        gen = _load_or_none(out / "samples" / "meshes" / f"{name}.ply")
        tiles.append(gen)
        titles.append(name)
        near = nearest.get(name)
        tiles.append(trimesh.load(mesh_path(out / "data", near), force="mesh") if near else None)
        titles.append(f"nearest train: {near}" if near else "nearest train: ?")
        if gen is not None:
            gallery_meshes[f"generated {name}"] = gen
    render_grid(tiles, images / "samples_vs_nearest.png", ncols=4, titles=titles)
    render_grid([t for t in tiles[::2]], images / "samples.png", ncols=4, titles=titles[::2])
    for n, m in zip(train_names[:4], train_meshes):
        gallery_meshes[f"train {n}"] = m
    write_gallery(out, "HyperDiffusion demo", [
        ("Generated samples (each from a new MLP sampled by the diffusion model)", "images/samples.png"),
        ("Generated samples, each beside its nearest training shape (Chamfer)", "images/samples_vs_nearest.png"),
        ("Training shapes", "images/train_shapes.png"),
        ("The fitted MLPs of those shapes, meshed", "images/fitted_mlps.png"),
    ], gallery_meshes, _metrics_table_html(metrics))


def _pictures_4d(out: Path, metrics: dict[str, Any]) -> None:
    """Animated GIFs: (a) samples beside their nearest training sequence, (b) training sequences beside
    their fitted MLPs; each with a PNG of its middle frame. The gallery shows the GIFs as images and
    plays the sequences in its 3D viewer."""
    from PIL import Image

    from hyperdiffusion.data.animation import load_sequence_meshes as prepared_frames
    from hyperdiffusion.data.prepare import load_dataset
    from hyperdiffusion.fields.mesh4d import animation_frames, load_sequence_meshes, save_animation
    from hyperdiffusion.io import atomic_path, safe_name
    from hyperdiffusion.pictures.gallery import write_gallery

    images = out / "images"
    images.mkdir(exist_ok=True)

    def gif(sequences, titles, name: str) -> None:
        frames = animation_frames(sequences, ncols=4, titles=titles, size=160)
        save_animation(frames, images / f"{name}.gif")
        with atomic_path(images / f"{name}.png", suffix=".png") as tmp:
            Image.fromarray(frames[len(frames) // 2]).save(tmp, format="PNG")

    def fitted(folder: Path, name: str):
        path = folder / "sequences" / safe_name(name)
        return load_sequence_meshes(path) if path.is_dir() else [None]

    train_names = load_dataset(out / "data").names("train")[:N_SHOWN_4D]
    train_seqs = {n: prepared_frames(out / "data", n) for n in train_names}
    seqs, titles = [], []
    for n in train_names:
        seqs += [train_seqs[n], fitted(out / "mlps", n)]
        titles += [n, f"MLP of {n}"]
    gif(seqs, titles, "train_vs_fitted")

    # evaluate's novelty: the nearest training sequence (frame-aligned Chamfer) of every sample with a cloud.
    nearest = {row["sample"]: row["train_name"] for row in (metrics.get("novelty") or {}).get("nearest", [])}
    statuses = read_json(out / "samples" / "mesh.json")["status"]
    seqs, titles, gallery_meshes = [], [], {}
    for name in sorted(statuses):
        gen = fitted(out / "samples", name)
        seqs.append(gen)
        titles.append(name if statuses[name] == "ok" else f"{name} ({statuses[name]})")
        near = nearest.get(name)
        if near and near not in train_seqs:
            train_seqs[near] = prepared_frames(out / "data", near)
        seqs.append(train_seqs[near] if near else [None])
        titles.append(f"nearest train: {near}" if near else "nearest train: ?")
        gallery_meshes[f"generated {name}"] = gen  # the viewer plays it; left out if every frame is empty
    gif(seqs, titles, "samples_vs_nearest")
    for n in train_names:
        gallery_meshes[f"train {n}"] = train_seqs[n]
    write_gallery(out, "HyperDiffusion demo (4D: animations)", [
        ("Generated animations (each a new 4D MLP sampled by the diffusion model), each beside its nearest "
         "training sequence (Chamfer, frame by frame)", "images/samples_vs_nearest.gif"),
        ("Training sequences beside their fitted 4D MLPs, meshed frame by frame", "images/train_vs_fitted.gif"),
    ], gallery_meshes, _metrics_table_html(metrics))


def _load_or_none(path: Path):
    import trimesh

    return trimesh.load(path, force="mesh") if path.is_file() else None


METRIC_ROWS = [("mmd_cd", "MMD-CD"), ("cov_cd", "COV-CD"), ("nna_cd", "1-NNA-CD"),
               ("mmd_emd", "MMD-EMD"), ("cov_emd", "COV-EMD"), ("nna_emd", "1-NNA-EMD"), ("fpd", "FPD")]


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _metrics_table_html(metrics: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{label}</th><td>{_fmt(metrics.get(key))}</td></tr>" for key, label in METRIC_ROWS)
    copy = (metrics.get("novelty") or {}).get("copy_rate")
    rows += f"<tr><th>copy rate</th><td>{_fmt(copy)}</td></tr>"
    import html
    import json

    modes = html.escape(json.dumps(metrics.get("modes", {}), indent=1, default=str))
    return f"<table>{rows}</table><details><summary>Modes (how each number was computed)</summary><pre>{modes}</pre></details>"


def _print_table(metrics: dict[str, Any], timings: list[dict[str, Any]]) -> None:
    print("\nstage                                               seconds")
    for t in timings:
        print(f"  {t['stage'][:48]:<48} {t['seconds']:>8.1f}")
    print(f"  {'total':<48} {sum(t['seconds'] for t in timings):>8.1f}")
    print("\nmetric        value   (raw: MMD in normalised units, COV and 1-NNA as fractions)")
    for key, label in METRIC_ROWS:
        print(f"  {label:<11} {_fmt(metrics.get(key)):>8}")
    print(f"  {'copy rate':<11} {_fmt((metrics.get('novelty') or {}).get('copy_rate')):>8}")


def register(subparsers) -> None:
    d, t = DemoConfig(), DemoConfig.tiny()
    p = subparsers.add_parser("demo", help="run the whole pipeline on a built-in family or a folder of your "
                                           "meshes (CPU-sized, ~10 min)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default="demo-run", help="run folder (default: demo-run)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="a folder of your meshes (obj/off/ply/stl/glb, recursive) instead of a built-in family")
    p.add_argument("--family", default=None,
                   help=f"built-in family: chair, table, airplane, or an animated one (the 4D pipeline): "
                        f"{', '.join(ANIMATED_FAMILIES)} (default: {d.family})")
    p.add_argument("--count", type=int, default=None,
                   help=f"shapes to prepare (default: {d.count} built-in, {SIZES_4D['count']} animated, all of "
                        f"--data; --tiny: {t.count}, animated {TINY_4D['count']})")
    p.add_argument("--train-steps", type=int, default=None, help=f"default: {d.train_steps} (--tiny: {t.train_steps})")
    p.add_argument("--samples", type=int, default=None,
                   help=f"MLPs to sample (default: {d.n_samples}, --tiny: {t.n_samples}; raised to the test "
                        "split's size when that is larger)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true",
                   help="a seconds-long run of every stage; the options above still apply")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_main)


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The demo's settings: what the user gave, the rest from the tiny or the default sizes."""
    if args.data is not None and args.family is not None:
        raise InputError("demo: give --data DIR (your meshes) or --family (a built-in family), not both")
    given = {k: v for k, v in (("data", args.data), ("family", args.family), ("count", args.count),
                               ("train_steps", args.train_steps), ("n_samples", args.samples)) if v is not None}
    if args.data is not None and args.count is None and not args.tiny:
        given["count"] = None  # all of the user's meshes
    given.update(seed=args.seed, device=args.device)
    return DemoConfig.for_run(tiny=args.tiny, **given)


def _main(args: argparse.Namespace) -> int:
    run_demo(args.out, config_from_args(args))
    return 0

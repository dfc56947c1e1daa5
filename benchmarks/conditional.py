"""CPU-scale measurements of class-conditional diffusion, interpolation and completion (docs/CONDITIONAL.md).

Expects RUN with three prepared built-in datasets (data_chair, data_table, data_airplane), their
fitted MLPs (mlps_<class>), a class-conditional model (cond/) and, for the 1-NNA comparison,
per-class unconditional models (uncond_<class>/); benchmarks/RESULTS.md "Class-conditional
diffusion" has the commands that make them. Stages (each writes RUN/results/<stage>.json and
pictures into RUN/results/; rerun to resume, finished sampling is reused):

    python benchmarks/conditional.py RUN classes        # samples per class and guidance weight, FPD-net class rate, 1-NNA
    python benchmarks/conditional.py RUN interpolate    # 3 pairs, straight and DDIM, single-component fraction
    python benchmarks/conditional.py RUN complete       # front halves of 10 test chairs: best-of-8 Chamfer
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hyperdiffusion.io import write_json

CLASSES = ("chair", "table", "airplane")


def _clouds(folder: Path, n: int) -> list[np.ndarray | None]:
    return [np.load(p, allow_pickle=False) if (p := folder / "clouds" / f"sample_{i:04d}.npy").is_file() else None
            for i in range(n)]


def draw(ckpt: Path, out: Path, n: int, seed: int, steps: int, res: int, cls: str | None = None,
         w: float = 1.0) -> list[np.ndarray | None]:
    """n samples (meshes and clouds in out/); a cloud per sample, None where it has no surface."""
    from hyperdiffusion.diffusion.sample import SampleConfig, sample

    if not (out / "mesh.json").is_file():
        sample(ckpt, out, SampleConfig(n=n, steps=steps, batch_size=n, seed=seed, class_name=cls, guidance=w,
                                       res=res, device="cpu"), progress=False)
    return _clouds(out, n)


def classify(clouds: list[np.ndarray | None], net) -> list[str | None]:
    """The shipped FPD network's class for each cloud (None for no surface)."""
    from hyperdiffusion.evaluation.metrics import normalize_clouds

    ok = [c for c in clouds if c is not None]
    if not ok:
        return [None] * len(clouds)
    x = torch.as_tensor(normalize_clouds(np.stack(ok), net.input_norm), dtype=torch.float32)
    with torch.no_grad():
        pred = iter(net.model(x, torch.Generator().manual_seed(0)).argmax(1).tolist())
    return [net.classes[next(pred)] if c is not None else None for c in clouds]


def nna(clouds: list[np.ndarray | None], ref: np.ndarray) -> float:
    """1-NNA under Chamfer ("hd" normalisation) between equal numbers of non-empty samples and references
    (the first k of each, k the smaller count)."""
    from hyperdiffusion.evaluation import metrics

    gen = [c for c in clouds if c is not None]
    k = min(len(gen), len(ref))
    if k < 2:
        return float("nan")
    gen, ref = gen[:k], ref[:k]
    g, r = metrics.normalize_clouds(np.stack(gen), "hd"), metrics.normalize_clouds(ref, "hd")
    return metrics.set_metrics(metrics.pairwise_chamfer(g), metrics.pairwise_chamfer(g, r),
                               metrics.pairwise_chamfer(r))["nna"]


def stage_classes(run: Path, args) -> dict:
    from hyperdiffusion.evaluation.evaluate import load_clouds
    from hyperdiffusion.evaluation.fpd import DEFAULT_NET, load_feature_net
    from hyperdiffusion.pictures.render import render_grid, render_mesh

    import trimesh

    net = load_feature_net(DEFAULT_NET)
    res_dir = run / "results"
    out: dict = {"n": args.n, "ddim_steps": args.steps, "res": args.res, "weights": args.weights,
                 "fpd_net": net.id, "rate": {}, "empty": {}, "predicted": {}, "nna": {}}
    pictures, titles = [], []
    for w in args.weights:
        for cls in CLASSES:
            folder = res_dir / "samples" / f"w{w:g}" / (cls if w else "uncond")  # w 0 is the same for every class
            clouds = draw(run / "cond", folder, args.n, args.seed, args.steps, args.res, cls, w)
            pred = classify(clouds, net)
            out["rate"].setdefault(f"w{w:g}", {})[cls] = sum(p == cls for p in pred) / len(pred)
            out["empty"].setdefault(f"w{w:g}", {})[cls] = sum(p is None for p in pred)
            out["predicted"].setdefault(f"w{w:g}", {})[cls] = {c: pred.count(c) for c in (*CLASSES, None)}
            if w in (0, args.picture_w) and (w or cls == CLASSES[0]):
                for i in range(8):
                    m = folder / "meshes" / f"sample_{i:04d}.ply"
                    pictures.append(render_mesh(trimesh.load(m), size=128) if m.is_file()
                                    else np.full((128, 128, 3), 255, np.uint8))
                    titles.append(f"{'unguided' if not w else cls} w={w:g}: {pred[i]}")
    # 1-NNA per class: conditional (w = picture_w and 1) vs a per-class unconditional model, against
    # the class's test split (10 shapes).
    for cls in CLASSES:
        ref, _, _ = load_clouds(run / f"data_{cls}", "test", n_points=2048, seed=0)
        row = {}
        for w in sorted({1.0, args.picture_w}):
            row[f"cond_w{w:g}"] = nna(_clouds(res_dir / "samples" / f"w{w:g}" / cls, args.n), ref)
        if (run / f"uncond_{cls}").is_dir():
            clouds = draw(run / f"uncond_{cls}", res_dir / "samples" / f"uncond_{cls}", args.n, args.seed,
                          args.steps, args.res)
            row["per_class_uncond"] = nna(clouds, ref)
            row["per_class_uncond_fpd_rate"] = sum(p == cls for p in classify(clouds, net)) / len(clouds)
        out["nna"][cls] = row
    render_grid(pictures, res_dir / "class_samples.png", ncols=8, titles=titles, size=128)
    return out


def stage_interpolate(run: Path, args) -> dict:
    from hyperdiffusion.diffusion.interpolate import InterpolateConfig, interpolate

    pairs = [("chair", 0, "chair", 1), ("table", 0, "table", 1), ("chair", 2, "airplane", 0)]
    out: dict = {"pairs": [], "ddim_steps": args.interp_ddim_steps}
    counts = {"linear": [0, 0], "ddim": [0, 0]}
    for ca, ia, cb, ib in pairs:
        name = f"{ca}{ia}_{cb}{ib}"
        cfg = InterpolateConfig(steps=8, ddim_steps=args.interp_ddim_steps, res=args.res, device="cpu")
        s = interpolate(run / "cond", f"{run / f'mlps_{ca}'}:{ia}", f"{run / f'mlps_{cb}'}:{ib}",
                        run / "results" / "interp" / name, cfg, progress=False)
        row = {"pair": name}
        for m, v in s["methods"].items():
            inner = v["components"][1:-1]
            counts[m][0] += sum(c == 1 for c in inner)
            counts[m][1] += len(inner)
            row[m] = {"components": v["components"], "single": v["single_component_fraction"],
                      **({"reconstruction_rel_l2": v["reconstruction_rel_l2"]} if m == "ddim" else {})}
        out["pairs"].append(row)
    out["single_component_fraction"] = {m: c[0] / c[1] for m, c in counts.items()}
    out["single_component_counts"] = {m: f"{c[0]}/{c[1]}" for m, c in counts.items()}
    return out


def stage_complete(run: Path, args) -> dict:
    from hyperdiffusion.data.prepare import load_cloud, load_dataset
    from hyperdiffusion.diffusion.complete import CompleteConfig, complete_weights, level_error
    from hyperdiffusion.evaluation.metrics import chamfer
    from hyperdiffusion.fields.mesh import extract_meshes, surface_cloud
    from hyperdiffusion.fields.mlp import MLPConfig, WeightSet
    from hyperdiffusion.pictures.render import render_grid, render_mesh, render_points

    root = run / "data_chair"
    ds = load_dataset(root)
    base = CompleteConfig(n=8, ddim_steps=args.complete_steps, n_points=512, class_name="chair", guidance=1.0,
                          device="cpu")

    def run_one(full: np.ndarray, cfg: CompleteConfig):
        partial = full[full[:, 2] > 0]  # the front half (the renderer's azimuth 0 looks from +Z)
        w, meta = complete_weights(run / "cond", partial, cfg)
        mlp = MLPConfig.from_dict(meta["representation"]["info"]["mlp"])
        meshes = extract_meshes(WeightSet(w, [f"c{i}" for i in range(len(w))], mlp, {}), res=args.complete_res)
        cds = [chamfer(surface_cloud(m, 2048, 0), full) if m is not None and len(m.faces) else float("inf")
               for m in meshes]
        err = level_error(w, torch.as_tensor(partial)[None], mlp, 0.0).sqrt().tolist()
        return partial, meshes, cds, err

    # The strength is chosen on the validation chairs, then used on the test chairs.
    calib = {}
    for s in (args.strengths if len(args.strengths) > 1 else []):  # one strength given: no choice to make
        cds = [min(run_one(load_cloud(root, n), replace(base, strength=s, seed=k))[2])
               for k, n in enumerate(ds.names("val")[: args.calib_shapes])]
        calib[f"{s:g}"] = float(np.mean(cds))
    strength = float(min(args.strengths, key=lambda s: calib.get(f"{s:g}", 0.0)))
    variants = {"completion": replace(base, strength=strength), "chair_unguided": replace(base, strength=0.0)}
    rows, pictures, titles = [], [], []
    for k, name in enumerate(ds.names("test")):
        full = load_cloud(root, name)
        row = {"shape": name}
        for v, cfg in variants.items():
            t0 = time.perf_counter()
            partial, meshes, cds, err = run_one(full, replace(cfg, seed=100 + k))
            row[v] = {"best_cd": float(min(cds)), "mean_cd": float(np.mean([c for c in cds if np.isfinite(c)] or [np.inf])),
                      "n_empty": int(sum(not np.isfinite(c) for c in cds)), "median_rms_logit_err": float(np.median(err)),
                      "sec": time.perf_counter() - t0}
            if k < 3 and v == "completion":
                pictures.append(render_points(partial, size=128))
                titles.append(f"{name} front half")
                order = np.argsort(cds)[:5]
                for i in order:
                    pictures.append(render_mesh(meshes[i], size=128) if meshes[i] is not None
                                    else np.full((128, 128, 3), 255, np.uint8))
                    titles.append(f"completion CD {cds[i]:.4f}")
                pictures.append(render_points(full, size=128))
                titles.append("full shape (truth)")
        rows.append(row)
    render_grid(pictures, run / "results" / "completion.png", ncols=7, titles=titles, size=128)
    summary = {v: {"mean_best_of_8_cd": float(np.mean([r[v]["best_cd"] for r in rows])),
                   "mean_mean_of_8_cd": float(np.mean([r[v]["mean_cd"] for r in rows])),
                   "median_rms_logit_err": float(np.median([r[v]["median_rms_logit_err"] for r in rows]))}
               for v in variants}
    wins = sum(r["completion"]["best_cd"] < r["chair_unguided"]["best_cd"] for r in rows)
    return {"strength": strength, "calibration_val_mean_best_cd": calib, "ddim_steps": args.complete_steps,
            "res": args.complete_res, "n_points_guidance": base.n_points,
            "summary": summary, "completion_beats_chair_unguided": f"{wins}/{len(rows)}", "shapes": rows,
            "chamfer": "squared, both directions, 2048 completion surface points vs the 2048-point reference cloud, "
                       "in the dataset's normalised frame (no per-cloud normalisation)"}


STAGES = {"classes": stage_classes, "interpolate": stage_interpolate, "complete": stage_complete}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("--n", type=int, default=10, help="samples per class and guidance weight")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="guidance weights")
    p.add_argument("--picture-w", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps for sampling and completion")
    p.add_argument("--interp-ddim-steps", type=int, default=None, help="DDIM steps of inversion/decoding (all T)")
    p.add_argument("--strengths", type=float, nargs="+", default=[10.0, 30.0, 100.0],
                   help="completion strengths; with several, chosen on --calib-shapes validation chairs")
    p.add_argument("--calib-shapes", type=int, default=3, help="validation chairs the strength is chosen on")
    p.add_argument("--complete-steps", type=int, default=25, help="DDIM steps of completion")
    p.add_argument("--complete-res", type=int, default=40, help="marching cubes for the completion Chamfer")
    p.add_argument("--res", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = STAGES[args.stage](args.run, args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(args.run / "results" / f"{args.stage}.json", result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("shapes", "predicted")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

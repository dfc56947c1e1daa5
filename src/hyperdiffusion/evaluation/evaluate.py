"""Score generated shapes against a reference set (paper Sec. 4, REFERENCE.md "Evaluation").

`hyperdiffusion evaluate SAMPLES REFERENCE --out metrics.json` computes
MMD / COV / 1-NNA under Chamfer and EMD (`hyperdiffusion.evaluation.metrics`), FPD with a
named feature network (`hyperdiffusion.evaluation.fpd`) and, given training shapes, how
close every sample is to its nearest training shape (novelty / copying).

Every number is written beside the modes that produced it (normalisation, EMD
solver and point count, set sizes, seed, feature network), and anything not
computed is null with the reason: no silent fallback.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hyperdiffusion.evaluation import metrics
from hyperdiffusion.io import InputError, ensure_writable_dir, load_npy, read_json, write_json

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")


@dataclass
class EvalConfig:
    """Defaults are the official test protocol (REFERENCE.md "Evaluation")."""

    norm: str = "hd"  # per-cloud normalisation, metrics.NORM_MODES
    emd: str = "exact"  # "exact" | "approx" | "off"
    emd_points: int | None = None  # subsample clouds to this many points for EMD only (None: all)
    emd_squared: bool = False  # squared Euclidean ground cost instead of Euclidean
    n_points: int = 2048  # points per cloud (clouds with more are subsampled, seeded)
    split: str = "test"  # split read from prepared datasets
    train_split: str = "train"  # split read from a prepared dataset given as --train
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    # FPD feature network: "default" = the shipped one (fpd.DEFAULT_NET), a file from `fpd-train` or the
    # public .pth checkpoint, or "none" / None for no FPD
    fpd_net: str | None = "default"
    train: str | None = None  # training shapes for novelty


# ---------------------------------------------------------------------------
# Reading clouds
# ---------------------------------------------------------------------------

def load_clouds(path: str | Path, split: str = "test", n_points: int = 2048, seed: int = 0) -> tuple[np.ndarray, list[str], str]:
    """Clouds [K, n_points, 3], their names and the kind of source.

    `path` is a prepared dataset (manifest.json: the clouds of `split`), a mesh
    run folder (clouds/*.npy), or a plain folder of .npy clouds [N, 3] or meshes
    (n_points surface samples each, seeded).
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder")
    rng = np.random.default_rng(seed)
    if (path / "manifest.json").is_file():
        manifest = read_json(path / "manifest.json")
        splits = manifest.get("splits", {})
        if split not in splits:
            raise InputError(f"{path}/manifest.json: no split {split!r} (has {', '.join(splits) or 'none'})")
        names = [n for n in splits[split] if (path / "shapes" / n / "cloud.npy").is_file()]
        files, kind = [path / "shapes" / n / "cloud.npy" for n in names], f"dataset:{split}"
    else:
        folder = path / "clouds" if (path / "clouds").is_dir() else path
        files = sorted(folder.glob("*.npy"))
        kind = "run" if folder != path else "npy"
        if not files:
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in MESH_SUFFIXES)
            kind = "meshes"
        names = [f.stem for f in files]
    if not files:
        raise InputError(f"{path}: no point clouds found (expected manifest.json, clouds/*.npy, *.npy or meshes)")
    clouds = [_read_cloud(f, n_points, rng) for f in files]
    return np.stack(clouds).astype(np.float64), names, kind


def _read_cloud(file: Path, n_points: int, rng: np.random.Generator) -> np.ndarray:
    if file.suffix == ".npy":
        cloud = load_npy(file)
        if cloud.ndim != 2 or cloud.shape[1] != 3:
            raise InputError(f"{file}: expected a point cloud [N, 3], got shape {cloud.shape}")
    else:
        import trimesh

        try:
            mesh = trimesh.load(file, force="mesh")
        except Exception as e:  # each trimesh reader fails on bad bytes in its own way
            detail = str(e).splitlines()[0][:200] if str(e) else ""
            raise InputError(f"{file}: not a readable mesh ({type(e).__name__}: {detail})") from None
        if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
            raise InputError(f"{file}: mesh has no faces")
        cloud, _ = trimesh.sample.sample_surface(mesh, n_points, seed=int(rng.integers(2**31)))
    if len(cloud) < n_points:
        raise InputError(f"{file}: {len(cloud)} points, fewer than the {n_points} the metrics use")
    if not np.isfinite(cloud).all():  # before subsampling, which could hide a bad point
        raise InputError(f"{file}: contains NaN or infinite coordinates")
    if len(cloud) > n_points:
        cloud = cloud[rng.choice(len(cloud), n_points, replace=False)]
    return np.asarray(cloud, np.float64)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _chamfer_settings(device: str) -> dict:
    # kd-trees on CPU (10x faster than torch.cdist here, REFERENCE.md); batched float32 torch on GPU.
    if device == "cpu":
        return {"backend": "kdtree"}
    import torch

    return {"backend": "torch", "device": device, "dtype": torch.float32, "max_block_bytes": 2 << 30}


def _pairwise_cd(a, b, device, progress=None):
    return metrics.pairwise_chamfer(a, b, progress=progress, **_chamfer_settings(device))


def sample_counts(path, n_clouds: int) -> dict:
    """How many samples were generated, how many have no surface (mesh.json status) and how many have clouds.

    A sample run folder (`sample` or `mesh` output) records every name's meshing status in
    mesh.json and every generated name in weights.json; samples without a surface have no
    cloud, so without these counts they would vanish from the metrics unnoticed.
    """
    from hyperdiffusion.fields.mesh import STATUSES

    folder = Path(path) if isinstance(path, (str, Path)) else None
    status_file = folder / "mesh.json" if folder is not None else None
    if status_file is None or not status_file.is_file():
        return {"generated": n_clouds, "with_cloud": n_clouds, **{s: None for s in STATUSES if s != "ok"},
                "source": "clouds only (no mesh.json beside them: samples without a surface are not counted)"}
    status = read_json(status_file).get("status", {})
    counts = {s: sum(v == s for v in status.values()) for s in STATUSES}
    generated, source = len(status), "mesh.json"
    if (folder / "weights.json").is_file():
        names = read_json(folder / "weights.json").get("names")
        if isinstance(names, list):
            generated, source = len(names), "weights.json and mesh.json"
    return {"generated": generated, "with_cloud": n_clouds, **{s: counts[s] for s in STATUSES if s != "ok"},
            "not_meshed": max(generated - len(status), 0), "source": source}


def novelty(samples: np.ndarray, reference: np.ndarray, train: np.ndarray, train_names: list[str],
            device: str = "cpu") -> dict:
    """Chamfer distance from each sample to its nearest training shape (all normalised).

    copy_rate: fraction of samples closer to a training shape than the median
    test-to-train nearest distance, i.e. closer than a typical unseen real shape is.
    """
    d_st = _pairwise_cd(samples, train, device)
    nearest = d_st.min(axis=1)
    ref_nearest = _pairwise_cd(reference, train, device).min(axis=1)
    threshold = float(np.median(ref_nearest))
    pct = {f"p{q}": float(np.percentile(nearest, q)) for q in (5, 25, 75, 95)}
    return {
        "distance": "chamfer (squared, normalised clouds)",
        "mean": float(nearest.mean()), "median": float(np.median(nearest)), **pct,
        "reference_to_train_median": threshold,
        "copy_rate": float((nearest < threshold).mean()),
        "nearest": [{"distance": float(d), "train_name": train_names[i]}
                    for d, i in zip(nearest, d_st.argmin(axis=1))],
    }


def evaluate(samples, reference, config: EvalConfig = EvalConfig(), progress: bool = True) -> dict:
    """Metrics of `samples` against `reference`: paths (see `load_clouds`) or arrays [K, N, 3]."""
    from hyperdiffusion.progress import progress as progress_bar

    cfg = config
    if cfg.norm not in metrics.NORM_MODES:
        raise InputError(f"--norm must be one of {', '.join(metrics.NORM_MODES)}, got {cfg.norm!r}")
    if cfg.emd not in metrics.EMD_MODES:
        raise InputError(f"--emd must be one of {', '.join(metrics.EMD_MODES)}, got {cfg.emd!r}")
    from hyperdiffusion.evaluation import evaluate4d

    if evaluate4d.is_4d_source(samples) or evaluate4d.is_4d_source(reference):  # sequences (docs/4D.md)
        return evaluate4d.evaluate_4d(samples, reference, cfg, progress)
    device = _device(cfg.device)
    s_raw, s_names, s_kind = _as_clouds(samples, cfg.split, cfg)
    r_raw, r_names, r_kind = _as_clouds(reference, cfg.split, cfg)
    counts = sample_counts(samples, len(s_raw))
    all_names = list(s_names)  # novelty is about every generated shape, not the protocol's subset
    s_all = metrics.normalize_clouds(s_raw, cfg.norm)
    if len(s_raw) < len(r_raw):
        lost = ", ".join(f"{counts[k]} {k}" for k in ("empty", "full", "non-finite") if counts.get(k))
        detail = f" ({counts['generated']} generated; without a surface: {lost})" if lost else ""
        raise InputError(f"{len(s_raw)} samples{detail} for {len(r_raw)} reference shapes: the protocol needs at "
                         "least as many samples as references")
    if len(s_raw) > len(r_raw):  # equal set sizes (PointFlow protocol): a seeded subset of the samples
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(s_raw), len(r_raw), replace=False))
        s_raw, s_names = s_raw[keep], [s_names[i] for i in keep]
    s = metrics.normalize_clouds(s_raw, cfg.norm)
    r = metrics.normalize_clouds(r_raw, cfg.norm)

    n = len(r)
    result: dict = {}
    with progress_bar(total=3 * n * n, desc="chamfer", unit="pair", disable=not progress) as bar:
        d_sr = _pairwise_cd(s, r, device, bar.update)
        d_ss = _pairwise_cd(s, None, device, bar.update)
        d_rr = _pairwise_cd(r, None, device, bar.update)
    cd = metrics.set_metrics(d_ss, d_sr, d_rr)
    result.update(mmd_cd=cd["mmd"], cov_cd=cd["cov"], nna_cd=cd["nna"])

    emd_mode = {"mode": cfg.emd}
    if cfg.emd == "off":
        result.update(mmd_emd=None, cov_emd=None, nna_emd=None)
        emd_mode["reason"] = "disabled with --emd off"
    else:
        es = metrics.subsample_clouds(s, cfg.emd_points, cfg.seed) if cfg.emd_points else s
        er = metrics.subsample_clouds(r, cfg.emd_points, cfg.seed + 1) if cfg.emd_points else r
        emd_mode.update(points=es.shape[1], ground_cost="squared euclidean" if cfg.emd_squared else "euclidean",
                        solver="POT network simplex (exact)" if cfg.emd == "exact" else
                        f"auction, eps-scaling (approx; {asdict(metrics.AuctionConfig())})",
                        device="cpu" if cfg.emd == "exact" else device)
        kw = dict(mode=cfg.emd, squared=cfg.emd_squared, device=device)
        n_pairs = n * n + n * (n - 1)
        with progress_bar(total=n_pairs, desc=f"emd ({cfg.emd})", unit="pair", disable=not progress) as bar:
            e_sr = metrics.pairwise_emd(es, er, progress=bar.update, **kw)
            e_ss = metrics.pairwise_emd(es, progress=bar.update, **kw)
            e_rr = metrics.pairwise_emd(er, progress=bar.update, **kw)
        em = metrics.set_metrics(e_ss, e_sr, e_rr)
        result.update(mmd_emd=em["mmd"], cov_emd=em["cov"], nna_emd=em["nna"])

    from hyperdiffusion.evaluation import fpd as fpd_lib

    fpd_path = fpd_lib.DEFAULT_NET if cfg.fpd_net == "default" else cfg.fpd_net
    if fpd_path in (None, "", "none"):
        result["fpd"] = None
        fpd_mode = {"reason": "FPD turned off (--fpd-net none)"}
    elif cfg.fpd_net == "default" and not fpd_lib.DEFAULT_NET.is_file():
        result["fpd"] = None
        fpd_mode = {"reason": f"the shipped network {fpd_lib.DEFAULT_NET_NAME} is missing from this installation"}
    elif n < fpd_lib.MIN_CLOUDS:
        result["fpd"] = None
        fpd_mode = {"reason": f"FPD needs at least {fpd_lib.MIN_CLOUDS} clouds per set (a covariance); "
                              f"{n} reference shape(s) here"}
    else:
        net = fpd_lib.load_feature_net(fpd_path)
        f = fpd_lib.fpd(s_raw, r_raw, net, seed=cfg.seed, device=device)
        result["fpd"] = f["value"]
        fpd_mode = {k: f[k] for k in ("network_id", "input_norm", "source")}
        fpd_mode.update(network="default" if cfg.fpd_net == "default" else "given", classes=net.classes,
                        note="FPD values are comparable only under the same network_id")

    if cfg.train:
        t_raw, t_names, _ = load_clouds(cfg.train, cfg.train_split, cfg.n_points, cfg.seed)
        result["novelty"] = novelty(s_all, r, metrics.normalize_clouds(t_raw, cfg.norm), t_names, device)
        for row, name in zip(result["novelty"]["nearest"], all_names):
            row["sample"] = name
    else:
        result["novelty"] = None

    result["modes"] = {
        "normalisation": cfg.norm,
        "chamfer": "squared, mean both ways (no sqrt, no 0.5)",
        "chamfer_backend": metrics.chamfer_backend_name(**{k: v for k, v in _chamfer_settings(device).items()
                                                           if k != "max_block_bytes"}),
        "emd": emd_mode,
        "points": int(s.shape[1]),
        "n_reference": n,
        "n_samples_used": n,
        "n_samples_generated": counts["generated"],
        "samples_source": s_kind,
        "reference_source": r_kind,
        "seed": cfg.seed,
        "device": device,
        "fpd": fpd_mode,
        "novelty": {"train": cfg.train, "split": cfg.train_split} if cfg.train
        else {"reason": "no training shapes given (--train TRAIN)"},
        "units": "MMD in normalised squared-Chamfer / EMD units; COV and 1-NNA are fractions in [0, 1]",
    }
    # Every generated sample accounted for: scored ones, and those without a surface or cloud.
    result["sample_counts"] = {**counts, "scored": n, "in_novelty": len(all_names) if cfg.train else 0}
    result["samples"] = s_names
    result["reference"] = r_names
    return result


def _as_clouds(source, split: str, cfg: EvalConfig):
    if isinstance(source, (str, Path)):
        return load_clouds(source, split, cfg.n_points, cfg.seed)
    arr = np.asarray(source, np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"expected clouds [K, N, 3], got {arr.shape}")
    return arr, [str(i) for i in range(len(arr))], "array"


def format_table(m: dict) -> str:
    """Human-readable summary; COV and 1-NNA in percent as the papers print them."""
    def f(v, scale=1.0, fmt="{:.4g}"):
        return "n/a" if v is None else fmt.format(v * scale)

    modes = m["modes"]
    lines = [f"normalisation {modes['normalisation']}, {modes['n_reference']} reference / "
             f"{modes['n_samples_used']} samples, {modes['points']} points, EMD {modes['emd']['mode']}",
             f"{'':6} {'MMD':>10} {'COV %':>8} {'1-NNA %':>8}",
             f"{'CD':6} {f(m['mmd_cd']):>10} {f(m['cov_cd'], 100, '{:.1f}'):>8} {f(m['nna_cd'], 100, '{:.1f}'):>8}",
             f"{'EMD':6} {f(m['mmd_emd']):>10} {f(m['cov_emd'], 100, '{:.1f}'):>8} {f(m['nna_emd'], 100, '{:.1f}'):>8}",
             f"FPD {f(m['fpd'])}" + (f" (network {modes['fpd']['network_id']})" if m["fpd"] is not None
                                     else f" ({modes['fpd']['reason']})")]
    c = m.get("sample_counts")
    if c:
        no_surface = ", ".join(f"{c[k]} {k}" for k in ("empty", "full", "non-finite") if c.get(k) is not None)
        lines.append(f"samples: {c['generated']} generated, {c['with_cloud']} with a surface"
                     + (f" ({no_surface})" if no_surface else "") + f", {c['scored']} scored")
    if m["novelty"]:
        nv = m["novelty"]
        lines.append(f"novelty: nearest-train CD median {nv['median']:.4g}, copy rate {nv['copy_rate'] * 100:.1f} %")
    return "\n".join(lines)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = EvalConfig(norm=args.norm, emd=args.emd, emd_points=args.emd_points, emd_squared=args.emd_squared,
                     n_points=args.points, split=args.split, train_split=args.train_split, seed=args.seed,
                     device=args.device, fpd_net=args.fpd_net, train=args.train)
    ensure_writable_dir(Path(args.out).parent)  # fail before the metrics are computed, not after
    result = evaluate(args.samples, args.reference, cfg)
    result["modes"]["config"] = asdict(cfg)
    write_json(args.out, result)
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="MMD / COV / 1-NNA (CD, EMD), FPD and novelty of samples against a reference",
        description="Score SAMPLES against REFERENCE. Each is a prepared dataset (reads --split), a mesh run "
                    "folder (clouds/*.npy) or a folder of .npy clouds or meshes.")
    p.add_argument("samples", metavar="SAMPLES")
    p.add_argument("reference", metavar="REFERENCE")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--norm", choices=metrics.NORM_MODES, default="hd",
                   help="per-cloud normalisation: hd (official protocol, default), none (PointFlow), bbox (DPC)")
    p.add_argument("--emd", choices=metrics.EMD_MODES, default="exact",
                   help="exact (POT network simplex, default), approx (auction, GPU-friendly) or off")
    p.add_argument("--emd-points", type=int, help="subsample clouds to this many points for EMD only")
    p.add_argument("--emd-squared", action="store_true", help="squared Euclidean ground cost for EMD")
    p.add_argument("--points", type=int, default=2048, help="points per cloud (default 2048)")
    p.add_argument("--split", default="test", help="split of a prepared dataset (default test)")
    p.add_argument("--train", help="training shapes for novelty (same kinds of source as REFERENCE)")
    p.add_argument("--train-split", default="train", help="split of --train when it is a prepared dataset")
    p.add_argument("--fpd-net", default="default", help="feature network for FPD: default (the shipped "
                   "network, docs/EVALUATION.md), fpd_net.safetensors from fpd-train, the public "
                   "pointnet2_ssg_wo_normals best_model.pth, or none (no FPD)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.set_defaults(func=_cmd_evaluate)

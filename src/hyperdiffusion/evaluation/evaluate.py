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
from hyperdiffusion.io import (InputError, ensure_writable_dir, load_npy, load_npz, read_json, safe_name, save_npy,
                               save_npz, write_json)
from hyperdiffusion.shards import add_shard_argument

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")
DEFAULT_CACHE = "~/.cache/hyperdiffusion/evaluate"  # the CLI's reference-matrix cache (EvalConfig.cache)


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
    workers: int | None = None  # processes for exact EMD pairs (None: every core); values do not depend on it
    # Folder of cached reference x reference matrices (`ReferenceCache`); None: no cache (the CLI's
    # default is ~/.cache/hyperdiffusion/evaluate)
    cache: str | None = None
    emd_check_pairs: int = 8  # --emd approx: sample x reference pairs also solved exactly, error in metrics.json


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
    from hyperdiffusion.diffusion.runtime import resolve_device  # LOCAL_RANK's GPU under torchrun (shards)

    return str(resolve_device(name))


def _chamfer_settings(device: str) -> dict:
    # kd-trees on CPU (10x faster than torch.cdist here, REFERENCE.md); on a GPU the fused Triton
    # kernel where Triton is installed, else batched float32 torch blocks.
    if device == "cpu":
        return {"backend": "kdtree"}
    import torch

    from hyperdiffusion.evaluation import chamfer_triton

    if chamfer_triton.available(device):
        return {"backend": "triton", "device": device}
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


class ReferenceCache:
    """Reference x reference distance matrices on disk, so a second evaluation against the same test
    split skips them (a quarter of the Chamfer work and of the EMD pairs at equal set sizes).

    A matrix is keyed by the SHA-256 of the exact clouds it was computed from (after normalisation
    and any EMD subsampling: the content, not a path) together with the distance's full description
    (kind, backend or solver, ground cost, normalisation, point count). A changed cloud, protocol or
    solver is a different key; a hit is bitwise the matrix that would be computed.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder).expanduser() if folder else None
        self.hits: list[str] = []
        self.stored: list[str] = []

    @staticmethod
    def key(clouds: np.ndarray, kind: dict) -> str:
        import hashlib
        import json

        h = hashlib.sha256(json.dumps(kind, sort_keys=True).encode())
        arr = np.ascontiguousarray(clouds, np.float64)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
        return f"rr-{kind['distance']}-{h.hexdigest()[:32]}"

    def get(self, clouds: np.ndarray, kind: dict) -> np.ndarray | None:
        if self.folder is None:
            return None
        path = self.folder / f"{self.key(clouds, kind)}.npy"
        if not path.is_file():
            return None
        m = load_npy(path)
        if m.shape != (len(clouds), len(clouds)):
            raise InputError(f"{path}: cached matrix of shape {m.shape} for {len(clouds)} clouds; delete it")
        self.hits.append(path.name)
        return m

    def put(self, clouds: np.ndarray, kind: dict, matrix: np.ndarray) -> None:
        if self.folder is None:
            return
        name = self.key(clouds, kind)
        save_npy(self.folder / f"{name}.npy", np.asarray(matrix, np.float64))
        write_json(self.folder / f"{name}.json", {"kind": kind, "n_clouds": len(clouds)})
        self.stored.append(f"{name}.npy")

    def describe(self) -> dict:
        if self.folder is None:
            return {"reason": "no cache (--no-cache)"}
        return {"folder": str(self.folder), "reused": self.hits, "stored": self.stored}


def _distance_kinds(cfg: EvalConfig, device: str, points: int, emd_points: int) -> dict[str, dict]:
    """The full description of each distance, as the reference cache keys it: what is computed, how,
    and the versions of the libraries that compute it (a new solver version is a new key)."""
    import ot
    import scipy
    import torch

    cd_backend = metrics.chamfer_backend_name(**{k: v for k, v in _chamfer_settings(device).items()
                                                 if k != "max_block_bytes"})
    kinds = {"cd": {"distance": "chamfer", "backend": cd_backend, "norm": cfg.norm, "points": points,
                    "library": f"scipy {scipy.__version__}" if device == "cpu" else f"torch {torch.__version__}"}}
    if cfg.emd != "off":
        kinds["emd"] = {"distance": "emd", "mode": cfg.emd, "squared": cfg.emd_squared, "norm": cfg.norm,
                        "points": emd_points, "subsample_seed": cfg.seed + 1 if cfg.emd_points else None}
        if cfg.emd == "approx":
            kinds["emd"].update(auction=asdict(metrics.AuctionConfig()), device=torch.device(device).type,
                                library=f"torch {torch.__version__}")
        else:
            kinds["emd"]["library"] = f"POT {ot.__version__}"
    return kinds


def _emd_clouds(s: np.ndarray, r: np.ndarray, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    es = metrics.subsample_clouds(s, cfg.emd_points, cfg.seed) if cfg.emd_points else s
    er = metrics.subsample_clouds(r, cfg.emd_points, cfg.seed + 1) if cfg.emd_points else r
    return es, er


def distance_matrices(s: np.ndarray, r: np.ndarray, cfg: EvalConfig, device: str, cache: ReferenceCache,
                      rows: list[int] | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """The matrices the metrics need: cd_sr, cd_ss, cd_rr and emd_sr, emd_ss, emd_rr (unless --emd off).

    `rows` (a shard's rows, hyperdiffusion.shards): blocks [len(rows), n] of these rows; the EMD
    ss/rr blocks hold the pairs j > i only (`assemble_blocks` completes them) and cached rr
    matrices are left out (the merge reads them). Reference x reference matrices come from
    `cache` when present; a full (unsharded) computation stores them there.
    """
    from hyperdiffusion.progress import progress as progress_bar

    n = len(r)
    sel = np.arange(n) if rows is None else np.asarray(rows, int)
    es, er = _emd_clouds(s, r, cfg)
    kinds = _distance_kinds(cfg, device, s.shape[1], es.shape[1])
    out: dict[str, np.ndarray] = {}
    cached = {d: cache.get(clouds, kinds[d]) for d, clouds in (("cd", r), ("emd", er)) if d in kinds}
    settings = _chamfer_settings(device)

    def cd(a, b, tick):  # full rows of a (or a against itself) against b
        if rows is None:
            return metrics.pairwise_chamfer(a, b, progress=tick, **settings)
        return metrics.pairwise_chamfer(a[sel], a if b is None else b, progress=tick, **settings)

    with progress_bar(total=(3 - (cached["cd"] is not None)) * n * len(sel), desc="chamfer", unit="pair",
                      disable=not progress) as bar:
        out["cd_sr"] = cd(s, r, bar.update)
        out["cd_ss"] = cd(s, None, bar.update)
        if cached["cd"] is None:
            out["cd_rr"] = cd(r, None, bar.update)
    if cfg.emd != "off":
        kw = dict(mode=cfg.emd, squared=cfg.emd_squared, device=device, workers=cfg.workers,
                  rows=None if rows is None else sel)
        tri = sum(n - 1 - i for i in sel)  # pairs j > i of the selected rows
        with progress_bar(total=len(sel) * n + tri * (1 + (cached["emd"] is None)), desc=f"emd ({cfg.emd})",
                          unit="pair", disable=not progress) as bar:
            out["emd_sr"] = metrics.pairwise_emd(es, er, progress=bar.update, **kw)
            out["emd_ss"] = metrics.pairwise_emd(es, progress=bar.update, **kw)
            if cached["emd"] is None:
                out["emd_rr"] = metrics.pairwise_emd(er, progress=bar.update, **kw)
    if rows is None:
        for d, clouds in (("cd", r), ("emd", er)):
            if d in kinds:
                if cached[d] is not None:
                    out[f"{d}_rr"] = cached[d]
                else:
                    cache.put(clouds, kinds[d], out[f"{d}_rr"])
    return out


def assemble_blocks(blocks: list[tuple[np.ndarray, dict[str, np.ndarray]]], n: int) -> dict[str, np.ndarray]:
    """Full matrices from the shards' (rows, blocks): rows placed, EMD ss/rr completed as U + U.T."""
    full: dict[str, np.ndarray] = {}
    for rows, mats in blocks:
        for key, block in mats.items():
            full.setdefault(key, np.zeros((n, n)))[rows] = block
    for key in ("emd_ss", "emd_rr"):
        if key in full:
            full[key] = full[key] + full[key].T  # each shard computed j > i of its rows; diagonal 0
    return full


def evaluate(samples, reference, config: EvalConfig = EvalConfig(), progress: bool = True, *,
             matrices: dict[str, np.ndarray] | None = None) -> dict:
    """Metrics of `samples` against `reference`: paths (see `load_clouds`) or arrays [K, N, 3].

    `matrices`: the distance matrices already computed (a merge of shards); any rr matrix
    missing from them comes from the reference cache.
    """
    cfg = config
    if cfg.norm not in metrics.NORM_MODES:
        raise InputError(f"--norm must be one of {', '.join(metrics.NORM_MODES)}, got {cfg.norm!r}")
    if cfg.emd not in metrics.EMD_MODES:
        raise InputError(f"--emd must be one of {', '.join(metrics.EMD_MODES)}, got {cfg.emd!r}")
    from hyperdiffusion.evaluation import evaluate4d

    if evaluate4d.is_4d_source(samples) or evaluate4d.is_4d_source(reference):  # sequences (docs/4D.md)
        if matrices is not None:
            raise InputError("evaluate --shard: 4D sequences are evaluated unsharded")
        return evaluate4d.evaluate_4d(samples, reference, cfg, progress)
    device = _device(cfg.device)
    s, r, sets = _protocol_sets(samples, reference, cfg)
    s_raw, r_raw, s_names, counts, all_names, s_all, s_kind, r_kind = (
        sets[k] for k in ("s_raw", "r_raw", "s_names", "counts", "all_names", "s_all", "s_kind", "r_kind"))
    n = len(r)
    cache = ReferenceCache(cfg.cache)
    if matrices is None:
        matrices = distance_matrices(s, r, cfg, device, cache, progress=progress)
    else:
        es, er = _emd_clouds(s, r, cfg)
        kinds = _distance_kinds(cfg, device, s.shape[1], es.shape[1])
        for d, clouds in (("cd", r), ("emd", er)):
            if d in kinds and f"{d}_rr" not in matrices:
                m = cache.get(clouds, kinds[d])
                if m is None:
                    raise InputError(f"no shard computed {d}_rr and the reference cache {cfg.cache} has no such "
                                     "matrix; rerun the shards")
                matrices = {**matrices, f"{d}_rr": m}
            elif d in kinds:
                cache.put(clouds, kinds[d], matrices[f"{d}_rr"])
    result: dict = {}
    cd = metrics.set_metrics(matrices["cd_ss"], matrices["cd_sr"], matrices["cd_rr"])
    result.update(mmd_cd=cd["mmd"], cov_cd=cd["cov"], nna_cd=cd["nna"])

    emd_mode = {"mode": cfg.emd}
    if cfg.emd == "off":
        result.update(mmd_emd=None, cov_emd=None, nna_emd=None)
        emd_mode["reason"] = "disabled with --emd off"
    else:
        es, er = _emd_clouds(s, r, cfg)
        emd_mode.update(points=es.shape[1], ground_cost="squared euclidean" if cfg.emd_squared else "euclidean",
                        solver="POT network simplex (exact)" if cfg.emd == "exact" else
                        f"auction, eps-scaling (approx; {asdict(metrics.AuctionConfig())})",
                        device="cpu" if cfg.emd == "exact" else device)
        if cfg.emd == "exact":
            emd_mode["workers"] = metrics.cpu_count() if cfg.workers is None else cfg.workers
        else:
            emd_mode["check"] = auction_check(es, er, matrices["emd_sr"], cfg)
        em = metrics.set_metrics(matrices["emd_ss"], matrices["emd_sr"], matrices["emd_rr"])
        result.update(mmd_emd=em["mmd"], cov_emd=em["cov"], nna_emd=em["nna"])
    result.update(_other_metrics(s_raw, r_raw, r, s_all, all_names, cfg, device, n))
    fpd_mode = result.pop("_fpd_mode")
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
        "reference_cache": cache.describe(),
        "units": "MMD in normalised squared-Chamfer / EMD units; COV and 1-NNA are fractions in [0, 1]",
    }
    # Every generated sample accounted for: scored ones, and those without a surface or cloud.
    result["sample_counts"] = {**counts, "scored": n, "in_novelty": len(all_names) if cfg.train else 0}
    result["samples"] = s_names
    result["reference"] = sets["r_names"]
    return result


def auction_check(es: np.ndarray, er: np.ndarray, e_sr: np.ndarray, cfg: EvalConfig) -> dict:
    """The auction EMD of a seeded subset of sample x reference pairs against the exact solver.

    The auction's proven bound (AuctionConfig): its matching costs at most eps_final x the pair's
    largest ground cost more than the optimum, so 0 <= auction - exact <= bound on every pair.
    """
    n = len(er)
    k = min(cfg.emd_check_pairs, n * n)
    if k <= 0:
        return {"pairs": 0, "reason": "turned off (emd_check_pairs 0)"}
    flat = np.random.default_rng(cfg.seed).choice(n * n, k, replace=False)
    pairs = [(int(f // n), int(f % n)) for f in np.sort(flat)]
    exact = np.array([metrics.emd_exact(es[i], er[j], cfg.emd_squared) for i, j in pairs])
    approx = np.array([e_sr[i, j] for i, j in pairs])
    cmax = np.array([metrics._ground_cost(es[i], er[j], cfg.emd_squared).max() for i, j in pairs])
    bound = metrics.AuctionConfig().eps_final * cmax
    err = approx - exact
    return {"pairs": k, "solver": "POT network simplex", "max_abs_error": float(np.abs(err).max()),
            "mean_abs_error": float(np.abs(err).mean()),
            "max_rel_error": float((np.abs(err) / np.maximum(exact, 1e-300)).max()),
            # within the bound up to rounding (1e-6 x max cost: float32 sums of 2048 costs on a GPU)
            "max_bound": float(bound.max()), "within_bound": bool(np.all(err <= bound + 1e-6 * cmax)
                                                                  and np.all(err >= -1e-6 * cmax)),
            "bound": "auction - exact in [0, eps_final x largest ground cost of the pair] (eps-complementary "
                     "slackness, Bertsekas 1988); float32 on a GPU adds rounding"}


def _protocol_sets(samples, reference, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """(samples, references) normalised under the protocol (equal set sizes), and what else the result needs."""
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
    return s, r, {"s_raw": s_raw, "r_raw": r_raw, "s_names": s_names, "r_names": r_names, "s_kind": s_kind,
                  "r_kind": r_kind, "counts": counts, "all_names": all_names, "s_all": s_all}


def _other_metrics(s_raw, r_raw, r, s_all, all_names, cfg: EvalConfig, device: str, n: int) -> dict:
    """FPD and novelty (not sharded: one feature pass, and Chamfer to the training set)."""
    result: dict = {}
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
    result["_fpd_mode"] = fpd_mode
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


# ---------------------------------------------------------------------------
# Shards (hyperdiffusion.shards): rows of the distance matrices
# ---------------------------------------------------------------------------

def _shard_group(out: str | Path) -> str:
    return f"evaluate-{safe_name(Path(out).stem)}"


def evaluate_shard(samples: str | Path, reference: str | Path, cfg: EvalConfig, out: str | Path, shard,
                   progress: bool = True) -> bool:
    """Shard K/N of `evaluate ... --out OUT`: rows K, K + N, ... of every distance matrix, written to
    OUT's folder/shards/evaluate-<name>/K-of-N/matrices.npz; the last shard merges (writes OUT).
    Returns True if this call merged."""
    from hyperdiffusion import shards as sharding
    from hyperdiffusion.evaluation import evaluate4d

    if evaluate4d.is_4d_source(samples) or evaluate4d.is_4d_source(reference):
        raise InputError("evaluate --shard: 4D sequences are evaluated unsharded")
    s, r, _ = _protocol_sets(samples, reference, cfg)
    rows = shard.take(range(len(r)))
    mats = distance_matrices(s, r, cfg, _device(cfg.device), ReferenceCache(cfg.cache), rows=rows, progress=progress)
    folder, group = Path(out).parent, _shard_group(out)
    save_npz(sharding.shard_dir(folder, group, shard) / "matrices.npz", rows=np.asarray(rows, int), **mats)
    args = {"samples": str(samples), "reference": str(reference), "out": str(out), "config": asdict(cfg)}
    return sharding.finish(folder, group, shard, "evaluate", args)


def merge_shards(folder: Path, args: dict, count: int) -> dict:
    """hyperdiffusion.shards merger: the full matrices from the shards' row blocks, then the metrics
    exactly as an unsharded run computes them from its matrices; writes the metrics.json."""
    from hyperdiffusion import shards as sharding

    cfg = EvalConfig(**args["config"])
    blocks = []
    for k in range(count):
        z = load_npz(sharding.shard_dir(folder, _shard_group(args["out"]), sharding.Shard(k, count)) / "matrices.npz")
        blocks.append((z.pop("rows"), z))
    # An rr matrix some shard found in the cache and another computed: take it from the cache for all.
    keys = set.intersection(*(set(z) for _, z in blocks))
    blocks = [(rows, {k: v for k, v in z.items() if k in keys}) for rows, z in blocks]
    full = assemble_blocks(blocks, sum(len(rows) for rows, _ in blocks))
    result = evaluate(args["samples"], args["reference"], cfg, progress=False, matrices=full)
    _write_metrics(args["out"], result, cfg)
    return result


def _write_metrics(out: str | Path, result: dict, cfg: EvalConfig) -> None:
    result["modes"]["config"] = asdict(cfg)
    write_json(out, result)
    print(format_table(result))
    print(f"wrote {out}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hyperdiffusion.shards import resolve_shard

    cfg = EvalConfig(norm=args.norm, emd=args.emd, emd_points=args.emd_points, emd_squared=args.emd_squared,
                     n_points=args.points, split=args.split, train_split=args.train_split, seed=args.seed,
                     device=args.device, fpd_net=args.fpd_net, train=args.train, workers=args.workers,
                     cache=None if args.no_cache else args.cache, emd_check_pairs=args.emd_check_pairs)
    ensure_writable_dir(Path(args.out).parent)  # fail before the metrics are computed, not after
    shard = resolve_shard(args.shard)
    if shard is not None:
        evaluate_shard(args.samples, args.reference, cfg, args.out, shard)
        return 0
    _write_metrics(args.out, evaluate(args.samples, args.reference, cfg), cfg)
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
    p.add_argument("--workers", type=int, default=None,
                   help="processes for exact EMD (default: every core); the values do not depend on it")
    p.add_argument("--cache", default=DEFAULT_CACHE,
                   help="folder of cached reference x reference matrices, keyed by the clouds' content and the "
                        "protocol (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the reference cache")
    p.add_argument("--emd-check-pairs", type=int, default=EvalConfig.emd_check_pairs,
                   help="--emd approx: pairs also solved exactly, the error recorded in metrics.json "
                        "(default %(default)s)")
    add_shard_argument(p, "rows of the distance matrices (--out's folder holds shards/)")
    p.set_defaults(func=_cmd_evaluate)

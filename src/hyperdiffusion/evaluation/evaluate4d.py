"""Scoring generated 4D sequences (the 4D branch of `hyperdiffusion evaluate`; docs/4D.md).

A sequence is F frame clouds [F, N, 3] (F = 16, N = 2048: prepare's `cloud.npy`, mesh's
`clouds/<name>.npy`). The distance between two sequences is the mean over the frames of
the frame-aligned distance (`metrics.pairwise_frames`), for squared Chamfer and for a
real EMD; MMD, COV and 1-NNA are computed from those matrices exactly as in 3D, and
novelty is the distance from each sample to its nearest training sequence.

Where we differ from the official 4D evaluation (REFERENCE.md "4D"): its EMD returns
zeros, ours is computed (the mode is recorded); it turns an empty frame into a zero
cloud, we leave a sample with an empty frame out and count it in `sample_counts`; it
does no normalisation, we apply the chosen `--norm` to every frame cloud on its own
(use `--norm none` for the official protocol; prepared 4D data are already centred per
frame and scaled per sequence).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from hyperdiffusion.evaluation import metrics
from hyperdiffusion.io import InputError, load_npy, read_json


def is_4d_source(source) -> bool:
    """A 4D dataset (manifest "kind": "4d"), a 4D mesh run (mesh.json "kind": "4d"), a folder of
    [F, N, 3] .npy clouds, or an array [K, F, N, 3]."""
    if not isinstance(source, (str, Path)):
        return np.ndim(source) == 4
    path = Path(source)
    for meta in ("manifest.json", "mesh.json"):
        if (path / meta).is_file():
            m = read_json(path / meta)
            if isinstance(m, dict) and m.get("kind") == "4d":
                return True
            if meta == "manifest.json":
                return False
    folder = path / "clouds" if (path / "clouds").is_dir() else path
    first = next(iter(sorted(folder.glob("*.npy"))), None) if folder.is_dir() else None
    return first is not None and np.load(first, mmap_mode="r", allow_pickle=False).ndim == 3


def load_sequence_clouds(path, split: str = "test", n_points: int = 2048,
                         seed: int = 0) -> tuple[np.ndarray, list[str], str]:
    """Sequence clouds [K, F, n_points, 3] (float64), names, kind of source."""
    if not isinstance(path, (str, Path)):
        arr = np.asarray(path, np.float64)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise InputError(f"expected sequences [K, F, N, 3], got {arr.shape}")
        return arr, [str(i) for i in range(len(arr))], "array"
    path = Path(path)
    rng = np.random.default_rng(seed)
    if (path / "manifest.json").is_file():
        splits = read_json(path / "manifest.json").get("splits", {})
        if split not in splits:
            raise InputError(f"{path}/manifest.json: no split {split!r} (has {', '.join(splits) or 'none'})")
        names = [n for n in splits[split] if (path / "shapes" / n / "cloud.npy").is_file()]
        files, kind = [path / "shapes" / n / "cloud.npy" for n in names], f"dataset:{split}"
    else:
        folder = path / "clouds" if (path / "clouds").is_dir() else path
        files, kind = sorted(folder.glob("*.npy")), "run" if folder != path else "npy"
        names = [f.stem for f in files]
    if not files:
        raise InputError(f"{path}: no sequence clouds found (manifest.json or clouds/*.npy of [F, N, 3])")
    out = []
    for f in files:
        c = load_npy(f)
        if c.ndim != 3 or c.shape[2] != 3:
            raise InputError(f"{f}: expected sequence clouds [F, N, 3], got {list(c.shape)}")
        if c.shape[1] < n_points:
            raise InputError(f"{f}: {c.shape[1]} points per frame, fewer than the {n_points} the metrics use")
        if not np.isfinite(c).all():
            raise InputError(f"{f}: contains NaN or infinite coordinates")
        if c.shape[1] > n_points:
            c = c[:, np.sort(rng.choice(c.shape[1], n_points, replace=False))]
        out.append(np.asarray(c, np.float64))
    if len({c.shape[0] for c in out}) > 1:
        raise InputError(f"{path}: sequences with different frame counts {sorted({c.shape[0] for c in out})}")
    return np.stack(out), names, kind


def normalize_sequences(seqs: np.ndarray, mode: str) -> np.ndarray:
    """`metrics.normalize_clouds` applied to every frame cloud on its own."""
    k, f, n, _ = seqs.shape
    return metrics.normalize_clouds(seqs.reshape(k * f, n, 3), mode).reshape(k, f, n, 3)


def _counts(samples, n_clouds: int) -> dict:
    folder = Path(samples) if isinstance(samples, (str, Path)) else None
    if folder is None or not (folder / "mesh.json").is_file():
        return {"generated": n_clouds, "with_cloud": n_clouds, "source": "clouds only"}
    status = read_json(folder / "mesh.json").get("status", {})
    generated = len(status)
    if (folder / "weights.json").is_file():
        generated = len(read_json(folder / "weights.json").get("names", status))
    return {"generated": generated, "with_cloud": n_clouds,
            "empty_or_full_frames": sum(v not in ("ok", "non-finite") for v in status.values()),
            "non-finite": sum(v == "non-finite" for v in status.values()), "source": "mesh.json"}


def evaluate_4d(samples, reference, cfg, progress: bool = True) -> dict:
    """MMD / COV / 1-NNA (Chamfer, EMD) and novelty for sequences; same keys as the 3D result."""
    from hyperdiffusion.evaluation.evaluate import _chamfer_settings, _device
    from hyperdiffusion.progress import progress as progress_bar

    device = _device(cfg.device)
    s_raw, s_names, s_kind = load_sequence_clouds(samples, cfg.split, cfg.n_points, cfg.seed)
    r_raw, r_names, r_kind = load_sequence_clouds(reference, cfg.split, cfg.n_points, cfg.seed)
    if s_raw.shape[1] != r_raw.shape[1]:
        raise InputError(f"samples have {s_raw.shape[1]} frames, the reference {r_raw.shape[1]}")
    counts = _counts(samples, len(s_raw))
    all_names = list(s_names)
    if len(s_raw) < len(r_raw):
        raise InputError(f"{len(s_raw)} samples for {len(r_raw)} reference sequences: the protocol needs at "
                         "least as many samples as references")
    s_all = normalize_sequences(s_raw, cfg.norm)
    if len(s_raw) > len(r_raw):  # equal set sizes, a seeded subset (as 3D)
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(s_raw), len(r_raw), replace=False))
        s_raw, s_names = s_raw[keep], [s_names[i] for i in keep]
    s, r = normalize_sequences(s_raw, cfg.norm), normalize_sequences(r_raw, cfg.norm)
    n, n_frames = len(r), r.shape[1]
    cd_kw = _chamfer_settings(device)
    result: dict = {}
    with progress_bar(total=3 * n * n * n_frames, desc="chamfer 4d", unit="pair", disable=not progress) as bar:
        step = bar.update
        d_sr = metrics.pairwise_frames(s, r, metrics.pairwise_chamfer, progress=step, **cd_kw)
        d_ss = metrics.pairwise_frames(s, None, metrics.pairwise_chamfer, progress=step, **cd_kw)
        d_rr = metrics.pairwise_frames(r, None, metrics.pairwise_chamfer, progress=step, **cd_kw)
    cd = metrics.set_metrics(d_ss, d_sr, d_rr)
    result.update(mmd_cd=cd["mmd"], cov_cd=cd["cov"], nna_cd=cd["nna"])

    emd_mode: dict = {"mode": cfg.emd}
    if cfg.emd == "off":
        result.update(mmd_emd=None, cov_emd=None, nna_emd=None)
        emd_mode["reason"] = "disabled with --emd off"
    else:
        sub = (lambda x, sd: x) if not cfg.emd_points else \
            (lambda x, sd: np.stack([metrics.subsample_clouds(x[:, f], cfg.emd_points, sd + 7 * f)
                                     for f in range(x.shape[1])], axis=1))
        es, er = sub(s, cfg.seed), sub(r, cfg.seed + 1)
        emd_mode.update(points=int(es.shape[2]), ground_cost="squared euclidean" if cfg.emd_squared else "euclidean",
                        solver="POT network simplex (exact)" if cfg.emd == "exact" else
                        f"auction, eps-scaling (approx; {asdict(metrics.AuctionConfig())})")
        kw = dict(mode=cfg.emd, squared=cfg.emd_squared, device=device, workers=cfg.workers)
        with progress_bar(total=(n * n + n * (n - 1)) * n_frames, desc=f"emd 4d ({cfg.emd})", unit="pair",
                          disable=not progress) as bar:
            e_sr = metrics.pairwise_frames(es, er, metrics.pairwise_emd, progress=bar.update, **kw)
            e_ss = metrics.pairwise_frames(es, None, metrics.pairwise_emd, progress=bar.update, **kw)
            e_rr = metrics.pairwise_frames(er, None, metrics.pairwise_emd, progress=bar.update, **kw)
        em = metrics.set_metrics(e_ss, e_sr, e_rr)
        result.update(mmd_emd=em["mmd"], cov_emd=em["cov"], nna_emd=em["nna"])
    result["fpd"] = None

    if cfg.train:
        t_raw, t_names, _ = load_sequence_clouds(cfg.train, cfg.train_split, cfg.n_points, cfg.seed)
        t = normalize_sequences(t_raw, cfg.norm)
        d_st = metrics.pairwise_frames(s_all, t, metrics.pairwise_chamfer, **cd_kw)
        nearest = d_st.min(axis=1)
        threshold = float(np.median(metrics.pairwise_frames(r, t, metrics.pairwise_chamfer, **cd_kw).min(axis=1)))
        result["novelty"] = {
            "distance": "chamfer (squared, normalised frame clouds), mean over frames",
            "mean": float(nearest.mean()), "median": float(np.median(nearest)),
            **{f"p{q}": float(np.percentile(nearest, q)) for q in (5, 25, 75, 95)},
            "reference_to_train_median": threshold, "copy_rate": float((nearest < threshold).mean()),
            "nearest": [{"sample": name, "distance": float(d), "train_name": t_names[i]}
                        for name, d, i in zip(all_names, nearest, d_st.argmin(axis=1))]}
    else:
        result["novelty"] = None

    result["sample_counts"] = {**counts, "scored": n}
    result["modes"] = {
        "kind": "4d",
        "sequence_distance": f"mean over the {n_frames} frames of the frame-aligned distance",
        "normalisation": f"{cfg.norm} (each frame cloud on its own)",
        "chamfer": "squared, mean both ways (no sqrt, no 0.5)",
        "emd": emd_mode,
        "frames": n_frames,
        "points": int(s.shape[2]),
        "n_reference": n,
        "n_samples_used": n,
        "n_samples_generated": counts["generated"],
        "samples_source": s_kind,
        "reference_source": r_kind,
        "seed": cfg.seed,
        "device": device,
        "chamfer_backend": cd_kw.get("backend"),
        "fpd": {"reason": "FPD is not defined for 4D sequences (the official 4D evaluation has none)"},
        "novelty": {"train": cfg.train, "split": cfg.train_split} if cfg.train
        else {"reason": "no training sequences given (--train TRAIN)"},
        "units": "MMD in normalised squared-Chamfer / EMD units averaged over frames; COV and 1-NNA are fractions",
    }
    result["samples"] = s_names
    result["reference"] = r_names
    return result

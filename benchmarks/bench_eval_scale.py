"""Evaluation at paper size on the CPU: measure small runs, project 600 samples x 600 references.

    python benchmarks/bench_eval_scale.py [--n-emd 4] [--n-cd 16] [--points 2048] [--out /tmp/eval-scale]

Clouds: 2048 area-uniform surface points of the real Sweet Home 3D chairs in ../shared/data
(samples = the first n chairs, references = the next n; random blobs when the folder is absent),
normalised with the official "hd" protocol. Times are CPU seconds (this process, its threads and
its finished worker processes), so a busy shared machine inflates them less than wall time;
wall time and the load average are recorded beside them.

1. exact EMD (POT network simplex): CPU seconds per pair; then the same pairs over every core
   (`workers`), checked equal value for value, with the wall-time speed-up;
2. Chamfer (scipy kd-trees): CPU seconds per one-way pass of a cloud pair;
3. `evaluate()` twice against the same references with a reference cache (cold, then warm):
   Chamfer only at n-cd, and with exact EMD at n-emd.

Projection to S = R = 600 (`projection_600x600`): pairs counted as `evaluate` computes them:
EMD S*R + S(S-1)/2 + R(R-1)/2 pairs (each symmetric pair once: 719,400 at 600), Chamfer
2*S*R + S*S + R*R one-way passes; both linear in the pair count at a fixed point count, so
CPU time(600) = measured CPU seconds per pair x pairs(600), and wall time on c free cores is
that / c (pairs are independent; measured speed-up in `emd_speedup_all_cores`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from hyperdiffusion.evaluation import metrics
from hyperdiffusion.evaluation.evaluate import EvalConfig, evaluate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meshes" / "sweethome3d-chair"


def clouds(n: int, points: int) -> tuple[np.ndarray, str]:
    import trimesh

    files = sorted(DATA.glob("*.ply"))[:n] if DATA.is_dir() else []
    if len(files) < n:
        rng = np.random.default_rng(0)
        return rng.normal(size=(n, points, 3)) * rng.uniform(0.5, 1.5, size=(n, 1, 3)), "random blobs"
    out = []
    for i, f in enumerate(files):
        mesh = trimesh.load(f, force="mesh")
        out.append(trimesh.sample.sample_surface(mesh, points, seed=i)[0])
    return np.stack(out), f"{DATA.name} chairs"


def emd_pairs(s: int, r: int) -> int:
    return s * r + s * (s - 1) // 2 + r * (r - 1) // 2


def chamfer_passes(s: int, r: int) -> int:
    return 2 * s * r + s * s + r * r


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn):
    w, c = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - w, cpu_seconds() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-emd", type=int, default=4, help="samples = references for the EMD runs")
    ap.add_argument("--n-cd", type=int, default=16, help="samples = references for the Chamfer runs")
    ap.add_argument("--points", type=int, default=2048)
    ap.add_argument("--out", default="/tmp/eval-scale")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    n = max(a.n_emd, a.n_cd)
    both, source = clouds(2 * n, a.points)
    both = metrics.normalize_clouds(both, "hd")
    s, r = both[:n], both[n:]
    cores = metrics.cpu_count()
    res: dict = {"points": a.points, "source": source, "cores": cores, "load_before": os.getloadavg()}

    k = a.n_emd
    one, wall1, cpu1 = timed(lambda: metrics.pairwise_emd(s[:k], r[:k], workers=1))
    res["emd"] = {"pairs": k * k, "cpu_s_per_pair": cpu1 / k**2, "wall_s_1_process": wall1}
    par, wall_c, _ = timed(lambda: metrics.pairwise_emd(s[:k], r[:k], workers=cores))
    assert np.array_equal(one, par), "workers changed an EMD value"
    res["emd"].update({f"wall_s_{cores}_processes": wall_c, "emd_speedup_all_cores": wall1 / wall_c,
                       "values_equal": True})

    _, wall, cpu = timed(lambda: (metrics.pairwise_chamfer(s[:a.n_cd], r[:a.n_cd]),
                                  metrics.pairwise_chamfer(s[:a.n_cd]), metrics.pairwise_chamfer(r[:a.n_cd])))
    res["chamfer"] = {"n": a.n_cd, "passes": chamfer_passes(a.n_cd, a.n_cd), "wall_s": wall, "cpu_s": cpu,
                      "cpu_s_per_pass": cpu / chamfer_passes(a.n_cd, a.n_cd)}

    for label, m, emd in (("chamfer_only", a.n_cd, "off"), ("with_exact_emd", a.n_emd, "exact")):
        cache = out / f"cache-{label}"
        for f in cache.glob("*") if cache.is_dir() else []:
            f.unlink()
        cfg = EvalConfig(n_points=a.points, fpd_net=None, cache=str(cache), device="cpu", emd=emd, workers=1)
        runs = {}
        for run in ("cold", "warm"):
            metrics_json, wall, cpu = timed(lambda: evaluate(s[:m], r[:m], cfg, progress=False))
            runs[run] = {"wall_s": wall, "cpu_s": cpu, "cache": metrics_json["modes"]["reference_cache"],
                         "values": {k2: metrics_json[k2] for k2 in ("mmd_cd", "cov_cd", "nna_cd", "mmd_emd")}}
        assert runs["cold"]["values"] == runs["warm"]["values"]
        runs["cpu_saving"] = 1 - runs["warm"]["cpu_s"] / runs["cold"]["cpu_s"]
        runs["n"] = m
        res[f"evaluate_{label}"] = runs

    S = R = 600
    e, c = res["emd"]["cpu_s_per_pair"], res["chamfer"]["cpu_s_per_pass"]
    rr_e, rr_c = R * (R - 1) // 2, R * R
    hours = {
        "emd_off": c * chamfer_passes(S, R),
        "emd_off_cached_rr": c * (chamfer_passes(S, R) - rr_c),
        "emd_on": c * chamfer_passes(S, R) + e * emd_pairs(S, R),
        "emd_on_cached_rr": c * (chamfer_passes(S, R) - rr_c) + e * (emd_pairs(S, R) - rr_e),
    }
    res["projection_600x600"] = {"emd_pairs": emd_pairs(S, R), "chamfer_passes": chamfer_passes(S, R),
                                 "cpu_hours": {k2: v / 3600 for k2, v in hours.items()},
                                 f"wall_hours_on_{cores}_free_cores": {k2: v / 3600 / cores for k2, v in hours.items()},
                                 "wall_hours_on_64_free_cores": {k2: v / 3600 / 64 for k2, v in hours.items()}}
    res["load_after"] = os.getloadavg()
    (out / "eval_scale.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

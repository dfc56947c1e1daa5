"""`prepare` time and label agreement: the fast path for closed meshes vs today's labels.

Runs `prepare_shape` (what `prepare` runs per shape, one worker) per mesh with the
defaults (the fast path on closed meshes, `occupancy._fast_clean_inside`) and, where the
fast path was taken, right after with `OccupancyConfig(fast=False)` (exact winding number
on every point, as before) on the same points, so both see the same load; meshes on the
robust path run the same code either way and are timed once. Per shape: the labeller,
wall and process-CPU seconds before/after, the agreement of the training labels
(samples.npz) with before, and for fast-path shapes the agreement with the robust path
(`method="robust"`) on the same points. One JSON line per shape goes to OUT/rows.jsonl
(resumable; `--part K/N` takes every N-th mesh from the K-th, for parallel runs), and
`--summarise` prints the totals over every rows.jsonl given.

    python benchmarks/bench_labels.py ../shared/data/meshes/sweethome3d-chair --out /tmp/bench_labels
    python benchmarks/bench_labels.py --summarise /tmp/bench_labels/rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def labels(fast: bool):
    """Make `occupancy.label` default to OccupancyConfig(fast=fast) (prepare calls it without a config)."""
    from hyperdiffusion.data import occupancy

    original = occupancy.label
    occupancy.label = lambda mesh, points, config=None: original(
        mesh, points, config or occupancy.OccupancyConfig(fast=fast))
    try:
        yield
    finally:
        occupancy.label = original


def measure(name: str, source: str, out: Path) -> dict:
    import trimesh

    from hyperdiffusion.data import occupancy
    from hyperdiffusion.data.prepare import PrepareConfig, prepare_shape
    from hyperdiffusion.io import load_npz, read_json

    config = PrepareConfig(workers=1)
    row: dict = {"name": name}
    for tag, fast in (("after", True), ("before", False)):
        with labels(fast):
            wall, cpu = time.perf_counter(), time.process_time()
            prepare_shape(name, source, out / tag, config)
            row[f"wall_{tag}"], row[f"cpu_{tag}"] = time.perf_counter() - wall, time.process_time() - cpu
        meta = read_json(out / "after" / "shapes" / name / "meta.json")
        row.update(labeller=meta["labeller"], faces=meta["n_faces"], agree=1.0)
        if meta["labeller"] != "fast":   # the same code before and after: timed once
            row["wall_before"], row["cpu_before"] = row["wall_after"], row["cpu_after"]
            return row
    s = {tag: load_npz(out / tag / "shapes" / name / "samples.npz") for tag in ("before", "after")}
    assert np.array_equal(s["before"]["points"], s["after"]["points"]), name
    row["agree"] = float(np.mean(s["before"]["occ"] == s["after"]["occ"]))
    mesh = trimesh.load(out / "after" / "shapes" / name / "mesh.ply", process=False)
    robust = occupancy.inside(mesh, s["after"]["points"], occupancy.OccupancyConfig(method="robust"))
    row["agree_robust"] = float(np.mean(robust == s["after"]["occ"].astype(bool)))
    return row


def summarise(rows: list[dict]) -> dict:
    fast = [r for r in rows if r["labeller"] == "fast"]
    total = {f"{k}_{t}": sum(r[f"{k}_{t}"] for r in rows) for k in ("wall", "cpu") for t in ("before", "after")}
    agree = np.array([r["agree"] for r in rows])
    out = {"shapes": len(rows), "fast_path_shapes": len(fast), **total,
           "speedup_cpu": total["cpu_before"] / total["cpu_after"],
           "speedup_wall": total["wall_before"] / total["wall_after"],
           "agree_min": float(agree.min()), "agree_mean": float(agree.mean()),
           "agree_below_99.9": int((agree < 0.999).sum())}
    if fast:
        a = np.array([r["agree"] for r in fast])
        ar = np.array([r["agree_robust"] for r in fast])
        out.update(fast_cpu_before=sum(r["cpu_before"] for r in fast), fast_cpu_after=sum(r["cpu_after"] for r in fast),
                   fast_agree_min=float(a.min()), fast_agree_mean=float(a.mean()),
                   fast_vs_robust_min=float(ar.min()), fast_vs_robust_mean=float(ar.mean()),
                   fast_vs_robust_below_99_9=int((ar < 0.999).sum()))
        out["speedup_cpu_fast_shapes"] = out["fast_cpu_before"] / out["fast_cpu_after"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", help="folder of meshes")
    ap.add_argument("--out", help="scratch folder for the prepared shapes and rows.jsonl")
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--part", default="0/1", help="K/N: every N-th mesh from the K-th")
    ap.add_argument("--summarise", nargs="+", metavar="ROWS_JSONL")
    args = ap.parse_args()
    if args.summarise:
        rows = {}
        for f in args.summarise:
            for line in Path(f).read_text().splitlines():
                r = json.loads(line)
                rows[r["name"]] = r
        print(json.dumps(summarise(list(rows.values())), indent=1))
        return
    from hyperdiffusion.data.prepare import PrepareConfig, find_sources, prepare_shape

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    k, n = (int(x) for x in args.part.split("/"))
    sources = find_sources(args.src, args.count)[0][k::n]
    rows_path = out / "rows.jsonl"
    done = {json.loads(line)["name"] for line in rows_path.read_text().splitlines()} if rows_path.exists() else set()
    prepare_shape(sources[0].name, sources[0].source, out / "warmup", PrepareConfig(workers=1))  # imports, caches
    for s in sources:
        if s.name in done:
            continue
        row = measure(s.name, s.source, out)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

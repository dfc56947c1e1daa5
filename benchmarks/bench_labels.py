"""`prepare` wall time and label agreement: the fast path for closed meshes vs today's labels.

Runs `prepare_shape` (what `prepare` runs per shape, one worker) twice per mesh with the
same seed, so both label the same points, alternating so both see the same machine load:
once as before (`OccupancyConfig(fast=False)`: exact winding
number on closed meshes, robust path elsewhere) and once with the defaults (the fast
path on closed meshes, `occupancy._fast_clean_inside`). Per shape it reports the
labeller used, the seconds of each run and the agreement of the training labels
(samples.npz). Shapes that took the fast path are also labelled by the robust path
(`method="robust"`) on the same points, as a second reference.

    python benchmarks/bench_labels.py ../shared/data/meshes/sweethome3d-chair --out /tmp/bench_labels
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


def run_prepare(src: str, out: Path, count: int | None) -> dict[str, float]:
    """`prepare_shape` (what `prepare` runs per shape) before and after, alternating per
    shape so that both see the same load on a shared machine; seconds of each in total."""
    from hyperdiffusion.data.prepare import PrepareConfig, find_sources, prepare_shape

    config = PrepareConfig(workers=1)
    sources, _ = find_sources(src, count)
    prepare_shape(sources[0].name, sources[0].source, out / "warmup", config)   # imports, caches
    wall = {"before": 0.0, "after": 0.0}
    for s in sources:
        for tag, fast in (("before", False), ("after", True)):
            with labels(fast):
                start = time.perf_counter()
                prepare_shape(s.name, s.source, out / tag, config)
                wall[tag] += time.perf_counter() - start
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="folder of meshes")
    ap.add_argument("--out", required=True, help="scratch folder for the two prepared datasets and results.json")
    ap.add_argument("--count", type=int, default=None)
    args = ap.parse_args()
    out = Path(args.out)
    from hyperdiffusion.data import occupancy
    from hyperdiffusion.io import load_npz, read_json

    wall = run_prepare(args.src, out, args.count)
    print(f"prepare_shape in total: {wall}", flush=True)
    rows = []
    for meta_path in sorted((out / "after" / "shapes").glob("*/meta.json")):
        name = meta_path.parent.name
        meta = {t: read_json(out / t / "shapes" / name / "meta.json") for t in ("before", "after")}
        s = {t: load_npz(out / t / "shapes" / name / "samples.npz") for t in ("before", "after")}
        assert np.array_equal(s["before"]["points"], s["after"]["points"]), name
        row = {"name": name, "labeller": meta["after"]["labeller"], "faces": meta["after"]["n_faces"],
               "s_before": meta["before"]["seconds"], "s_after": meta["after"]["seconds"],
               "agree": float(np.mean(s["before"]["occ"] == s["after"]["occ"]))}
        if row["labeller"] == "fast":
            import trimesh

            mesh = trimesh.load(out / "after" / "shapes" / name / "mesh.ply", process=False)
            robust = occupancy.inside(mesh, s["after"]["points"], occupancy.OccupancyConfig(method="robust"))
            row["agree_robust"] = float(np.mean(robust == s["after"]["occ"].astype(bool)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    fast_rows = [r for r in rows if r["labeller"] == "fast"]
    agree = np.array([r["agree"] for r in rows])
    summary = {
        "shapes": len(rows), "fast_path_shapes": len(fast_rows),
        "prepare_wall_s": wall, "speedup_all": wall["before"] / wall["after"],
        "fast_shapes_s_before": sum(r["s_before"] for r in fast_rows),
        "fast_shapes_s_after": sum(r["s_after"] for r in fast_rows),
        "agree_min": float(agree.min()), "agree_mean": float(agree.mean()),
        "agree_below_99.9": int((agree < 0.999).sum()),
    }
    if fast_rows:
        summary["speedup_fast_shapes"] = summary["fast_shapes_s_before"] / summary["fast_shapes_s_after"]
        ar = np.array([r["agree_robust"] for r in fast_rows])
        agree_fast = np.array([r["agree"] for r in fast_rows])
        summary.update(fast_agree_min=float(agree_fast.min()), fast_agree_mean=float(agree_fast.mean()),
                       fast_vs_robust_min=float(ar.min()), fast_vs_robust_mean=float(ar.mean()),
                       fast_vs_robust_below_99_9=int((ar < 0.999).sum()))
    print(json.dumps(summary, indent=1))
    (out / "results.json").write_text(json.dumps({"summary": summary, "shapes": rows}, indent=1))


if __name__ == "__main__":
    main()

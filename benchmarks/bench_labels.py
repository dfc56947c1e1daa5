"""`prepare` time and label agreement: today's labelling against an earlier one.

Runs `prepare_shape` (what `prepare` runs per shape, one worker) per mesh with the
default labelling ("after") and right after with an earlier one ("before") on the same
points, so both see the same load. `--before` is either OccupancyConfig settings (default
`{"two_tier_winding": false}`: libigl's default winding-number accuracy at every point) or
`git:REV`, occupancy.py as it was at that revision (e.g. the commit before the two-tier
winding number, to time the code as it was on every path). With settings, shapes whose
labeller runs the same code either way (the fast path for closed meshes under
`two_tier_winding`) are timed once. Per shape: the labeller, wall and process-CPU seconds
before/after, the agreement of the training labels (samples.npz) and of the evaluation set
(eval.npz) with before. One JSON line per shape goes to OUT/rows.jsonl (resumable; `--part
K/N` takes every N-th mesh from the K-th, `--count` the first N by name), and `--summarise`
prints the totals, per labeller too, over every rows.jsonl given. Set IGL_NUM_THREADS=1
(libigl's threads) and OMP_NUM_THREADS=1 for one-thread timings.

    IGL_NUM_THREADS=1 python benchmarks/bench_labels.py ../shared/data/meshes/sweethome3d-chair --out /tmp/bench_labels --before git:95fa94f
    python benchmarks/bench_labels.py --summarise /tmp/bench_labels/rows.jsonl

The first version of this script measured the fast path for closed meshes against
`fast=False` (now `--before '{"fast": false}'`) and also scored it against the robust
path (`agree_robust` in its rows, summarised when present).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def occupancy_at(rev: str):
    """hyperdiffusion.data.occupancy as it was at git revision `rev` (a separate module)."""
    import subprocess
    import sys
    import types

    name = f"occupancy_at_{rev}"
    if name not in sys.modules:
        source = subprocess.run(["git", "show", f"{rev}:src/hyperdiffusion/data/occupancy.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
        module = sys.modules[name] = types.ModuleType(name)   # dataclasses look their module up
        exec(compile(source, f"{rev}:occupancy.py", "exec"), module.__dict__)
    return sys.modules[name]


@contextmanager
def labels(settings: dict | str):
    """Make `occupancy.label` default to OccupancyConfig(**settings), or be the `label` of git
    revision "git:REV" (prepare calls it without a config)."""
    from hyperdiffusion.data import occupancy

    original = occupancy.label
    if isinstance(settings, str):
        occupancy.label = occupancy_at(settings.removeprefix("git:")).label
    else:
        occupancy.label = lambda mesh, points, config=None: original(
            mesh, points, config or occupancy.OccupancyConfig(**settings))
    try:
        yield
    finally:
        occupancy.label = original


# Labellers whose code a `before` setting does not change, so they are timed once.
UNCHANGED = {"two_tier_winding": ("fast", "empty"), "fast": ("robust", "empty")}


def measure(name: str, source: str, out: Path, before: dict | str) -> dict:
    from hyperdiffusion.data.prepare import PrepareConfig, prepare_shape
    from hyperdiffusion.io import load_npz, read_json

    config = PrepareConfig(workers=1)
    row: dict = {"name": name, "before": before}
    unchanged = set.intersection(*(set(UNCHANGED.get(k, ())) for k in before)) \
        if isinstance(before, dict) and before else set()
    for tag, settings in (("after", {}), ("before", before)):
        with labels(settings):
            wall, cpu = time.perf_counter(), time.process_time()
            prepare_shape(name, source, out / tag, config)
            row[f"wall_{tag}"], row[f"cpu_{tag}"] = time.perf_counter() - wall, time.process_time() - cpu
        meta = read_json(out / "after" / "shapes" / name / "meta.json")
        row.update(labeller=meta["labeller"], faces=meta["n_faces"], agree=1.0, agree_eval=1.0)
        if meta["labeller"] in unchanged:   # the same code before and after: timed once
            row["wall_before"], row["cpu_before"] = row["wall_after"], row["cpu_after"]
            return row
    for key, file in (("agree", "samples.npz"), ("agree_eval", "eval.npz")):
        s = {tag: load_npz(out / tag / "shapes" / name / file) for tag in ("before", "after")}
        assert np.array_equal(s["before"]["points"], s["after"]["points"]), name
        row[key] = float(np.mean(s["before"]["occ"] == s["after"]["occ"]))
    return row


def summarise(rows: list[dict]) -> dict:
    def totals(rs: list[dict], prefix: str = "") -> dict:
        t = {f"{prefix}{k}_{w}": sum(r[f"{k}_{w}"] for r in rs) for k in ("cpu", "wall") for w in ("before", "after")}
        t[f"{prefix}speedup_cpu"] = t[f"{prefix}cpu_before"] / t[f"{prefix}cpu_after"]
        t[f"{prefix}speedup_wall"] = t[f"{prefix}wall_before"] / t[f"{prefix}wall_after"]
        return t

    agree = np.array([r["agree"] for r in rows])
    out = {"shapes": len(rows), **totals(rows),
           "agree_min": float(agree.min()), "agree_mean": float(agree.mean()),
           "agree_below_99.9": int((agree < 0.999).sum())}
    if all("agree_eval" in r for r in rows):
        ev = np.array([r["agree_eval"] for r in rows])
        out.update(agree_eval_min=float(ev.min()), agree_eval_mean=float(ev.mean()),
                   agree_eval_below_99_9=int((ev < 0.999).sum()))
    for labeller in sorted({r["labeller"] for r in rows}):
        rs = [r for r in rows if r["labeller"] == labeller]
        out[f"{labeller}_shapes"] = len(rs)
        out.update(totals(rs, f"{labeller}_"))
        out[f"{labeller}_agree_min"] = float(min(r["agree"] for r in rs))
    fast = [r for r in rows if "agree_robust" in r]
    if fast:
        ar = np.array([r["agree_robust"] for r in fast])
        out.update(fast_vs_robust_min=float(ar.min()), fast_vs_robust_mean=float(ar.mean()),
                   fast_vs_robust_below_99_9=int((ar < 0.999).sum()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", help="folder of meshes")
    ap.add_argument("--out", help="scratch folder for the prepared shapes and rows.jsonl")
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--part", default="0/1", help="K/N: every N-th mesh from the K-th")
    ap.add_argument("--before", default='{"two_tier_winding": false}',
                    help="the labels compared against: OccupancyConfig settings as JSON, or git:REV for "
                         "occupancy.py as it was at that revision (timed on every path)")
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
        before = args.before if args.before.startswith("git:") else json.loads(args.before)
        row = measure(s.name, s.source, out, before)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

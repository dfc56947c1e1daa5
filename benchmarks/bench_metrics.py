"""Metric speed and accuracy on real chairs (2-core CPU dev machine).

    python benchmarks/bench_metrics.py /tmp/prep-chairs /tmp/bench-metrics

1. pairwise squared-Chamfer matrix speed (kd-tree path) on 64 x 64 real 2048-point clouds;
2. approximate (auction) EMD against exact EMD on real chair pairs;
3. `hyperdiffusion evaluate`: chairs test vs train (sanity baseline) and test vs random blobs.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hyperdiffusion.evaluation import metrics
from hyperdiffusion.evaluation.evaluate import load_clouds

dataset, work = Path(sys.argv[1]), Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
train, _, _ = load_clouds(dataset, "train")
val, _, _ = load_clouds(dataset, "val")
allc = metrics.normalize_clouds(np.concatenate([train, val]), "hd")[:64]
n = len(allc)

t = time.perf_counter()
metrics.pairwise_chamfer(allc, allc[::-1].copy(), backend="kdtree")
kd = time.perf_counter() - t
t = time.perf_counter()
metrics.pairwise_chamfer(allc[:8], allc[:8][::-1].copy(), backend="torch")
th = time.perf_counter() - t
print(f"## pairwise CD, {n}x{n}, 2048 points: kd-tree {kd:.1f} s ({kd / n / n * 1e3:.2f} ms/pair, "
      f"1000x1000 extrapolated {kd / n / n * 1e6 / 60:.0f} min); torch CPU 8x8 {th:.1f} s ({th / 64 * 1e3:.0f} ms/pair)")

rng = np.random.default_rng(0)
rows = []
for pts in (512, 1024):
    sub = metrics.subsample_clouds(allc, pts, 0)
    for _ in range(8 if pts == 512 else 3):
        i, j = rng.choice(n, 2, replace=False)
        t = time.perf_counter()
        ex = metrics.emd_exact(sub[i], sub[j])
        te = time.perf_counter() - t
        t = time.perf_counter()
        est, lo = metrics.emd_auction(torch.tensor(sub[i][None]), torch.tensor(sub[j][None]), with_bound=True)
        ta = time.perf_counter() - t
        rows.append((pts, i, j, ex, est.item(), lo.item(), te, ta))
print("## auction EMD vs exact (hd-normalised real chairs, Euclidean ground cost)")
print("| points | pair | exact | auction | rel. error | dual lower bound | exact s | auction s |")
print("|---|---|---|---|---|---|---|---|")
for pts, i, j, ex, est, lo, te, ta in rows:
    print(f"| {pts} | {i},{j} | {ex:.5f} | {est:.5f} | {(est - ex) / ex * 100:+.3f} % | {lo:.5f} | {te:.2f} | {ta:.2f} |")
errs = np.array([(r[4] - r[3]) / r[3] * 100 for r in rows])
print(f"relative error %: mean {errs.mean():.3f}, median {np.median(errs):.3f}, max {errs.max():.3f}")

blobs = work / "blobs"
blobs.mkdir(exist_ok=True)
for k in range(12):
    np.save(blobs / f"blob{k:02d}.npy", (rng.normal(size=(2048, 3)) * rng.uniform(0.1, 0.4, size=3)).astype(np.float32))
for name, samples, extra in (("test vs train", str(dataset), ["--split", "test"]), ("test vs blobs", str(blobs), [])):
    out = work / f"{name.replace(' ', '_')}.json"
    if name == "test vs train":
        # samples = train split, reference = test split: evaluate reads one --split for both,
        # so the train clouds are given as a plain folder
        tr = work / "train_clouds"
        tr.mkdir(exist_ok=True)
        for k, c in enumerate(train):
            np.save(tr / f"train{k:02d}.npy", c.astype(np.float32))
        samples = str(tr)
    t = time.perf_counter()
    subprocess.run(["hyperdiffusion", "evaluate", samples, str(dataset), "--out", str(out), "--emd", "exact",
                    "--emd-points", "1024", "--train", str(dataset)], check=True)
    print(f"## {name}: {time.perf_counter() - t:.0f} s")
    m = json.loads(out.read_text())
    print(json.dumps({k: m[k] for k in ("mmd_cd", "cov_cd", "nna_cd", "mmd_emd", "cov_emd", "nna_emd", "fpd")}))
    nv = m["novelty"]
    print(json.dumps({k: nv[k] for k in ("mean", "median", "p5", "p95", "reference_to_train_median", "copy_rate")}))

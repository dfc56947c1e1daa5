"""Peak resident memory of each stage, run as the CLI in a fresh process (benchmarks/RESULTS.md "Peak memory").

    python benchmarks/peak_memory.py [WORKDIR]

Each command runs under `/usr/bin/time -f %M` (maximum resident set size of the
process, KiB); prepare runs with --workers 1 so the number is one process's.
Small scale is the CPU preset on 4-16 built-in chairs; "paper" rows use the
paper's per-shape settings where that fits in about a minute on a 2-core CPU.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of `python -m hyperdiffusion CMD`."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "hyperdiffusion", *cmd],
                       capture_output=True, text=True, env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    if r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr[-2000:]}")
    return int(r.stderr.strip().splitlines()[-1]) / 1024, time.perf_counter() - t0


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    w = str(work)
    rng = np.random.default_rng(0)
    for name, n in (("clouds100", 100), ("clouds100b", 100)):
        (work / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(work / name / f"c{i:03d}.npy", rng.uniform(-0.5, 0.5, (2048, 3)).astype(np.float32))
    small = ["--n-surface", "5000", "--n-uniform", "5000", "--workers", "1", "--no-progress"]
    rows = [
        ("import only (`--version`)", ["--version"]),
        ("prepare, 16 chairs, 10k samples each", ["prepare", "builtin:chair", f"{w}/ds16", "--count", "16", *small]),
        ("prepare, 1 chair, paper counts (100k + 100k, 2048 cloud)",
         ["prepare", "builtin:chair", f"{w}/ds1", "--count", "1", "--workers", "1", "--no-progress"]),
        ("fit, cpu preset, 4 shapes, batch 16", ["fit", f"{w}/ds16", f"{w}/fit4", "--preset", "cpu", "--split", "all",
                                                  "--limit", "4", "--max-epochs", "2", "--device", "cpu"]),
        ("fit, 16 shapes in one batch, paper points/step 2048, 2 epochs x 5 steps",
         ["fit", f"{w}/ds16", f"{w}/fit16", "--preset", "paper", "--split", "all", "--batch-shapes", "16",
          "--max-epochs", "2", "--steps-per-epoch", "5", "--device", "cpu"]),
        ("mesh, 4 MLPs, res 64", ["mesh", f"{w}/fit4", f"{w}/mesh64", "--res", "64", "--device", "cpu",
                                  "--no-progress"]),
        ("mesh, 4 MLPs, res 256 (paper), batch 4", ["mesh", f"{w}/fit4", f"{w}/mesh256", "--res", "256",
                                                    "--device", "cpu", "--no-progress"]),
        ("train, cpu preset (10 M params), 20 steps", ["train", f"{w}/fit16", f"{w}/train", "--preset", "cpu",
                                                       "--max-steps", "20", "--device", "cpu", "--no-progress"]),
        ("sample, cpu preset, 16 samples, 20 DDIM steps, no mesh",
         ["sample", f"{w}/train", f"{w}/samples", "--n", "16", "--steps", "20", "--no-mesh", "--device", "cpu",
          "--no-progress"]),
        ("evaluate, 100 x 100 clouds of 2048 points, CD only",
         ["evaluate", f"{w}/clouds100", f"{w}/clouds100b", "--emd", "off", "--device", "cpu",
          "--out", f"{w}/m.json"]),
    ]
    print("| run | command | peak RSS (MiB) | wall (s) |\n|---|---|---|---|")
    for label, cmd in rows:
        mib, sec = peak(cmd)
        shown = " ".join(c.replace(w, "W") for c in cmd)
        print(f"| {label} | `hyperdiffusion {shown}` | {mib:.0f} | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()

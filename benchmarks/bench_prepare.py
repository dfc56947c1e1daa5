"""Time the prepare stage at the paper's counts (100k near-surface + 100k uniform, 2048-point cloud).

    python benchmarks/bench_prepare.py /work/shared/data/meshes/sweethome3d-chair /tmp/prep-chairs
    python benchmarks/bench_prepare.py builtin:chair /tmp/prep-builtin-chair --count 64

Equivalent to `hyperdiffusion prepare SRC OUT [--count N]`; it also prints which
version of occupancy.py labelled the points (its sha256), since that step
dominates the time. OUT must not hold a finished dataset, or the run only
reuses it (a resumed run reports only the shapes it processed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
from pathlib import Path

from hyperdiffusion.data import occupancy
from hyperdiffusion.data.prepare import PrepareConfig, prepare, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("--count", type=int)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    occ_hash = hashlib.sha256(Path(occupancy.__file__).read_bytes()).hexdigest()[:12]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; occupancy.py sha256 {occ_hash}")
    result = prepare(args.src, args.out, PrepareConfig(workers=args.workers), count=args.count)
    print(summary(result))


if __name__ == "__main__":
    main()

"""FPD under a feature network between sets whose order is known: same category < other category < blobs.

    python benchmarks/fpd_net_check.py WORKDIR [NET]

WORKDIR holds the datasets that benchmarks/train_fpd_net.py prepares; NET defaults
to the shipped network. Reference: the real chairs' train split. Prints a
Markdown table (hd normalisation, 2048 points, seed 0, as `evaluate`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from hyperdiffusion.evaluation import fpd


def main(argv: list[str]) -> int:
    work = Path(argv[0])
    net = fpd.load_feature_net(argv[1] if len(argv) > 1 else fpd.DEFAULT_NET)
    ref, _ = fpd.load_class_clouds(work / "real-chair", ("train",))
    rng = np.random.default_rng(0)
    sets = {
        "real chairs, test split": fpd.load_class_clouds(work / "real-chair", ("test",))[0],
        "built-in chairs, test split": fpd.load_class_clouds(work / "builtin-chair", ("test",))[0],
        "real tables, train split": fpd.load_class_clouds(work / "real-table", ("train",))[0],
        "built-in tables, test split": fpd.load_class_clouds(work / "builtin-table", ("test",))[0],
        "built-in airplanes, test split": fpd.load_class_clouds(work / "builtin-airplane", ("test",))[0],
        "Gaussian blobs (12)": rng.normal(size=(12, 2048, 3)),
    }
    print(f"network {net.id} ({net.source}); reference: real chairs' train split ({len(ref)} shapes)\n")
    print("| samples | shapes | FPD | seconds |\n| --- | --- | --- | --- |")
    for name, clouds in sets.items():
        t = time.perf_counter()
        value = fpd.fpd(clouds, ref, net, seed=0)["value"]
        print(f"| {name} | {len(clouds)} | {value:.2f} | {time.perf_counter() - t:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

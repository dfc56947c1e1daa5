"""Per-frame IoU of 4D fits written to several folders (e.g. the train split and val+test fitted apart).

    python benchmarks/summarise_4d_fits.py FIT_OUT [FIT_OUT ...] [--out summary.json]

Reads each FIT_OUT/fit_quality.json, joins their sequences (a name fitted twice is an error),
and prints the dataset summary `fit` prints (fields/fit.py, fit4d.py), plus the per-frame IoU
on all held-out points by character (the name's second field, `openarena-<character>-<anim>`).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from hyperdiffusion.fields.fit import format_summary, summarise
from hyperdiffusion.fields.fit4d import summarise_frames
from hyperdiffusion.io import write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("fits", nargs="+")
    ap.add_argument("--out")
    args = ap.parse_args()
    quality: dict[str, dict] = {}
    for folder in args.fits:
        shapes = json.loads((Path(folder) / "fit_quality.json").read_text())["shapes"]
        twice = set(shapes) & set(quality)
        if twice:
            raise SystemExit(f"{folder}: {sorted(twice)[:3]} fitted in an earlier folder too")
        quality.update(shapes)
    summary = summarise(quality)
    summary["frames"] = summarise_frames(quality)
    by_char = defaultdict(list)
    for n, q in quality.items():
        by_char[n.split("-")[1] if n.count("-") >= 2 else n].append(q["iou_frame_all_mean"])
    summary["iou_frame_all_mean_by_group"] = {c: [float(np.mean(v)), len(v)] for c, v in sorted(by_char.items())}
    print(format_summary(summary))
    for c, (m, k) in summary["iou_frame_all_mean_by_group"].items():
        print(f"  {c}: {m:.3f} over {k} sequences")
    lowest = sorted(quality, key=lambda n: quality[n]["iou_frame_all_mean"])[:3]
    print("lowest sequences (all points):", ", ".join(f"{n} {quality[n]['iou_frame_all_mean']:.3f}" for n in lowest))
    if args.out:
        write_json(args.out, summary)


if __name__ == "__main__":
    main()

"""Animated preview of generated 4D samples beside their nearest training sequences (docs/images/).

    python benchmarks/plot_4d_samples.py DATA4D SAMPLES METRICS.json OUT.gif [--n 4] [--names s1 s2]

SAMPLES is a `sample` output folder (sequences/<name>/ per-frame meshes, mesh.json); METRICS.json
the `evaluate` output whose novelty section names each sample's nearest training sequence
(frame-aligned Chamfer). Each pair of tiles plays a sample (left) and the prepared frames of its
nearest training sequence (right), titled with that distance. Also writes OUT_frameKK.png for a
few frames, to look at.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from hyperdiffusion.data.animation import load_sequence_meshes as prepared_frames
from hyperdiffusion.fields.mesh4d import animation_frames, load_sequence_meshes, save_animation


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("samples")
    ap.add_argument("metrics")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=4, help="samples shown (evenly spaced over those with a cloud)")
    ap.add_argument("--names", nargs="*", help="these samples instead")
    ap.add_argument("--size", type=int, default=120)
    ap.add_argument("--fps", type=float, default=6)
    args = ap.parse_args()
    nearest = {r["sample"]: r for r in json.loads(Path(args.metrics).read_text())["novelty"]["nearest"]}
    names = args.names or [sorted(nearest)[i] for i in np.linspace(0, len(nearest) - 1, args.n).astype(int)]
    seqs, titles = [], []
    for n in names:
        row = nearest[n]
        seqs += [load_sequence_meshes(Path(args.samples) / "sequences" / n),
                 prepared_frames(args.data, row["train_name"])]
        titles += [f"sample {n}"[:20], f"nearest {row['train_name'].replace('openarena-', '')}"[:20]]
    frames = animation_frames(seqs, ncols=4, titles=titles, size=args.size)
    save_animation(frames, args.out, fps=args.fps)
    for k in (0, 5, 10):
        Image.fromarray(frames[k]).save(Path(args.out).with_name(Path(args.out).stem + f"_frame{k:02d}.png"))
    print(f"wrote {args.out} ({len(frames)} frames; {', '.join(names)})")
    for n in names:
        print(n, nearest[n])


if __name__ == "__main__":
    main()

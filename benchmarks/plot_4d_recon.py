"""Animated preview of 4D reconstructions beside their originals (docs/images/, docs/4D.md).

    python benchmarks/plot_4d_recon.py DATA4D FIT_OUT OUT.gif [--names a b c d] [--res 96]

Each pair of tiles plays the prepared frames of a sequence (left) and the marching-cubes
meshes of its fitted 4D MLP at the same 16 frame times (right), with the fit's per-frame
IoU on all held-out points (mean over frames, worst frame) in the title. Also writes OUT_frameKK.png for a few frames, to look at.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hyperdiffusion.data.animation import load_sequence_meshes
from hyperdiffusion.fields.mesh4d import animation_frames, extract_sequences, save_animation
from hyperdiffusion.fields.mlp import WeightSet, load_weight_set


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("fit")
    ap.add_argument("out")
    ap.add_argument("--names", nargs="*")
    ap.add_argument("--res", type=int, default=96)
    ap.add_argument("--size", type=int, default=120)
    ap.add_argument("--up", choices=("y", "z"), default="y",
                    help="z: the data were prepared Z-up; rotate every mesh to Y-up for the pictures only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ws = load_weight_set(Path(args.fit) / "weights.safetensors")
    quality = json.loads((Path(args.fit) / "fit_quality.json").read_text())["shapes"]
    names = args.names or [ws.names[i] for i in np.linspace(0, len(ws.names) - 1, 4).astype(int)]
    rows = [ws.names.index(n) for n in names]
    sub = WeightSet(ws.weights[rows], names, ws.mlp, ws.meta)
    recon = extract_sequences(sub, res=args.res)
    seqs, titles = [], []
    for n, r in zip(names, recon):
        q = quality[n]
        short = n.replace("openarena-", "").replace("md2-", "")[:18]
        seqs += [load_sequence_meshes(args.data, n), r]
        titles += [f"{short}", f"fit IoU {q['iou_frame_all_mean']:.2f} (min {q['iou_frame_all_worst']:.2f})"]
    if args.up == "z":  # (x, y, z) -> (x, z, -y), as prepare --up z; display only
        seqs = [[None if m is None else m.copy().apply_transform(
            np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)) for m in seq]
            for seq in seqs]
    frames = animation_frames(seqs, ncols=4, titles=titles, size=args.size)
    save_animation(frames, args.out, fps=6)
    for k in (0, 8):
        Image.fromarray(frames[k]).save(Path(args.out).with_name(Path(args.out).stem + f"_frame{k:02d}.png"))
    print(f"wrote {args.out} ({len(frames)} frames; {', '.join(names)})")


if __name__ == "__main__":
    main()

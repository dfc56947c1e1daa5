"""Does a small PVCNN2 learn four clouds? Train PVD's eps diffusion on 4 small clouds and compare samples
with random clouds by Chamfer distance to the nearest training cloud.

    python benchmarks/overfit_pvd.py [--points 128] [--steps 800] [--lr 2e-3] [--scale 5] [--prediction eps]
    python benchmarks/overfit_pvd.py --shapes aniso --points 256 --steps 300 --lr 3e-3 --beta-end 0.05 \
        --eval-every 50 --no-ddpm          # the "More tries" table of benchmarks/RESULTS.md

The clouds (`--shapes`): `pvd` a bar, a sphere, a cylinder and a plate (max |coordinate| 0.45
by construction); `dpc` the DPC overfit test's sphere, 2x0.6x0.6 box, torus and cylinder; `aniso`
a 2x0.3x0.3 bar along x, a 2x2x0.1 plate, a thin ring and a bar along z (`dpc` and `aniso`
centred and scaled to max |coordinate| 0.45, the dataset's range). They are diffused times
`--scale` (5 = `data_scale` of every PVCNN2 preset, about unit std; 1 = the dataset's
coordinates). The network is the tiny preset without dropout (`--cfg` overrides preset fields as
JSON, e.g. '{"width_multiplier": 0.25}'; '{"input_skip": false}' is PVD's own network, which the
tiny preset had before the "PVD diagnosis" of benchmarks/RESULTS.md) and with `data_scale` 1 (the scaling is done here),
T = `--timesteps` steps with linear betas `--beta-start` -> `--beta-end`, Adam betas (0.5, 0.999),
batch = `--copies` x the 4 clouds, one thread. Prints the loss every `--log` steps, then Chamfer
(sum of the two mean nearest-neighbour distances, in the scaled units) of DDIM-20 and DDPM samples
and of random clouds in the same cube, each to its nearest training cloud; and the squared
Chamfer of `evaluation.metrics.pairwise_chamfer` (the test suite's) of 8 DDIM-20 samples against
8 Gaussian clouds with the training clouds' global std, as a ratio of means (below 1: samples
closer than that reference), after training and every `--eval-every` steps.
benchmarks/RESULTS.md ("PVD baseline", without the skip; "PVD diagnosis", with it) has what it gave:

    python benchmarks/overfit_pvd.py --shapes dpc --points 128 --steps 300 --lr 2e-3 --timesteps 1000 \
        --beta-end 0.02 --eval-every 50 --no-ddpm --cfg '{"input_skip": false}'   # PVD's T: samples 30x too wide
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import trimesh

from hyperdiffusion.denoisers import build_denoiser
from hyperdiffusion.denoisers.pvcnn import PVCNN_PRESETS
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from hyperdiffusion.evaluation.metrics import pairwise_chamfer
from hyperdiffusion.io import write_json


def chamfer(a: torch.Tensor, b: torch.Tensor) -> float:
    d = torch.cdist(a, b)
    return (d.min(1).values.mean() + d.min(0).values.mean()).item()


def nearest(clouds: torch.Tensor, train: torch.Tensor) -> list[float]:
    return [round(min(chamfer(x, c) for c in train), 3) for x in clouds]


def shapes(name: str, points: int) -> torch.Tensor:
    """Four clouds [4, points, 3] in the dataset's range (max |coordinate| <= 0.45)."""
    c = trimesh.creation
    if name == "pvd":
        meshes = [c.box(extents=(0.9, 0.2, 0.2)), c.icosphere(2, radius=0.4), c.cylinder(0.15, 0.9),
                  c.box(extents=(0.6, 0.6, 0.1))]
        return torch.stack([torch.from_numpy(np.asarray(m.sample(points, seed=i), np.float32))
                            for i, m in enumerate(meshes)])
    meshes = ([c.icosphere(3), c.box((2, 0.6, 0.6)), c.torus(1.0, 0.3), c.cylinder(0.3, 2.0)] if name == "dpc" else
              [c.box((2, 0.3, 0.3)), c.box((2, 2, 0.1)), c.torus(1.0, 0.15), c.box((0.3, 0.3, 2))])
    x = np.stack([trimesh.sample.sample_surface(m, points, seed=i)[0] for i, m in enumerate(meshes)])
    x = x - x.mean(axis=1, keepdims=True)
    return torch.tensor(x / np.abs(x).max() * 0.45, dtype=torch.float32)


def gaussian_ratio(model, diffusion, clouds: torch.Tensor, record: dict | None = None) -> str:
    """Squared Chamfer of 8 DDIM-20 samples and of 8 std-matched Gaussian clouds to the nearest training cloud."""
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        s = diffusion.sample(model, (8, *clouds.shape[1:]), sampler="ddim", steps=20, device=device,
                             generator=torch.Generator(device).manual_seed(1)).cpu().numpy()
    model.train()
    clouds = clouds.cpu()
    r = (torch.randn(8, *clouds.shape[1:], generator=torch.Generator().manual_seed(2)) * clouds.std()).numpy()
    ds, dr = pairwise_chamfer(s, clouds.numpy()), pairwise_chamfer(r, clouds.numpy())
    ratio = float(ds.min(1).mean() / dr.min(1).mean())
    if record is not None:
        record.update(ratio=ratio, nearest=ds.argmin(1).tolist(), sample_std=float(s.std()))
    return (f"samples vs Gaussian clouds (squared Chamfer): ratio {ratio:.3f}, "
            f"nearest training clouds {ds.argmin(1).tolist()}, sample std {s.std():.3f} (data {clouds.std():.3f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=128)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--scale", type=float, default=5.0)
    ap.add_argument("--prediction", default="eps", choices=["eps", "x0"])
    ap.add_argument("--shapes", default="pvd", choices=["pvd", "dpc", "aniso"])
    ap.add_argument("--timesteps", type=int, default=100)
    ap.add_argument("--beta-start", type=float, default=1e-4)
    ap.add_argument("--beta-end", type=float, default=0.05)
    ap.add_argument("--copies", type=int, default=1, help="batch = copies x the 4 clouds")
    ap.add_argument("--cfg", default="{}", help="PVCNN2 tiny-preset overrides, JSON")
    ap.add_argument("--eval-every", type=int, default=0, help="Gaussian-reference ratio every N steps (0: at the end)")
    ap.add_argument("--no-ddpm", action="store_true", help="skip the DDPM samples at the end")
    ap.add_argument("--log", type=int, default=100)
    ap.add_argument("--preset", default="tiny", help="the PVCNN2 preset --cfg overrides (tiny, cpu, paper)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the ratio curve, losses and seconds here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    g = torch.Generator(device).manual_seed(0)
    clouds = (shapes(args.shapes, args.points) * args.scale).to(device)
    curve: list[dict] = []
    torch.manual_seed(0)
    cfg = {**PVCNN_PRESETS[args.preset].to_dict(), "dropout": 0.0, **json.loads(args.cfg), "data_scale": 1.0}
    model = build_denoiser("pvcnn2", cfg, (args.points, 3)).to(device)
    T = args.timesteps
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=T, beta_start=args.beta_start, beta_end=args.beta_end,
                                                  prediction=args.prediction, variance="fixed_small"))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    batch = clouds.repeat(args.copies, 1, 1)
    t0, losses = time.time(), []
    for step in range(args.steps):
        t = torch.randint(0, T, (len(batch),), generator=g, device=device)
        loss = diffusion.training_loss(model, batch, t, torch.randn(batch.shape, generator=g, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % args.log == 0:
            print(f"step {step + 1}: loss {np.mean(losses[-args.log:]):.4f} ({time.time() - t0:.0f} s)", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0:
            point = {"step": step + 1, "seconds": time.time() - t0, "loss": float(np.mean(losses[-args.eval_every:]))}
            print(f"step {step + 1}: {gaussian_ratio(model, diffusion, clouds, point)}", flush=True)
            curve.append(point)
            if args.json:
                write_json(args.json, {"args": vars(args), "params": sum(p.numel() for p in model.parameters()),
                                       "curve": curve})
    print(gaussian_ratio(model, diffusion, clouds))
    model.eval()
    gen = torch.Generator(device)
    with torch.no_grad():
        ddim = diffusion.sample(model, clouds.shape, sampler="ddim", steps=20, device=device,
                                generator=gen.manual_seed(3)).cpu()
        ddpm = None if args.no_ddpm else diffusion.sample(model, clouds.shape, sampler="ddpm", device=device,
                                                          generator=gen.manual_seed(3)).cpu()
    clouds = clouds.cpu()
    random = (torch.rand(clouds.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.9 * args.scale
    print(f"data std {clouds.std():.3f}; sample std DDIM {ddim.std():.3f}"
          + ("" if ddpm is None else f", DDPM {ddpm.std():.3f}"))
    print("Chamfer to the nearest training cloud: DDIM-20", nearest(ddim, clouds),
          *(() if ddpm is None else ("DDPM", nearest(ddpm, clouds))), "random", nearest(random, clouds))


if __name__ == "__main__":
    main()

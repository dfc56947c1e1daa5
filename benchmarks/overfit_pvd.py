"""Does a small PVCNN2 learn four clouds? Train PVD's eps diffusion on 4 small clouds and compare samples
with random clouds by Chamfer distance to the nearest training cloud.

    python benchmarks/overfit_pvd.py [--points 128] [--steps 800] [--lr 2e-3] [--scale 5] [--prediction eps]

The clouds are a bar, a sphere, a cylinder and a plate (surface samples, max |coordinate| 0.45)
times `--scale` (5 = `data_scale` of every PVCNN2 preset, about unit std; 1 = the dataset's
coordinates). The network is the tiny preset without dropout and with `data_scale` 1 (the scaling
is done here), T = 100 steps with linear betas 1e-4 -> 0.05, Adam betas (0.5, 0.999), batch = the
4 clouds, one thread. Prints the loss every `--log` steps, then Chamfer (sum of the two mean
nearest-neighbour distances, in the scaled units) of DDIM-20 and DDPM samples and of random clouds
in the same cube, each to its nearest training cloud. benchmarks/RESULTS.md ("PVD baseline") has
what it gave.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import trimesh

from hyperdiffusion.denoisers import build_denoiser
from hyperdiffusion.denoisers.pvcnn import PVCNN_PRESETS
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion


def chamfer(a: torch.Tensor, b: torch.Tensor) -> float:
    d = torch.cdist(a, b)
    return (d.min(1).values.mean() + d.min(0).values.mean()).item()


def nearest(clouds: torch.Tensor, train: torch.Tensor) -> list[float]:
    return [round(min(chamfer(x, c) for c in train), 3) for x in clouds]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=128)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--scale", type=float, default=5.0)
    ap.add_argument("--prediction", default="eps", choices=["eps", "x0"])
    ap.add_argument("--log", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    shapes = [trimesh.creation.box(extents=(0.9, 0.2, 0.2)), trimesh.creation.icosphere(2, radius=0.4),
              trimesh.creation.cylinder(0.15, 0.9), trimesh.creation.box(extents=(0.6, 0.6, 0.1))]
    clouds = torch.stack([torch.from_numpy(np.asarray(s.sample(args.points, seed=i), np.float32))
                          for i, s in enumerate(shapes)]) * args.scale
    torch.manual_seed(0)
    model = build_denoiser("pvcnn2", {**PVCNN_PRESETS["tiny"].to_dict(), "dropout": 0.0, "data_scale": 1.0},
                           (args.points, 3))
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=100, beta_start=1e-4, beta_end=0.05,
                                                  prediction=args.prediction, variance="fixed_small"))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.999))
    t0, losses = time.time(), []
    for step in range(args.steps):
        t = torch.randint(0, 100, (4,), generator=g)
        loss = diffusion.training_loss(model, clouds, t, torch.randn(clouds.shape, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % args.log == 0:
            print(f"step {step + 1}: loss {np.mean(losses[-args.log:]):.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        ddim = diffusion.sample(model, clouds.shape, sampler="ddim", steps=20, generator=torch.Generator().manual_seed(3))
        ddpm = diffusion.sample(model, clouds.shape, sampler="ddpm", generator=torch.Generator().manual_seed(3))
    random = (torch.rand(clouds.shape, generator=g) - 0.5) * 0.9 * args.scale
    print(f"data std {clouds.std():.3f}; sample std DDIM {ddim.std():.3f}, DDPM {ddpm.std():.3f}")
    print("Chamfer to the nearest training cloud: DDIM-20", nearest(ddim, clouds), "DDPM", nearest(ddpm, clouds),
          "random", nearest(random, clouds))


if __name__ == "__main__":
    main()

"""PVD benchmarks: PVCNN2 parameter counts per preset, one training step and one sampling step on the CPU.

    python benchmarks/bench_pvd.py [--threads 2] [--batch 16] [--presets paper cpu tiny]

One training step = PVD's loss (eps-prediction MSE, T = 1000) on a batch of random 2048-point
clouds, backward, Adam (lr 2e-4, betas 0.5 / 0.999): what `train --preset pvd` / `pvd-cpu` do per
step. One sampling step = a no-grad forward pass over `--batch` clouds (a DDPM or DDIM step costs
one such pass; DDPM sampling is 1000 of them). The first step is a warm-up and is not timed.
Wall time and the process's CPU time are both printed: on a busy shared machine the CPU time
divided by the threads is the better estimate of a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from hyperdiffusion.denoisers import build_denoiser, count_parameters, get_denoiser
from hyperdiffusion.denoisers.pvcnn import PVCNN_PRESETS
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion

DIFFUSION = DiffusionConfig(timesteps=1000, beta_start=1e-4, beta_end=0.02, prediction="eps", variance="fixed_small")


def timed(fn) -> tuple[float, float]:
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--points", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--presets", nargs="+", default=list(PVCNN_PRESETS), choices=list(PVCNN_PRESETS))
    ap.add_argument("--no-time", action="store_true", help="parameter counts only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    diffusion = GaussianDiffusion(DIFFUSION)
    for name in args.presets:
        torch.manual_seed(0)
        model = build_denoiser("pvcnn2", get_denoiser("pvcnn2").config(name), (args.points, 3))
        print(f"{name:5s}: {count_parameters(model):>10,} parameters", flush=True)
        if args.no_time:
            continue
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
        x0 = (torch.rand(args.batch, args.points, 3) - 0.5) * 0.9

        def step(x):
            t = torch.randint(0, diffusion.num_timesteps, (len(x),))
            loss = diffusion.training_loss(model, x, t, torch.randn_like(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step(x0[:2])
        wall, cpu = min((timed(lambda: step(x0)) for _ in range(args.repeats)), key=lambda wc: wc[0])
        print(f"       train step, batch {args.batch} x {args.points} points: {wall:.2f} s wall, {cpu:.2f} s CPU",
              flush=True)
        model.eval()
        t = torch.full((args.batch,), 500)
        with torch.no_grad():
            model(x0[:2], t[:2])
            wall, cpu = min((timed(lambda: model(x0, t)) for _ in range(args.repeats)), key=lambda wc: wc[0])
        print(f"       sampling step (forward), batch {args.batch}: {wall:.2f} s wall, {cpu:.2f} s CPU; "
              f"DDPM x1000 would take ~{wall * 1000 / 60:.0f} min, DDIM x50 ~{wall * 50:.0f} s", flush=True)


if __name__ == "__main__":
    main()

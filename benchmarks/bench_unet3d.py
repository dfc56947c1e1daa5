"""3D UNet (voxel baseline) benchmarks: parameter counts and one training step on the CPU.

    python benchmarks/bench_unet3d.py [--threads 1] [--batch 32] [--res 24]

One step = the paper's x0 diffusion loss (DiffusionConfig()) on a batch of +-1 grids, backward,
Adam at lr 2e-4; a first step at batch 2 is a warm-up and not timed. Both the wall time and the
process's CPU time are printed: on a busy shared machine the CPU time is the better estimate of
what a quiet machine would take with the same number of threads. Peak memory is the process's
maximum resident set size.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from hyperdiffusion.denoisers.unet3d import UNET_PRESETS, UNet3D, count_parameters, preset
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion


def step_seconds(name: str, channels: int, batch: int, res: int, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = UNet3D(preset(name, in_channels=channels))
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    diffusion = GaussianDiffusion(DiffusionConfig())
    x0 = torch.where(torch.rand(batch, channels, res, res, res) > 0.5, 1.0, -1.0)
    times = []
    for i in range(repeats + 1):
        batch_x0 = x0 if i else x0[:2]
        start, cpu_start = time.perf_counter(), time.process_time()
        t = torch.randint(0, diffusion.num_timesteps, (len(batch_x0),))
        loss = diffusion.training_loss(model, batch_x0, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append((time.perf_counter() - start, time.process_time() - cpu_start))
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--presets", nargs="+", default=list(UNET_PRESETS), choices=list(UNET_PRESETS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    for name in args.presets:
        for channels in (1, 16):
            n = count_parameters(UNet3D(preset(name, in_channels=channels)))
            wall, cpu = step_seconds(name, channels, args.batch, args.res, args.repeats)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{name:5s} C={channels:2d}: {n:>11,} parameters; forward+backward+Adam, batch {args.batch} "
                  f"at {args.res}^3: {wall:6.1f} s wall, {cpu:6.1f} s CPU (peak RSS so far {peak:.1f} GiB)", flush=True)


if __name__ == "__main__":
    main()

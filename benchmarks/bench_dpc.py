"""DPC benchmarks: parameter counts of each preset, one training step and DDPM sampling on the CPU.

    python benchmarks/bench_dpc.py [--threads 1] [--batch 16] [--samples 4] [--presets paper cpu tiny]

One step = DPC's loss (denoisers/dpc.py: diffusion MSE + KL terms) on a batch of random 2048-point
clouds, backward, gradient clipping at 10, Adam at lr 2e-3: what `train --preset dpc` /
`dpc-cpu` do per step. A first step at batch 2 is a warm-up and not timed. Sampling is the
authors' sampler: a latent from the flow, then DDPM over all 100 steps, 2048 points per cloud.
Wall time and the process's CPU time are both printed: on a busy shared machine the CPU time is
the better estimate of a quiet machine with the same number of threads.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from hyperdiffusion.denoisers import count_parameters
from hyperdiffusion.denoisers.dpc import DPC, DPC_PRESETS
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion

DIFFUSION = DiffusionConfig(timesteps=100, beta_start=1e-4, beta_end=0.02, prediction="eps", variance="fixed_small")


def timed(fn) -> tuple[float, float]:
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu_start


def step_seconds(model: DPC, batch: int, points: int, repeats: int) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    diffusion = GaussianDiffusion(DIFFUSION)
    x0 = torch.rand(batch, points, 3) - 0.5

    def step(x):
        t = torch.randint(0, diffusion.num_timesteps, (len(x),))
        loss = model.training_loss(diffusion, x, t, torch.randn_like(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()

    step(x0[:2])  # warm-up
    return min((timed(lambda: step(x0)) for _ in range(repeats)), key=lambda wc: wc[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--points", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=4, help="clouds sampled (DDPM, 100 steps); 0 = skip")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--presets", nargs="+", default=list(DPC_PRESETS), choices=list(DPC_PRESETS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    for name in args.presets:
        torch.manual_seed(0)
        model = DPC(DPC_PRESETS[name])
        parts = ", ".join(f"{k} {count_parameters(getattr(model, k)):,}" for k in ("encoder", "flow", "decoder"))
        print(f"{name:5s}: {count_parameters(model):>9,} parameters ({parts})")
        wall, cpu = step_seconds(model, args.batch, args.points, args.repeats)
        print(f"       train step, batch {args.batch} x {args.points} points: {wall * 1e3:.0f} ms wall, "
              f"{cpu * 1e3:.0f} ms CPU")
        if args.samples:
            model.eval()
            g = torch.Generator().manual_seed(0)
            wall, cpu = timed(lambda: model.sample(GaussianDiffusion(DIFFUSION), (args.samples, args.points, 3),
                                                   sampler="ddpm", generator=g))
            print(f"       DDPM sampling, 100 steps, {args.samples} clouds: {wall:.1f} s wall, {cpu:.1f} s CPU "
                  f"({wall / args.samples:.2f} s per cloud)")


if __name__ == "__main__":
    main()

"""Diffusion-model benchmarks: preset sizes (meta device), CPU training step, sampling time.

    python benchmarks/bench_diffusion.py [--threads N]

Uses the paper MLP (36,737 parameters, 8 weight tokens + 1 timestep token).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from hyperdiffusion.fields.mlp import MLPConfig
from hyperdiffusion.diffusion.train import TRAIN_PRESETS, make_optimizer
from hyperdiffusion.denoisers.transformer import PAPER_PRESETS, TransformerConfig, build_model, count_parameters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--train-steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.1f}")

    for name, cfg in PAPER_PRESETS.items():
        mlp = MLPConfig(in_dim=4) if name == "4d" else MLPConfig()
        print(f"preset {name:5s}: {count_parameters(build_model(cfg, mlp, 'meta')):>13,} parameters "
              f"(n_embd {cfg.n_embd}, {cfg.n_layer} layers, {cfg.n_head} heads, MLP {mlp.n_params} params)")

    mlp, tcfg = MLPConfig(), TRAIN_PRESETS["cpu"]
    torch.manual_seed(0)
    model = build_model(TransformerConfig.from_dict(tcfg.denoiser_config()), mlp)
    opt = make_optimizer(model, tcfg)
    diffusion = GaussianDiffusion(tcfg.diffusion_config())
    for batch in (tcfg.batch_size, 32):
        x0 = torch.randn(batch, mlp.n_params) * 0.1
        for i in range(args.train_steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            loss = diffusion.training_loss(model, x0, torch.randint(0, 500, (batch,)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dt = (time.perf_counter() - t0) / args.train_steps
        print(f"cpu preset train step, batch {batch}: {dt * 1e3:.1f} ms")

    model.eval()
    for label, dcfg, kwargs, n in [
        ("DDPM, T=1000, 1000 steps, 32 samples", DiffusionConfig(timesteps=1000), {"sampler": "ddpm"}, 32),
        ("DDIM, T=500 (paper), all 500 steps, 32 samples", DiffusionConfig(), {"sampler": "ddim"}, 32),
        ("DDIM, T=500, 50 steps, 100 samples", DiffusionConfig(), {"sampler": "ddim", "steps": 50}, 100),
    ]:
        d = GaussianDiffusion(dcfg)
        t0 = time.perf_counter()
        d.sample(model, (n, mlp.n_params), generator=torch.Generator().manual_seed(0), **kwargs)
        print(f"sampling {label}: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

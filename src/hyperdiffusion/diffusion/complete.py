"""The `complete` stage: shapes that agree with a partial point cloud (not in the paper).

`hyperdiffusion complete CKPT PARTIAL.ply OUT --n 8` samples with reconstruction guidance
(Ho et al. 2022, "Video Diffusion Models", arXiv 2204.03458, eq. 7; the same step as Chung et al.
2023's diffusion posterior sampling, arXiv 2209.14687): at every DDIM step the network's clean
prediction x0_hat is decoded to its occupancy MLP (differentiably, fields/mlp.batched_forward), the
MLP's logits at the observed points are compared with the surface level, and x0_hat is moved
against the gradient of that error taken with respect to x_t:

    L(x_t)   = mean_p (f_{x0_hat(x_t)}(p) - level_logit)^2      (observed points p lie on the surface)
    x0_tilde = x0_hat - (strength * sqrt(abar_t) / 2) * grad_{x_t} L

(`strength` is Ho et al.'s w_r). The sampler then continues from x0_tilde as it would from
x0_hat, so strength 0 is the plain sampler, with the same noise for the same seed. Only points
the scan saw are used: nothing pulls the unseen side, which the diffusion prior fills in, so the
n samples are n plausible completions.

Writes OUT/weights.safetensors (the MLPs; the format `fit` writes), OUT/meshes/, OUT/clouds/,
OUT/mesh.json (what `evaluate` reads) and OUT/completion.json (settings, the observed points'
mean |logit - level| per completion).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hyperdiffusion.io import InputError, ensure_writable_dir, write_json


@dataclass(frozen=True)
class CompleteConfig:
    n: int = 8  # completions
    # Reconstruction-guidance weight w_r (0 = unguided sampling). Model-dependent: 10 was the best of 10 / 30 / 100
    # on validation chairs for the CPU-scale model (benchmarks/RESULTS.md); the tiny test model needs ~1000.
    strength: float = 10.0
    ddim_steps: int | None = 100  # DDIM steps; None = all T
    n_points: int = 1024  # observed points used by the guidance (a fixed random subset)
    level: float = 0.5  # surface occupancy probability the observed points are pulled to
    class_name: str | None = None  # class-conditional checkpoints: complete as this class
    guidance: float = 1.0  # its classifier-free guidance weight (diffusion/guidance.py)
    seed: int = 0
    use_ema: bool = True
    res: int = 128  # marching-cubes resolution of the written meshes
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def level_logit(self) -> float:
        return float(np.log(self.level / (1 - self.level)))


def read_partial(path: str | Path) -> np.ndarray:
    """The observed points [m, 3] of a point cloud (or mesh: its vertices) file, or a .npy array."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".npy":
        pts = np.load(path, allow_pickle=False)
    else:
        try:
            pts = np.asarray(trimesh.load(path, process=False).vertices)
        except Exception as e:  # trimesh raises many kinds for a bad file
            raise InputError(f"{path}: not a readable point cloud ({type(e).__name__}: {e})") from None
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0 or not np.isfinite(pts).all():
        raise InputError(f"{path}: expected finite points [m, 3]; got {pts.dtype} {list(pts.shape)}")
    return pts.astype(np.float32)


def level_error(weights: torch.Tensor, points: torch.Tensor, mlp, level_logit: float) -> torch.Tensor:
    """Per MLP, mean over the observed points of (logit - level_logit)^2: [B] (differentiable)."""
    from hyperdiffusion.fields.mlp import batched_forward

    logits = batched_forward(weights, points.expand(len(weights), -1, -1), mlp)
    return ((logits - level_logit) ** 2).mean(dim=1)


def reconstruction_guided(model: Callable, diffusion, norm, points: torch.Tensor, mlp, strength: float,
                          level_logit: float) -> Callable:
    """`model(x_t, t)` with x0_hat replaced by x0_tilde (module docstring); strength 0 returns `model` itself."""
    from hyperdiffusion.diffusion.gaussian import _extract

    if strength == 0:
        return model

    def call(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():  # the samplers run under no_grad
            x = x_t.detach().requires_grad_(True)
            x0, _ = diffusion.split_prediction(model(x, t).to(x.dtype), x, t)
            err = level_error(norm.decode(x0), points.to(x.device), mlp, level_logit)
            (grad,) = torch.autograd.grad(err.sum(), x)  # per sample: its own error's gradient
        x0 = x0.detach() - strength * _extract(diffusion.sqrt_alphas_cumprod, t, x_t) / 2 * grad
        # back to what the network predicts (x0, eps or v): the training target of this x0 and the
        # noise it implies at x_t
        return diffusion.training_target(x0, t, diffusion.eps_from_x0(x_t, t, x0))

    return call


def complete_weights(ckpt: str | Path, partial: np.ndarray, cfg: CompleteConfig = CompleteConfig()
                     ) -> tuple[torch.Tensor, dict[str, Any]]:
    """n completions of `partial` as MLP weight vectors [n, P], and the checkpoint's metadata."""
    from hyperdiffusion.diffusion.checkpoint import load_denoiser
    from hyperdiffusion.diffusion.guidance import sampling_model
    from hyperdiffusion.diffusion.runtime import resolve_device, seeded_generator
    from hyperdiffusion.fields.mlp import MLPConfig

    device = resolve_device(cfg.device)
    model, diffusion, norm, meta = load_denoiser(ckpt, use_ema=cfg.use_ema, device=device)
    if meta["representation"]["name"] != "mlp3d":
        raise InputError(f"{ckpt}: completion decodes occupancy MLPs; this checkpoint samples "
                         f"{meta['representation']['name']}")
    mlp = MLPConfig.from_dict(meta["representation"]["info"]["mlp"])
    rng = np.random.default_rng(cfg.seed)
    pts = partial if len(partial) <= cfg.n_points else partial[rng.choice(len(partial), cfg.n_points, replace=False)]
    points = torch.as_tensor(pts, dtype=torch.float32, device=device).unsqueeze(0)
    base = sampling_model(model, meta, cfg.class_name, cfg.guidance)
    guided = reconstruction_guided(base, diffusion, norm, points, mlp, cfg.strength, cfg.level_logit)
    g = seeded_generator(cfg.seed, 7, 0)  # the same noise for every strength: strength 0 is plain sampling
    x = diffusion.ddim_sample(guided, (cfg.n, *meta["data"]["sample_shape"]), steps=cfg.ddim_steps,
                              generator=g if device.type == "cpu" else None, device=device)
    return norm.decode(x.float()).cpu(), meta


def complete(ckpt: str | Path, partial_path: str | Path, out_dir: str | Path, cfg: CompleteConfig = CompleteConfig(),
             *, progress: bool = True) -> dict[str, Any]:
    """The whole stage (module docstring); returns the summary written to completion.json."""
    from hyperdiffusion.fields.mesh import MeshConfig, mesh_weights
    from hyperdiffusion.fields.mlp import MLPConfig, save_weight_set

    out = ensure_writable_dir(out_dir)
    partial = read_partial(partial_path)
    w, meta = complete_weights(ckpt, partial, cfg)
    mlp = MLPConfig.from_dict(meta["representation"]["info"]["mlp"])
    names = [f"completion_{i:02d}" for i in range(cfg.n)]
    extra = {"stage": "complete", "config": cfg.to_dict(), "checkpoint": str(ckpt), "partial": str(partial_path)}
    save_weight_set(out / "weights.safetensors", w, names, mlp, extra=extra)
    with torch.no_grad():
        err = level_error(w, torch.as_tensor(partial).unsqueeze(0), mlp, cfg.level_logit).sqrt()
    status = mesh_weights(out / "weights.safetensors", out, MeshConfig(res=cfg.res, level=cfg.level),
                          device=cfg.device, progress=progress)
    summary = {**extra, "n_observed": int(len(partial)), "rms_logit_error": dict(zip(names, err.tolist())),
               "mesh_status": status}
    write_json(out / "completion.json", summary)
    return summary


def register(subparsers) -> None:
    p = subparsers.add_parser("complete", help="complete a partial point cloud: samples guided towards it",
                              description="Sample MLPs whose surface passes through the observed points "
                                          "(reconstruction guidance at every DDIM step); writes several "
                                          "completions as weights, meshes and clouds.")
    p.add_argument("ckpt", help="diffusion checkpoint over occupancy MLPs (training OUT folder or .safetensors)")
    p.add_argument("partial", help="observed points: a .ply/.obj/... point cloud or mesh (its vertices), or .npy "
                                   "[m, 3], in the training shapes' normalised frame")
    p.add_argument("out", help="output folder")
    d = CompleteConfig()
    p.add_argument("--n", type=int, default=d.n, help="completions")
    p.add_argument("--strength", type=float, default=d.strength,
                   help="reconstruction-guidance weight w_r: x0 -= w_r sqrt(abar_t) / 2 grad_xt L; 0 = none")
    p.add_argument("--ddim-steps", type=int, default=d.ddim_steps, help="DDIM steps")
    p.add_argument("--n-points", type=int, default=d.n_points, help="observed points used by the guidance")
    p.add_argument("--level", type=float, default=d.level, help="surface occupancy probability")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="class-conditional checkpoints: complete as this class")
    p.add_argument("--guidance", type=float, default=d.guidance, help="classifier-free guidance weight with --class")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--res", type=int, default=d.res, help="marching-cubes resolution")
    p.add_argument("--device", default=d.device)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = CompleteConfig(n=args.n, strength=args.strength, ddim_steps=args.ddim_steps, n_points=args.n_points,
                         level=args.level, class_name=args.class_name, guidance=args.guidance, seed=args.seed,
                         use_ema=not args.no_ema, res=args.res, device=args.device)
    s = complete(args.ckpt, args.partial, args.out, cfg, progress=not args.no_progress)
    print(json.dumps({"out": str(args.out), "rms_logit_error": s["rms_logit_error"]}))
    return 0

"""The `interpolate` stage: walk between two fitted shapes (not in the paper).

`hyperdiffusion interpolate CKPT A B OUT --steps 8`, with A and B two fitted MLPs written as
`WEIGHTS:NAME` (WEIGHTS a weight set from `fit`, its folder or its weights.safetensors; NAME a
shape's name in it, or its index), goes from A to B in `steps` shapes (A and B included) two ways:

* linear: (1 - a) A + a B on the flat weight vectors. Every MLP is fitted from the same first
  weights (fields/fit.py), so the two vectors may lie in one basin where this is meaningful;
  a = 0 and a = 1 return A and B exactly.
* ddim: both shapes inverted to noise by deterministic DDIM run backwards
  (GaussianDiffusion.ddim_invert), the two noises joined by spherical interpolation (slerp: DDIM
  paper, Song et al. 2021, Sec. 5.4 and App. D.5, because Gaussian noise concentrates on a
  sphere where a straight line passes through atypically short vectors), and each point decoded
  with the same deterministic sampler. Inversion is approximate, so a = 0 and a = 1 give
  reconstructions of A and B (their error is in interpolation.json).

It writes, per method, OUT/<method>/weights.safetensors (the MLPs, the format `fit` writes),
OUT/<method>/meshes/NN.ply and OUT/<method>/strip.png; OUT/strips.png (both rows),
OUT/preview.gif (the two walks side by side, there and back) and OUT/interpolation.json (per
method: connected components of every mesh, the fraction of intermediate meshes that are one
single component, the endpoints' distance to A and B).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyperdiffusion.io import InputError, ensure_writable_dir, write_json

METHODS = ("linear", "ddim")


@dataclass(frozen=True)
class InterpolateConfig:
    steps: int = 8  # shapes along the path, A and B included
    ddim_steps: int | None = 100  # DDIM steps of the inversion and of the decoding; None = all T
    methods: tuple[str, ...] = METHODS
    res: int = 128  # marching-cubes resolution
    level: float = 0.5  # surface occupancy probability
    use_ema: bool = True
    device: str = "auto"
    size: int = 160  # picture tile size in pixels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_shape(spec: str) -> tuple[torch.Tensor, str, Any]:
    """A fitted MLP given as WEIGHTS:NAME (NAME a shape's name or index): (weight vector [P], name, MLPConfig)."""
    from hyperdiffusion.fields.mlp import load_weight_set

    path, sep, name = str(spec).rpartition(":")
    if not sep or not Path(path).exists():
        raise InputError(f"{spec}: give a fitted shape as WEIGHTS:NAME (WEIGHTS a weight set from `fit`, its folder "
                         "or weights.safetensors; NAME a shape name in it or its index)")
    ws = load_weight_set(path)
    if name in ws.names:
        i = ws.names.index(name)
    elif name.isdigit() and int(name) < len(ws.names):
        i = int(name)
    else:
        raise InputError(f"{path}: no shape {name!r} (it has {len(ws.names)}: {', '.join(ws.names[:5])}, ...)")
    return ws.weights[i], ws.names[i], ws.mlp


def alphas(steps: int) -> list[float]:
    if steps < 2:
        raise InputError(f"--steps must be at least 2 (A and B); got {steps}")
    return [i / (steps - 1) for i in range(steps)]


def linear_path(a: torch.Tensor, b: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """[(1 - w) a + w b for w in weights]: at w = 0 exactly a, at w = 1 exactly b."""
    return torch.stack([(1.0 - w) * a + w * b for w in weights])


def slerp(z0: torch.Tensor, z1: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation of two flat vectors (Shoemake 1985; DDIM App. D.5); linear when parallel."""
    cos = torch.dot(z0.double(), z1.double()) / (z0.double().norm() * z1.double().norm())
    theta = math.acos(float(cos.clamp(-1, 1)))
    if theta < 1e-6:
        return (1 - w) * z0 + w * z1
    return (math.sin((1 - w) * theta) * z0 + math.sin(w * theta) * z1) / math.sin(theta)


def ddim_path(model, diffusion, norm, a: torch.Tensor, b: torch.Tensor, weights: list[float],
              ddim_steps: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert a and b to noise, slerp, decode: ([len(weights), P] weight vectors, the two noises [2, P])."""
    x0 = norm.encode(torch.stack([a, b]).float()).to(device)
    z = diffusion.ddim_invert(model, x0, steps=ddim_steps)
    zs = torch.stack([slerp(z[0], z[1], w) for w in weights])
    x = diffusion.ddim_sample(model, tuple(zs.shape), steps=ddim_steps, noise=zs, device=device)
    return norm.decode(x.float()).cpu(), z.cpu()


def n_components(mesh) -> int:
    """Connected pieces of a mesh (faces joined by shared edges); 0 for no mesh."""
    if mesh is None or len(mesh.faces) == 0:
        return 0
    return len(mesh.split(only_watertight=False))


def _blank(size: int) -> np.ndarray:
    return np.full((size, size, 3), 255, np.uint8)


def interpolate(ckpt: str | Path, a_spec: str, b_spec: str, out_dir: str | Path,
                cfg: InterpolateConfig = InterpolateConfig(), *, progress: bool = True) -> dict[str, Any]:
    """Both walks from A to B (module docstring); returns the summary written to interpolation.json."""
    from hyperdiffusion.diffusion.checkpoint import load_denoiser
    from hyperdiffusion.diffusion.runtime import resolve_device
    from hyperdiffusion.fields.mesh import extract_meshes
    from hyperdiffusion.fields.mesh4d import save_animation
    from hyperdiffusion.fields.mlp import MLPConfig, WeightSet, save_weight_set
    from hyperdiffusion.pictures.render import render_grid, render_mesh

    unknown = set(cfg.methods) - set(METHODS)
    if unknown or not cfg.methods:
        raise InputError(f"--methods: choose from {', '.join(METHODS)}; got {', '.join(cfg.methods)}")
    out = ensure_writable_dir(out_dir)
    (a, name_a, mlp_a), (b, name_b, mlp_b) = read_shape(a_spec), read_shape(b_spec)
    if mlp_a != mlp_b:
        raise InputError(f"{a_spec} and {b_spec} are different MLPs ({mlp_a} vs {mlp_b})")
    ws_ = alphas(cfg.steps)
    summary: dict[str, Any] = {"a": a_spec, "b": b_spec, "alphas": ws_, "config": cfg.to_dict(),
                               "checkpoint": str(ckpt), "methods": {}}
    device = resolve_device(cfg.device)
    rows, titles = [], []
    for method in cfg.methods:
        info: dict[str, Any] = {}
        if method == "linear":
            path = linear_path(a, b, ws_)
        else:
            model, diffusion, norm, meta = load_denoiser(ckpt, use_ema=cfg.use_ema, device=device)
            if MLPConfig.from_dict(meta["representation"]["info"]["mlp"]) != mlp_a:
                raise InputError(f"{ckpt}: trained on another MLP than {a_spec}'s")
            path, z = ddim_path(model, diffusion, norm, a, b, ws_, cfg.ddim_steps, device)
            rel = [float((path[i] - v).norm() / v.norm()) for i, v in ((0, a), (-1, b))]
            info.update({"reconstruction_rel_l2": {"a": rel[0], "b": rel[1]},
                         "noise_norms": [float(v) for v in z.norm(dim=1)], "noise_dim": int(z.shape[1])})
        names = [f"{i:02d}" for i in range(len(ws_))]
        folder = out / method
        save_weight_set(folder / "weights.safetensors", path, names, mlp_a,
                        extra={"stage": "interpolate", "method": method, "alphas": ws_, "a": a_spec, "b": b_spec})
        meshes = extract_meshes(WeightSet(path, names, mlp_a, {}), res=cfg.res, level=cfg.level, device=device,
                                progress=progress)
        (folder / "meshes").mkdir(parents=True, exist_ok=True)
        for n, m in zip(names, meshes):
            if m is not None:
                m.export(folder / "meshes" / f"{n}.ply")
        comps = [n_components(m) for m in meshes]
        inner = comps[1:-1]
        info.update({"components": comps,
                     "single_component_fraction": (sum(c == 1 for c in inner) / len(inner)) if inner else None})
        pictures = [render_mesh(m, size=cfg.size) if m is not None else _blank(cfg.size) for m in meshes]
        labels = [f"{method} {w:.2f} ({c} part{'s' if c != 1 else ''})" for w, c in zip(ws_, comps)]
        render_grid(pictures, folder / "strip.png", ncols=len(pictures), titles=labels, size=cfg.size)
        rows.append(pictures)
        titles += labels
        summary["methods"][method] = info
    render_grid([p for r in rows for p in r], out / "strips.png", ncols=len(ws_), titles=titles, size=cfg.size)
    frames = [np.concatenate([r[i] for r in rows], axis=1) for i in range(len(ws_))]
    save_animation(frames + frames[-2:0:-1], out / "preview.gif", fps=4)  # there and back
    summary.update({"a_name": name_a, "b_name": name_b})
    write_json(out / "interpolation.json", summary)
    return summary


def register(subparsers) -> None:
    p = subparsers.add_parser("interpolate", help="walk between two fitted shapes: weights, and DDIM noise",
                              description="Interpolate between two fitted MLPs A and B (WEIGHTS:NAME) straight in "
                                          "weight space and through DDIM inversion to noise + slerp + decoding. "
                                          "Writes meshes, strip pictures, an animated GIF and interpolation.json.")
    p.add_argument("ckpt", help="diffusion checkpoint trained on such MLPs (training OUT folder or .safetensors)")
    p.add_argument("a", help="first shape: WEIGHTS:NAME (weight set from `fit`; NAME a shape name or index)")
    p.add_argument("b", help="second shape: WEIGHTS:NAME")
    p.add_argument("out", help="output folder")
    d = InterpolateConfig()
    p.add_argument("--steps", type=int, default=d.steps, help="shapes along the path, A and B included")
    p.add_argument("--ddim-steps", type=int, default=d.ddim_steps,
                   help="DDIM steps of the inversion and the decoding (more: a closer round trip)")
    p.add_argument("--methods", default=",".join(d.methods), help="comma list of: " + ", ".join(METHODS))
    p.add_argument("--res", type=int, default=d.res, help="marching-cubes resolution")
    p.add_argument("--level", type=float, default=d.level, help="surface occupancy probability")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default=d.device)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = InterpolateConfig(steps=args.steps, ddim_steps=args.ddim_steps,
                            methods=tuple(m for m in args.methods.split(",") if m), res=args.res, level=args.level,
                            use_ema=not args.no_ema, device=args.device)
    s = interpolate(args.ckpt, args.a, args.b, args.out, cfg, progress=not args.no_progress)
    print(json.dumps({m: {"single_component_fraction": v["single_component_fraction"]}
                      for m, v in s["methods"].items()}))
    return 0

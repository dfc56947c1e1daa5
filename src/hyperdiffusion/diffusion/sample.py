"""The `sample` stage: new samples from a trained diffusion checkpoint, then surfaces (paper Sec. 3.3).

`hyperdiffusion sample CKPT OUT --n 100 --steps 50` rebuilds the model, the diffusion and the
representation from the checkpoint file alone, samples with the EMA weights, and writes

    OUT/batches/batch_XXXX.safetensors   one per batch, written as it finishes (resume unit)
    OUT/weights.safetensors (+ .json)    MLP samples, the format `fit` writes (names sample_0000 ...);
    OUT/samples.safetensors              or, for other representations, their raw samples
    OUT/meshes/, OUT/clouds/, OUT/mesh.json   the surfaces `evaluate` reads (unless --no-mesh)

The paper samples with DDIM, eta = 0, over all 500 steps, in batches of 100,
without clipping (REFERENCE.md, "Sampling and meshes"). Each batch's noise comes
from a generator seeded by (seed, batch index), so a rerun after a crash
recomputes only the unfinished batch and gives the same result as a run that
never stopped.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hyperdiffusion.diffusion.checkpoint import load_denoiser
from hyperdiffusion.diffusion.guidance import sampling_model
from hyperdiffusion.diffusion.runtime import autocast_context, resolve_device, seeded_generator
from hyperdiffusion.io import InputError, ensure_writable_dir, load_safetensors, save_safetensors
from hyperdiffusion.progress import progress as progress_bar
from hyperdiffusion.representations import DecodeOptions, get_representation
from hyperdiffusion.shards import add_shard_argument


@dataclass(frozen=True)
class SampleConfig:
    """Defaults are the paper's test-time sampling (DDIM, eta 0, all steps, batches of 100)."""

    n: int = 100
    sampler: str = "ddim"  # "ddim" or "ddpm"
    steps: int | None = None  # DDIM steps; None = all T (paper)
    eta: float = 0.0
    batch_size: int = 100
    seed: int = 0
    use_ema: bool = True  # the paper has no EMA; --no-ema samples the raw weights
    precision: str = "fp32"
    device: str = "auto"
    mesh: bool = True
    res: int | None = None  # marching-cubes resolution (MLPs); None = the mesh stage's default
    level: float | None = None  # surface occupancy probability; None = the representation's default (0.5)
    level_logit: float | None = None  # MLPs: overrides `level`; the paper's test meshes used 1.386 (p = 0.8) at res 356
    # Class-conditional checkpoints only (diffusion/guidance.py): None = unconditional (the null class)
    class_name: str | None = None
    guidance: float = 1.0  # w in uncond + w (cond - uncond): 0 unconditional, 1 conditional, > 1 guided

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batch_path(out: Path, b: int) -> Path:
    return out / "batches" / f"batch_{b:04d}.safetensors"


def draw(model, diffusion, shape: tuple[int, ...], **kw) -> torch.Tensor:
    """Samples of `shape`: the model's own sampler when it has one (DPC: a latent from its flow prior,
    then the points through `diffusion`), else `diffusion.sample(model, ...)`; `kw` as GaussianDiffusion.sample."""
    own = getattr(model, "sample", None)
    return own(diffusion, shape, **kw) if own is not None else diffusion.sample(model, shape, **kw)


def _sample_batch(model, diffusion, norm, cfg: SampleConfig, b: int, size: int, sample_shape: tuple[int, ...],
                  device: torch.device) -> torch.Tensor:
    # The starting noise (and DDPM/DDIM-eta noise) comes from a CPU generator on CPU; on GPU we seed
    # the device generator, which is reproducible on one machine but not bitwise across machines.
    if device.type == "cpu":
        g = seeded_generator(cfg.seed, 4, b)
    else:
        g = torch.Generator(device=device).manual_seed(int(seeded_generator(cfg.seed, 4, b).initial_seed()))
    with autocast_context(cfg.precision, device):
        x = draw(model, diffusion, (size, *sample_shape), sampler=cfg.sampler, steps=cfg.steps, eta=cfg.eta,
                 generator=g, device=device)
    return norm.decode(x.float()).cpu()


def sample_weights(ckpt: str | Path, out_dir: str | Path, cfg: SampleConfig = SampleConfig(), *,
                   progress: bool = True, shard=None, merge_only: bool = False) -> Path | None:
    """Sample `cfg.n` shapes into the representation's samples file in OUT (resumable by batch); returns its path.

    Sharded (`shard` K/N or torchrun's RANK/WORLD_SIZE, hyperdiffusion.shards): shard K samples batches
    K, K + N, ... Each batch is seeded by its global index, so its samples do not depend on the shard
    layout; the last shard to finish merges (`merge_only`: every batch read back, the samples file and
    surfaces written as an unsharded run writes them). Returns None for a shard that did not merge.
    """
    from hyperdiffusion import shards as sharding

    shard = None if merge_only else sharding.resolve_shard(shard)
    if cfg.n < 1 or cfg.batch_size < 1:
        raise InputError(f"--n and --batch-size must be positive; got {cfg.n} and {cfg.batch_size}")
    out = ensure_writable_dir(out_dir)
    device = resolve_device(cfg.device)
    model, diffusion, norm, meta = load_denoiser(ckpt, use_ema=cfg.use_ema, device=device)
    model = sampling_model(model, meta, cfg.class_name, cfg.guidance)  # as trained, or guided to a class
    rep = get_representation(meta["representation"]["name"])
    sample_shape = tuple(meta["data"]["sample_shape"])
    sizes = [min(cfg.batch_size, cfg.n - s) for s in range(0, cfg.n, cfg.batch_size)]
    batch_meta = {"config": cfg.to_dict(), "checkpoint_step": meta["step"]}
    parts = []
    mine = list(range(len(sizes))) if shard is None else shard.take(range(len(sizes)))
    for b in progress_bar(mine, desc="sample", unit="batch", disable=not progress):
        path = _batch_path(out, b)
        if merge_only and not path.is_file():
            raise InputError(f"{path}: missing; a shard has not finished")
        if path.is_file():
            tensors, bm = load_safetensors(path)
            if bm.get("batch") == {**batch_meta, "size": sizes[b]}:
                parts.append(tensors["weights"])
                continue  # finished before a crash or an earlier run with the same settings
        w = _sample_batch(model, diffusion, norm, cfg, b, sizes[b], sample_shape, device)
        save_safetensors(path, {"weights": w}, {"batch": {**batch_meta, "size": sizes[b]}})
        parts.append(w)
    if shard is not None:
        # The last shard's merge writes the samples file and the surfaces (merge_shards).
        sharding.finish(out, "sample", shard, "sample", {"ckpt": str(ckpt), "config": cfg.to_dict()})
        return None
    weights = torch.cat(parts)
    n_bad = int((~torch.isfinite(weights.flatten(1))).any(dim=1).sum())
    names = [f"sample_{i:04d}" for i in range(cfg.n)]
    return rep.save_samples(out, weights, names, meta["representation"]["info"], extra={
        "stage": "sample", "sample_config": cfg.to_dict(), "checkpoint": str(ckpt),
        "checkpoint_step": meta["step"], "weights_used": meta["weights_used"],
        "representation": rep.name, "denoiser": meta["denoiser"]["name"],
        "train_config": meta["train_config"], "n_non_finite": n_bad})


def decode_options(cfg: SampleConfig) -> DecodeOptions:
    extra = {"level_logit": cfg.level_logit} if cfg.level_logit is not None else {}
    return DecodeOptions(res=cfg.res, level=cfg.level, device=cfg.device, extra=extra)


def mesh_samples(samples_path: Path, out_dir: Path, cfg: SampleConfig, progress: bool = True) -> dict[str, str]:
    """Samples -> OUT/meshes, OUT/clouds, OUT/mesh.json through their representation (recorded in the file)."""
    _, meta = load_safetensors(samples_path, prefixes=())  # the metadata alone: which representation wrote it
    name = (meta.get("samples") or meta.get("extra") or {}).get("representation", "mlp3d")
    return get_representation(name).decode(samples_path, Path(out_dir), decode_options(cfg), progress=progress)


def sample(ckpt: str | Path, out_dir: str | Path, cfg: SampleConfig = SampleConfig(), *, progress: bool = True,
           shard=None, merge_only: bool = False) -> Path | None:
    """The whole stage: samples, then surfaces unless cfg.mesh is False (None for a shard: see sample_weights)."""
    path = sample_weights(ckpt, out_dir, cfg, progress=progress, shard=shard, merge_only=merge_only)
    if cfg.mesh and path is not None:
        mesh_samples(path, Path(out_dir), cfg, progress=progress)
    return path


def merge_shards(out: Path, args: dict[str, Any], count: int) -> Path | None:
    """hyperdiffusion.shards merger: the samples file and surfaces from the batches every shard wrote."""
    return sample(args["ckpt"], out, SampleConfig(**args["config"]), progress=False, merge_only=True)


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="sample new shapes from a trained diffusion checkpoint, then mesh them",
                              description="Sample with the EMA weights (DDIM, eta 0 by default), then turn the samples "
                                          "into meshes and clouds. The checkpoint says what it samples (MLP weights, "
                                          "voxel grids). Rerun the same command to resume after a crash.")
    p.add_argument("ckpt", help="checkpoint: training OUT folder, its checkpoints/ folder, or last.safetensors")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=100, help="number of shapes to sample (default 100)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: all T, as the paper)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic, the paper)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="sample with the raw weights instead of the EMA")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-mesh", action="store_true", help="write weights only")
    p.add_argument("--res", type=int, default=None, help="marching-cubes resolution for MLP samples (default: the mesh stage's)")
    p.add_argument("--level", type=float, default=None,
                   help="surface occupancy probability for marching cubes (default: the mesh stage's, 0.5)")
    p.add_argument("--level-logit", type=float, default=None,
                   help="surface level as a logit, overrides --level (paper test meshes: 1.386 at --res 356)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="class-conditional checkpoints: sample this class (default: unconditional)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance w: uncond + w (cond - uncond); 0 = unconditional, "
                        "1 = conditional, > 1 = pushed further towards the class (default 1)")
    p.add_argument("--no-progress", action="store_true")
    add_shard_argument(p, "batches (surfaces are made by the merge; for parallel meshing use --no-mesh, then "
                          "`mesh --shard`)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = SampleConfig(n=args.n, sampler=args.sampler, steps=args.steps, eta=args.eta, batch_size=args.batch_size,
                       seed=args.seed, use_ema=not args.no_ema, precision=args.precision, device=args.device,
                       mesh=not args.no_mesh, res=args.res, level=args.level, level_logit=args.level_logit,
                       class_name=args.class_name, guidance=args.guidance)
    path = sample(args.ckpt, args.out, cfg, progress=not args.no_progress, shard=args.shard)
    print(json.dumps({"weights": str(path) if path else None, "n": cfg.n}))
    return 0

"""The `train` stage: a diffusion model on any representation's training tensors (paper Sec. 3.2).

`hyperdiffusion train DATA OUT` reads DATA through a representation (representations/):
a weight set written by `fit` for HyperDiffusion (`mlp3d`, the default for weight sets), or a
prepared dataset for a baseline (`--representation voxel`). It writes

    OUT/config.json                     the resolved TrainConfig
    OUT/checkpoints/last.safetensors    weights, EMA, optimiser state; the metadata names the
                                        representation, denoiser and diffusion (diffusion/checkpoint.py)
    OUT/checkpoints/last.json           the same metadata, human-readable
    OUT/metrics.jsonl                   one JSON record per logged step (and TensorBoard
                                        event files when tensorboard is installed)

Paper settings (REFERENCE.md): AdamW (weight decay 0.01), lr 2e-4, StepLR every
200 epochs x 0.9, batch 32, 6000 epochs, fp32, no EMA, no weight normalisation.
We add an EMA of the weights (used for sampling; `--ema-decay 0` turns it off),
bf16 autocast on GPU, and optional per-coordinate standardisation.

Exact resume: all randomness of a step (timesteps, noise) comes from a generator
seeded by (seed, step), and each epoch's data order from one seeded by
(seed, epoch). A run that stops at a checkpoint and resumes therefore takes the
same steps as one that never stopped (bitwise on CPU; tests/test_train.py).

Several GPUs, as DiT: `torchrun --standalone --nproc_per_node N -m hyperdiffusion train DATA OUT ...`.
--batch-size stays the global batch. Every rank draws the whole global step (order, timesteps,
noise) from the same seeded generators and trains on its own slice of it; DDP averages the
gradients, so N processes take the steps of one process up to the order of float sums
(tests/test_ddp.py). Rank 0 alone writes config.json (with "world_size"), logs, validation and
checkpoints; resuming works the same way under torchrun.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from hyperdiffusion.denoisers import count_parameters, get_denoiser
from hyperdiffusion.diffusion.checkpoint import (b64, checkpoint_path, load_optimizer_state, prefixed, read_checkpoint,
                                                 save_checkpoint, unb64, build_from_meta, load_denoiser)
from hyperdiffusion.diffusion.gaussian import BETA_SCHEDULES, DiffusionConfig, GaussianDiffusion
from hyperdiffusion.diffusion.guidance import (DEFAULT_DROP_PROB, check_resume, load_training_data,
                                             with_labels)
from hyperdiffusion.diffusion.runtime import Distributed, autocast_context, distributed, resolve_device, seeded_generator
from hyperdiffusion.diffusion.standardize import Standardizer
from hyperdiffusion.io import InputError, ensure_writable_dir, write_bytes, write_json
from hyperdiffusion.progress import progress as progress_bar
from hyperdiffusion.representations import (REPRESENTATIONS, DecodeOptions, TrainingSet, detect_representation,
                                            get_representation)

# Transformer size settings that override its preset (the other denoisers have presets only).
TRANSFORMER_OVERRIDES = ("n_embd", "n_layer", "n_head", "tokenizer", "chunk_size")


# name -> how the lr changes: what TrainConfig.lr_schedule names.
LR_SCHEDULES = {
    "step": "x lr_gamma every lr_step_epochs epochs (the paper's StepLR)",
    "exponential": "x lr_gamma every epoch (PVD's ExponentialLR)",
    "linear": "constant, then linear to lr_end between optimiser steps lr_decay_start and lr_decay_end (DPC)",
}


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the paper's airplane run (REFERENCE.md); `TRAIN_PRESETS` has the other sizes and the baselines."""

    representation: str = "mlp3d"  # a key of representations.REPRESENTATIONS
    denoiser: str | None = None  # a key of denoisers.DENOISERS; None = the representation's default
    preset: str = "plane"  # the denoiser's size preset (transformer: plane/chair/car/4d/cpu; unet3d: paper/cpu)
    n_embd: int | None = None  # transformer only: None = the preset's; set to override the width ...
    n_layer: int | None = None  # ... depth ...
    n_head: int | None = None  # ... and heads
    tokenizer: str | None = None  # "layers" (paper) or "chunks"
    chunk_size: int | None = None
    # Diffusion (paper: x0 prediction, T = 500, linear betas 1e-4 -> 2e-2, fixed-large variance)
    timesteps: int = 500
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    schedule: str = "linear"
    prediction: str = "x0"
    variance: str = "fixed_large"
    # Optimisation (paper)
    lr: float = 2e-4
    weight_decay: float = 0.01
    batch_size: int = 32
    epochs: int = 6000
    lr_step_epochs: int = 200
    lr_gamma: float = 0.9
    max_steps: int | None = None  # stop after this many optimiser steps instead of `epochs`
    # Optimiser and schedule choices of the baselines; the defaults are the paper's AdamW + StepLR.
    optimizer: str = "adamw"  # "adamw" (paper) or "adam" (PVD, DPC: torch.optim.Adam)
    adam_beta1: float = 0.9  # torch's defaults; PVD uses 0.5
    adam_beta2: float = 0.999
    lr_schedule: str = "step"  # a key of LR_SCHEDULES
    lr_end: float = 1e-4  # "linear" only: the lr reached at lr_decay_end
    lr_decay_start: int = 0  # "linear" only: optimiser steps at which the linear decay starts ...
    lr_decay_end: int = 0  # ... and ends (DPC: 200k -> 400k)
    grad_clip: float = 0.0  # clip the gradients' global L2 norm to this; 0 = no clipping (paper)
    # Additions to the paper
    ema_decay: float = 0.9999  # 0 = no EMA (the paper); sampling then uses the raw weights
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32", "bf16"
    standardize: bool = False  # per-coordinate mean/std of the training set (off as the official code)
    seed: int = 0
    device: str = "auto"
    # Bookkeeping
    log_every: int = 50  # steps
    ckpt_every: int = 1000  # steps; a checkpoint is also written at the end
    val_every_epochs: int = 15  # paper: every 15 epochs; 0 = never
    val_samples: int = 4
    val_ddim_steps: int = 50
    val_res: int = 256
    val_level: float = 0.5  # surface occupancy probability (paper validation: res 256, p = 0.5, logit 0)
    val_reference: str | None = None  # prepared dataset (or clouds folder) that validation samples are scored against
    val_split: str = "val"  # its split, for a prepared dataset
    # Not in the paper: one model over several datasets, one class each (diffusion/guidance.py)
    condition: str | None = None  # None = unconditional (the paper); "class"
    cond_drop_prob: float = DEFAULT_DROP_PROB  # classifier-free guidance: p(null class), Ho & Salimans 2022

    def __post_init__(self) -> None:
        if self.schedule not in BETA_SCHEDULES:
            raise InputError(f"unknown schedule {self.schedule!r}; choose one of {sorted(BETA_SCHEDULES)}")
        if self.optimizer not in ("adamw", "adam"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose adamw or adam")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if self.lr_schedule == "linear" and not 0 <= self.lr_decay_start <= self.lr_decay_end:
            raise InputError(f"lr_schedule linear needs 0 <= lr_decay_start <= lr_decay_end; got "
                             f"{self.lr_decay_start} and {self.lr_decay_end}")
        if not 0.0 < self.val_level < 1.0:
            raise InputError(f"val_level is an occupancy probability in (0, 1); got {self.val_level}")

    @property
    def denoiser_name(self) -> str:
        return self.denoiser or get_representation(self.representation).default_denoiser

    def denoiser_config(self) -> dict[str, Any]:
        """The denoiser's config dict: its size preset plus any overrides (recorded in checkpoints)."""
        overrides = {k: getattr(self, k) for k in TRANSFORMER_OVERRIDES if getattr(self, k) is not None}
        if overrides and self.denoiser_name != "transformer":
            raise InputError(f"{sorted(overrides)} set the transformer's size; the {self.denoiser_name} "
                             "denoiser takes --preset only")
        if overrides.get("tokenizer") == "chunks" and not overrides.get("chunk_size"):
            raise InputError("--tokenizer chunks needs --chunk-size N")
        try:
            return get_denoiser(self.denoiser_name).config(self.preset, **overrides)
        except (ValueError, AssertionError) as e:
            raise InputError(str(e)) from None

    def diffusion_config(self) -> DiffusionConfig:
        return DiffusionConfig(timesteps=self.timesteps, beta_start=self.beta_start, beta_end=self.beta_end,
                               schedule=self.schedule, prediction=self.prediction, variance=self.variance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# Not the paper: a few thousand steps of a small model on a 2-core CPU. A higher lr and a short
# EMA suit a run that is 100x shorter than the paper's.
_CPU = dict(lr=1e-3, batch_size=16, epochs=2000, lr_step_epochs=500, ema_decay=0.995, log_every=20,
            ckpt_every=200, val_every_epochs=0, val_ddim_steps=25, val_res=64)

# DPC's diffusion and optimiser (luost26/diffusion-point-cloud `train_gen.py` defaults).
_DPC = dict(timesteps=100, beta_start=1e-4, beta_end=0.02, schedule="linear", prediction="eps",
            variance="fixed_small", optimizer="adam", lr=2e-3, weight_decay=0.0, lr_schedule="linear",
            lr_end=1e-4, grad_clip=10.0, ema_decay=0.0)

# PVD's diffusion and optimiser (alexzhou907/PVD `train_generation.py` defaults): 1000 steps, linear
# betas 1e-4 -> 0.02, eps prediction, posterior ("fixed small") variance, MSE; Adam 2e-4, betas
# (0.5, 0.999), no weight decay, ExponentialLR 0.998 per epoch, batch 16, no EMA.
_PVD = dict(timesteps=1000, beta_start=1e-4, beta_end=0.02, schedule="linear", prediction="eps",
            variance="fixed_small", optimizer="adam", lr=2e-4, adam_beta1=0.5, adam_beta2=0.999, weight_decay=0.0,
            lr_schedule="exponential", lr_gamma=0.998, batch_size=16, ema_decay=0.0)

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # HyperDiffusion (paper sizes, REFERENCE.md "Weight-space diffusion")
    **{name: TrainConfig(preset=name) for name in ("plane", "chair", "car")},
    # Standardised weights: MLPs fitted from the same first weights differ by small amounts
    # that a short run cannot resolve against unit noise. On 32 built-in chairs, 2000 steps,
    # samples were shapeless blobs without it and recognisable chairs with it (README demo).
    "cpu": TrainConfig(preset="cpu", standardize=True, **_CPU),
    # 4D (REFERENCE.md "4D", train_4d_animals.yaml): n_embd 1440, lr 5e-5, batch 32, no lr scheduler
    # (a StepLR with gamma 1 is the constant lr).
    "4d": TrainConfig(representation="mlp4d", preset="4d", lr=5e-5, lr_gamma=1.0),
    "4d-cpu": TrainConfig(representation="mlp4d", preset="cpu", standardize=True, **_CPU),
    # The voxel baseline (REFERENCE.md "Voxel baseline"): the same diffusion and optimiser as the paper.
    "voxel": TrainConfig(representation="voxel", preset="paper"),
    # A 3D UNet step costs ~20x a CPU transformer step here: a smaller batch (benchmarks/RESULTS.md).
    "voxel-cpu": TrainConfig(representation="voxel", preset="cpu", **{**_CPU, "batch_size": 8}),
    # The 4D voxel baseline: the 16 frames as the UNet's channels, the 4D run's optimiser (REFERENCE.md "4D").
    "voxel4d": TrainConfig(representation="voxel4d", preset="paper", lr=5e-5, lr_gamma=1.0),
    "voxel4d-cpu": TrainConfig(representation="voxel4d", preset="cpu", **{**_CPU, "batch_size": 8}),
    # DPC (REFERENCE.md "PVD and DPC"; denoisers/dpc.py): its own diffusion (100 steps, eps, the
    # posterior variance its sampler uses), Adam 2e-3 held to 200k steps then linear to 1e-4 at 400k,
    # batch 128, gradient norm clipped to 10, no EMA. The authors train with no iteration limit; we
    # stop at 400k, where their lr schedule ends (after it the lr is constant).
    "dpc": TrainConfig(representation="points", denoiser="dpc", preset="paper", **_DPC, batch_size=128,
                       max_steps=400_000, lr_decay_start=200_000, lr_decay_end=400_000),
    # Not the authors': their schedule squeezed into 2000 steps (decay over the second half), batch 16.
    "dpc-cpu": TrainConfig(representation="points", denoiser="dpc", preset="cpu", **_DPC, batch_size=16,
                           max_steps=2000, lr_decay_start=1000, lr_decay_end=2000, log_every=20, ckpt_every=200,
                           val_every_epochs=0),
    "dpc-tiny": TrainConfig(representation="points", denoiser="dpc", preset="tiny", **_DPC, batch_size=4,
                            max_steps=200, lr_decay_start=100, lr_decay_end=200, log_every=20, ckpt_every=100,
                            val_every_epochs=0),
    # PVD (REFERENCE.md "PVD and DPC"; denoisers/pvcnn.py): the authors' 10000 epochs. Airplanes use
    # their "warm0.1" betas 1e-5 -> 0.008 ("pvd-plane").
    "pvd": TrainConfig(representation="points", preset="paper", **_PVD, epochs=10_000, val_every_epochs=0),
    "pvd-plane": TrainConfig(representation="points", preset="paper", **{**_PVD, "beta_start": 1e-5,
                             "beta_end": 0.008, "schedule": "warm0.1"}, epochs=10_000, val_every_epochs=0),
    # Not the authors': the CPU network, 1000 steps at a 5x higher lr (a run ~1000x shorter than theirs).
    "pvd-cpu": TrainConfig(representation="points", preset="cpu", **{**_PVD, "lr": 1e-3}, max_steps=1000,
                           log_every=20, ckpt_every=200, val_every_epochs=0),
    "pvd-tiny": TrainConfig(representation="points", preset="tiny", **{**_PVD, "lr": 1e-3, "batch_size": 4},
                            max_steps=20, log_every=10, ckpt_every=10, val_every_epochs=0),
}

# The preset `train` uses when none is named: the paper's on a GPU, the small one on a CPU. Keyed by
# representation, or by denoiser for one that is not its representation's default (--denoiser dpc).
DEFAULT_PRESETS = {"mlp3d": ("plane", "cpu"), "mlp4d": ("4d", "4d-cpu"), "voxel": ("voxel", "voxel-cpu"),
                   "voxel4d": ("voxel4d", "voxel4d-cpu"), "dpc": ("dpc", "dpc-cpu"),
                   "points": ("pvd", "pvd-cpu")}

# Fields that may change between a run and its resumption: they do not affect the steps taken.
RESUMABLE_CHANGES = {"epochs", "max_steps", "device", "log_every", "ckpt_every",
                     "val_every_epochs", "val_samples", "val_ddim_steps", "val_res", "val_level",
                     "val_reference", "val_split"}


# ----------------------------------------------------------------------------- pieces


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch, reproducible from (seed, epoch) alone."""
    return torch.randperm(n, generator=seeded_generator(seed, 1, epoch))


def step_randomness(seed: int, step: int, batch: int, sample_shape: tuple[int, ...] | int, timesteps: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps (uniform, as the paper) and noise for one step, drawn on CPU so every device agrees."""
    g = seeded_generator(seed, 2, step)
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    t = torch.randint(0, timesteps, (batch,), generator=g)
    return t, torch.randn(batch, *shape, generator=g)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model (DiT's update_ema)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up min(decay, (1 + step) / (10 + step)) (TensorFlow's ExponentialMovingAverage with
    num_updates): early steps follow the model instead of averaging in the random init."""
    return min(decay, (1 + step) / (10 + step))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # The official code: AdamW(self.parameters(), lr) with weight decay on every parameter.
    # PVD and DPC use Adam (weight decay 0 in both).
    opt = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)


def linear_lr_factor(step: int, start: int, end: int, ratio: float) -> float:
    """DPC's `get_linear_scheduler`: 1 until `start`, then linear down to `ratio` (= lr_end / lr) at `end`."""
    if step <= start:
        return 1.0
    if step >= end:
        return ratio
    frac = (step - start) / (end - start)
    return (1 - frac) + frac * ratio


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The lr schedule; "linear" is stepped after every optimiser step, the others after every epoch."""
    if cfg.lr_schedule == "linear":
        start, end, ratio = cfg.lr_decay_start, cfg.lr_decay_end, cfg.lr_end / cfg.lr

        def factor(step: int) -> float:  # a plain function: LambdaLR's state_dict then stays JSON
            return linear_lr_factor(step, start, end, ratio)

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if cfg.lr_schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)


def model_loss(model: torch.nn.Module, diffusion: GaussianDiffusion, x0: torch.Tensor, t: torch.Tensor,
               noise: torch.Tensor) -> torch.Tensor:
    """The denoiser's own loss when it defines one (DPC: diffusion loss + KL terms), else the diffusion's."""
    own = getattr(model, "training_loss", None)
    return own(diffusion, x0, t, noise) if own is not None else diffusion.training_loss(model, x0, t, noise)


class _LossModule(torch.nn.Module):
    """The model and its loss as one forward, so DDP's gradient hooks see the whole step even for a
    denoiser with its own loss (DPC's `training_loss`)."""

    def __init__(self, model: torch.nn.Module, diffusion: GaussianDiffusion):
        super().__init__()
        self.model, self.diffusion = model, diffusion

    def forward(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                net: torch.nn.Module | None = None) -> torch.Tensor:
        """`net`: the model as this step calls it (a wrapper of `self.model`, e.g. class labels attached)."""
        return model_loss(self.model if net is None else net, self.diffusion, x0, t, noise)


def rank_share(dd: Distributed, idx: torch.Tensor, *per_sample: torch.Tensor | None) -> tuple:
    """This rank's contiguous slice of a global step's sample indices `idx` and of each per-sample
    tensor (timesteps, noise, labels; None stays None), then its fraction of the step's samples: a
    DistributedSampler that keeps the one-process order. An epoch's short last batch can leave a rank
    nothing: it then computes one sample at weight 0, so that it still joins the gradient all-reduce."""
    part = torch.tensor_split(torch.arange(len(idx)), dd.world_size)[dd.rank]
    share = len(part) / len(idx)
    if len(part) == 0:
        part = torch.zeros(1, dtype=torch.long)
    return (idx[part], *(None if x is None else x[part] for x in per_sample), share)


def all_reduce_sum(dd: Distributed, value: float, device: torch.device) -> float:
    """The sum of `value` over ranks (`value` itself in one process)."""
    if not dd.active:
        return value
    v = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(v)
    return v.item()


@torch.no_grad()
def check_replicas(dd: Distributed, module: torch.nn.Module, device: torch.device) -> None:
    """Every rank must hold the same weights (and EMA) at the end: compare per-tensor sums across ranks."""
    sums = torch.stack([p.detach().double().sum() for p in module.state_dict().values()]).to(device)
    lo, hi = sums.clone(), sums.clone()
    torch.distributed.all_reduce(lo, torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(hi, torch.distributed.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError(f"rank {dd.rank}: torchrun processes ended with different weights "
                           f"({int((lo != hi).sum())} tensors differ); the run is not consistent")


# ----------------------------------------------------------------------------- logging


class MetricsLog:
    """metrics.jsonl always; TensorBoard scalars too when tensorboard is importable. `enabled=False`
    (torchrun ranks other than 0) writes nothing."""

    def __init__(self, out: Path, resume_step: int, enabled: bool = True):
        self.path = out / "metrics.jsonl"
        self.tb = None
        self.enabled = enabled
        if not enabled:
            return
        if self.path.exists():  # drop records past the checkpoint we resume from: they will be redone
            keep = [ln for ln in self.path.read_text().splitlines() if _record_step(ln) <= resume_step]
            write_bytes(self.path, "".join(ln + "\n" for ln in keep).encode())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)
        except Exception:  # tensorboard is an optional dependency
            pass

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _record_step(line: str) -> float:
    """The step of a metrics.jsonl line; inf for a blank or torn line (a kill mid-write), so it is dropped."""
    try:
        return json.loads(line).get("step", 0) if line.strip() else math.inf
    except json.JSONDecodeError:
        return math.inf


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: torch.nn.Module, diffusion: GaussianDiffusion, norm: Standardizer, tset: TrainingSet,
             cfg: TrainConfig, step: int, device: torch.device) -> dict[str, float]:
    """Sample a few shapes; report distances to the training tensors, how many have a surface, and (with
    `val_reference`) their MMD / COV / 1-NNA under Chamfer against as many seeded reference shapes."""
    g = seeded_generator(cfg.seed, 3, step)
    from hyperdiffusion.diffusion.sample import draw

    x = draw(model, diffusion, (cfg.val_samples, *tset.sample_shape), sampler="ddim", steps=cfg.val_ddim_steps,
             generator=g if device.type == "cpu" else None, device=device)
    x = norm.decode(x.float()).cpu()
    nn_dist = torch.cdist(x.flatten(1), tset.data.flatten(1)).min(dim=1).values
    out = {"val/nn_dist": nn_dist.mean().item(), "val/sample_std": x.std().item()}
    options = DecodeOptions(res=cfg.val_res, level=cfg.val_level, seed=cfg.seed, device=str(device))
    clouds = [c for c in get_representation(cfg.representation).to_clouds(x, tset.info, options) if c is not None]
    out["val/nonempty_fraction"] = len(clouds) / max(len(x), 1)
    if cfg.val_reference and clouds:
        out.update(_score_validation(clouds, cfg))
    return out


def _score_validation(clouds: list, cfg: TrainConfig) -> dict[str, float]:
    import numpy as np

    from hyperdiffusion.evaluation import metrics
    from hyperdiffusion.evaluation.evaluate import load_clouds

    if np.ndim(clouds[0]) == 3:  # 4D: sequences [F, N, 3], frame-aligned distances (docs/4D.md)
        from hyperdiffusion.evaluation.evaluate4d import load_sequence_clouds, normalize_sequences

        ref, _, _ = load_sequence_clouds(cfg.val_reference, cfg.val_split, n_points=2048, seed=cfg.seed)
        norm = normalize_sequences

        def dist(a, b=None):
            return metrics.pairwise_frames(a, b, metrics.pairwise_chamfer)
    else:
        ref, _, _ = load_clouds(cfg.val_reference, cfg.val_split, n_points=2048, seed=cfg.seed)
        norm, dist = metrics.normalize_clouds, metrics.pairwise_chamfer
    keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(ref))[: len(clouds)])  # equal set sizes
    ref = norm(ref[keep], "hd")
    gen = norm(np.stack(clouds[: len(ref)]), "hd")
    scores = metrics.set_metrics(dist(gen), dist(gen, ref), dist(ref))
    return {f"val/{k}_cd": v for k, v in scores.items()}


# ----------------------------------------------------------------------------- training


def train(data: str | Path, out_dir: str | Path, cfg: TrainConfig = TrainConfig(), *,
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a diffusion model on `data` read through `cfg.representation`; returns a summary.

    Rerunning with the same OUT resumes from OUT/checkpoints/last.safetensors. Under torchrun each
    process calls this; they train one model together (module docstring).
    """
    device = resolve_device(cfg.device)
    with distributed(device) as dd:
        if cfg.batch_size % dd.world_size:
            raise InputError(f"--batch-size {cfg.batch_size} is the global batch; it must divide evenly across "
                             f"the {dd.world_size} torchrun processes (use a multiple of {dd.world_size})")
        return _train(data, out_dir, cfg, device, dd, progress=progress and dd.is_main)


def _train(data: str | Path, out_dir: str | Path, cfg: TrainConfig, device: torch.device, dd: Distributed, *,
           progress: bool) -> dict[str, Any]:
    out = ensure_writable_dir(out_dir)
    ckpt_path = out / "checkpoints" / "last.safetensors"
    resume = ckpt_path.is_file()
    ckpt_tensors, ckpt_meta = read_checkpoint(ckpt_path) if resume else ({}, {})
    if resume:
        cfg = _merge_for_resume(TrainConfig.from_dict(ckpt_meta["train_config"]), cfg, ckpt_path)
    rep = get_representation(cfg.representation)
    denoiser_config = cfg.denoiser_config()

    tset, cond = load_training_data(rep, data, cfg.condition, cfg.cond_drop_prob, progress=progress)
    check_resume(cond, ckpt_meta, ckpt_path)
    if cond is not None:  # a class token / class embedding (denoisers/transformer.py, unet3d.py)
        denoiser_config = {**denoiser_config, "num_classes": len(cond.classes)}
    n = len(tset.data)
    bad = int((~torch.isfinite(tset.data.flatten(1))).any(dim=1).sum())
    if bad:  # one NaN row makes every loss NaN: the whole run would be wasted silently
        raise InputError(f"{data}: {bad} of {n} training samples contain NaN or infinite values")
    data_meta = {"path": str(data), "n": n, "sample_shape": list(tset.sample_shape), "layout": tset.layout}
    if resume and (ckpt_meta["data"]["n"] != n or ckpt_meta["representation"]["info"].get("mlp") != tset.info.get("mlp")
                   or list(ckpt_meta["data"]["sample_shape"]) != list(tset.sample_shape)):
        raise InputError(f"{data}: differs from the data the run in {out} was trained on "
                         f"({ckpt_meta['data']['n']} samples of shape {ckpt_meta['data']['sample_shape']}); "
                         "use a new OUT folder")
    if dd.is_main:
        write_json(out / "config.json", {"train_config": cfg.to_dict(), "data": str(data),
                                         "world_size": dd.world_size})
    meta = {"train_config": cfg.to_dict(), "representation": {"name": rep.name, "info": tset.info},
            "denoiser": {"name": cfg.denoiser_name, "config": denoiser_config},
            "diffusion_config": cfg.diffusion_config().to_dict(), "data": data_meta}
    if cond is not None:
        meta["condition"] = cond.to_meta()
    torch.manual_seed(cfg.seed)  # only the init draws from the global generator
    model = build_from_meta(meta).to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    diffusion = GaussianDiffusion(cfg.diffusion_config())
    norm = Standardizer.fit(tset.data) if cfg.standardize else Standardizer()
    step = 0
    if resume:
        model.load_state_dict(prefixed(ckpt_tensors, "model."))
        if ema is not None:
            ema.load_state_dict(prefixed(ckpt_tensors, "ema."))
        load_optimizer_state(opt, ckpt_tensors, ckpt_meta)
        sched.load_state_dict(ckpt_meta["scheduler"])
        torch.set_rng_state(unb64(ckpt_meta["rng"]["torch_cpu"]))
        if cfg.standardize:
            norm = Standardizer(ckpt_tensors["norm.mean"], ckpt_tensors["norm.std"])
        step = int(ckpt_meta["step"])
    del ckpt_tensors
    ddp_loss = None
    if dd.active:
        # Per-rank seed from the global seed (DiT): only draws outside the seeded step generators
        # (dropout) use it; the step's own randomness is the global draw every rank shares.
        torch.manual_seed(seeded_generator(cfg.seed, 5, dd.rank, step).initial_seed())
        ddp_loss = torch.nn.parallel.DistributedDataParallel(
            _LossModule(model, diffusion), device_ids=[device.index] if device.type == "cuda" else None)

    x_all = norm.encode(tset.data).to(device)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    log = MetricsLog(out, step, enabled=dd.is_main)
    meta["n_model_params"] = count_parameters(model)

    def checkpoint() -> None:
        if dd.is_main:
            save_checkpoint(ckpt_path, model=model, ema=ema, opt=opt, norm=norm, meta={
                **meta, "step": step, "epoch": step // steps_per_epoch, "scheduler": sched.state_dict(),
                "rng": {"scheme": "per-step generators seeded by (seed, step); per-epoch order by (seed, epoch)",
                        "torch_cpu": b64(torch.get_rng_state())}})
        dd.barrier()  # no rank runs ahead of a checkpoint that is not on disk yet

    model.train()
    bar = progress_bar(total=total, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    loss_sum, loss_count, t0 = 0.0, 0, time.perf_counter()
    try:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            idx = epoch_order(n, cfg.seed, epoch)[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            t, noise = step_randomness(cfg.seed, step, len(idx), tset.sample_shape, diffusion.num_timesteps)
            labels = None if cond is None else cond.batch_labels(idx, step, cfg.seed)  # classifier-free guidance
            if dd.active:
                idx, t, noise, labels, share = rank_share(dd, idx, t, noise, labels)
            x0 = x_all[idx.to(device)]
            with autocast_context(cfg.precision, device):
                net = with_labels(model, labels)  # the model itself when unconditional
                if ddp_loss is not None:  # the same loss, through DDP's forward so that backward syncs
                    loss = ddp_loss(x0, t.to(device), noise.to(device), net)
                else:
                    loss = model_loss(net, diffusion, x0, t.to(device), noise.to(device))
            opt.zero_grad(set_to_none=True)
            if dd.active:
                # DDP averages gradients over ranks; weighting each rank's mean loss by its share of
                # the global batch makes that average the gradient of the global batch's mean loss.
                (loss * (share * dd.world_size)).backward()
            else:
                loss.backward()
            if cfg.grad_clip > 0:  # DPC: clip_grad_norm_(model.parameters(), 10)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if cfg.lr_schedule == "linear":
                sched.step()  # DPC steps its LambdaLR after every iteration
            if ema is not None:
                update_ema(ema, model, ema_decay_at(step, cfg.ema_decay))
            step += 1
            loss_sum, loss_count = loss_sum + (loss.item() * share if dd.active else loss.item()), loss_count + 1
            bar.update(1)
            epoch_done = step % steps_per_epoch == 0
            if epoch_done and cfg.lr_schedule != "linear":
                sched.step()  # StepLR counts epochs, as Lightning's default interval
            if step % cfg.log_every == 0 or step == total:
                loss_sum = all_reduce_sum(dd, loss_sum, device)  # the global batch's loss (DiT all-reduces it)
                scalars = {"train/loss": loss_sum / loss_count, "lr": opt.param_groups[0]["lr"],
                           "epoch": step / steps_per_epoch, "sec_per_step": (time.perf_counter() - t0) / loss_count}
                log.write(step, scalars)
                bar.set_postfix(loss=f"{scalars['train/loss']:.4g}")
                loss_sum, loss_count, t0 = 0.0, 0, time.perf_counter()
            if (epoch_done and cfg.val_every_epochs > 0 and cfg.val_samples > 0
                    and (step // steps_per_epoch) % cfg.val_every_epochs == 0):
                if dd.is_main:
                    log.write(step, validate(ema or model, diffusion, norm, tset, cfg, step, device))
                    model.train()
                dd.barrier()
            if step % cfg.ckpt_every == 0 or step == total:
                checkpoint()
    finally:
        bar.close()
        log.close()
    if dd.active:
        check_replicas(dd, model, device)
        if ema is not None:
            check_replicas(dd, ema, device)
    return {"step": step, "epochs": step / steps_per_epoch, "checkpoint": str(ckpt_path),
            "representation": rep.name, "denoiser": cfg.denoiser_name, "n_model_params": meta["n_model_params"]}


def _merge_for_resume(saved: TrainConfig, requested: TrainConfig, ckpt: Path) -> TrainConfig:
    """The saved config, with only the fields that do not change the training steps taken from `requested`."""
    differ = [f.name for f in fields(TrainConfig)
              if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(requested, f.name)]
    if differ:
        detail = ", ".join(f"{k}: {getattr(saved, k)!r} -> {getattr(requested, k)!r}" for k in differ)
        raise InputError(f"{ckpt}: cannot resume with changed settings ({detail}); "
                         "use the original options or a new OUT folder")
    return replace(saved, **{k: getattr(requested, k) for k in RESUMABLE_CHANGES})


# ----------------------------------------------------------------------------- CLI

# One line of help per setting; the defaults shown come from the dataclass and the presets themselves.
HELP = {
    "representation": "what a sample is: " + ", ".join(sorted(REPRESENTATIONS)),
    "denoiser": "the network (default: the representation's own)",
    "max_steps": "stop after this many optimiser steps instead of --epochs",
    "ema_decay": "EMA of the weights used for sampling; 0 = none (the paper)",
    "optimizer": "adamw (paper) or adam (PVD, DPC)",
    "lr_schedule": "; ".join(f"{k}: {v}" for k, v in LR_SCHEDULES.items()),
    "grad_clip": "clip the gradient norm to this; 0 = off",
    "precision": "auto (bf16 autocast on CUDA), fp32 or bf16",
    "standardize": "standardise each coordinate with training-set mean/std (undone at sampling)",
    "val_every_epochs": "validate every N epochs; 0 = never",
    "val_level": "validation surface as an occupancy probability",
    "val_reference": "prepared dataset whose split validation samples are scored against",
    "condition": "class: each DATA one class, one class-conditional model (docs/CONDITIONAL.md)",
    "cond_drop_prob": "classifier-free guidance: probability of training on the null class",
}


def _arg_type(f) -> Any:
    """The argparse type of a dataclass field (`int | None` -> int)."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0]


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a diffusion model (HyperDiffusion or a baseline)",
                              description="Train a diffusion model on MLP weights written by `fit` (HyperDiffusion) "
                                          "or on a prepared dataset (--representation voxel). Settings come from "
                                          "--preset; each option below overrides it. Rerun the same command to resume.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", nargs="+", help="weight set from `fit` (folder or weights.safetensors), or a prepared "
                   "dataset; several with --condition class, each one class")
    p.add_argument("out", help="output folder (checkpoints, metrics)")
    presets = ", ".join(f"{k} ({v.representation}, {v.preset})" for k, v in TRAIN_PRESETS.items())
    p.add_argument("--preset", default=None, choices=sorted(TRAIN_PRESETS), metavar="NAME",
                   help=f"{presets}. Default: the representation's paper preset on a GPU, its CPU preset "
                        f"on a CPU ({DEFAULT_PRESETS})")
    paper = TrainConfig()
    for f in fields(TrainConfig):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(paper, f.name)
        if f.type in (bool, "bool"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{HELP.get(f.name, '')} (paper: {default})")
        else:
            p.add_argument(flag, dest=f.name, type=_arg_type(f), default=None, metavar=f.name.upper(),
                           help=f"{HELP.get(f.name, '')} (preset value; paper: {default})".strip())
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _sources(data) -> list[str]:
    return [data] if isinstance(data, (str, Path)) else list(data)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """The preset named (or the default for the representation and device) with the options given; and a
    line saying which preset was used."""
    representation = args.representation or (TRAIN_PRESETS[args.preset].representation if args.preset
                                              else detect_representation(_sources(args.data)[0]))
    name = args.preset
    note = f"preset {name}"
    if name is not None and TRAIN_PRESETS[name].representation != representation:
        fitting = [k for k, v in TRAIN_PRESETS.items() if v.representation == representation]
        raise InputError(f"--preset {name} is for the {TRAIN_PRESETS[name].representation} representation; "
                         f"for {representation} choose one of {', '.join(fitting)}")
    if name is None:
        gpu_preset, cpu_preset = DEFAULT_PRESETS[args.denoiser if args.denoiser in DEFAULT_PRESETS else representation]
        on_gpu = resolve_device(args.device or "auto").type == "cuda"
        name = gpu_preset if on_gpu else cpu_preset
        note = (f"preset {name} (the default on a {'GPU' if on_gpu else 'CPU'}; "
                f"--preset {gpu_preset} is the paper's{'' if on_gpu else ', and needs a GPU'})")
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if f.name != "preset" and getattr(args, f.name, None) is not None}
    overrides["representation"] = representation
    return replace(TRAIN_PRESETS[name], **overrides), note


def _main(args: argparse.Namespace) -> int:
    cfg, note = config_from_args(args)
    print(f"train: {cfg.representation} with the {cfg.denoiser_name} denoiser, {note}")
    data = _sources(args.data)
    summary = train(data[0] if len(data) == 1 else data, args.out, cfg, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0

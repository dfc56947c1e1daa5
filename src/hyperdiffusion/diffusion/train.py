"""Train the weight-space diffusion model on a set of fitted MLPs (paper Sec. 3.2).

`hyperdiffusion train MLPS OUT` reads a weight set written by `fit`
(`mlp.load_weight_set`) and writes

    OUT/config.json                     the resolved TrainConfig
    OUT/checkpoints/last.safetensors    "model.*", "ema.*", "opt.*" (and "norm.*") tensors;
                                        its metadata "checkpoint" holds everything else
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
A checkpoint is one safetensors file, written atomically; no pickle anywhere.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from hyperdiffusion.io import InputError, ensure_writable_dir, load_safetensors, save_safetensors, write_bytes, write_json
from hyperdiffusion.fields.mlp import MLPConfig, load_weight_set
from hyperdiffusion.denoisers.transformer import PAPER_PRESETS, TransformerConfig, WeightTransformer, build_model, count_parameters, preset

CHECKPOINT_FORMAT = "hyperdiffusion-diffusion-checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the paper's airplane run (REFERENCE.md); `TRAIN_PRESETS["cpu"]` is the small demo."""

    preset: str = "plane"  # transformer size, a key of transformer.PAPER_PRESETS
    n_embd: int | None = None  # None = the preset's; set to override the width ...
    n_layer: int | None = None  # ... depth ...
    n_head: int | None = None  # ... and heads
    tokenizer: str = "layers"  # "layers" (paper) or "chunks"
    chunk_size: int | None = None
    # Diffusion (paper: x0 prediction, T = 500, linear betas, fixed-large variance)
    timesteps: int = 500
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
    val_level: float = 0.0  # logit (paper validation: res 256, level 0)
    val_reference: str | None = None  # prepared dataset (or clouds folder) that validation samples are scored against
    val_split: str = "val"  # its split, for a prepared dataset

    def transformer_config(self) -> TransformerConfig:
        sizes = {k: getattr(self, k) for k in ("n_embd", "n_layer", "n_head") if getattr(self, k) is not None}
        return preset(self.preset, tokenizer=self.tokenizer, chunk_size=self.chunk_size, **sizes)

    def diffusion_config(self) -> DiffusionConfig:
        return DiffusionConfig(timesteps=self.timesteps, prediction=self.prediction, variance=self.variance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


TRAIN_PRESETS: dict[str, TrainConfig] = {
    **{name: TrainConfig(preset=name) for name in ("plane", "chair", "car", "4d")},
    # Not the paper: a few thousand steps of a 10 M-parameter model on a 2-core CPU.
    # A higher lr and a short EMA suit a run that is 100x shorter than the paper's.
    # Standardised weights: MLPs fitted from the same first weights differ by small amounts
    # that a short run cannot resolve against unit noise. On 32 built-in chairs, 2000 steps,
    # samples were shapeless blobs without it and recognisable chairs with it (README demo).
    "cpu": TrainConfig(preset="cpu", lr=1e-3, batch_size=16, epochs=2000, lr_step_epochs=500,
                       ema_decay=0.995, standardize=True, log_every=20, ckpt_every=200, val_every_epochs=0,
                       val_ddim_steps=25, val_res=64),
}

# Fields that may change between a run and its resumption: they do not affect the steps taken.
RESUMABLE_CHANGES = {"epochs", "max_steps", "device", "log_every", "ckpt_every",
                     "val_every_epochs", "val_samples", "val_ddim_steps", "val_res", "val_level",
                     "val_reference", "val_split"}


# ----------------------------------------------------------------------------- pieces


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(precision: str, device: torch.device):
    """The one precision switch (nanoGPT): bf16 autocast or nothing; parameters stay fp32."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError(f"precision must be auto, fp32 or bf16; got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose seed is a pure function of `keys` (seed, purpose, step ...)."""
    h = 0
    for k in keys:
        h = (h * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(h)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch, reproducible from (seed, epoch) alone."""
    return torch.randperm(n, generator=seeded_generator(seed, 1, epoch))


def step_randomness(seed: int, step: int, batch: int, dim: int, timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps (uniform, as the paper) and noise for one step, drawn on CPU so every device agrees."""
    g = seeded_generator(seed, 2, step)
    t = torch.randint(0, timesteps, (batch,), generator=g)
    return t, torch.randn(batch, dim, generator=g)


@dataclass
class Standardizer:
    """Per-coordinate standardisation of weight vectors; identity when mean/std are None."""

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def fit(cls, weights: torch.Tensor) -> "Standardizer":
        # A floor on std: coordinates that are (nearly) equal in every training MLP would
        # otherwise be blown up by 1/std.
        std = weights.std(dim=0, unbiased=False) if len(weights) > 1 else torch.ones(weights.shape[1])
        return cls(weights.mean(dim=0), std.clamp_min(1e-4))

    def encode(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.mean is None else (w - self.mean.to(w)) / self.std.to(w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.mean is None else z * self.std.to(z) + self.mean.to(z)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model (DiT's update_ema)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up min(decay, (1 + step) / (10 + step)) (TensorFlow's ExponentialMovingAverage with
    num_updates): early steps follow the model instead of averaging in the random init."""
    return min(decay, (1 + step) / (10 + step))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # The official code: AdamW(self.parameters(), lr) with weight decay on every parameter.
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


# ----------------------------------------------------------------------------- checkpoints


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def save_checkpoint(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module | None, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.StepLR, norm: Standardizer, cfg: TrainConfig, mlp: MLPConfig,
                    step: int, epoch: int, data: dict[str, Any]) -> None:
    """One safetensors file (atomic) holding tensors and, in its metadata, every scalar; a JSON twin beside it."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_sd = opt.state_dict()
    for idx, state in opt_sd["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    if norm.mean is not None:
        tensors["norm.mean"], tensors["norm.std"] = norm.mean, norm.std
    meta = {
        "format": CHECKPOINT_FORMAT, "version": 1, "step": step, "epoch": epoch,
        "train_config": cfg.to_dict(), "model_config": cfg.transformer_config().to_dict(),
        "diffusion_config": cfg.diffusion_config().to_dict(), "mlp": mlp.to_dict(),
        "n_model_params": count_parameters(model), "has_ema": ema is not None,
        "standardize": norm.mean is not None,
        "optimizer": {"param_groups": opt_sd["param_groups"]},
        "scheduler": sched.state_dict(),
        "rng": {"scheme": "per-step generators seeded by (seed, step); per-epoch order by (seed, epoch)",
                "torch_cpu": _b64(torch.get_rng_state())},
        "data": data,
    }
    save_safetensors(path, tensors, {"checkpoint": meta})
    write_json(path.with_suffix(".json"), meta)


def read_checkpoint(path: str | Path, prefixes: tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint; `prefixes` loads only tensors whose names start so.

    `path` may be the .safetensors file, its folder `checkpoints/`, or a training OUT folder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.safetensors" if (path / "last.safetensors").is_file() else path / "checkpoints" / "last.safetensors"
    if prefixes is None:
        tensors, raw = load_safetensors(path)
    else:
        from safetensors import safe_open

        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                raw = {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k == "checkpoint"}
                tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)}
        except Exception as e:
            raise InputError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    meta = raw.get("checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a hyperdiffusion diffusion checkpoint (no 'checkpoint' metadata)")
    return tensors, meta


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in _prefixed(tensors, "opt.").items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = copy.deepcopy(meta["optimizer"]["param_groups"])
    for g in groups:
        g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def load_denoiser(path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
                  ) -> tuple[WeightTransformer, GaussianDiffusion, Standardizer, dict[str, Any]]:
    """Rebuild (model, diffusion, standardizer, metadata) from the checkpoint file alone (for sampling)."""
    tensors, meta = read_checkpoint(path, prefixes=("model.", "ema.", "norm."))
    model = WeightTransformer(TransformerConfig.from_dict(meta["model_config"]), MLPConfig.from_dict(meta["mlp"]))
    source = "ema." if use_ema and meta.get("has_ema") else "model."
    model.load_state_dict(_prefixed(tensors, source))
    norm = Standardizer(tensors.get("norm.mean"), tensors.get("norm.std"))
    meta = {**meta, "weights_used": source.rstrip(".")}
    return model.to(device).eval(), GaussianDiffusion(DiffusionConfig.from_dict(meta["diffusion_config"])), norm, meta


# ----------------------------------------------------------------------------- logging


class MetricsLog:
    """metrics.jsonl always; TensorBoard scalars too when tensorboard is importable."""

    def __init__(self, out: Path, resume_step: int):
        self.path = out / "metrics.jsonl"
        if self.path.exists():  # drop records past the checkpoint we resume from: they will be redone
            keep = [ln for ln in self.path.read_text().splitlines() if _record_step(ln) <= resume_step]
            write_bytes(self.path, "".join(ln + "\n" for ln in keep).encode())
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)
        except Exception:  # tensorboard is an optional dependency
            pass

    def write(self, step: int, scalars: dict[str, float]) -> None:
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
def validate(model: torch.nn.Module, diffusion: GaussianDiffusion, norm: Standardizer, train_weights: torch.Tensor,
             mlp: MLPConfig, cfg: TrainConfig, step: int, device: torch.device) -> dict[str, float]:
    """Sample a few MLPs; report weight-space distances, how many mesh, and (with `val_reference`) their
    MMD / COV / 1-NNA under Chamfer against as many seeded reference shapes (hd normalisation)."""
    from hyperdiffusion.fields.mesh import extract_meshes
    from hyperdiffusion.fields.mlp import WeightSet

    g = seeded_generator(cfg.seed, 3, step)
    x = diffusion.sample(model, (cfg.val_samples, mlp.n_params), sampler="ddim", steps=cfg.val_ddim_steps,
                         generator=g if device.type == "cpu" else None, device=device)
    w = norm.decode(x.float()).cpu()
    nn_dist = torch.cdist(w, train_weights.cpu()).min(dim=1).values
    out = {"val/nn_dist": nn_dist.mean().item(), "val/sample_std": w.std().item()}
    names = [f"val_{i:02d}" for i in range(len(w))]
    meshes = extract_meshes(WeightSet(w, names, mlp, {}), res=cfg.val_res, level_logit=cfg.val_level, device=device)
    meshes = [m for m in meshes if m is not None and len(m.faces) > 0]
    out["val/nonempty_fraction"] = len(meshes) / max(len(names), 1)
    if cfg.val_reference and meshes:
        out.update(_score_validation(meshes, cfg))
    return out


def _score_validation(meshes: list, cfg: TrainConfig) -> dict[str, float]:
    import numpy as np

    from hyperdiffusion.evaluation import metrics
    from hyperdiffusion.evaluation.evaluate import load_clouds
    from hyperdiffusion.fields.mesh import surface_cloud

    ref, _, _ = load_clouds(cfg.val_reference, cfg.val_split, n_points=2048, seed=cfg.seed)
    keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(ref))[: len(meshes)])  # equal set sizes
    ref = metrics.normalize_clouds(ref[keep], "hd")
    gen = metrics.normalize_clouds(np.stack([surface_cloud(m, 2048, cfg.seed) for m in meshes[: len(ref)]]), "hd")
    scores = metrics.set_metrics(metrics.pairwise_chamfer(gen), metrics.pairwise_chamfer(gen, ref),
                                 metrics.pairwise_chamfer(ref))
    return {f"val/{k}_cd": v for k, v in scores.items()}


# ----------------------------------------------------------------------------- training


def train(weights_path: str | Path, out_dir: str | Path, cfg: TrainConfig = TrainConfig(), *,
          progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a weight-space diffusion model; returns a summary dict.

    Rerunning with the same OUT resumes from OUT/checkpoints/last.safetensors.
    """
    out = ensure_writable_dir(out_dir)
    ckpt_path = out / "checkpoints" / "last.safetensors"
    resume = ckpt_path.is_file()
    ckpt_tensors, ckpt_meta = read_checkpoint(ckpt_path) if resume else ({}, {})
    if resume:
        cfg = _merge_for_resume(TrainConfig.from_dict(ckpt_meta["train_config"]), cfg, ckpt_path)
    if cfg.preset not in PAPER_PRESETS:
        raise InputError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PAPER_PRESETS)}")

    ws = load_weight_set(weights_path)
    mlp, train_w = ws.mlp, ws.weights
    n, dim = train_w.shape
    bad = int((~torch.isfinite(train_w)).any(dim=1).sum())
    if bad:  # one NaN row makes every loss NaN: the whole run would be wasted silently
        raise InputError(f"{weights_path}: {bad} of {n} weight vectors contain NaN or infinite values")
    if resume and (ckpt_meta["data"]["n"] != n or MLPConfig.from_dict(ckpt_meta["mlp"]) != mlp):
        raise InputError(f"{weights_path}: differs from the weight set the run in {out} was trained on "
                         f"({ckpt_meta['data']['n']} MLPs, {ckpt_meta['mlp']}); use a new OUT folder")
    write_json(out / "config.json", {"train_config": cfg.to_dict(), "weights": str(weights_path)})

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # only the init draws from the global generator
    model = WeightTransformer(cfg.transformer_config(), mlp).to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    diffusion = GaussianDiffusion(cfg.diffusion_config())
    norm = Standardizer.fit(train_w) if cfg.standardize else Standardizer()
    step = 0
    if resume:
        model.load_state_dict(_prefixed(ckpt_tensors, "model."))
        if ema is not None:
            ema.load_state_dict(_prefixed(ckpt_tensors, "ema."))
        _load_optimizer(opt, ckpt_tensors, ckpt_meta)
        sched.load_state_dict(ckpt_meta["scheduler"])
        torch.set_rng_state(_unb64(ckpt_meta["rng"]["torch_cpu"]))
        if cfg.standardize:
            norm = Standardizer(ckpt_tensors["norm.mean"], ckpt_tensors["norm.std"])
        step = int(ckpt_meta["step"])
    del ckpt_tensors

    data = norm.encode(train_w).to(device)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    log = MetricsLog(out, step)
    data_meta = {"path": str(weights_path), "n": n, "dim": dim}

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, model=model, ema=ema, opt=opt, sched=sched, norm=norm, cfg=cfg, mlp=mlp,
                        step=step, epoch=step // steps_per_epoch, data=data_meta)

    model.train()
    bar = tqdm(total=total, initial=step, desc="train", disable=not progress, dynamic_ncols=True)
    loss_sum, loss_count, t0 = 0.0, 0, time.perf_counter()
    try:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            idx = epoch_order(n, cfg.seed, epoch)[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            t, noise = step_randomness(cfg.seed, step, len(idx), dim, diffusion.num_timesteps)
            x0 = data[idx.to(device)]
            with autocast_context(cfg.precision, device):
                loss = diffusion.training_loss(model, x0, t.to(device), noise.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                update_ema(ema, model, ema_decay_at(step, cfg.ema_decay))
            step += 1
            loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
            bar.update(1)
            epoch_done = step % steps_per_epoch == 0
            if epoch_done:
                sched.step()  # StepLR counts epochs, as Lightning's default interval
            if step % cfg.log_every == 0 or step == total:
                scalars = {"train/loss": loss_sum / loss_count, "lr": opt.param_groups[0]["lr"],
                           "epoch": step / steps_per_epoch, "sec_per_step": (time.perf_counter() - t0) / loss_count}
                log.write(step, scalars)
                bar.set_postfix(loss=f"{scalars['train/loss']:.4g}")
                loss_sum, loss_count, t0 = 0.0, 0, time.perf_counter()
            if (epoch_done and cfg.val_every_epochs > 0 and cfg.val_samples > 0
                    and (step // steps_per_epoch) % cfg.val_every_epochs == 0):
                log.write(step, validate(ema or model, diffusion, norm, train_w, mlp, cfg, step, device))
                model.train()
            if step % cfg.ckpt_every == 0 or step == total:
                checkpoint()
    finally:
        bar.close()
        log.close()
    return {"step": step, "epochs": step / steps_per_epoch, "checkpoint": str(ckpt_path),
            "n_model_params": count_parameters(model)}


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


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the weight-space diffusion transformer",
                              description="Train a diffusion transformer on MLP weights written by `fit`. "
                                          "Defaults are the paper's; rerun the same command to resume.")
    p.add_argument("mlps", help="weight set from `fit` (folder or weights.safetensors)")
    p.add_argument("out", help="output folder (checkpoints, metrics)")
    p.add_argument("--preset", default="plane", choices=sorted(TRAIN_PRESETS),
                   help="paper presets plane/chair/car/4d, or the small 'cpu' demo (default: plane)")
    for name, typ in [("n_embd", int), ("n_layer", int), ("n_head", int), ("tokenizer", str), ("chunk_size", int), ("timesteps", int), ("prediction", str),
                      ("variance", str), ("lr", float), ("weight_decay", float), ("batch_size", int),
                      ("epochs", int), ("lr_step_epochs", int), ("lr_gamma", float), ("max_steps", int),
                      ("ema_decay", float), ("precision", str), ("seed", int), ("device", str),
                      ("log_every", int), ("ckpt_every", int), ("val_every_epochs", int), ("val_samples", int),
                      ("val_ddim_steps", int), ("val_res", int), ("val_level", float), ("val_reference", str),
                      ("val_split", str)]:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                       help=f"override the preset (preset value: see `TrainConfig.{name}`)")
    p.add_argument("--standardize", action="store_true", default=None,
                   help="standardise each weight coordinate with training-set mean/std (undone at sampling)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base = TRAIN_PRESETS[args.preset]
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if f.name != "preset" and getattr(args, f.name, None) is not None}
    if overrides.get("tokenizer") == "chunks" and not overrides.get("chunk_size"):
        raise InputError("--tokenizer chunks needs --chunk-size N")
    return replace(base, **overrides)


def _main(args: argparse.Namespace) -> int:
    summary = train(args.mlps, args.out, config_from_args(args), progress=not args.no_progress)
    print(json.dumps(summary))
    return 0

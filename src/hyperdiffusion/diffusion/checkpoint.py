"""Self-describing diffusion checkpoints: one safetensors file, no pickle (STYLE.md principle 5).

Tensors: "model.*", "ema.*", "opt.<param index>.<state>", and "norm.mean"/"norm.std" when the
training data was standardised. Everything else is JSON in the file's metadata under
"checkpoint" (and in a readable twin, last.json):

    format, version, step, epoch
    representation  {"name": "mlp3d" | "voxel" | ..., "info": what decoding a sample needs}
    denoiser        {"name": a key of denoisers.DENOISERS, "config": its config dict}
    diffusion_config, train_config, data {"path", "n", "sample_shape", "layout"}
    optimizer, scheduler, rng, n_model_params, has_ema, standardize

so `sample CKPT` rebuilds model, diffusion and decoder from the file alone (DiT's checkpoints).
Version 1 files (MLP only: "mlp" and "model_config") are read as version 2.

Beside `last.safetensors` (the full state, for resuming) a run with an EMA also writes
`last.ema.safetensors`: the "ema.*" and "norm.*" tensors and the same metadata without the optimiser,
a quarter of the size (5.6 of 22.5 GB for the 1.41 B-parameter `plane` transformer). `sample` reads
it instead of the full file when both hold the same step. Before writing, the free space is checked.
"""

from __future__ import annotations

import base64
import copy
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from hyperdiffusion.denoisers import build_denoiser
from hyperdiffusion.diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from hyperdiffusion.diffusion.standardize import Standardizer
from hyperdiffusion.io import InputError, load_safetensors, save_safetensors, write_json

CHECKPOINT_FORMAT = "hyperdiffusion-diffusion-checkpoint"
VERSION = 2


def b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def ema_weights_path(path: str | Path) -> Path:
    """The EMA-only weights file that goes with the full checkpoint `path` (last.ema.safetensors)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".ema.safetensors")


def check_free_space(folder: Path, tensors: list[dict[str, torch.Tensor]], what: str) -> None:
    """Fail before a write that cannot fit: an atomic write needs the whole new file beside the old one."""
    need = sum(t.numel() * t.element_size() for group in tensors for t in group.values()) + (1 << 20)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise InputError(f"{folder}: not enough free disk space to write {what}: it needs {need / 1e9:.2f} GB, "
                         f"{free / 1e9:.2f} GB are free (the previous checkpoint is kept); free some space and "
                         "rerun the same command to resume")


def save_checkpoint(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module | None,
                    opt: torch.optim.Optimizer, norm: Standardizer, meta: dict[str, Any]) -> None:
    """Write tensors and `meta` (plus the optimizer's param groups and format fields) atomically, and the
    EMA-only weights file for sampling when there is an EMA."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_sd = opt.state_dict()
    for idx, state in opt_sd["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    if norm.mean is not None:
        tensors["norm.mean"], tensors["norm.std"] = norm.mean, norm.std
    meta = {"format": CHECKPOINT_FORMAT, "version": VERSION, **meta,
            "has_ema": ema is not None, "standardize": norm.mean is not None}
    light = {k: v for k, v in tensors.items() if k.startswith(("ema.", "norm."))} if ema is not None else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(path.parent, [tensors, light], f"the checkpoint {path.name}")
    if light:  # first, so that a full file never has a newer step than its EMA file by a crash in between
        save_safetensors(ema_weights_path(path), light, {"checkpoint": {**meta, "weights_only": "ema"}})
    meta["optimizer"] = {"param_groups": opt_sd["param_groups"]}
    save_safetensors(path, tensors, {"checkpoint": meta})
    write_json(path.with_suffix(".json"), meta)


def checkpoint_path(path: str | Path) -> Path:
    """The .safetensors file, given it, its folder `checkpoints/`, or a training OUT folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.safetensors" if (path / "last.safetensors").is_file() else path / "checkpoints" / "last.safetensors"
    return path


def read_checkpoint(path: str | Path, prefixes: tuple[str, ...] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint; `prefixes` loads only tensors whose names start so."""
    path = checkpoint_path(path)
    tensors, raw = load_safetensors(path, prefixes=prefixes)
    meta = raw.get("checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a hyperdiffusion diffusion checkpoint (no 'checkpoint' metadata)")
    try:
        return tensors, upgrade(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed checkpoint metadata ({type(e).__name__}: {e})") from None


def upgrade(meta: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (MLP weights and the transformer only) in version 2's terms."""
    if meta.get("version", 1) >= 2:
        return meta
    from hyperdiffusion.fields.mlp import MLPConfig

    mlp = MLPConfig.from_dict(meta["mlp"])
    layout = [math.prod(s) for _, s in mlp.tensor_shapes()]
    meta = dict(meta)
    meta["representation"] = {"name": "mlp3d", "info": {"mlp": meta.pop("mlp")}}
    meta["denoiser"] = {"name": "transformer", "config": meta.pop("model_config")}
    meta["data"] = {**meta["data"], "sample_shape": [mlp.n_params], "layout": layout}
    tc = {"representation": "mlp3d", "denoiser": None, **meta["train_config"]}
    if tc.get("tokenizer") == "layers" and tc.get("chunk_size") is None:
        tc["tokenizer"] = None  # the preset's own, as version 2 records it
    tc["val_level"] = 1.0 / (1.0 + math.exp(-float(tc.get("val_level", 0.0))))  # v1: a logit; v2: a probability
    meta["train_config"] = tc
    meta["version"] = VERSION
    return meta


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in prefixed(tensors, "opt.").items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = copy.deepcopy(meta["optimizer"]["param_groups"])
    for g in groups:
        g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def build_from_meta(meta: dict[str, Any]) -> torch.nn.Module:
    """The denoiser a checkpoint describes, freshly initialised (weights are loaded separately)."""
    d = meta["data"]
    return build_denoiser(meta["denoiser"]["name"], meta["denoiser"]["config"], tuple(d["sample_shape"]),
                          d.get("layout"))


def load_denoiser(path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
                  ) -> tuple[torch.nn.Module, GaussianDiffusion, Standardizer, dict[str, Any]]:
    """Rebuild (model, diffusion, standardizer, metadata) from the checkpoint file alone (for sampling).

    `metadata["representation"]` names how samples decode (representations.get_representation).
    """
    path = checkpoint_path(path)
    light = ema_weights_path(path)
    if use_ema and light.is_file() and _step(light) == _step(path):
        path = light  # the same EMA weights without reading past the optimiser state
    tensors, meta = read_checkpoint(path, prefixes=("model.", "ema.", "norm."))
    model = build_from_meta(meta)
    source = "ema." if use_ema and meta.get("has_ema") else "model."
    if not any(k.startswith(source) for k in tensors):
        raise InputError(f"{path}: holds the EMA weights only; sampling the raw weights (--no-ema) needs the "
                         "full checkpoint last.safetensors")
    model.load_state_dict(prefixed(tensors, source))
    norm = Standardizer(tensors.get("norm.mean"), tensors.get("norm.std"))
    meta = {**meta, "weights_used": source.rstrip(".")}
    return model.to(device).eval(), GaussianDiffusion(DiffusionConfig.from_dict(meta["diffusion_config"])), norm, meta


def _step(path: Path) -> int | None:
    """The step a checkpoint file records (its metadata alone is read); None when it is not one."""
    try:
        return read_checkpoint(path, prefixes=())[1].get("step")
    except InputError:
        return None

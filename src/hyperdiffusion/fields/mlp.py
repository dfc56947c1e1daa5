"""The per-shape occupancy MLP of HyperDiffusion (paper Sec. 3.1) and its flat weight layout.

The paper's MLP: NeRF positional encoding with multires 4 (frequencies 1, 2, 4, 8,
no pi, raw input kept: 3 -> 27 inputs), then Linear 27->128, ReLU, 128->128, ReLU,
128->128, ReLU, 128->1. The output is an occupancy logit. 36,737 parameters.

A weight vector is the concatenation of the tensors in PyTorch state-dict order
(layer by layer, weight then bias). The diffusion model sees exactly this vector,
one token per tensor, so the order is part of the file format.

`batched_forward` evaluates many MLPs at once from a [B, P] weight matrix: the
fast path for fitting and meshing thousands of shapes that no library provides.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperdiffusion.io import InputError, load_safetensors, save_safetensors, write_json

WEIGHTS_FORMAT = "hyperdiffusion-weights"
# How frame k of F becomes the MLP's t input (4D only; docs/4D.md). "index": t = k, the
# official code's raw frame index 0..15; "normalised": t = (k + 0.5) / F - 0.5, in (-0.5, 0.5)
# like x, y, z. The default is the one measured better (benchmarks/RESULTS.md, "4D").
T_MODES = ("index", "normalised")
DEFAULT_T_MODE = "normalised"


@dataclass(frozen=True)
class MLPConfig:
    """Defaults are the paper's 3D MLP; `in_dim=4` gives the 4D (x, y, z, t) variant."""

    in_dim: int = 3
    multires: int = 4  # frequencies 2^0 .. 2^(multires-1)
    hidden: int = 128
    n_hidden_layers: int = 3  # hidden Linear layers after the input one: 27->128 then 2 more 128->128
    out_dim: int = 1
    include_input: bool = True
    t_mode: str | None = None  # 4D (in_dim=4) only: T_MODES; None for 3D (and "index" for old 4D files)

    def __post_init__(self):
        if self.t_mode is not None and self.t_mode not in T_MODES:
            raise ValueError(f"t_mode must be one of {T_MODES}, not {self.t_mode!r}")
        if self.in_dim == 4 and self.t_mode is None:
            object.__setattr__(self, "t_mode", "index")  # what a 4D file without the field meant

    @property
    def encoded_dim(self) -> int:
        return self.in_dim * (int(self.include_input) + 2 * self.multires)

    def layer_dims(self) -> list[tuple[int, int]]:
        """(in, out) for each Linear layer in order."""
        dims = [self.encoded_dim] + [self.hidden] * self.n_hidden_layers + [self.out_dim]
        return list(zip(dims[:-1], dims[1:]))

    def tensor_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """State-dict names and shapes in the canonical flat order."""
        shapes = []
        for i, (fan_in, fan_out) in enumerate(self.layer_dims()):
            shapes.append((f"layers.{i}.weight", (fan_out, fan_in)))
            shapes.append((f"layers.{i}.bias", (fan_out,)))
        return shapes

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for _, s in self.tensor_shapes())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["t_mode"] is None:  # 3D configs keep the fields they always had
            del d["t_mode"]
        return d

    def frame_times(self, n_frames: int = 16) -> torch.Tensor:
        """The t input of frames 0..n_frames-1 (4D MLPs): float32 [n_frames]."""
        if self.in_dim != 4:
            raise ValueError("frame_times is for 4D MLPs (in_dim=4)")
        k = torch.arange(n_frames, dtype=torch.float32)
        return k if self.t_mode == "index" else (k + 0.5) / n_frames - 0.5

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MLPConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def mlp4d(t_mode: str = DEFAULT_T_MODE, **kw: Any) -> MLPConfig:
    """The paper's 4D MLP: (x, y, z, t), multires 4 on all four -> 36 inputs, 3 x 128, 37,889 parameters."""
    return MLPConfig(in_dim=4, t_mode=t_mode, **kw)


def positional_encoding(x: torch.Tensor, multires: int, include_input: bool = True) -> torch.Tensor:
    """NeRF encoding as in the official code: [x, sin(x), cos(x), sin(2x), cos(2x), ...] (no pi)."""
    parts = [x] if include_input else []
    for i in range(multires):
        f = 2.0**i
        parts += [torch.sin(x * f), torch.cos(x * f)]
    return torch.cat(parts, dim=-1)


def split_weights(weights: torch.Tensor, cfg: MLPConfig) -> list[torch.Tensor]:
    """[..., P] flat vectors -> list of tensors shaped [..., *tensor_shape] (views, no copy)."""
    if weights.shape[-1] != cfg.n_params:
        raise ValueError(f"weight vectors have {weights.shape[-1]} entries; this MLP needs {cfg.n_params}")
    out, start = [], 0
    lead = weights.shape[:-1]
    for _, shape in cfg.tensor_shapes():
        n = math.prod(shape)
        out.append(weights[..., start : start + n].reshape(*lead, *shape))
        start += n
    return out


def flatten_weights(tensors: list[torch.Tensor], cfg: MLPConfig) -> torch.Tensor:
    """Inverse of `split_weights`: tensors shaped [..., *tensor_shape] -> [..., P]."""
    shapes = [s for _, s in cfg.tensor_shapes()]
    lead = tensors[0].shape[: tensors[0].dim() - len(shapes[0])]
    return torch.cat([t.reshape(*lead, -1) for t in tensors], dim=-1)


def batched_forward(weights: torch.Tensor, x: torch.Tensor, cfg: MLPConfig) -> torch.Tensor:
    """Logits of B MLPs at their own points: weights [B, P], x [B, n, in_dim] -> [B, n].

    One baddbmm per layer evaluates all B MLPs together.
    """
    tensors = split_weights(weights, cfg)
    h = positional_encoding(x, cfg.multires, cfg.include_input)
    n_layers = len(tensors) // 2
    for i in range(n_layers):
        w, b = tensors[2 * i], tensors[2 * i + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if i < n_layers - 1:
            h = torch.relu(h)
    return h.squeeze(-1) if cfg.out_dim == 1 else h


@torch.no_grad()
def logits_at(weights: torch.Tensor, points: torch.Tensor, cfg: MLPConfig, device: str | torch.device = "cpu",
              chunk: int = 65536) -> torch.Tensor:
    """Logits of one MLP (weights [P]) at many points [n, in_dim], `chunk` points at a time: [n] on the CPU."""
    w = weights.to(device).unsqueeze(0)
    if len(points) == 0:
        return torch.zeros(0)
    return torch.cat([batched_forward(w, points[i:i + chunk].to(device).unsqueeze(0), cfg)[0].cpu()
                      for i in range(0, len(points), chunk)])


def default_init(cfg: MLPConfig, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, P] vectors drawn as nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    parts = []
    for fan_in, fan_out in cfg.layer_dims():
        bound = 1.0 / math.sqrt(fan_in)
        for numel in (fan_out * fan_in, fan_out):
            parts.append((torch.rand(n, numel, generator=generator) * 2 - 1) * bound)
    return torch.cat(parts, dim=1)


class OccupancyMLP(nn.Module):
    """One MLP as an nn.Module, for users who want a plain state dict."""

    def __init__(self, cfg: MLPConfig = MLPConfig()):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in cfg.layer_dims())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = positional_encoding(x, self.cfg.multires, self.cfg.include_input)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def to_vector(self) -> torch.Tensor:
        return torch.cat([t.detach().reshape(-1) for t in self.state_dict().values()])

    @classmethod
    def from_vector(cls, vector: torch.Tensor, cfg: MLPConfig = MLPConfig()) -> "OccupancyMLP":
        module = cls(cfg)
        names = [n for n, _ in cfg.tensor_shapes()]
        module.load_state_dict(dict(zip(names, split_weights(vector.detach().float(), cfg))))
        return module


# ----------------------------------------------------------------------------- weight-set files


@dataclass
class WeightSet:
    weights: torch.Tensor  # [N, P] float32
    names: list[str]
    mlp: MLPConfig
    meta: dict[str, Any]


def save_weight_set(path: str | Path, weights: torch.Tensor, names: list[str], cfg: MLPConfig,
                    extra: dict[str, Any] | None = None) -> None:
    """weights.safetensors (+ a JSON twin beside it) in the format every stage reads."""
    path = Path(path)
    if weights.shape != (len(names), cfg.n_params):
        raise ValueError(f"weights {tuple(weights.shape)} do not match {len(names)} names x {cfg.n_params} params")
    meta = {"format": WEIGHTS_FORMAT, "names": list(names), "mlp": cfg.to_dict(),
            "tensor_shapes": [[n, list(s)] for n, s in cfg.tensor_shapes()]}
    if extra:
        meta["extra"] = extra
    save_safetensors(path, {"weights": weights.float()}, meta)
    write_json(path.with_suffix(".json"), meta)


def load_weight_set(path: str | Path) -> WeightSet:
    """Read a weight set written by `fit` or `sample`, checking it against its own MLP config."""
    path = Path(path)
    if path.is_dir():
        path = path / "weights.safetensors"
    tensors, meta = load_safetensors(path)
    if meta.get("format") != WEIGHTS_FORMAT or "weights" not in tensors:
        raise InputError(f"{path}: not a hyperdiffusion weight set (no 'weights' tensor / format tag)")
    try:
        cfg = MLPConfig.from_dict(meta["mlp"])
        names = list(meta["names"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: weight-set metadata is missing {e}") from None
    w = tensors["weights"]
    if w.dim() != 2 or w.shape[1] != cfg.n_params or w.shape[0] != len(names):
        raise InputError(f"{path}: weights of shape {tuple(w.shape)} do not match the recorded MLP "
                         f"({cfg.n_params} params) and {len(names)} names")
    return WeightSet(w.float(), names, cfg, meta)


def config_json(cfg: MLPConfig) -> str:
    return json.dumps(cfg.to_dict())

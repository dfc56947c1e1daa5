"""A 3D UNet over voxel grids: the denoiser of the paper's voxel baseline (Sec. 5, Tab. 1 "Voxel").

The official code builds latent-diffusion's `openaimodel.UNetModel` (the guided-diffusion
UNet, Dhariwal & Nichol 2021, arXiv 2105.05233) with `dims: 3`, `model_channels: 32`,
`channel_mult: [1, 2, 4]`, `num_res_blocks: 2`, `attention_resolutions: [8, 4, 2]`,
`num_head_channels: 32` on 24^3 grids (REFERENCE.md "Voxel baseline"; `train_chair.yaml` in
the official repository). This module follows guided-diffusion's `unet.py` layer by layer:

* timestep: sinusoidal embedding of t (`model_channels` wide, [cos, sin]) -> Linear -> SiLU ->
  Linear to 4 x model_channels;
* ResBlock: GroupNorm -> SiLU -> conv3d, plus Linear(SiLU(emb)) added per channel, then
  GroupNorm -> SiLU -> dropout -> zero-initialised conv3d, and a 1x1x1 conv on the skip when
  the width changes;
* AttentionBlock: GroupNorm, one 1x1 qkv projection, multi-head attention over all voxels
  with `num_head_channels` per head, zero-initialised output projection, residual;
* Downsample: conv3d with stride 2; Upsample: nearest x2, then conv3d;
* encoder (num_res_blocks per level, Downsample between levels), middle Res-Attn-Res,
  decoder (num_res_blocks + 1 per level, each concatenating one encoder skip, Upsample
  between levels), GroupNorm -> SiLU -> zero-initialised conv3d to the output.

`attention_resolutions` are *downsampling factors* ds, as in guided-diffusion (there
`attention_resolutions="32,16,8"` at image size 256 becomes ds = 256 // 32, ...; the official
voxel config passes the ds values 8, 4, 2 directly). With channel_mult (1, 2, 4) on 24^3 the
three levels have ds 1, 2, 4 (24^3, 12^3, 6^3): attention runs at ds 2 and 4 and in the
middle block (ds 8 never occurs). The zero-initialised output makes the untrained network
output 0, so an x0-predicting diffusion starts from the mean of +-1 grids.

Differences from the official model, on purpose:
* latent-diffusion's `dims=3` is its video convention: Downsample strides (1, 2, 2) and
  Upsample doubles only the last two axes, so the official 24^3 grid went 24x24x24 ->
  24x12x12 -> 24x6x6. A shape has no time axis, so by default we halve all three axes
  (24^3 -> 12^3 -> 6^3). `downsample_depth=False` reproduces the official strides.
* GroupNorm uses gcd(32, channels) groups, i.e. guided-diffusion's 32 groups at every width
  of the paper preset; the gcd only matters for narrow debugging presets (16 channels).
* Grid sizes need not be divisible by 2^(levels - 1): Upsample resizes to the size of the
  encoder skip it is concatenated with, so odd sizes (e.g. 25 -> 13 -> 7) work too.

The 4D variant (paper Sec. 5, 4D voxel baseline) stacks the 16 frames as channels:
in_channels = out_channels = 16.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNet3DConfig:
    """Defaults are the paper's voxel baseline (official `unet_config`, REFERENCE.md)."""

    in_channels: int = 1  # 1 for a 3D grid; 16 for the 4D variant (frames as channels)
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8, 4, 2)  # downsampling factors ds (see module docstring)
    num_head_channels: int = 32
    dropout: float = 0.0
    downsample_depth: bool = True  # False: the official ldm dims=3 strides (1, 2, 2)
    # Not in the paper: > 0 adds guided-diffusion's `label_emb` (num_classes + 1 entries, the last the null
    # class of classifier-free guidance; diffusion/guidance.py), added to the timestep embedding.
    num_classes: int = 0

    def __post_init__(self) -> None:
        # Lists from JSON become tuples, so a config read back from a checkpoint compares equal.
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions))
        assert self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}"
        assert self.model_channels >= 1 and self.num_res_blocks >= 1, "model_channels and num_res_blocks must be >= 1"
        assert len(self.channel_mult) >= 1 and min(self.channel_mult) >= 1, "channel_mult must be positive integers"
        assert 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"
        for ds, ch in self.attention_widths().items():
            assert ch % self.num_head_channels == 0, (
                f"attention at ds {ds} has {ch} channels, not a multiple of num_head_channels="
                f"{self.num_head_channels}; change num_head_channels or model_channels")

    @property
    def out_channels(self) -> int:
        return self.in_channels  # the network predicts a grid like its input (x0, eps or v)

    def attention_widths(self) -> dict[int, int]:
        """Downsampling factor -> channel width of every place that has attention (the middle included)."""
        widths = {2 ** level: self.model_channels * mult for level, mult in enumerate(self.channel_mult)
                  if 2 ** level in self.attention_resolutions}
        widths[2 ** (len(self.channel_mult) - 1)] = self.model_channels * self.channel_mult[-1]  # middle block
        return widths

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mult"], d["attention_resolutions"] = list(self.channel_mult), list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNet3DConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


UNET_PRESETS: dict[str, UNet3DConfig] = {
    "paper": UNet3DConfig(),
    # Not from the paper: small enough to train in tests and CPU demos (benchmarks/RESULTS.md,
    # "3D UNet"): a quarter of the width, one block per level, attention only at 6^3 and the
    # middle; 0.45 M parameters, ~1.2 CPU-seconds per batch-8 step (the 16-wide variant: 3.3 s).
    "cpu": UNet3DConfig(model_channels=8, num_res_blocks=1, attention_resolutions=(4,), num_head_channels=8),
}


def preset(name: str, **overrides: Any) -> UNet3DConfig:
    if name not in UNET_PRESETS:
        raise ValueError(f"unknown UNet preset {name!r}; choose one of {sorted(UNET_PRESETS)}")
    return replace(UNET_PRESETS[name], **overrides)


# --------------------------------------------------------------------------- layers


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of integer timesteps [B] (guided-diffusion `nn.timestep_embedding`):
    [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / half), i < half = dim // 2."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.reshape(-1, 1).float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def norm(channels: int) -> nn.GroupNorm:
    """guided-diffusion's GroupNorm32 (32 groups); gcd keeps narrow widths valid."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero(module: nn.Module) -> nn.Module:
    """Zero the parameters: the block starts as the identity (residual) or outputs 0 (last conv)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Two 3x3x3 convolutions with the timestep embedding added in between (guided-diffusion ResBlock,
    use_scale_shift_norm=False as in the official config)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv3d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        zero(nn.Conv3d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv3d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None, None].to(h.dtype)
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Self-attention over all voxels, `channels // head_channels` heads (guided-diffusion AttentionBlock)."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))  # [B, 3C, N]
        # [B, 3C, N] -> 3 x [B, heads, N, head_channels], channels laid out head by head, then
        # q, k, v within a head (guided-diffusion's QKVAttentionLegacy, which the official model
        # uses). softmax(q k^T / sqrt(d)) equals its two 1/d^(1/4) scalings.
        q, k, v = qkv.reshape(b, self.heads, 3, c // self.heads, -1).transpose(-1, -2).unbind(2)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, d]
        h = h.transpose(-1, -2).reshape(b, c, -1)
        return x + self.proj_out(h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels: int, depth: bool):
        super().__init__()
        self.op = nn.Conv3d(channels, channels, 3, stride=(2 if depth else 1, 2, 2), padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to the size of the skip it meets, then a 3x3x3 convolution.

    Resizing to the skip's size instead of x2 keeps odd grid sizes working: stride 2 maps n to
    ceil(n / 2), and x2 would give n + 1.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class Block(nn.ModuleList):
    """guided-diffusion's TimestepEmbedSequential: layers applied in order, each given what it needs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, size: tuple[int, ...] | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x


# --------------------------------------------------------------------------- the network


class UNet3D(nn.Module):
    """`forward(x [B, C, D, H, W], t [B] integer timesteps) -> [B, C, D, H, W]`."""

    def __init__(self, cfg: UNet3DConfig = UNet3DConfig()):
        super().__init__()
        self.cfg = cfg
        mc, emb_ch = cfg.model_channels, 4 * cfg.model_channels
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))

        def res(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, emb_ch, c_out, cfg.dropout)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, cfg.num_head_channels)

        # Encoder. `skips` records the width of every output the decoder will concatenate.
        ch = mc
        self.input_blocks = nn.ModuleList([Block([nn.Conv3d(cfg.in_channels, ch, 3, padding=1)])])
        skips, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(Block(layers))
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Block([Downsample(ch, cfg.downsample_depth)]))
                skips.append(ch)
                ds *= 2

        self.middle_block = Block([res(ch, ch), attn(ch), res(ch, ch)])

        # Decoder: num_res_blocks + 1 blocks per level, so every encoder output is used once.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Block(layers))

        self.out = nn.Sequential(norm(ch), nn.SiLU(), zero(nn.Conv3d(ch, cfg.out_channels, 3, padding=1)))
        if cfg.num_classes > 0:  # created last, so an unconditional model's initialisation is unchanged
            self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_ch)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """y: class indices [B]; None or num_classes = the null class (unconditional)."""
        assert x.dim() == 5 and x.shape[1] == self.cfg.in_channels, (
            f"expected a batch of grids [B, {self.cfg.in_channels}, D, H, W], got {tuple(x.shape)}")
        emb = self.time_embed(timestep_embedding(t.to(x.device).expand(x.shape[0]), self.cfg.model_channels))
        if self.cfg.num_classes > 0:
            if y is None:
                y = torch.full((x.shape[0],), self.cfg.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y.to(x.device)).to(emb.dtype)
        else:
            assert y is None, "this model has no classes (num_classes 0); train with --condition class"
        h, hs = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            # An Upsample at the end of this block resizes to the skip the next block takes.
            h = block(h, emb, size=hs[-1].shape[2:] if hs else None)
        return self.out(h)


def build(config: dict[str, Any], sample_shape: tuple[int, ...]) -> UNet3D:
    """The denoiser registry's builder: a UNet3D for samples of shape (C, D, H, W).

    `config` holds UNet3DConfig fields (missing ones take the paper's values); in_channels is
    taken from the data (sample_shape[0]), so one config serves 3D (C=1) and 4D (C=16) grids.
    """
    if len(sample_shape) != 4:
        raise ValueError(f"a 3D UNet needs samples shaped (C, D, H, W); got {tuple(sample_shape)}")
    cfg = UNet3DConfig.from_dict({**dict(config), "in_channels": int(sample_shape[0])})
    return UNet3D(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

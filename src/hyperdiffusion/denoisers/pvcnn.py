"""PVCNN2: the point-voxel denoiser of PVD (Zhou, Du & Wu, ICCV 2021), the paper's PVD baseline (Table 1).

Layer by layer as PVD's `PVCNN2` (model/pvcnn_generation.py in alexzhou907/PVD), written from
that description with the point operations of `point_ops.py` in plain torch:

* time: 64-d sinusoidal embedding ([sin, cos], frequencies 10000^(-i / (half - 1))) ->
  Linear -> LeakyReLU(0.1) -> Linear; the embedding is concatenated to the features entering
  every stage after the first (broadcast over the points: PVD groups and max-pools it along with
  the features, which leaves the per-cloud vector unchanged);
* PVConv (point-voxel convolution): average-voxelise the features at resolution r, then
  Conv3d -> GroupNorm(8) -> Swish -> Dropout -> Conv3d -> GroupNorm(8) -> Swish (or voxel
  self-attention) -> squeeze-excitation, devoxelise trilinearly, add a point branch
  (Conv1d -> GroupNorm -> Swish);
* set abstraction (SA): farthest-point sampling to 1024/256/64/16 centres, ball query with radii
  0.1/0.2/0.4/0.8 and K = 32 (relative neighbour coordinates concatenated), a shared MLP and a
  max over the neighbours. Stage i runs PVConvs at voxel resolution 32/16/8 (none at stage 4)
  before its SA;
* global self-attention on the 512 channels of the 16 centres;
* feature propagation (FP): three-NN inverse-distance interpolation back to the previous level,
  concatenated with that level's skip features and the time embedding, a shared MLP, then
  PVConvs at resolution 8/8/16/32;
* head: Conv1d 64 -> 128, GroupNorm, Swish, Dropout(0.1), Conv1d 128 -> 3.

Two details of the authors' builder are reproduced because the parameter count (27.6 M at the
paper preset) depends on them: after the first stage, only the *first* PVConv of an SA stage is
built (the config lists 3 per stage; the builder's `elif k == 0` skips the rest), and the FP
PVConvs never get attention (the test `c < len(fp_blocks) - 1` reads the list being built).
Voxel attention is therefore only in SA stage 2 (16^3), and attention logits are not scaled by
1/sqrt(C) (the authors' scaling is commented out).

Our interface: `model(x_t [B, N, 3], t [B]) -> eps [B, N, 3]` (PVD transposes to [B, 3, N]).
PVD diffuses clouds of unit global std; ours are diffused as `data_scale` (5) times the dataset's
normalised coordinates, which puts them near that scale: `training_loss` and `sample` apply and
undo it (docs/BASELINES.md, "Data scale").

What the network cannot see: a cloud's mean and overall scale. Voxelisation centres and rescales
each cloud (PVD's modules/voxelization.py, `normalize=True` as the generation model builds it), and
every convolution is followed by GroupNorm, whose statistics run over the points (PVD's
modules/shared_mlp.py, modules/pvconv.py); the coordinates reach only the first stage, and the
last FP stage gets no raw features (model/pvcnn_generation.py, `in_features_list[0]`, with
extra_feature_channels = 0 in train_generation.py). At 1/4 width or less the first layers have
8 channels or fewer, one per GroupNorm group, which removes a positive scale exactly (a trained
`pvd-cpu` checkpoint's eps moved by 0.0004 where eps = x_t needs 0.1); at PVD's width (4 channels
per group), nearly. Its eps then misses the part that follows x_t's own mean and scale, which
DDIM divides by sqrt(abar_t) (1/160 at t = 999): sampled clouds drift 10-30x too wide. `input_skip`
adds that part back (g(t) x_t); it is on in our cpu and tiny presets, off in the paper preset
(benchmarks/RESULTS.md, "PVD diagnosis").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hyperdiffusion.denoisers import point_ops as P

# (PVConv out channels, PVConvs listed, voxel resolution) or None; (centres, radius, K, SA MLP widths)
SA_BLOCKS = (
    ((32, 2, 32), (1024, 0.1, 32, (32, 64))),
    ((64, 3, 16), (256, 0.2, 32, (64, 128))),
    ((128, 3, 8), (64, 0.4, 32, (128, 256))),
    (None, (16, 0.8, 32, (256, 256, 512))),
)
# (FP MLP widths), (PVConv out channels, PVConvs, voxel resolution)
FP_BLOCKS = (
    ((256, 256), (256, 3, 8)),
    ((256, 256), (256, 3, 8)),
    ((256, 128), (128, 2, 16)),
    ((128, 128, 64), (64, 2, 32)),
)


@dataclass(frozen=True)
class PVCNNConfig:
    """Defaults are PVD's generation model: PVCNN2(num_classes=3, embed_dim=64, use_att=True,
    dropout=0.1, extra_feature_channels=0, width_multiplier=1, voxel_resolution_multiplier=1)."""

    embed_dim: int = 64
    dropout: float = 0.1
    use_attention: bool = True
    width_multiplier: float = 1.0  # scales every channel width (PVD's `width_multiplier`)
    voxel_resolution_multiplier: float = 1.0  # scales the 32/16/8 grids (PVD's `voxel_resolution_multiplier`)
    center_multiplier: float = 1.0  # scales the 1024/256/64/16 SA centres (ours; 1 = PVD)
    num_neighbors: int = 32  # K of every ball query
    # Clouds are diffused as data_scale * x. PVD diffuses ShapeNet clouds standardised to unit global
    # std; ours come in the dataset's normalised coordinates (max |coordinate| 0.475, global std
    # about 0.18 on built-in chairs), so 5 puts them near PVD's scale. 1 = diffuse the raw coordinates.
    data_scale: float = 5.0
    # Not PVD's: eps = head(...) + g(t) * x_t, g a per-axis gain read from the time embedding, 1 at init.
    # PVD's network cannot see a cloud's mean or scale (GroupNorm over the points after every layer,
    # per-cloud voxel normalisation; see `PVCNN2`), so its eps misses the part that follows x_t. That
    # part is tiny in training (x_t's scale is fixed by t) but amplified by 1 / sqrt(abar_t) when
    # sampling: without it, DDIM samples of short runs are clouds 10-30x too wide (benchmarks/RESULTS.md,
    # "PVD diagnosis"). Off in the paper preset (the authors' network); on in ours.
    input_skip: bool = False

    def __post_init__(self) -> None:
        assert self.embed_dim >= 2, f"embed_dim must be >= 2, got {self.embed_dim}"
        assert 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"
        assert self.width_multiplier > 0 and self.voxel_resolution_multiplier > 0 and self.center_multiplier > 0, \
            "multipliers must be positive"
        assert self.num_neighbors >= 1, "num_neighbors must be >= 1"
        assert self.data_scale > 0, f"data_scale must be positive, got {self.data_scale}"
        assert int(self.voxel_resolution_multiplier * 8) >= 1, "voxel_resolution_multiplier makes a grid empty"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PVCNNConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


PVCNN_PRESETS: dict[str, PVCNNConfig] = {
    "paper": PVCNNConfig(),
    # Not from PVD: a quarter of the widths, half the grid sizes (16/8/4), a quarter of the SA
    # centres (256/64/16/4) and K = 16, so that a compare run trains in tens of minutes on 2 CPU
    # cores (benchmarks/RESULTS.md, "PVD"). Centres and ball queries dominate the time on a CPU.
    # With `input_skip`: without it, 500 steps gave clouds 10x too wide (benchmarks/RESULTS.md, "PVD diagnosis").
    "cpu": PVCNNConfig(width_multiplier=0.25, voxel_resolution_multiplier=0.5, center_multiplier=0.25,
                       num_neighbors=16, input_skip=True),
    # Seconds in tests: the same topology at 1/8 width, 8/4/2 grids, a quarter of the centres.
    "tiny": PVCNNConfig(embed_dim=16, width_multiplier=0.125, voxel_resolution_multiplier=0.25,
                        center_multiplier=0.25, num_neighbors=8, input_skip=True),
}


def preset(name: str, **overrides: Any) -> PVCNNConfig:
    if name not in PVCNN_PRESETS:
        raise ValueError(f"unknown PVCNN preset {name!r}; choose one of {sorted(PVCNN_PRESETS)}")
    return replace(PVCNN_PRESETS[name], **overrides)


# --------------------------------------------------------------------------- layers


def group_norm(channels: int) -> nn.GroupNorm:
    """PVD's GroupNorm(8, C); gcd keeps the narrow widths of the small presets valid."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """PVD's `get_timestep_embedding`: [sin(t f_i), cos(t f_i)], f_i = exp(-i log(10000) / (half - 1))."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -scale)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class SharedMLP(nn.Module):
    """1x1 convolutions (Conv1d over points or Conv2d over points x neighbours), each GroupNorm + Swish."""

    def __init__(self, in_channels: int, out_channels: tuple[int, ...], dim: int = 1):
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        layers: list[nn.Module] = []
        for oc in out_channels:
            layers += [conv(in_channels, oc, 1), group_norm(oc), nn.SiLU()]  # SiLU = Swish
            in_channels = oc
        self.layers = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Attention(nn.Module):
    """PVD's self-attention over the flattened positions of [B, C, *]: 1x1 q/k/v, softmax(q^T k) without
    1/sqrt(C) scaling, 1x1 output, residual, then GroupNorm(8) and Swish."""

    def __init__(self, channels: int, dims: int):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv1d
        self.q, self.k, self.v, self.out = (conv(channels, channels, 1) for _ in range(4))
        self.norm = group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        q, k, v = (f(x).reshape(B, C, -1) for f in (self.q, self.k, self.v))
        w = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # [B, L, L]
        h = self.out((v @ w.transpose(1, 2)).reshape(x.shape))
        return F.silu(self.norm(x + h))


class SE3d(nn.Module):
    """Squeeze-excitation over a voxel grid (reduction 8, ReLU inside, as PVD's with_se_relu=True)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3, 4)))[:, :, None, None, None]


class PVConv(nn.Module):
    """Point-voxel convolution: a voxel branch (voxelise, two 3^3 convs, devoxelise) plus a point branch."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, attention: bool, dropout: float):
        super().__init__()
        self.resolution = resolution
        self.voxel_layers = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1), group_norm(out_channels), nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv3d(out_channels, out_channels, 3, padding=1), group_norm(out_channels),
            Attention(out_channels, dims=3) if attention else nn.SiLU(),
            SE3d(out_channels))
        self.point_features = SharedMLP(in_channels, (out_channels,))

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        vc = P.normalize_voxel_coords(coords, self.resolution)
        voxels = self.voxel_layers(P.avg_voxelize(features, vc, self.resolution))
        return P.trilinear_devoxelize(voxels, vc) + self.point_features(features)


class SetAbstraction(nn.Module):
    """FPS centres, ball-query groups (relative coordinates + features), shared MLP, max over neighbours."""

    def __init__(self, n_centers: int, radius: float, k: int, in_channels: int, out_channels: tuple[int, ...]):
        super().__init__()
        self.n_centers, self.radius, self.k = n_centers, radius, k
        self.mlp = SharedMLP(in_channels + 3, out_channels, dim=2)
        self.out_channels = self.mlp.out_channels

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centers = P.gather(coords, P.farthest_point_sample(coords, min(self.n_centers, coords.shape[2])))
        idx = P.ball_query(centers, coords, self.radius, self.k)  # [B, M, K]
        rel = P.gather(coords, idx) - centers[:, :, :, None]
        grouped = torch.cat([rel, P.gather(features, idx)], dim=1)  # [B, 3 + C, M, K]
        return self.mlp(grouped).amax(dim=-1), centers


class SAStage(nn.Module):
    def __init__(self, convs: list[PVConv], sa: SetAbstraction):
        super().__init__()
        self.convs, self.sa = nn.ModuleList(convs), sa

    def forward(self, features, coords):
        for conv in self.convs:
            features = conv(features, coords)
        return self.sa(features, coords)


class FPStage(nn.Module):
    def __init__(self, in_channels: int, mlp: tuple[int, ...], convs_out: int, n_convs: int, resolution: int,
                 dropout: float):
        super().__init__()
        self.mlp = SharedMLP(in_channels, mlp)
        c = self.mlp.out_channels
        self.convs = nn.ModuleList(PVConv(c if i == 0 else convs_out, convs_out, resolution, False, dropout)
                                   for i in range(n_convs))
        self.out_channels = convs_out if n_convs else c

    def forward(self, points, centers, center_features, skip):
        x = P.three_nn_interpolate(points, centers, center_features)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = self.mlp(x)
        for conv in self.convs:
            x = conv(x, points)
        return x


class PVCNN2(nn.Module):
    """eps_theta(x_t, t) on clouds [B, N, 3]."""

    def __init__(self, cfg: PVCNNConfig, n_points: int):
        super().__init__()
        self.cfg = cfg
        r, vr, e = cfg.width_multiplier, cfg.voxel_resolution_multiplier, cfg.embed_dim
        self.embedf = nn.Sequential(nn.Linear(e, e), nn.LeakyReLU(0.1), nn.Linear(e, e))
        stages, skip_channels = [], []
        in_channels = 3  # the first stage sees the coordinates as features (extra_feature_channels = 0)
        n = n_points
        for i, (conv_cfg, (centers, radius, _, widths)) in enumerate(SA_BLOCKS):
            skip_channels.append(in_channels)
            convs = []
            if conv_cfg is not None:
                out, listed, res = conv_cfg
                built = listed if i == 0 else 1  # the authors' builder keeps one PVConv after stage 1
                for p in range(built):
                    cin = in_channels + (e if i > 0 and p == 0 else 0)
                    attention = cfg.use_attention and i == 1 and p == 0
                    convs.append(PVConv(cin, int(r * out), max(int(vr * res), 1), attention, cfg.dropout))
                    in_channels = int(r * out)
                sa_in = in_channels
            else:
                sa_in = in_channels + (e if i > 0 else 0)
            n = min(max(int(round(centers * cfg.center_multiplier)), 1), n)
            sa = SetAbstraction(n, radius, cfg.num_neighbors, sa_in, tuple(int(r * w) for w in widths))
            stages.append(SAStage(convs, sa))
            in_channels = sa.out_channels
        self.sa = nn.ModuleList(stages)
        self.global_att = Attention(in_channels, dims=1) if cfg.use_attention else None
        skip_channels[0] = 0  # the coordinates are not a skip feature of the last FP stage
        self.skip_channels = skip_channels
        fps = []
        for j, (widths, (out, n_convs, res)) in enumerate(FP_BLOCKS):
            fp = FPStage(in_channels + skip_channels[-1 - j] + e, tuple(int(r * w) for w in widths),
                         int(r * out), n_convs, max(int(vr * res), 1), cfg.dropout)
            fps.append(fp)
            in_channels = fp.out_channels
        self.fp = nn.ModuleList(fps)
        head = int(r * 128)
        self.head = nn.Sequential(SharedMLP(in_channels, (head,)), nn.Dropout(cfg.dropout), nn.Conv1d(head, 3, 1))
        # g(t) = 1 at init: at large t, eps ~ x_t, and the skip carries it, so that the head (which sees x_t
        # only up to its mean and scale) does not learn it in a form that ignores them. Zero at init, the
        # head learned it first and samples still drifted wide (benchmarks/RESULTS.md, "PVD diagnosis").
        self.skip = nn.Linear(e, 3) if cfg.input_skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)
            nn.init.ones_(self.skip.bias)

    def training_loss(self, diffusion, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The diffusion's loss on clouds scaled by `data_scale` (PVD's unit-std convention; see PVCNNConfig)."""
        return diffusion.training_loss(self, x0 * self.cfg.data_scale, t, noise)

    def sample(self, diffusion, shape: tuple[int, ...], **kw) -> torch.Tensor:
        """Clouds from `diffusion.sample(self, shape, **kw)`, scaled back to the data's coordinates."""
        return diffusion.sample(self, shape, **kw) / self.cfg.data_scale

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inputs = x.transpose(1, 2)  # [B, 3, N]
        B = inputs.shape[0]
        temb = self.embedf(timestep_embedding(t.reshape(-1).expand(B), self.cfg.embed_dim))[:, :, None]  # [B, E, 1]
        gain = None if self.skip is None else self.skip(temb[:, :, 0])[:, None, :]  # [B, 1, 3]

        def with_t(f: torch.Tensor) -> torch.Tensor:
            return torch.cat([f, temb.expand(-1, -1, f.shape[2])], dim=1)

        coords, features = inputs, inputs
        coords_list, skips = [], []
        for i, stage in enumerate(self.sa):
            skips.append(features)
            coords_list.append(coords)
            features, coords = stage(features if i == 0 else with_t(features), coords)
        skips[0] = None  # extra_feature_channels = 0: the last FP stage has no skip features
        if self.global_att is not None:
            features = self.global_att(features)
        for j, fp in enumerate(self.fp):
            points = coords_list[-1 - j]
            features = fp(points, coords, with_t(features), skips[-1 - j])
            coords = points
        out = self.head(features).transpose(1, 2)
        return out if gain is None else out + gain * x


def build(config: dict[str, Any], sample_shape: tuple[int, ...]) -> PVCNN2:
    """PVCNN2 for clouds of shape (N, 3)."""
    if len(sample_shape) != 2 or sample_shape[1] != 3:
        raise ValueError(f"pvcnn2 denoises point clouds of shape (N, 3); got samples of shape {tuple(sample_shape)}")
    return PVCNN2(PVCNNConfig.from_dict(config), int(sample_shape[0]))

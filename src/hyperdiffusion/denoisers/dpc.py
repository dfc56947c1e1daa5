"""DPC: diffusion probabilistic models for 3D point clouds (Luo & Hu, CVPR 2021, arXiv 2103.01458).

The point-cloud baseline of the paper's Table 1, in plain torch. DPC is a variational
auto-encoder whose decoder is a diffusion model over points (the authors' `FlowVAE`):

* encoder q(z | X): a PointNet (shared per-point layers 3 -> 128 -> 128 -> 256 -> 512 with
  BatchNorm, max-pool over points) and two MLP heads 512 -> 256 -> 128 -> 256 giving the
  mean and the log-variance of a 256-d shape latent z (paper Sec. 4.3);
* prior p(z): a normalising flow of 14 affine coupling layers (RealNVP, Dinh et al. 2017,
  arXiv 1605.08803) that maps z to w ~ N(0, I) (paper Sec. 4.2, eq. 12);
* decoder p(X | z): every point is denoised independently given z (paper eq. 5) by a
  `PointwiseNet` of ConcatSquashLinear layers 3 -> 128 -> 256 -> 512 -> 256 -> 128 -> 3 (FFJORD,
  Grathwohl et al. 2019) whose context is (beta_t, sin beta_t, cos beta_t, z), LeakyReLU between
  layers and a residual connection x_t + out; it predicts the noise eps.

Training minimises (paper eq. 13; the authors' `FlowVAE.get_loss`)

    L = E_t || eps - eps_theta(x_t, beta_t, z) ||^2  +  kl_weight * ( -log p(z) - H[q(z | X)] )

with z = mu + sigma * e (reparameterisation), log p(z) = log N(w; 0, I) + log |det dw/dz|.
Sampling draws w ~ N(0, I), inverts the flow to z, then runs the reverse diffusion over the
points. The authors' diffusion is 100 steps of linear betas 1e-4 -> 0.02, eps prediction, and
their sampler with `flexibility = 0` is DDPM ancestral sampling with the posterior variance
beta~_t: exactly `GaussianDiffusion(DiffusionConfig(timesteps=100, prediction="eps",
variance="fixed_small"))` with `sampler="ddpm"`, so this module has no diffusion code of its own:
it hands the shared diffusion a denoiser closed over z and the beta_t of each t.

Differences from the authors' code, on purpose (docs/BASELINES.md):
* log N(w; 0, I) has the correct constant (-D/2 log 2 pi); theirs adds -D/2 log 2 pi per
  coordinate. A constant: the gradients, and so the training, are the same; the loss value is not.
* a batch of one cloud in training uses the running statistics in the encoder's head
  BatchNorm layers (theirs raises); only the last, short batch of an epoch can have one cloud.
* `train_points` (the CPU preset only) trains on a random subset of each cloud's points, drawn
  anew every step (after `shape_unit` on the whole cloud): the encoder sees the subset and the
  diffusion loss is averaged over it. Points are independent given z (paper eq. 5), so the
  decoder's loss is unbiased; the encoder, a max-pooled PointNet, sees a sparser cloud.
  Sampling still draws every point (2048), as the decoder is per point.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NORMALIZE_MODES = ("shape_unit", "none")


@dataclass(frozen=True)
class DPCConfig:
    """Defaults are the authors' `train_gen.py` arguments (REFERENCE.md "PVD and DPC")."""

    latent_dim: int = 256
    encoder_channels: tuple[int, ...] = (128, 128, 256, 512)  # PointNet per-point widths
    encoder_head: tuple[int, ...] = (256, 128)  # hidden widths of the mean and log-variance heads
    flow_depth: int = 14  # affine coupling layers (`latent_flow_depth`)
    flow_hidden: int = 256  # their conditioner MLPs' width (`latent_flow_hidden_dim`)
    decoder_widths: tuple[int, ...] = (128, 256, 512, 256, 128)  # PointwiseNet hidden widths
    residual: bool = True  # eps_theta = x_t + net(x_t) (`residual=True`)
    kl_weight: float = 1e-3
    normalize: str = "shape_unit"  # per-cloud: centre, divide by the std of all coordinates (their scale_mode)
    train_points: int | None = None  # None = every point in the loss (the authors); see the module docstring

    def __post_init__(self) -> None:
        # Lists from JSON become tuples, so a config read back from a checkpoint compares equal.
        for name in ("encoder_channels", "encoder_head", "decoder_widths"):
            object.__setattr__(self, name, tuple(int(c) for c in getattr(self, name)))
        assert self.latent_dim >= 2 and self.latent_dim % 2 == 0, (
            f"latent_dim must be even (the coupling layers split it in halves); got {self.latent_dim}")
        assert self.flow_depth >= 1 and self.flow_hidden >= 1, "flow_depth and flow_hidden must be >= 1"
        assert self.encoder_channels and self.encoder_head and self.decoder_widths, "layer widths must be non-empty"
        assert self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}"
        assert self.normalize in NORMALIZE_MODES, f"normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}"
        assert self.train_points is None or self.train_points >= 1, "train_points must be None or >= 1"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("encoder_channels", "encoder_head", "decoder_widths"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DPCConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


DPC_PRESETS: dict[str, DPCConfig] = {
    # The authors' FlowVAE: 3,879,832 parameters (tests/test_dpc.py; benchmarks/RESULTS.md "DPC").
    "paper": DPCConfig(),
    # Not the authors': half the per-point widths (the per-point layers are the compute: ~4x fewer
    # multiply-adds per point), a 128-d latent, 6 couplings, and training on random 512-point
    # subsets of the 2048-point clouds, so a few thousand steps fit a 2-core CPU.
    "cpu": DPCConfig(latent_dim=128, encoder_channels=(64, 64, 128, 256), encoder_head=(128, 128), flow_depth=6,
                     flow_hidden=128, decoder_widths=(64, 128, 256, 128, 64), train_points=512),
    # Seconds: tests only.
    "tiny": DPCConfig(latent_dim=16, encoder_channels=(32, 64), encoder_head=(32,), flow_depth=4, flow_hidden=32,
                      decoder_widths=(32, 64, 32)),
}


# --------------------------------------------------------------------------- pieces


def shape_unit(x: torch.Tensor) -> torch.Tensor:
    """The authors' `shape_unit` scale mode, per cloud of x [B, N, 3]: subtract the per-axis mean,
    divide by the (unbiased) standard deviation of all 3N coordinates (`pc.flatten().std()`)."""
    centred = x - x.mean(dim=1, keepdim=True)
    std = x.flatten(1).std(dim=1).clamp_min(1e-12)
    return centred / std[:, None, None]


def gaussian_entropy(logvar: torch.Tensor) -> torch.Tensor:
    """H[N(mu, diag(exp(logvar)))] = 1/2 sum(logvar) + D/2 (1 + log 2 pi), per row of logvar [B, D]."""
    return 0.5 * logvar.sum(dim=1) + 0.5 * logvar.shape[1] * (1.0 + math.log(2 * math.pi))


def standard_normal_logprob(w: torch.Tensor) -> torch.Tensor:
    """log N(w; 0, I) per row of w [B, D]."""
    return -0.5 * (w.pow(2) + math.log(2 * math.pi)).sum(dim=1)


class ConcatSquashLinear(nn.Module):
    """FFJORD's ConcatSquashLinear: y = (W x + b) * sigmoid(G c + g) + H c, for a context c.

    The gate and the context bias are computed once per cloud ([B, 1, C]) and broadcast over its points.
    """

    def __init__(self, dim_in: int, dim_out: int, dim_ctx: int):
        super().__init__()
        self.layer = nn.Linear(dim_in, dim_out)
        self.hyper_gate = nn.Linear(dim_ctx, dim_out)
        self.hyper_bias = nn.Linear(dim_ctx, dim_out, bias=False)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        # addcmul: one pass over the [B, N, C] activations instead of two (this layer is DPC's compute)
        return torch.addcmul(self.hyper_bias(ctx), self.layer(x), torch.sigmoid(self.hyper_gate(ctx)))


class PointwiseNet(nn.Module):
    """eps_theta(x_t, beta_t, z): ConcatSquashLinear layers over each point, context (beta, sin beta, cos beta, z)."""

    def __init__(self, context_dim: int, widths: tuple[int, ...], residual: bool = True, point_dim: int = 3):
        super().__init__()
        dims = (point_dim, *widths, point_dim)
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b, context_dim + 3) for a, b in zip(dims[:-1], dims[1:]))
        self.residual = residual

    def forward(self, x: torch.Tensor, beta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x [B, N, 3] noisy points, beta [B] the step's noise variance, z [B, F] shape latents."""
        beta = beta.reshape(-1, 1, 1).to(x.dtype)
        ctx = torch.cat([beta, torch.sin(beta), torch.cos(beta), z.reshape(len(z), 1, -1).to(x.dtype)], dim=-1)
        out = x
        for i, layer in enumerate(self.layers):
            out = layer(out, ctx)
            if i < len(self.layers) - 1:
                out = F.leaky_relu(out)  # the authors' F.leaky_relu, slope 0.01
        return x + out if self.residual else out


class PointNetEncoder(nn.Module):
    """q(z | X) = N(mu, diag(exp(logvar))): per-point 1x1 convolutions with BatchNorm, max-pool, two MLP heads.

    As the authors: ReLU after every per-point layer but the last (whose BatchNorm output is pooled
    without an activation), Linear -> BatchNorm -> ReLU in the heads, a plain Linear at their ends.
    """

    def __init__(self, latent_dim: int, channels: tuple[int, ...], head: tuple[int, ...], point_dim: int = 3):
        super().__init__()
        dims = (point_dim, *channels)
        self.convs = nn.ModuleList(nn.Conv1d(a, b, 1) for a, b in zip(dims[:-1], dims[1:]))
        self.conv_bns = nn.ModuleList(nn.BatchNorm1d(c) for c in channels)
        hdims = (channels[-1], *head)
        self.heads = nn.ModuleList()
        for _ in ("mean", "logvar"):
            self.heads.append(nn.ModuleDict({
                "linears": nn.ModuleList(nn.Linear(a, b) for a, b in zip(hdims[:-1], hdims[1:])),
                "bns": nn.ModuleList(nn.BatchNorm1d(c) for c in head),
                "out": nn.Linear(head[-1], latent_dim)}))

    @staticmethod
    def _head_bn(bn: nn.BatchNorm1d, h: torch.Tensor) -> torch.Tensor:
        # Batch statistics of one row are undefined (torch raises); use the running ones instead.
        if bn.training and h.shape[0] == 1:
            return F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return bn(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.transpose(1, 2)  # [B, 3, N]
        for i, (conv, bn) in enumerate(zip(self.convs, self.conv_bns)):
            h = bn(conv(h))
            if i < len(self.convs) - 1:
                h = F.relu(h)
        h = h.max(dim=2).values  # [B, C]
        out = []
        for head in self.heads:
            g = h
            for linear, bn in zip(head["linears"], head["bns"]):
                g = F.relu(self._head_bn(bn, linear(g)))
            out.append(head["out"](g))
        return out[0], out[1]


class AffineCoupling(nn.Module):
    """One RealNVP coupling layer: half of z (`cond`) sets a scale and shift of the other half.

    y_b = z_b * s + t with s = sigmoid(a + 2), (a, t) = MLP(z_a); log |det dy/dz| = sum log s.
    Layers alternate which half conditions (`swap`), as the authors' `swap=(i % 2 == 0)`.
    """

    def __init__(self, dim: int, hidden: int, swap: bool):
        super().__init__()
        self.half = dim // 2
        self.swap = swap
        self.net = nn.Sequential(nn.Linear(self.half, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * self.half))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, :self.half], x[:, self.half:]
        return (b, a) if self.swap else (a, b)  # (conditioning half, transformed half)

    def _join(self, cond: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        return torch.cat([moved, cond] if self.swap else [cond, moved], dim=1)

    def _scale_shift(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, shift = self.net(cond).chunk(2, dim=1)
        return torch.sigmoid(a + 2.0), shift  # the +2 starts every scale near 0.88, close to identity

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> (y, log |det dy/dz|) per row."""
        cond, moved = self._split(z)
        scale, shift = self._scale_shift(cond)
        return self._join(cond, moved * scale + shift), torch.log(scale).sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        cond, moved = self._split(y)
        scale, shift = self._scale_shift(cond)
        return self._join(cond, (moved - shift) / scale)


class LatentFlow(nn.Module):
    """The prior's bijection z -> w (data to Gaussian); log p(z) = log N(w) + log |det dw/dz| (paper eq. 12)."""

    def __init__(self, dim: int, depth: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList(AffineCoupling(dim, hidden, swap=(i % 2 == 0)) for i in range(depth))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = z.new_zeros(len(z))
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, w: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            w = layer.inverse(w)
        return w

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        w, logdet = self(z)
        return standard_normal_logprob(w) + logdet


# --------------------------------------------------------------------------- the model


class DPC(nn.Module):
    """The authors' FlowVAE on clouds [B, N, 3]; plugs into the diffusion stack through two hooks:
    `training_loss(diffusion, x0, t, noise)` (train.py) and `sample(diffusion, shape, ...)` (sample.py)."""

    def __init__(self, cfg: DPCConfig = DPCConfig(), point_dim: int = 3):
        super().__init__()
        self.cfg = cfg
        self.encoder = PointNetEncoder(cfg.latent_dim, cfg.encoder_channels, cfg.encoder_head, point_dim)
        self.flow = LatentFlow(cfg.latent_dim, cfg.flow_depth, cfg.flow_hidden)
        self.decoder = PointwiseNet(cfg.latent_dim, cfg.decoder_widths, cfg.residual, point_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise TypeError("DPC denoises points given a shape latent z; use model.training_loss(diffusion, x0, t, noise) "
                        "and model.sample(diffusion, shape), or model.denoiser(diffusion, z) for a model(x_t, t)")

    def denoiser(self, diffusion, z: torch.Tensor):
        """model(x_t, t) -> eps for GaussianDiffusion: the decoder given z, fed beta_t (the authors' time input)."""
        betas = diffusion.betas

        def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.decoder(x_t, betas.to(x_t.device)[t.to(x_t.device)], z)

        return eps

    def training_loss(self, diffusion, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The authors' `FlowVAE.get_loss`: diffusion MSE + kl_weight * (-log p(z) - H[q(z | X)]), batch means.

        The latent's reparameterisation noise comes from torch's global CPU generator, whose state every
        checkpoint saves and restores (train.py), so a resumed run takes the same steps.
        """
        if self.cfg.normalize == "shape_unit":
            x0 = shape_unit(x0)  # on the whole cloud, as the authors' dataset does
        if self.cfg.train_points is not None and self.cfg.train_points < x0.shape[1]:
            keep = torch.randperm(x0.shape[1])[: self.cfg.train_points].to(x0.device)
            x0, noise = x0[:, keep], noise[:, keep]
        mu, logvar = self.encoder(x0)
        e = torch.randn(mu.shape, dtype=mu.dtype).to(mu.device)
        z = mu + torch.exp(0.5 * logvar) * e
        prior = -self.flow.log_prob(z).mean()
        entropy = gaussian_entropy(logvar).mean()
        recon = diffusion.training_loss(self.denoiser(diffusion, z), x0, t, noise)
        return recon + self.cfg.kl_weight * (prior - entropy)

    @torch.no_grad()
    def sample(self, diffusion, shape: tuple[int, ...], *, sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
               progress: bool = False) -> torch.Tensor:
        """Clouds of `shape` [B, N, 3]: w ~ N(0, I), z = flow^-1(w), then the reverse diffusion given z.

        The authors sample with DDPM over all steps (`flexibility` 0: variance beta~_t, i.e. a
        "fixed_small" DiffusionConfig) and no truncation of w; other samplers are the stack's own.
        Clouds come out in the training normalisation (`shape_unit`: zero mean, unit std), as theirs.
        """
        w = torch.randn((shape[0], self.cfg.latent_dim), generator=generator, device=device)
        z = self.flow.inverse(w)
        return diffusion.sample(self.denoiser(diffusion, z), shape, sampler=sampler, steps=steps, eta=eta,
                                generator=generator, device=device, progress=progress)


def build(config: dict[str, Any], sample_shape: tuple[int, ...]) -> DPC:
    """The denoiser registry's builder: DPC for clouds of shape (N, D) (D = 3 coordinates)."""
    if len(sample_shape) != 2:
        raise ValueError(f"DPC needs samples shaped (points, coordinates); got {tuple(sample_shape)}")
    return DPC(DPCConfig.from_dict(dict(config)), point_dim=int(sample_shape[1]))

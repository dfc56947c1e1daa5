"""Gaussian diffusion over flat vectors, independent of the denoising network (paper Sec. 3.2).

The paper's settings (REFERENCE.md, "Weight-space diffusion"): linear betas from
1e-4 to 2e-2 over T = 500 steps, t drawn uniformly, the network predicts the
clean weights x0, MSE loss, "fixed large" reverse variance; sampling with DDIM,
eta = 0, over all 500 steps, no clipping.

Notation follows Ho et al. 2020 (DDPM, arXiv 2006.11239) and Song et al. 2021
(DDIM, arXiv 2010.02502); the layout follows openai/guided-diffusion's
`gaussian_diffusion.py`: enums for what the model predicts and which variance
the reverse process uses, and one `_extract` helper for per-timestep constants.

A model is any callable `model(x_t, t) -> output` with x_t [B, D] and t an
integer tensor [B] of original timesteps (0 .. T-1), also when DDIM skips steps.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from hyperdiffusion.progress import progress as progress_bar

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ModelMeanType(enum.Enum):
    """What the network outputs."""

    X0 = "x0"  # the clean sample (the paper, G.pt)
    EPS = "eps"  # the added noise (DDPM)
    V = "v"  # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, arXiv 2202.00512)


class ModelVarType(enum.Enum):
    """Variance of the reverse step p(x_{t-1} | x_t) in the ancestral sampler."""

    FIXED_LARGE = "fixed_large"  # sigma_t^2 = beta_t (DDPM Sec. 3.2; the official code)
    FIXED_SMALL = "fixed_small"  # sigma_t^2 = beta~_t, the posterior variance (DDPM eq. 7)


@dataclass(frozen=True)
class DiffusionConfig:
    """Defaults are the paper's (REFERENCE.md)."""

    timesteps: int = 500
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    schedule: str = "linear"  # a key of BETA_SCHEDULES
    prediction: str = "x0"  # ModelMeanType value
    variance: str = "fixed_large"  # ModelVarType value

    def __post_init__(self) -> None:
        if self.schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta schedule {self.schedule!r}; choose one of {sorted(BETA_SCHEDULES)}")
        ModelMeanType(self.prediction), ModelVarType(self.variance)  # noqa: B018 -- a clear error for a typo

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiffusionConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def linear_betas(timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """The DDPM linear schedule (Sec. 4), float64 as the official code (np.linspace)."""
    return np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)


def warm_betas(timesteps: int, beta_start: float, beta_end: float, warm_fraction: float = 0.1) -> np.ndarray:
    """PVD's "warm0.1" schedule: linear from beta_start over the first 10 % of steps, then beta_end
    (Zhou et al. 2021, `get_betas` in the authors' code; used for airplanes with 1e-5 -> 0.008)."""
    betas = np.full(timesteps, beta_end, dtype=np.float64)
    warm = int(timesteps * warm_fraction)
    betas[:warm] = np.linspace(beta_start, beta_end, warm, dtype=np.float64)
    return betas


def cosine_betas(timesteps: int, beta_start: float, beta_end: float, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021 (arXiv 2102.09672) eq. 17, betas clipped to 0.999; the beta range is unused."""
    f = np.cos((np.arange(timesteps + 1, dtype=np.float64) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return np.clip(1 - f[1:] / f[:-1], 0, 0.999)


# name -> betas(timesteps, beta_start, beta_end): what a config's `schedule` names.
BETA_SCHEDULES = {"linear": linear_betas, "warm0.1": warm_betas, "cosine": cosine_betas}


def _extract(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """arr[t] for a batch of timesteps, cast to `like`'s dtype and shaped to broadcast against it."""
    out = arr.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    """Forward noising, posterior, training loss, DDPM and DDIM samplers.

    All schedule constants are kept in float64 (as guided-diffusion) and cast to
    the data's dtype when used, so that fp32 and bf16 runs share one schedule.
    """

    def __init__(self, cfg: DiffusionConfig = DiffusionConfig()):
        self.cfg = cfg
        self.mean_type = ModelMeanType(cfg.prediction)
        self.var_type = ModelVarType(cfg.variance)
        betas = BETA_SCHEDULES[cfg.schedule](cfg.timesteps, cfg.beta_start, cfg.beta_end)
        if not (np.all(betas > 0) and np.all(betas < 1)):
            raise ValueError(f"betas must lie in (0, 1); got {betas.min()} .. {betas.max()}")
        self.num_timesteps = cfg.timesteps
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])
        # Posterior q(x_{t-1} | x_t, x0), DDPM eqs. 6-7.
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        f64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        self.betas = f64(betas)
        self.alphas_cumprod = f64(abar)
        self.alphas_cumprod_prev = f64(abar_prev)
        self.sqrt_alphas_cumprod = f64(np.sqrt(abar))
        self.sqrt_one_minus_alphas_cumprod = f64(np.sqrt(1.0 - abar))
        self.posterior_variance = f64(post_var)
        self.posterior_mean_coef1 = f64(betas * np.sqrt(abar_prev) / (1.0 - abar))
        self.posterior_mean_coef2 = f64((1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar))
        # "Fixed large" uses beta_t, except at t = 0 where guided-diffusion takes beta~_1 so that
        # the log-variance is finite; no noise is added at t = 0 anyway.
        large = np.append(post_var[1], betas[1:]) if cfg.timesteps > 1 else betas
        self.reverse_variance = f64(large if self.var_type is ModelVarType.FIXED_LARGE else post_var)

    # ------------------------------------------------------------------ forward process

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) (DDPM eq. 4).

        :param x0: clean data [B, ...].
        :param t: integer timesteps [B].
        :param noise: the Gaussian noise to use; drawn with torch.randn_like if None.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        return _extract(self.sqrt_alphas_cumprod, t, x0) * x0 + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x0) (DDPM eqs. 6-7).

        mean = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x0 + (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) x_t
        var  = beta_t (1 - abar_{t-1}) / (1 - abar_t)
        """
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x0 + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _extract(self.posterior_variance, t, x_t)

    # ------------------------------------------------------------------ x0 <-> eps <-> v

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert eq. 4: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
        return (x_t - _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / _extract(self.sqrt_alphas_cumprod, t, x_t)

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (x_t - _extract(self.sqrt_alphas_cumprod, t, x_t) * x0) / _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t)

    def v_from_x0_eps(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, Sec. 4)."""
        return _extract(self.sqrt_alphas_cumprod, t, x0) * eps - _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(abar) x_t - sqrt(1 - abar) v (since sqrt(abar)^2 + sqrt(1 - abar)^2 = 1)."""
        return _extract(self.sqrt_alphas_cumprod, t, x_t) * x_t - _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * v

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t + _extract(self.sqrt_alphas_cumprod, t, x_t) * v

    def split_prediction(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network output, whatever it predicts, as (x0, eps)."""
        if self.mean_type is ModelMeanType.X0:
            return output, self.eps_from_x0(x_t, t, output)
        if self.mean_type is ModelMeanType.EPS:
            return self.x0_from_eps(x_t, t, output), output
        return self.x0_from_v(x_t, t, output), self.eps_from_v(x_t, t, output)

    def training_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.mean_type is ModelMeanType.X0:
            return x0
        if self.mean_type is ModelMeanType.EPS:
            return noise
        return self.v_from_x0_eps(x0, t, noise)

    # ------------------------------------------------------------------ training

    def training_loss(self, model: Model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Mean squared error between the network output and its target (the paper: x0), a scalar.

        :param model: the denoiser, `model(x_t, t)`.
        :param x0: a batch of clean vectors [B, D].
        :param t: integer timesteps [B], drawn uniformly by the caller.
        :param noise: the noise to add; drawn with torch.randn_like if None.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, t)
        target = self.training_target(x0, t, noise)
        return torch.mean((output.float() - target.float()) ** 2)

    # ------------------------------------------------------------------ samplers

    def p_mean_variance(self, model: Model, x_t: torch.Tensor, t: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and variance of p(x_{t-1} | x_t): the posterior (eqs. 6-7) at the predicted x0.

        Returns (mean, variance, predicted x0). No clipping of x0: weights are unbounded.
        """
        x0, _ = self.split_prediction(model(x_t, t).to(x_t.dtype), x_t, t)
        mean, _ = self.q_posterior_mean_variance(x0, x_t, t)
        return mean, _extract(self.reverse_variance, t, x_t), x0

    @torch.no_grad()
    def ddpm_sample(self, model: Model, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                    device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
        """Ancestral sampling over all T steps (DDPM Algorithm 2)."""
        x = torch.randn(shape, generator=generator, device=device)
        for i in progress_bar(range(self.num_timesteps - 1, -1, -1), desc="ddpm", unit="step", disable=not progress,
                               leave=False):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            mean, var, _ = self.p_mean_variance(model, x, t)
            if i > 0:
                x = mean + var.sqrt() * torch.randn(shape, generator=generator, device=device)
            else:
                x = mean
        return x

    def ddim_timesteps(self, steps: int | None) -> list[int]:
        """Evenly spaced subsequence of 0..T-1 with `steps` entries, always ending at T-1 (all of them if None).

        One step is [T-1]: the model sees pure noise at the timestep that matches it, not at t = 0.
        """
        steps = self.num_timesteps if steps is None else int(steps)
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"DDIM steps must be between 1 and {self.num_timesteps}; got {steps}")
        if steps == 1:
            return [self.num_timesteps - 1]
        seq = np.round(np.linspace(0, self.num_timesteps - 1, steps)).astype(int)
        return sorted(set(seq.tolist()))

    @torch.no_grad()
    def ddim_sample(self, model: Model, shape: tuple[int, ...], *, steps: int | None = None, eta: float = 0.0,
                    generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                    progress: bool = False, noise: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12) over a subsequence of timesteps.

        x_{prev} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z, with
        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev) (eq. 16).
        eta = 0 is deterministic given the starting noise (the paper); eta = 1 over all steps
        is the ancestral sampler with the posterior ("fixed small") variance.

        :param steps: number of network evaluations; None = all T (the paper).
        :param noise: the starting x_{T-1} (e.g. from `ddim_invert`); drawn from `generator` if None.
        """
        seq = self.ddim_timesteps(steps)
        x = torch.randn(shape, generator=generator, device=device) if noise is None else noise.to(device)
        abar = self.alphas_cumprod
        for k in progress_bar(range(len(seq) - 1, -1, -1), desc="ddim", unit="step", disable=not progress, leave=False):
            i, i_prev = seq[k], seq[k - 1] if k > 0 else -1
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            x0, eps = self.split_prediction(model(x, t).to(x.dtype), x, t)
            a_t = float(abar[i])
            a_prev = float(abar[i_prev]) if i_prev >= 0 else 1.0
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * torch.randn(shape, generator=generator, device=device)
        return x

    @torch.no_grad()
    def ddim_invert(self, model: Model, x0: torch.Tensor, *, steps: int | None = None,
                    progress: bool = False) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) run backwards: clean x0 -> the x_{T-1} that `ddim_sample` with the
        same `steps` maps back to (approximately) x0 (Song et al. 2021, Sec. 4.3: the eta = 0 update is
        an Euler step of an ODE, so it can be integrated in either direction; Dhariwal & Nichol 2021,
        arXiv 2105.05233, App. F).

        Each step evaluates the model at the point it leaves (x at timestep seq[k]) and moves to
        seq[k + 1] with the same eq. 12: x' = sqrt(abar') x0_hat + sqrt(1 - abar') eps_hat. The first
        step starts from x0 itself, treated as x at seq[0] = 0 (abar_0 = 1 - beta_0, almost clean).
        The round trip is exact only in the limit of many steps; the reconstruction error is measured
        in tests/test_conditional.py.
        """
        seq = self.ddim_timesteps(steps)
        x = x0
        abar = self.alphas_cumprod
        for k in progress_bar(range(len(seq) - 1), desc="ddim-invert", unit="step", disable=not progress,
                              leave=False):
            t = torch.full((x.shape[0],), seq[k], device=x.device, dtype=torch.long)
            x0_hat, eps = self.split_prediction(model(x, t).to(x.dtype), x, t)
            a_next = float(abar[seq[k + 1]])
            x = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps
        return x

    def sample(self, model: Model, shape: tuple[int, ...], *, sampler: str = "ddim", steps: int | None = None,
               eta: float = 0.0, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
               progress: bool = False) -> torch.Tensor:
        """One entry point for both samplers; `steps` and `eta` apply to DDIM only."""
        if sampler == "ddpm":
            if steps not in (None, self.num_timesteps):
                raise ValueError(f"the DDPM sampler runs all {self.num_timesteps} steps; use --sampler ddim for fewer")
            return self.ddpm_sample(model, shape, generator=generator, device=device, progress=progress)
        if sampler == "ddim":
            return self.ddim_sample(model, shape, steps=steps, eta=eta, generator=generator, device=device,
                                    progress=progress)
        raise ValueError(f"unknown sampler {sampler!r}; choose 'ddim' or 'ddpm'")

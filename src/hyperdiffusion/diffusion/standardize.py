"""Per-coordinate standardisation of training tensors (an addition to the paper, off by default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Standardizer:
    """(x - mean) / std per coordinate of a sample, fitted on the training set; identity when mean is None."""

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def fit(cls, data: torch.Tensor) -> "Standardizer":
        # A floor on std: coordinates that are (nearly) equal in every training sample would
        # otherwise be blown up by 1/std.
        std = data.std(dim=0, unbiased=False) if len(data) > 1 else torch.ones(data.shape[1:])
        return cls(data.mean(dim=0), std.clamp_min(1e-4))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mean is None else (x - self.mean.to(x)) / self.std.to(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.mean is None else z * self.std.to(z) + self.mean.to(z)

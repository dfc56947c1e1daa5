"""Built-in parametric shape families (PLACEHOLDER: boxes until the families land)."""

from __future__ import annotations

import trimesh

FAMILIES = ("chair", "table", "airplane")


def make_shape(family: str, seed: int) -> trimesh.Trimesh:
    """A watertight mesh of `family`, deterministic in `seed`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown built-in family {family!r}; choose from {', '.join(FAMILIES)}")
    import numpy as np

    rng = np.random.default_rng(seed)
    return trimesh.creation.box(extents=rng.uniform(0.3, 1.0, size=3))

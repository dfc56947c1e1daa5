"""Inside/outside labels for query points against a (possibly messy) mesh.

PLACEHOLDER: generalised winding number >= 0.5 (what the official code does).
The occupancy helper replaces the internals; the signature stays.
"""

from __future__ import annotations

import numpy as np
import trimesh


def inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Boolean [N] array: True where `points` [N, 3] lie inside `mesh`."""
    import igl

    w = igl.fast_winding_number(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
                                np.asarray(points, np.float64))
    return np.asarray(w) >= 0.5

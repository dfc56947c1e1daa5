"""Meshes in memory -> the files `evaluate` reads: OUT/meshes/<name>.ply, OUT/clouds/<name>.npy, OUT/mesh.json.

The mesh stage (fields/mesh.py) writes the same layout for MLPs; representations whose samples
decode quickly (voxel grids, point clouds) write it through here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from hyperdiffusion.io import atomic_path, ensure_writable_dir, safe_name, save_npy, write_json
from hyperdiffusion.representations.base import DecodeOptions

NON_FINITE = "non-finite"


def write_surfaces(out: Path, names: list[str], items: list[Any], options: DecodeOptions, *, source: str,
                   progress: bool = True, settings: dict[str, Any] | None = None,
                   started: float | None = None) -> dict[str, str]:
    """One entry per name: a mesh (written with a surface cloud), a ready [n, 3] cloud (written as is),
    None (no surface: status "empty") or NON_FINITE. Returns name -> status, also in OUT/mesh.json.
    `started` (a perf_counter time) makes mesh.json's seconds include the caller's decoding."""
    from hyperdiffusion.fields.mesh import surface_cloud

    out = ensure_writable_dir(out)
    t0 = time.perf_counter() if started is None else started
    status: dict[str, str] = {}
    for i, (name, item) in enumerate(zip(names, items)):
        if isinstance(item, str) or item is None:
            status[name] = item or "empty"
            continue
        if isinstance(item, trimesh.Trimesh):
            if len(item.faces) == 0:
                status[name] = "empty"
                continue
            with atomic_path(out / "meshes" / f"{safe_name(name)}.ply") as tmp:
                item.export(tmp, file_type="ply")
            cloud = surface_cloud(item, options.n_points, options.seed * 1_000_003 + i)
        else:
            cloud = np.asarray(item, np.float32)
        save_npy(out / "clouds" / f"{safe_name(name)}.npy", cloud)
        status[name] = "ok"
    record = {"config": {"level": options.level if options.level is not None else 0.5,
                         "n_points": options.n_points, "seed": options.seed, **(settings or {})},
              "source": source, "status": status, "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out / "mesh.json", record)
    counts = {s: sum(v == s for v in status.values()) for s in sorted(set(status.values()))}
    if progress:
        print(f"surfaces: {', '.join(f'{n} {s}' for s, n in counts.items())} -> {out}")
    return status

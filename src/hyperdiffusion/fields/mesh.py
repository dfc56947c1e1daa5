"""Occupancy MLPs -> meshes and surface point clouds (paper Sec. 5: marching cubes, 2048 points).

Each MLP is evaluated on a res^3 grid over [-0.5, 0.5]^3 (grid spacing 1/(res-1), first
node at -0.5), then marching cubes (scikit-image, Lewiner) extracts the level set. The
official code meshes at resolution 256 and logit 0 for validation and 356 at logit 1.386
(probability 0.8) for its test (REFERENCE.md "Sampling and meshes"); its query grid is
sheared by a division bug, which we do not copy.

Grid evaluation is the cost (256^3 = 16.8 M points per shape), so `evaluate_grid` uses the
grid's structure: the positional encoding is per coordinate and the first layer is linear,
so W1 . enc(x, y, z) = A_x[i] + A_y[j] + A_z[k] with three small [res, hidden] tables. The
first layer and all sin/cos then cost nothing per point; the hidden layers run as one
baddbmm per layer over memory-bounded slabs of the grid for many MLPs at once.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from hyperdiffusion.io import (InputError, atomic_path, ensure_writable_dir, read_json, safe_name, save_npy,
                               write_json)
from hyperdiffusion.fields.mlp import MLPConfig, WeightSet, load_weight_set, positional_encoding, split_weights
from hyperdiffusion.progress import progress as progress_bar
from hyperdiffusion.shards import add_shard_argument

FORMATS = ("ply", "obj", "glb")
STATUSES = ("ok", "empty", "full", "non-finite")  # per name in mesh.json


@dataclass(frozen=True)
class MeshConfig:
    """Defaults: the official validation meshing (res 256, level logit 0 = probability 0.5)."""

    res: int = 256
    level: float = 0.5  # occupancy probability of the surface
    level_logit: float | None = None  # overrides `level`; the official test used 1.386 (p = 0.8) at res 356
    n_points: int = 2048  # surface samples per mesh (Sec. 5)
    format: str = "ply"
    chunk: int = 2**18  # grid points (over all MLPs of a batch) per evaluation pass: bounds memory
    batch_shapes: int = 4  # MLPs evaluated together
    seed: int = 0

    def __post_init__(self):
        if self.res < 2:
            raise InputError("--res must be at least 2")
        if self.format not in FORMATS:
            raise InputError(f"--format {self.format}: choose one of {', '.join(FORMATS)}")
        if self.level_logit is None and not 0.0 < self.level < 1.0:
            raise InputError("--level is a probability in (0, 1); use --level-logit for a logit")

    @property
    def logit(self) -> float:
        return self.level_logit if self.level_logit is not None else math.log(self.level / (1 - self.level))


# --------------------------------------------------------------------------- grid evaluation


@torch.no_grad()
def evaluate_grid(weights: torch.Tensor, cfg: MLPConfig, res: int, chunk: int = 2**18,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """Logits of B MLPs on the res^3 grid over [-0.5, 0.5]^3: weights [B, P] -> [B, res, res, res] (CPU).

    Index [b, i, j, k] is the point (x_i, y_j, z_k) with x_i = -0.5 + i / (res - 1).
    Memory: about chunk * hidden * 8 bytes of activations (at least one x-slice per MLP).
    """
    if cfg.in_dim != 3:
        raise ValueError("evaluate_grid needs a 3D MLP (in_dim=3); fix t for a 4D MLP first")
    device = torch.device(device) if device is not None else weights.device
    tensors = split_weights(weights.to(device, torch.float32), cfg)
    n_mlp = weights.shape[0]
    grid = torch.linspace(-0.5, 0.5, res, device=device)
    # Columns of W1 for coordinate d are d, d+3, d+6, ...: [d, sin d, cos d, sin 2d, ...] in order.
    enc = positional_encoding(grid[:, None], cfg.multires, cfg.include_input)  # [res, E/3]
    w1, b1 = tensors[0], tensors[1]
    tables = [torch.matmul(enc, w1[:, :, d::3].transpose(1, 2)) for d in range(3)]  # 3 x [B, res, H]
    tables[0] = tables[0] + b1[:, None, :]
    ax, ay, az = tables
    out = torch.empty(n_mlp, res, res, res)
    rows = max(1, chunk // (n_mlp * res * res))
    hidden = tensors[2:]
    for i0 in range(0, res, rows):
        i1 = min(res, i0 + rows)
        h = (ax[:, i0:i1, None, None, :] + ay[:, None, :, None, :]) + az[:, None, None, :, :]
        h = torch.relu_(h.reshape(n_mlp, -1, h.shape[-1]))
        for layer in range(len(hidden) // 2):
            w, b = hidden[2 * layer], hidden[2 * layer + 1]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if layer < len(hidden) // 2 - 1:
                h = torch.relu_(h)
        out[:, i0:i1] = h[..., 0].reshape(n_mlp, i1 - i0, res, res).cpu()
    return out


# --------------------------------------------------------------------------- marching cubes


def field_to_mesh(field: np.ndarray | torch.Tensor, level: float = 0.0) -> tuple[trimesh.Trimesh | None, str]:
    """Marching cubes on a [res, res, res] logit grid over [-0.5, 0.5]^3; returns (mesh, status).

    status is "ok", "empty" (no point at or above `level`), "full" (no point below it) or
    "non-finite" (NaN or infinite values: a diverged sample's weights), the last three with
    mesh None. Inside is the larger side, which scikit-image's "ascent" convention orients
    outwards (checked by a positive volume in tests/test_mesh.py).
    """
    from skimage.measure import marching_cubes

    field = np.asarray(field, np.float32)
    if not np.isfinite(field).all():
        return None, "non-finite"
    if field.max() <= level:
        return None, "empty"
    if field.min() >= level:
        return None, "full"
    res = field.shape[0]
    spacing = 1.0 / (res - 1)
    verts, faces, _, _ = marching_cubes(field, level, spacing=(spacing,) * 3, method="lewiner",
                                       gradient_direction="ascent")
    return trimesh.Trimesh(verts - 0.5, faces, process=False), "ok"


def extract_meshes(weight_set: WeightSet | str | Path, res: int = 256, level: float = 0.5,
                   level_logit: float | None = None, batch_shapes: int = 4, chunk: int = 2**18,
                   device: str | torch.device = "cpu", progress: bool = False) -> list[trimesh.Trimesh | None]:
    """One mesh per MLP of a weight set (None, with a warning naming the shape, for an empty, full or
    non-finite field)."""
    ws = load_weight_set(weight_set) if isinstance(weight_set, (str, Path)) else weight_set
    cfg = MeshConfig(res=res, level=level, level_logit=level_logit, chunk=chunk, batch_shapes=batch_shapes)
    meshes: list[trimesh.Trimesh | None] = []
    with progress_bar(total=len(ws.names), desc="mesh", unit="shape", disable=not progress) as bar:
        for start in range(0, len(ws.names), batch_shapes):
            fields = evaluate_grid(ws.weights[start:start + batch_shapes], ws.mlp, res, chunk, device)
            for name, field in zip(ws.names[start:start + batch_shapes], fields):
                meshes.append(_mesh_or_warn(name, field, cfg.logit)[0])
                bar.update(1)
    return meshes


def _mesh_or_warn(name: str, field: torch.Tensor, logit: float) -> tuple[trimesh.Trimesh | None, str]:
    """(mesh, status); a warning naming the shape when there is no mesh."""
    mesh, status = field_to_mesh(field.numpy(), logit)
    if status == "non-finite":
        warnings.warn(f"{name}: the MLP gives NaN or infinite values (non-finite weights?); no mesh", stacklevel=3)
    elif status != "ok":
        side = "outside" if status == "empty" else "inside"
        warnings.warn(f"{name}: every grid point is {side} the level set (logit {logit:g}); no mesh", stacklevel=3)
    return mesh, status


def surface_cloud(mesh: trimesh.Trimesh, n: int, seed: int) -> np.ndarray:
    """n area-uniform surface samples, float32 [n, 3]."""
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(points, np.float32)


# --------------------------------------------------------------------------- the stage


def mesh_weights(weights: str | Path, out: str | Path, cfg: MeshConfig = MeshConfig(), device: str = "auto",
                 progress: bool = True, shard=None) -> dict[str, str]:
    """Write OUT/meshes/<name>.<format>, OUT/clouds/<name>.npy and OUT/mesh.json; return name -> status.

    Resumable: names already recorded in mesh.json with their files present are skipped.
    Sharded (`shard` K/N or torchrun, hyperdiffusion.shards): shard K meshes names K, K + N, ... of the
    weight set (files per name, cloud seeds by the name's global index, as unsharded) and keeps its
    status in OUT/shards/mesh/K-of-N/mesh.json; the last shard merges them into OUT/mesh.json.
    """
    from hyperdiffusion import shards as sharding

    shard = sharding.resolve_shard(shard)
    ws = load_weight_set(weights)
    if ws.mlp.in_dim == 4 and shard is not None:
        raise InputError("mesh --shard: 4D weight sets are meshed unsharded")
    if ws.mlp.in_dim == 4:  # 4D MLPs: one mesh per frame, animated GLB and preview (mesh4d.py)
        from hyperdiffusion.fields.mesh4d import mesh_weights_4d

        return mesh_weights_4d(weights, out, cfg, device, progress)
    out = ensure_writable_dir(out)
    from hyperdiffusion.diffusion.runtime import resolve_device  # LOCAL_RANK's GPU under torchrun (shards)

    dev = resolve_device(device)
    status_path = out / "mesh.json" if shard is None else sharding.shard_dir(out, "mesh", shard) / "mesh.json"
    record = {"config": asdict(cfg), "level_logit": cfg.logit, "weights": str(weights), "status": {}}
    if status_path.exists():
        old = read_json(status_path)
        if old.get("config") != record["config"]:
            raise InputError(f"{status_path}: written with other settings; use a new output folder")
        record["status"] = {n: s for n, s in old.get("status", {}).items() if s != "ok" or _files_exist(out, n, cfg)}
    mine = ws.names if shard is None else shard.take(ws.names)
    todo = [n for n in mine if n not in record["status"]]
    index = {n: i for i, n in enumerate(ws.names)}
    t0 = time.perf_counter()
    with progress_bar(total=len(mine), initial=len(mine) - len(todo), desc="mesh", unit="shape",
                      disable=not progress) as bar:
        for start in range(0, len(todo), cfg.batch_shapes):
            names = todo[start:start + cfg.batch_shapes]
            fields = evaluate_grid(ws.weights[[index[n] for n in names]], ws.mlp, cfg.res, cfg.chunk, dev)
            for name, field in zip(names, fields):
                mesh, status = _mesh_or_warn(name, field, cfg.logit)
                if mesh is not None:
                    path = out / "meshes" / f"{safe_name(name)}.{cfg.format}"
                    with atomic_path(path) as tmp:
                        mesh.export(tmp, file_type=cfg.format)
                    seed = cfg.seed * 1_000_003 + index[name]
                    save_npy(out / "clouds" / f"{safe_name(name)}.npy", surface_cloud(mesh, cfg.n_points, seed))
                record["status"][name] = status
                bar.update(1)
            write_json(status_path, record)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(status_path, record)
    counts = status_counts(record["status"])
    print("meshes: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES) + f" -> {out}"
          + (f" (shard {shard})" if shard is not None else ""))
    if shard is not None:
        sharding.finish(out, "mesh", shard, "mesh", {"weights": str(weights), "config": asdict(cfg)})
    return record["status"]


def merge_shards(out: Path, args: dict, count: int) -> dict[str, str]:
    """hyperdiffusion.shards merger: OUT/mesh.json from the shards' status files (meshes and clouds are
    already in OUT, one file per name). Names in weight-set order, as an unsharded run records them."""
    from hyperdiffusion import shards as sharding

    ws = load_weight_set(args["weights"])
    parts = [read_json(sharding.shard_dir(out, "mesh", sharding.Shard(k, count)) / "mesh.json") for k in range(count)]
    status = {n: s for p in parts for n, s in p["status"].items()}
    if set(status) != set(ws.names):
        raise InputError(f"{out}: the mesh shards cover {len(status)} of {len(ws.names)} names")
    record = {**{k: parts[0][k] for k in ("config", "level_logit", "weights")},
              "status": {n: status[n] for n in ws.names},
              "seconds": round(sum(p.get("seconds", 0.0) for p in parts), 2), "shards": count}
    write_json(out / "mesh.json", record)
    return record["status"]


def status_counts(status: dict[str, str]) -> dict[str, int]:
    """How many names have each status of STATUSES (mesh.json's "status")."""
    return {s: sum(v == s for v in status.values()) for s in STATUSES}


def _files_exist(out: Path, name: str, cfg: MeshConfig) -> bool:
    return (out / "meshes" / f"{safe_name(name)}.{cfg.format}").is_file() and \
        (out / "clouds" / f"{safe_name(name)}.npy").is_file()


def register(subparsers) -> None:
    d = MeshConfig()
    p = subparsers.add_parser("mesh", help="MLP weights -> marching-cubes meshes and 2048-point clouds",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("weights", help="weights.safetensors (or its folder) from fit or sample")
    p.add_argument("out", help="output folder: meshes/, clouds/, mesh.json")
    p.add_argument("--res", type=int, default=d.res, help="grid resolution (default: %(default)s)")
    p.add_argument("--level", type=float, default=d.level, help="surface probability (default: %(default)s)")
    p.add_argument("--level-logit", type=float, default=None,
                   help="surface as a logit; overrides --level (official test: 1.386)")
    p.add_argument("--n-points", type=int, default=d.n_points, help="cloud points (default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default=d.format)
    p.add_argument("--batch-shapes", type=int, default=d.batch_shapes, help="MLPs evaluated together")
    p.add_argument("--chunk", type=int, default=d.chunk, help="grid points per pass (memory bound)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    add_shard_argument(p, "shapes")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    cfg = MeshConfig(res=args.res, level=args.level, level_logit=args.level_logit, n_points=args.n_points,
                     format=args.format, chunk=args.chunk, batch_shapes=args.batch_shapes, seed=args.seed)
    mesh_weights(args.weights, args.out, cfg, args.device, progress=not args.no_progress, shard=args.shard)
    return 0

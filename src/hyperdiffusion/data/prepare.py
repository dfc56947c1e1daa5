"""The `prepare` stage: meshes in, occupancy samples out (docs/FORMATS.md, "Prepared dataset").

Per shape (paper Sec. 4 / REFERENCE.md "Data preparation"): load the mesh, check
it, centre it on its vertex mean and scale it so that max |coordinate| = 0.475,
then draw 100k surface samples plus N(0, 0.01^2) noise and 100k uniform samples
in [-0.5, 0.5]^3, label them inside/outside (`hyperdiffusion.data.occupancy.inside`),
and draw a 2048-point reference cloud for evaluation. Files are written
atomically and `meta.json` last, so a shape folder with a `meta.json` is
finished and a rerun skips it.

Bad meshes never stop the run: each is skipped with its reason in the manifest
and the printed summary. What counts as bad (decided here; the paper is silent):
  - unreadable or truncated files, unsupported formats;
  - no faces (empty files, point clouds);
  - faces that index past the vertex list;
  - NaN/Inf coordinates on vertices that faces use (unused vertices are dropped);
  - no face with non-zero area: all vertices coincide or are collinear.
A flat mesh (zero extent along one axis, e.g. a sheet of paper) is *kept*: thin
sheets are real data; its manifest entry carries a note and few points are
labelled inside. Meshes above `max_faces` are decimated (quadric decimation,
noted in the entry) or skipped when decimation fails.

Every shape gets its own random generator, derived from the seed and the shape's
name, so its samples do not depend on the order or number of workers.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import trimesh

from hyperdiffusion.io import (
    InputError,
    atomic_path,
    ensure_writable_dir,
    load_npy,
    load_npz,
    read_json,
    safe_name,
    save_npy,
    save_npz,
    write_json,
)

DATASET_FORMAT = "hyperdiffusion-dataset"
SHAPE_FORMAT = "hyperdiffusion-shape"
SPLITS = ("train", "val", "test")
MESH_EXTENSIONS = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
# Other 3D formats found in a source folder are listed as skipped (the user
# probably meant them to be used); all remaining files (textures, .mtl, .json)
# are ignored.
OTHER_3D_EXTENSIONS = frozenset(
    ".3ds .3mf .ase .blend .c4d .dae .dxf .fbx .ifc .iges .igs .las .lwo .ma .max .mb .pcd "
    ".skp .step .stp .usd .usda .usdc .usdz .vrml .wrl .x3d .xyz".split()
)
# ShapeNetCore v1 stores `<id>/model.obj`, v2 `<id>/models/model_normalized.obj`.
SHAPENET_FILES = ("model.obj", "model_normalized.obj")
MANIFEST_WRITE_INTERVAL_S = 1.0  # finished shapes are safe in their meta.json anyway
EVAL_SET_VERSION = 1
EVAL_GRID = 128  # voxels per cube side that define the evaluation set's shell stratum
EVAL_SHELL_VOXELS = 2  # the shell: voxels the surface touches, dilated by this many voxels


@dataclass(frozen=True)
class PrepareConfig:
    """Defaults are the official code's (REFERENCE.md "Data preparation")."""

    normalise: str = "mean"  # "mean": centre the vertex mean (official code); "bbox": centre the bounding box
    scale: float = 0.475  # max |coordinate| after normalisation: 0.5 * 0.95
    n_surface: int = 100_000  # near-surface samples ...
    surface_noise: float = 0.01  # ... with N(0, surface_noise^2) noise per coordinate
    n_uniform: int = 100_000  # uniform samples in [-0.5, 0.5]^3
    n_cloud: int = 2048  # reference surface cloud for evaluation (Sec. 5, 2048 points)
    split_fractions: tuple[float, float, float] = (0.80, 0.05, 0.15)  # train/val/test, airplane split
    split_file: str | None = None  # JSON {"train": [...], "val": [...], "test": [...]} overrides fractions
    max_faces: int = 500_000  # larger meshes are decimated to this many faces
    workers: int = 0  # processes; 0 = all CPU cores
    seed: int = 0
    # The evaluation set (eval.npz; `make_eval_set`), never trained on; not part of the paper.
    # None: a fixed share of the training samples, 15 % / 7.5 % / 7.5 % (30k / 15k / 15k at the
    # paper's 200k, +30 % labelling): 30k shell points hold 3k-9k inside points on real chairs
    # filling 0.2-1 % of the cube (benchmarks/RESULTS.md "Fit evaluation").
    n_eval_shell: int | None = None  # uniform in the thin shell of voxels the surface touches
    n_eval_far: int | None = None  # uniform in the rest of the cube
    n_eval_surface: int | None = None  # near-surface points drawn as the training ones

    def eval_settings(self) -> dict[str, Any] | None:
        """What makes a shape's eval.npz; None when no evaluation set is made (all counts 0)."""
        if not (self.n_eval_shell or self.n_eval_far or self.n_eval_surface):
            return None
        return {"version": EVAL_SET_VERSION, "n_eval_shell": self.n_eval_shell, "n_eval_far": self.n_eval_far,
                "n_eval_surface": self.n_eval_surface, "surface_noise": self.surface_noise,
                "grid": EVAL_GRID, "shell_voxels": EVAL_SHELL_VOXELS, "seed": self.seed}

    def __post_init__(self) -> None:
        if self.normalise not in ("mean", "bbox"):
            raise InputError(f"normalise must be 'mean' or 'bbox', not {self.normalise!r}")
        if min(self.n_surface, self.n_uniform) < 0 or self.n_surface + self.n_uniform < 1 or self.n_cloud < 1:
            raise InputError("n_surface and n_uniform must be >= 0 (not both 0) and n_cloud >= 1")
        fr = tuple(float(f) for f in self.split_fractions)
        if len(fr) != 3 or min(fr) < 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
            raise InputError(f"split fractions must be 3 non-negative numbers summing to 1, not {fr}")
        object.__setattr__(self, "split_fractions", fr)
        if self.max_faces < 4 or self.scale <= 0 or self.surface_noise < 0:
            raise InputError("max_faces must be >= 4, scale > 0 and surface_noise >= 0")
        n_train = self.n_surface + self.n_uniform
        for key, share in (("n_eval_shell", 0.15), ("n_eval_far", 0.075), ("n_eval_surface", 0.075)):
            if getattr(self, key) is None:
                object.__setattr__(self, key, int(round(share * n_train)))
            if getattr(self, key) < 0:
                raise InputError(f"{key} must be >= 0")

    def resolved(self) -> PrepareConfig:
        """The same config with `workers` set to the actual process count."""
        return PrepareConfig(**{**asdict(self), "workers": self.workers or _cpu_count()})

    def data_settings(self) -> dict[str, Any]:
        """The settings that change a shape's files; a rerun into the same OUT must match them."""
        keep = ("normalise", "scale", "n_surface", "surface_noise", "n_uniform", "n_cloud", "max_faces", "seed")
        return {k: getattr(self, k) for k in keep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrepareConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# Sources: which shapes to prepare, under which names


@dataclass(frozen=True)
class Source:
    name: str  # safe, unique shape name
    source: str  # file path, or "builtin:<family>:<seed>"
    reason: str | None = None  # set when the source is known to be unusable (unsupported format)


def find_sources(src: str | os.PathLike, count: int | None = None, seed: int = 0,
                 exclude: str | os.PathLike | None = None) -> tuple[list[Source], str]:
    """The shapes under `src` and the layout found: "builtin", "shapenet", "folder" or "file".

    `builtin:<family>` makes `count` shapes named `<family>_0000`.. with seeds
    `seed + index`; for folders `count` keeps the first `count` shapes by name.
    Files under `exclude` (the output folder, when it lies inside `src`) are ignored.
    """
    text = str(src)
    if text.startswith("builtin:"):
        from hyperdiffusion.data import shapes

        family = text.split(":", 1)[1]
        if family not in shapes.FAMILIES:
            from hyperdiffusion.data.animated_shapes import FAMILIES as ANIMATED

            raise InputError(f"{text}: unknown built-in family; choose from {', '.join(shapes.FAMILIES)} "
                             f"(animated, 4D: {', '.join(ANIMATED)})")
        if not count or count < 1:
            raise InputError(f"{text}: say how many shapes to make with --count N")
        return [Source(f"{family}_{i:04d}", f"builtin:{family}:{seed + i}") for i in range(count)], "builtin"

    root = Path(src)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    if root.is_file():
        return [_source_for_file(root, safe_name(root.stem))], "file"
    if not root.is_dir():
        raise InputError(f"{root}: not a file or folder")

    skip = Path(exclude).resolve() if exclude is not None else None
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not (skip is not None and p.resolve().is_relative_to(skip)))
    shapenet = [p for p in files if p.name in SHAPENET_FILES]
    if shapenet:
        # The shape id is the folder holding model.obj (v1) or holding models/ (v2).
        named = [(_shapenet_id(p), p) for p in shapenet]
        layout = "shapenet"
    else:
        candidates = [p for p in files if p.suffix.lower() in MESH_EXTENSIONS or p.suffix.lower() in OTHER_3D_EXTENSIONS]
        named = [(str(p.relative_to(root).with_suffix("")), p) for p in candidates]
        layout = "folder"
    sources = [_source_for_file(p, name) for name, p in _unique_names(named, root)]
    sources.sort(key=lambda s: s.name)
    return (sources[:count] if count else sources), layout


def _shapenet_id(path: Path) -> str:
    return path.parent.parent.name if path.parent.name == "models" else path.parent.name


def _unique_names(named: list[tuple[str, Path]], root: Path) -> list[tuple[str, Path]]:
    """safe_name each candidate; clashes (a.obj and a.ply) get the extension, then _2, _3..."""
    by_name: dict[str, list[Path]] = {}
    for raw, path in named:
        by_name.setdefault(safe_name(raw), []).append(path)
    out: list[tuple[str, Path]] = []
    taken = {n for n, ps in by_name.items() if len(ps) == 1}
    for name, paths in sorted(by_name.items()):
        if len(paths) == 1:
            out.append((name, paths[0]))
            continue
        for path in sorted(paths):
            base = f"{name}_{path.suffix.lstrip('.').lower()}" if path.suffix else name
            unique, k = base, 2
            while unique in taken:
                unique, k = f"{base}_{k}", k + 1
            taken.add(unique)
            out.append((unique, path))
    return out


def _source_for_file(path: Path, name: str) -> Source:
    if path.suffix.lower() not in MESH_EXTENSIONS:
        supported = " ".join(MESH_EXTENSIONS)
        return Source(name, str(path), f"unsupported format: {path.suffix or '(none)'} (supported: {supported})")
    return Source(name, str(path))


# ---------------------------------------------------------------------------
# One shape: load -> check -> normalise -> sample -> label -> write


class SkipShape(Exception):
    """This shape cannot be prepared; the message ("kind: detail") is the reason in the manifest."""


def load_mesh(source: str) -> trimesh.Trimesh:
    """Read a mesh file (multi-part scenes concatenated) or make a built-in shape."""
    if source.startswith("builtin:"):
        from hyperdiffusion.data import shapes

        _, family, seed = source.split(":")
        return shapes.make_shape(family, int(seed))
    path = Path(source)
    kwargs = {"skip_materials": True} if path.suffix.lower() == ".obj" else {}
    try:
        # process=False: we check and clean the raw data ourselves (check_mesh),
        # so problems are reported instead of silently repaired.
        mesh = trimesh.load(str(path), force="mesh", process=False, **kwargs)
    except IndexError as e:  # trimesh's OBJ reader on faces past the vertex list
        raise SkipShape(f"bad faces: face index out of range ({e})") from None
    except Exception as e:
        raise SkipShape(f"unreadable: {type(e).__name__}: {_short(e)}") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise SkipShape(f"empty mesh: not a triangle mesh ({type(mesh).__name__})")
    return mesh


def check_mesh(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, list[str]]:
    """A clean copy of `mesh` (merged vertices, no unused vertices, no zero-area faces) and notes.

    Raises SkipShape for meshes that cannot be prepared (see module docstring).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise SkipShape(f"empty mesh: no faces ({len(vertices)} vertices)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        bad = int(faces.max()) if faces.max() >= len(vertices) else int(faces.min())
        raise SkipShape(f"bad faces: face index {bad} out of range for {len(vertices)} vertices")
    used, faces = np.unique(faces, return_inverse=True)  # drop vertices no face uses
    vertices, faces = vertices[used], faces.reshape(-1, 3)
    n_bad = int((~np.isfinite(vertices)).any(axis=1).sum())
    if n_bad:
        raise SkipShape(f"non-finite: {n_bad} vertices have NaN/Inf coordinates")
    # Merging duplicate vertices (split at UV seams in OBJ files) keeps the
    # vertex mean from being weighted by texture layout; trimesh's default.
    clean = trimesh.Trimesh(vertices, faces, process=True)
    clean.update_faces(clean.nondegenerate_faces())
    clean.remove_unreferenced_vertices()
    if len(clean.faces) == 0:
        raise SkipShape(f"degenerate: all {len(faces)} faces have zero area (coincident or collinear vertices)")
    notes = []
    extent = np.ptp(clean.vertices, axis=0)
    if (extent <= 1e-9 * extent.max()).any():
        notes.append("flat mesh (zero extent along an axis): kept as a thin sheet, little or no inside")
    return clean, notes


def limit_faces(mesh: trimesh.Trimesh, max_faces: int) -> tuple[trimesh.Trimesh, list[str]]:
    """Quadric decimation down to `max_faces` faces, or SkipShape when that fails."""
    if len(mesh.faces) <= max_faces:
        return mesh, []
    n = len(mesh.faces)
    try:
        small = mesh.simplify_quadric_decimation(face_count=max_faces)
    except Exception as e:
        raise SkipShape(f"too many faces: {n} > max_faces {max_faces} and decimation failed ({_short(e)})") from None
    if not 0 < len(small.faces) <= max_faces:
        raise SkipShape(f"too many faces: {n} > max_faces {max_faces} and decimation gave {len(small.faces)}")
    return small, [f"decimated from {n} to {len(small.faces)} faces (max_faces {max_faces})"]


def normalise(mesh: trimesh.Trimesh, mode: str = "mean", scale: float = 0.475) -> tuple[trimesh.Trimesh, np.ndarray, float]:
    """Centre the mesh (vertex mean or bounding-box centre), then scale so max |coord| = `scale`.

    Returns (new mesh, centre, factor): new vertices = (old - centre) * factor.
    """
    v = np.asarray(mesh.vertices, dtype=np.float64)
    centre = v.mean(axis=0) if mode == "mean" else (v.min(axis=0) + v.max(axis=0)) / 2
    radius = np.abs(v - centre).max()
    if not np.isfinite(radius) or radius <= 0:
        raise SkipShape("degenerate: zero extent on all axes")
    factor = scale / radius
    return trimesh.Trimesh((v - centre) * factor, mesh.faces.copy(), process=False), centre, float(factor)


def shape_rng(seed: int, name: str) -> np.random.Generator:
    """Per-shape generator from (seed, name): independent of order and worker count."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def sample_points(mesh: trimesh.Trimesh, config: PrepareConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(points float32 [n_surface + n_uniform, 3], cloud float32 [n_cloud, 3]).

    Near-surface points first (area-weighted surface samples plus Gaussian
    noise), then uniform points in [-0.5, 0.5]^3, as in the official code.
    """
    surface, _ = trimesh.sample.sample_surface(mesh, config.n_surface, seed=rng)
    near = surface + rng.normal(0.0, config.surface_noise, size=surface.shape)
    uniform = rng.uniform(-0.5, 0.5, size=(config.n_uniform, 3))
    cloud, _ = trimesh.sample.sample_surface(mesh, config.n_cloud, seed=rng)
    points = np.concatenate([near.reshape(-1, 3), uniform]).astype(np.float32)
    return points, np.asarray(cloud, dtype=np.float32)


def eval_rng(seed: int, name: str) -> np.random.Generator:
    """The evaluation set's own generator: independent of the training samples' stream."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest, 0xE7A1])


def make_eval_set(mesh: trimesh.Trimesh, config: PrepareConfig, name: str) -> dict[str, np.ndarray]:
    """A shape's evaluation set (eval.npz; docs/FORMATS.md): labelled points never trained on.

    Volume IoU from uniform points is noisy for thin shapes: a chair fills 0.2-3 % of the
    cube, so 10k uniform points hold 20-300 inside ones. The inside of a shape and nearly
    all fitting errors lie close to its surface, so the cube is split into two strata of
    known volume: the *shell* (voxels of a EVAL_GRID^3 grid that surface samples touch,
    dilated by EVAL_SHELL_VOXELS voxels) and the *far* rest. Points are uniform within each
    stratum; `surface_scores.volume_iou` weights each stratum by its volume, which keeps the
    IoU estimate unbiased for the whole cube (debris far from the shape is counted) while
    most labelled points land where inside and outside meet. A third set, near-surface
    points drawn as the training ones (surface + N(0, surface_noise^2)), scores the surface.

    Returns points float32 [n, 3], occ uint8 [n], stratum uint8 [n] (0 shell, 1 far,
    2 near-surface) and volumes float64 [2] (shell, far; they sum to 1, the cube's volume).
    """
    from scipy import ndimage

    from hyperdiffusion.data.occupancy import inside

    rng = eval_rng(config.seed, name)
    g = EVAL_GRID
    touched, _ = trimesh.sample.sample_surface(mesh, 200_000, seed=rng)  # ~4 per touched voxel at area 3
    shell = np.zeros((g,) * 3, bool)
    shell[tuple(np.clip(((touched + 0.5) * g).astype(np.int64), 0, g - 1).T)] = True
    shell = ndimage.binary_dilation(shell, np.ones((3, 3, 3), bool), iterations=EVAL_SHELL_VOXELS)
    cells = np.flatnonzero(shell)
    v_shell = len(cells) / g**3
    ijk = np.stack(np.unravel_index(cells[rng.integers(len(cells), size=config.n_eval_shell)], shell.shape), 1)
    in_shell = (ijk + rng.random((config.n_eval_shell, 3))) / g - 0.5
    far = np.zeros((0, 3))
    while len(far) < config.n_eval_far and v_shell < 1:  # rejection: uniform in the cube minus the shell
        cand = rng.uniform(-0.5, 0.5, (2 * config.n_eval_far + 1000, 3))
        keep = ~shell[tuple(np.clip(((cand + 0.5) * g).astype(np.int64), 0, g - 1).T)]
        far = np.concatenate([far, cand[keep]])
    far = far[:config.n_eval_far]
    near = np.zeros((0, 3))
    if config.n_eval_surface:
        near, _ = trimesh.sample.sample_surface(mesh, config.n_eval_surface, seed=rng)
        near = near + rng.normal(0.0, config.surface_noise, size=near.shape)
    points = np.concatenate([in_shell, far, near.reshape(-1, 3)]).astype(np.float32)
    stratum = np.repeat(np.arange(3, dtype=np.uint8), [len(in_shell), len(far), config.n_eval_surface])
    occ = np.asarray(inside(mesh, points), dtype=bool).astype(np.uint8)
    return {"points": points, "occ": occ, "stratum": stratum, "volumes": np.array([v_shell, 1.0 - v_shell])}


def add_eval_set(name: str, source: str, root: str | os.PathLike, config: PrepareConfig) -> dict[str, Any]:
    """Resume step: write a finished shape's eval.npz from its mesh.ply; return its manifest entry.

    For datasets prepared before the evaluation set existed (or with other eval counts):
    the shape's samples, mesh and cloud stay as they are.
    """
    folder = shape_dir(root, name)
    meta = read_json(folder / "meta.json")
    try:
        mesh = trimesh.load(str(folder / "mesh.ply"), force="mesh", process=False)
        save_npz(folder / "eval.npz", **make_eval_set(mesh, config, name))
    except Exception as e:  # keep the shape; fit reports it without eval scores
        print(f"{folder}: could not add the evaluation set ({type(e).__name__}: {_short(e)})", file=sys.stderr)
        return _entry_from_meta(folder / "meta.json", config)
    write_json(folder / "meta.json", {**meta, "eval": config.eval_settings()})
    return _entry_from_meta(folder / "meta.json", config)


def needs_eval_set(folder: Path, config: PrepareConfig) -> bool:
    """A finished shape whose eval.npz is missing or was made with other settings."""
    want = config.eval_settings()
    if want is None:
        return False
    meta = read_json(folder / "meta.json")
    return not (folder / "eval.npz").is_file() or not isinstance(meta, dict) or meta.get("eval") != want


def labelling_settings() -> dict[str, Any]:
    """How inside/outside was decided (docs/OCCUPANCY.md), recorded so datasets labelled
    by different versions of the method can be told apart."""
    from hyperdiffusion import __version__
    from hyperdiffusion.data.occupancy import OccupancyConfig

    return {"occupancy": asdict(OccupancyConfig()), "hyperdiffusion": __version__}


def prepare_shape(name: str, source: str, root: str | os.PathLike, config: PrepareConfig) -> dict[str, Any]:
    """Prepare one shape into `root/shapes/<name>/`; return its manifest entry (without split).

    Never raises for a bad shape: the entry then has status "skipped" and the reason.
    """
    from hyperdiffusion.data.occupancy import label

    start = time.perf_counter()
    folder = Path(root) / "shapes" / name
    entry: dict[str, Any] = {"source": source, "status": "skipped", "reason": None, "n_vertices": None,
                             "n_faces": None, "inside_fraction": None, "seconds": None}
    try:
        raw = load_mesh(source)
        mesh, notes = check_mesh(raw)
        mesh, more = limit_faces(mesh, config.max_faces)
        mesh, centre, factor = normalise(mesh, config.normalise, config.scale)
        rng = shape_rng(config.seed, name)
        points, cloud = sample_points(mesh, config, rng)
        occ, labeller = label(mesh, points)  # labeller: which path labelled it (occupancy.LABELLERS)
        occ = np.asarray(occ, dtype=bool).astype(np.uint8)
        if occ.shape != (len(points),):
            raise SkipShape(f"error: occupancy returned shape {occ.shape} for {len(points)} points")
        evaluation = make_eval_set(mesh, config, name) if config.eval_settings() is not None else None
    except SkipShape as e:
        entry["reason"] = str(e)
    except Exception as e:  # a library failing on odd input must not stop the whole run
        entry["reason"] = f"error: {type(e).__name__}: {_short(e)}"
    if entry["reason"] is not None:
        _remove_partial(folder)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        return entry

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "mesh.ply") as tmp:
        mesh.export(tmp)
    save_npz(folder / "samples.npz", points=points, occ=occ, n_surface=np.int64(config.n_surface))
    save_npy(folder / "cloud.npy", cloud)
    if evaluation is not None:
        save_npz(folder / "eval.npz", **evaluation)
    entry.update(status="ok", reason="; ".join(notes + more) or None, n_vertices=len(mesh.vertices),
                 n_faces=len(mesh.faces), inside_fraction=round(float(occ.mean()), 6),
                 seconds=round(time.perf_counter() - start, 3))
    meta = {"format": SHAPE_FORMAT, "name": name, **entry, "source_vertices": len(raw.vertices),
            "source_faces": len(raw.faces), "normalisation": {"centre": centre.tolist(), "factor": factor},
            "config": config.data_settings(), "labelling": labelling_settings(), "labeller": labeller,
            "eval": config.eval_settings()}
    write_json(folder / "meta.json", meta)  # last: marks the shape finished
    return entry


def _remove_partial(folder: Path,
                    files: tuple[str, ...] = ("mesh.ply", "samples.npz", "cloud.npy", "eval.npz")) -> None:
    """Remove what an unfinished attempt may have left (never a finished shape's files)."""
    if (folder / "meta.json").exists():
        return
    for f in files:
        (folder / f).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holds files that are not ours


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# Splits


def assign_splits(names: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Shuffle the sorted names with `seed`; val and test get round(fraction * n), train the rest."""
    order = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(order))
    n_val = round(fractions[1] * len(order))
    n_test = min(round(fractions[2] * len(order)), len(order) - n_val)
    shuffled = [order[i] for i in perm]
    val, test, train = shuffled[:n_val], shuffled[n_val:n_val + n_test], shuffled[n_val + n_test:]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def read_split_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """User-given splits: JSON {"train": [...], "val": [...], "test": [...]} (names as prepared)."""
    data = read_json(path)
    if not isinstance(data, dict) or set(data) - set(SPLITS):
        raise InputError(f"{path}: expected a JSON object with keys {', '.join(SPLITS)}")
    splits: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        names = data.get(split, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: {split!r} must be a list of shape names")
        for n in names:
            n = safe_name(n)
            if n in seen:
                raise InputError(f"{path}: shape {n!r} is in both {seen[n]!r} and {split!r}")
            seen[n] = split
        splits[split] = [safe_name(n) for n in names]
    return splits


def resolve_splits(ok_names: list[str], config: PrepareConfig) -> tuple[dict[str, list[str]], list[str]]:
    """Splits of the prepared shapes and warnings (user-listed names that were not prepared)."""
    if config.split_file is None:
        return assign_splits(ok_names, config.split_fractions, config.seed), []
    given = read_split_file(config.split_file)
    ok = set(ok_names)
    missing = sorted(n for names in given.values() for n in names if n not in ok)
    warnings = [f"{config.split_file}: {len(missing)} listed shapes were not prepared: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")] if missing else []
    return {s: sorted(n for n in given[s] if n in ok) for s in SPLITS}, warnings


# ---------------------------------------------------------------------------
# The stage


@dataclass
class PrepareResult:
    manifest: dict[str, Any]
    n_new: int  # shapes attempted in this run (prepared or skipped)
    n_reused: int  # finished shapes found from an earlier run
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        return sum(e["status"] == "ok" for e in self.manifest["shapes"].values())

    @property
    def skipped(self) -> dict[str, str]:
        return {n: e["reason"] for n, e in self.manifest["shapes"].items() if e["status"] != "ok"}


def prepare(src: str | os.PathLike, out: str | os.PathLike, config: PrepareConfig = PrepareConfig(), *,
            count: int | None = None, progress: bool = True, kind: str = "auto",
            animation: Any = None) -> PrepareResult:
    """Prepare every shape of `src` into `out` (docs/FORMATS.md); resumes where a previous run stopped.

    4D sources (.anime files, `builtin:<animated family>`, or sequence folders with
    kind="4d") go to `animation.prepare_animations` with `animation` (an AnimationConfig).
    """
    from hyperdiffusion.data import animation as anim_mod

    if anim_mod.is_animation_source(src, kind):
        return anim_mod.prepare_animations(src, out, config, animation or anim_mod.AnimationConfig(), count=count,
                                           progress=progress, kind=kind)
    start = time.perf_counter()
    config = config.resolved()
    if config.split_file is not None:
        read_split_file(config.split_file)  # fail early, before hours of work
    sources, layout = find_sources(src, count=count, seed=config.seed, exclude=out)
    if not sources:
        raise InputError(f"{src}: no mesh files found (looked for {' '.join(MESH_EXTENSIONS)})")
    root = ensure_writable_dir(out)
    _check_previous_run(root, config)

    entries: dict[str, dict[str, Any]] = {}
    todo: list[Source] = []
    eval_todo: list[Source] = []  # finished shapes without (this) evaluation set: add only that
    n_reused = 0
    for s in sources:
        meta_path = root / "shapes" / s.name / "meta.json"
        if meta_path.exists():
            entries[s.name] = _entry_from_meta(meta_path, config)
            n_reused += 1
            if entries[s.name]["status"] == "ok" and needs_eval_set(meta_path.parent, config):
                eval_todo.append(s)
        elif s.reason is not None:
            entries[s.name] = {"source": s.source, "status": "skipped", "reason": s.reason, "n_vertices": None,
                               "n_faces": None, "inside_fraction": None, "seconds": 0.0}
        else:
            todo.append(s)

    base = {"format": DATASET_FORMAT, "version": 1, "source": str(src), "layout": layout, "config": asdict(config),
            "labelling": labelling_settings()}
    writer = _ManifestWriter(root / "manifest.json", base)
    writer.write(entries, force=True)
    from hyperdiffusion.progress import progress as progress_bar

    bar = progress_bar(total=len(sources), initial=len(entries), unit="shape", desc="prepare", disable=not progress)
    try:
        if eval_todo:
            print(f"{root}: adding the evaluation set (eval.npz) to {len(eval_todo)} shapes prepared without it "
                  "(their training samples are kept)", file=sys.stderr)
            for name, entry in _run_shapes(eval_todo, root, config, worker=add_eval_set):
                entries[name] = entry
        for name, entry in _run_shapes(todo, root, config):
            entries[name] = entry
            bar.update(1)
            writer.write(entries)
    finally:
        bar.close()
        writer.write(entries, force=True)  # keep the finished shapes' entries, even on Ctrl-C

    ok_names = sorted(n for n, e in entries.items() if e["status"] == "ok")
    splits, warnings = resolve_splits(ok_names, config)
    split_of = {n: s for s, names in splits.items() for n in names}
    for name, entry in entries.items():
        entry["split"] = split_of.get(name)
    manifest = writer.write(entries, splits=splits, complete=True, force=True)
    return PrepareResult(manifest, len(todo), n_reused, time.perf_counter() - start, warnings)


def _check_previous_run(root: Path, config: PrepareConfig) -> None:
    path = root / "manifest.json"
    if not path.exists():
        return
    old = read_json(path)
    if not isinstance(old, dict) or old.get("format") != DATASET_FORMAT:
        raise InputError(f"{path}: not a hyperdiffusion dataset manifest; choose another OUT folder")
    _check_settings(path, PrepareConfig.from_dict(old.get("config", {})).data_settings(), config)


def _check_settings(path: Path, old: dict[str, Any], config: PrepareConfig) -> None:
    new = config.data_settings()
    diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    if diff:
        raise InputError(f"{path}: prepared with other settings ({', '.join(diff)}); use another OUT folder")


def _entry_from_meta(path: Path, config: PrepareConfig) -> dict[str, Any]:
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != SHAPE_FORMAT:
        raise InputError(f"{path}: not a prepared shape's meta.json; delete it to redo the shape")
    _check_settings(path, meta.get("config", {}), config)
    keys = ("source", "status", "reason", "n_vertices", "n_faces", "inside_fraction", "seconds")
    return {k: meta.get(k) for k in keys}


class _ManifestWriter:
    """Rewrites manifest.json atomically, at most once per MANIFEST_WRITE_INTERVAL_S unless forced."""

    def __init__(self, path: Path, base: dict[str, Any]) -> None:
        self.path, self.base, self.last = path, base, -math.inf

    def write(self, entries: dict[str, dict[str, Any]], splits: dict[str, list[str]] | None = None,
              complete: bool = False, force: bool = False) -> dict[str, Any]:
        manifest = {**self.base, "complete": complete,
                    "splits": splits or {s: [] for s in SPLITS},
                    "shapes": {n: {**entries[n], "split": entries[n].get("split")} for n in sorted(entries)}}
        now = time.monotonic()
        if force or now - self.last >= MANIFEST_WRITE_INTERVAL_S:
            write_json(self.path, manifest)
            self.last = now
        return manifest


def _run_shapes(todo: list[Source], root: Path, config: PrepareConfig, worker=None,
                extra: tuple = ()) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (name, entry) as shapes finish: in this process for one worker, else a process pool.

    `worker(name, source, root, config, *extra)` prepares one item (default `prepare_shape`;
    the 4D branch passes `animation.prepare_sequence`)."""
    worker = worker or prepare_shape
    workers = min(config.workers, len(todo))
    if workers <= 1:
        for s in todo:
            yield s.name, worker(s.name, s.source, root, config, *extra)
        return
    import multiprocessing

    # spawn: no inherited torch/OpenMP thread pools; one thread per worker so
    # that n workers use n cores (igl, OpenBLAS and OpenMP read these at start).
    with _single_threaded_env():
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker)
    try:
        pending = {pool.submit(worker, s.name, s.source, root, config, *extra): s for s in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                s = pending.pop(future)
                try:
                    entry = future.result()
                except Exception as e:  # the worker died (BrokenProcessPool): a rerun retries
                    entry = {"source": s.source, "status": "skipped", "n_vertices": None, "n_faces": None,
                             "inside_fraction": None, "seconds": None,
                             "reason": f"error: worker process failed ({type(e).__name__}: {_short(e)}); rerun to retry"}
                yield s.name, entry
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "IGL_NUM_THREADS")


@contextmanager
def _single_threaded_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    for k in _THREAD_VARS:
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_worker() -> None:
    for k in _THREAD_VARS:
        os.environ.setdefault(k, "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def summary(result: PrepareResult) -> str:
    """Counts, skip reasons, splits and speed, for printing."""
    m = result.manifest
    minutes = result.seconds / 60
    rate = f"{result.n_new / minutes:.1f} shapes/min" if result.n_new and minutes > 0 else "n/a"
    lines = [f"prepared {result.n_ok} shapes ({result.n_reused} finished earlier), skipped {len(result.skipped)}; "
             f"{result.n_new} processed in {result.seconds:.1f} s ({rate})"]
    if result.skipped:
        kinds = Counter(r.split(":")[0] for r in result.skipped.values())  # reasons are "kind: detail"
        lines.append("skipped: " + ", ".join(f"{k} ({c})" for k, c in kinds.most_common()))
        lines += [f"  {n}: {r}" for n, r in sorted(result.skipped.items())]
    notes = {n: e["reason"] for n, e in m["shapes"].items() if e["status"] == "ok" and e["reason"]}
    if notes:
        lines.append(f"notes on {len(notes)} prepared shapes:")
        lines += [f"  {n}: {r}" for n, r in sorted(notes.items())]
    lines.append("splits: " + ", ".join(f"{s} {len(m['splits'][s])}" for s in SPLITS))
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Reading a prepared dataset (for fit and evaluate)


@dataclass(frozen=True)
class Dataset:
    root: Path
    config: PrepareConfig
    splits: dict[str, list[str]]
    shapes: dict[str, dict[str, Any]]  # manifest entries, prepared and skipped

    def names(self, split: str = "all") -> list[str]:
        """Prepared shape names in `split` ("train", "val", "test" or "all"), sorted."""
        if split == "all":
            return sorted(n for n, e in self.shapes.items() if e["status"] == "ok")
        if split not in SPLITS:
            raise ValueError(f"split must be one of train, val, test, all; not {split!r}")
        return list(self.splits[split])


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read `path/manifest.json` (or the manifest file itself)."""
    path = Path(path)
    manifest_path = path if path.is_file() else path / "manifest.json"
    m = read_json(manifest_path)
    if not isinstance(m, dict) or m.get("format") != DATASET_FORMAT:
        raise InputError(f"{manifest_path}: not a hyperdiffusion dataset manifest")
    if not m.get("complete", False):
        raise InputError(f"{manifest_path}: preparation did not finish; rerun `hyperdiffusion prepare` to resume")
    try:
        splits = {s: list(m["splits"][s]) for s in SPLITS}
        shapes = dict(m["shapes"])
        config = PrepareConfig.from_dict(m["config"])
    except (KeyError, TypeError, InputError) as e:
        raise InputError(f"{manifest_path}: malformed manifest ({e})") from None
    return Dataset(manifest_path.parent, config, splits, shapes)


def shape_dir(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / "shapes" / safe_name(name)


def mesh_path(root: str | os.PathLike, name: str) -> Path:
    path = shape_dir(root, name) / "mesh.ply"
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return path


def load_samples(root: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(points float32 [N, 3], occ uint8 [N], n_surface): the near-surface points come first."""
    path = shape_dir(root, name) / "samples.npz"
    z = load_npz(path)
    try:
        points, occ, n_surface = z["points"], z["occ"], int(z["n_surface"])
    except KeyError as e:
        raise InputError(f"{path}: missing array {e}") from None
    if points.ndim != 2 or points.shape[1] != 3 or points.dtype != np.float32:
        raise InputError(f"{path}: points must be float32 [N, 3], not {points.dtype} {list(points.shape)}")
    if occ.shape != (len(points),) or occ.dtype != np.uint8:
        raise InputError(f"{path}: occ must be uint8 [{len(points)}], not {occ.dtype} {list(occ.shape)}")
    if not 0 <= n_surface <= len(points):
        raise InputError(f"{path}: n_surface {n_surface} outside 0..{len(points)}")
    return points, occ, n_surface


def load_eval_set(root: str | os.PathLike, name: str) -> dict[str, np.ndarray] | None:
    """The shape's evaluation set (`make_eval_set`), or None when the dataset has none (prepared
    before it existed: rerunning the same `prepare` command adds it)."""
    path = shape_dir(root, name) / "eval.npz"
    if not path.is_file():
        return None
    z = load_npz(path)
    try:
        points, occ, stratum, volumes = z["points"], z["occ"], z["stratum"], z["volumes"]
    except KeyError as e:
        raise InputError(f"{path}: missing array {e}") from None
    n = len(points)
    if points.shape != (n, 3) or occ.shape != (n,) or stratum.shape != (n,) or volumes.shape != (2,) \
            or (n and int(stratum.max()) > 2):
        raise InputError(f"{path}: expected points [n, 3], occ [n], stratum [n] in 0..2 and volumes [2]")
    return {"points": points.astype(np.float32), "occ": occ.astype(bool), "stratum": stratum.astype(np.int64),
            "volumes": volumes.astype(np.float64)}


def load_cloud(root: str | os.PathLike, name: str) -> np.ndarray:
    """The shape's reference surface cloud, float32 [n, 3]."""
    path = shape_dir(root, name) / "cloud.npy"
    cloud = load_npy(path)
    if cloud.ndim != 2 or cloud.shape[1] != 3 or cloud.dtype != np.float32:
        raise InputError(f"{path}: expected float32 [n, 3], not {cloud.dtype} {list(cloud.shape)}")
    return cloud


# ---------------------------------------------------------------------------
# CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    d = PrepareConfig()
    p = subparsers.add_parser(
        "prepare", help="meshes -> normalised meshes, occupancy samples, reference clouds, splits",
        description="Prepare a dataset (docs/FORMATS.md). SRC: a folder of meshes (obj off ply stl glb gltf, "
                    "searched recursively), a ShapeNetCore v1/v2 folder, one mesh file, or builtin:<family> "
                    "with --count N. Rerunning the same command resumes.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--count", type=int, help="builtin: how many shapes; folders: only the first N by name")
    p.add_argument("--normalise", choices=("mean", "bbox"), default=d.normalise,
                   help="centre on the vertex mean (paper) or the bounding-box centre (default: %(default)s)")
    p.add_argument("--n-surface", type=int, default=d.n_surface, help="near-surface samples (default: %(default)s)")
    p.add_argument("--surface-noise", type=float, default=d.surface_noise, help="default: %(default)s")
    p.add_argument("--n-uniform", type=int, default=d.n_uniform, help="uniform samples (default: %(default)s)")
    p.add_argument("--n-cloud", type=int, default=d.n_cloud, help="reference cloud points (default: %(default)s)")
    p.add_argument("--n-eval-shell", type=int, default=None,
                   help="evaluation set (eval.npz, never trained on): uniform points in the shell of voxels "
                        "around the surface (default: 15 %% of the training samples, 30k at the defaults)")
    p.add_argument("--n-eval-far", type=int, default=None,
                   help="evaluation set: uniform points in the rest of the cube (default: 7.5 %%)")
    p.add_argument("--n-eval-surface", type=int, default=None,
                   help="evaluation set: near-surface points (default: 7.5 %%); all three 0 = no evaluation set")
    p.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=d.split_fractions,
                   help="split fractions (default: 0.8 0.05 0.15)")
    p.add_argument("--split-file", help='JSON {"train": [...], "val": [...], "test": [...]} of shape names')
    p.add_argument("--max-faces", type=int, default=d.max_faces, help="decimate larger meshes (default: %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="processes; 0 = all CPU cores (default)")
    p.add_argument("--seed", type=int, default=d.seed, help="default: %(default)s")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("4D (animations; docs/4D.md)")
    g.add_argument("--kind", choices=("auto", "3d", "4d"), default="auto",
                   help="auto: 4D for .anime files and builtin animated families; a folder of sequence "
                        "subfolders (per-frame meshes) needs --kind 4d (default: %(default)s)")
    g.add_argument("--frames", type=int, default=16, help="frames per sequence (official: %(default)s)")
    g.add_argument("--keep-global-motion", action="store_true",
                   help="centre all frames on one mean instead of each on its own (official: own mean)")
    g.add_argument("--skip-short", action="store_true",
                   help="skip sequences with fewer source frames than --frames instead of repeating frames")
    g.add_argument("--up", choices=("y", "z"), default="y", help="source up axis; z is rotated to Y-up")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = PrepareConfig(normalise=args.normalise, n_surface=args.n_surface, surface_noise=args.surface_noise,
                           n_uniform=args.n_uniform, n_cloud=args.n_cloud, split_fractions=tuple(args.split),
                           split_file=args.split_file, max_faces=args.max_faces, workers=args.workers,
                           seed=args.seed, n_eval_shell=args.n_eval_shell, n_eval_far=args.n_eval_far,
                           n_eval_surface=args.n_eval_surface)
    from hyperdiffusion.data.animation import AnimationConfig

    anim = AnimationConfig(n_frames=args.frames, keep_global_motion=args.keep_global_motion,
                           skip_short=args.skip_short, up=args.up)
    result = prepare(args.src, args.out, config, count=args.count, progress=not args.no_progress, kind=args.kind,
                     animation=anim)
    print(summary(result))
    if result.n_ok == 0:
        # One line that names the problem, not only the source: with one input file, its skip reason.
        reasons = sorted(result.skipped.items())
        why = f" ({reasons[0][0]}: {reasons[0][1]}" + (f"; and {len(reasons) - 1} more" if len(reasons) > 1 else "") \
            + ")" if reasons else ""
        print(f"hyperdiffusion prepare: error: nothing was prepared from {args.src}{why}", file=sys.stderr)
        return 1
    return 0

"""4D data: animated meshes in, per-frame occupancy samples out (docs/4D.md, docs/FORMATS.md "4D dataset").

HyperDiffusion's 4D experiment (paper Sec. 4.4; REFERENCE.md "4D") fits one MLP over
(x, y, z, t) per animation of 16 frames. The official preparation, which we follow and
record in the manifest:

  - frames at `floor(linspace(0, nf, 16, endpoint=False))`: a sequence of nf < 16 frames
    repeats frames (most real animations have 2-12 frames); nf is recorded per sequence
    and `skip_short` skips such sequences instead;
  - each frame centred on its own vertex mean, which removes global motion
    (`keep_global_motion` centres all frames on one common mean instead);
  - one scale for the whole sequence: max |coordinate| over all 16 frames -> 0.475;
  - per frame: near-surface samples (sigma 0.01) and uniform samples in [-0.5, 0.5]^3,
    labelled by the same robust labeller as 3D (`occupancy.inside`; the official code
    uses `igl.fast_winding_number >= 0.5`, which fails on the open meshes of real data,
    docs/OCCUPANCY.md); a 2048-point reference cloud per frame.

Sources: DeformingThings4D `.anime` files, folders of per-frame meshes (one subfolder
per sequence, frames sorted by name; `--kind 4d`), or `builtin:<family>` for the
procedural families of `animated_shapes`. Bad sequences are skipped with the reason
(truncated file, NaN/Inf, per-frame meshes with different vertex counts, ...), as 3D
`prepare` skips bad meshes.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from hyperdiffusion.io import InputError, atomic_path, load_npy, load_npz, read_json, safe_name, save_npy, save_npz, \
    write_json

ANIME_SUFFIX = ".anime"
SEQUENCE_FORMAT = "hyperdiffusion-sequence"
KIND = "4d"  # manifest["kind"] of a 4D dataset; 3D datasets have no "kind" (or "3d")


@dataclass(frozen=True)
class AnimationConfig:
    """The 4D choices on top of PrepareConfig. Defaults are the official code's (REFERENCE.md "4D")."""

    n_frames: int = 16  # frames per sequence, taken at floor(linspace(0, nf, n_frames, endpoint=False))
    keep_global_motion: bool = False  # False: centre each frame on its own vertex mean (official)
    skip_short: bool = False  # skip sequences with fewer than n_frames source frames instead of repeating
    up: str = "y"  # "z": the source is Z-up (OpenArena, Quake units); rotated to Y-up as the rest of the project

    def __post_init__(self) -> None:
        if self.n_frames < 1:
            raise InputError("n_frames must be at least 1")
        if self.up not in ("y", "z"):
            raise InputError(f"up must be 'y' or 'z', not {self.up!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnimationConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class BadSequence(InputError):
    """A sequence that cannot be prepared; `reason` is "kind: detail" for the manifest."""

    def __init__(self, path: str | os.PathLike, kind: str, detail: str):
        super().__init__(f"{path}: {kind}: {detail}")
        self.reason = f"{kind}: {detail}"


# ---------------------------------------------------------------------------------------------- reading


def read_anime(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A DeformingThings4D `.anime` file -> (vertices float32 [nf, nv, 3], faces int64 [nt, 3]).

    Layout, little-endian: int32 nf, nv, nt; float32 verts[nv, 3] (frame 0); int32
    faces[nt, 3]; float32 offsets[nf - 1, nv, 3]; frame k = verts + offsets[k - 1].
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadSequence(path, "unreadable", str(e)) from None
    if len(data) < 12:
        raise BadSequence(path, "truncated", f"{len(data)} bytes, shorter than the 12-byte header")
    nf, nv, nt = (int(v) for v in np.frombuffer(data, "<i4", 3))
    if nf < 1 or nv < 1 or nt < 1:
        raise BadSequence(path, "bad header", f"frames {nf}, vertices {nv}, faces {nt} (each must be >= 1)")
    need = 12 + 4 * (3 * nv + 3 * nt + 3 * nv * (nf - 1))
    if len(data) < need:
        raise BadSequence(path, "truncated", f"{len(data)} bytes, the header (nf {nf}, nv {nv}, nt {nt}) needs {need}")
    at = 12
    verts = np.frombuffer(data, "<f4", 3 * nv, at).reshape(nv, 3)
    at += 12 * nv
    faces = np.frombuffer(data, "<i4", 3 * nt, at).reshape(nt, 3).astype(np.int64)
    at += 12 * nt
    offsets = np.frombuffer(data, "<f4", 3 * nv * (nf - 1), at).reshape(nf - 1, nv, 3)
    frames = np.concatenate([verts[None], verts[None] + offsets]).astype(np.float32)
    return frames, faces


def write_anime(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write vertices [nf, nv, 3] and faces [nt, 3] as a `.anime` file (the inverse of `read_anime`)."""
    v = np.asarray(vertices, "<f4")
    f = np.asarray(faces, "<i4")
    header = np.array([v.shape[0], v.shape[1], f.shape[0]], "<i4")
    with atomic_path(path) as tmp:
        tmp.write_bytes(header.tobytes() + v[0].tobytes() + f.tobytes() + (v[1:] - v[:1]).tobytes())


def read_sequence_folder(folder: str | os.PathLike) -> list[trimesh.Trimesh]:
    """Per-frame meshes of one sequence folder, sorted by file name."""
    from hyperdiffusion.data.prepare import MESH_EXTENSIONS

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS
                   and not p.name.startswith("."))
    if not files:
        raise BadSequence(folder, "empty sequence", "no mesh files")
    meshes = []
    for p in files:
        try:
            m = trimesh.load(str(p), force="mesh", process=False)
        except Exception as e:
            raise BadSequence(p, "unreadable", f"{type(e).__name__}: {' '.join(str(e).split())[:150]}") from None
        if not isinstance(m, trimesh.Trimesh) or len(m.faces) == 0:
            raise BadSequence(p, "empty mesh", "no faces")
        meshes.append(m)
    counts = sorted({len(m.vertices) for m in meshes})
    if len(counts) > 1:
        raise BadSequence(folder, "mismatched vertex counts",
                          f"frames have {counts[0]}..{counts[-1]} vertices; one topology per sequence is needed")
    return meshes


def select_frames(n_source: int, n_frames: int = 16) -> np.ndarray:
    """Source frame indices: floor(linspace(0, nf, n_frames, endpoint=False)), as the official code.

    With nf < n_frames this repeats frames (nf = 4: 0 0 0 0 1 1 1 1 ...).
    """
    return np.floor(np.linspace(0, n_source, n_frames, endpoint=False)).astype(np.int64)


def normalise_frames(frames: list[np.ndarray], scale: float = 0.475,
                     keep_global_motion: bool = False) -> tuple[list[np.ndarray], np.ndarray, float]:
    """Centre each frame on its own vertex mean (or all on one mean), one scale for the sequence.

    Returns (new frames, centres [F, 3], factor): new = (old - centres[f]) * factor with
    factor = scale / max |coordinate| over all frames after centring.
    """
    frames = [np.asarray(v, np.float64) for v in frames]
    if keep_global_motion:
        centre = np.concatenate(frames).mean(axis=0)
        centres = np.repeat(centre[None], len(frames), axis=0)
    else:
        centres = np.stack([v.mean(axis=0) for v in frames])
    radius = max(float(np.abs(v - c).max()) for v, c in zip(frames, centres))
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError("degenerate sequence: zero extent in every frame")
    factor = scale / radius
    return [(v - c) * factor for v, c in zip(frames, centres)], centres, factor


# ---------------------------------------------------------------------------------------------- sources


def is_animation_source(src: str | os.PathLike, kind: str = "auto") -> bool:
    """Whether `prepare` should write a 4D dataset for `src` (see `find_sequences`)."""
    if kind in ("3d", "4d"):
        return kind == "4d"
    text = str(src)
    if text.startswith("builtin:"):
        from hyperdiffusion.data import animated_shapes

        return text.split(":", 1)[1] in animated_shapes.FAMILIES
    p = Path(src)
    if p.is_file():
        return p.suffix.lower() == ANIME_SUFFIX
    return p.is_dir() and any(q.suffix.lower() == ANIME_SUFFIX for q in p.rglob("*" + ANIME_SUFFIX))


def find_sequences(src: str | os.PathLike, count: int | None = None, seed: int = 0,
                   exclude: str | os.PathLike | None = None):
    """(sources, layout) for a 4D source: "builtin", "anime" (.anime files, recursive) or "sequences".

    "sequences": every subfolder of `src` that holds mesh files directly is one sequence,
    its frames sorted by file name. Such a folder cannot be told from a 3D folder of
    meshes grouped in subfolders, so `prepare` reads it as 4D only with `--kind 4d`.
    """
    from hyperdiffusion.data.prepare import MESH_EXTENSIONS, Source, _unique_names

    text = str(src)
    if text.startswith("builtin:"):
        from hyperdiffusion.data import animated_shapes

        family = text.split(":", 1)[1]
        if family not in animated_shapes.FAMILIES:
            raise InputError(f"{text}: unknown animated family; choose from {', '.join(animated_shapes.FAMILIES)}")
        if not count or count < 1:
            raise InputError(f"{text}: say how many sequences to make with --count N")
        return [Source(f"{family}_{i:04d}", f"builtin:{family}:{seed + i}") for i in range(count)], "builtin"
    root = Path(src)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    if root.is_file():
        return [Source(safe_name(root.stem), str(root))], "anime"
    skip = Path(exclude).resolve() if exclude is not None else None

    def keep(p: Path) -> bool:
        return not p.name.startswith(".") and not (skip is not None and p.resolve().is_relative_to(skip))

    anime = sorted(p for p in root.rglob("*" + ANIME_SUFFIX) if p.is_file() and keep(p))
    if anime:
        named = [(str(p.relative_to(root).with_suffix("")), p) for p in anime]
        layout = "anime"
    else:
        folders = sorted({p.parent for p in root.rglob("*") if p.is_file() and keep(p)
                          and p.suffix.lower() in MESH_EXTENSIONS and p.parent != root})
        named = [(str(f.relative_to(root)), f) for f in folders]
        layout = "sequences"
    sources = sorted((Source(n, str(p)) for n, p in _unique_names(named, root)), key=lambda s: s.name)
    return (sources[:count] if count else sources), layout


def load_sequence(source: str, config: AnimationConfig) -> tuple[list[trimesh.Trimesh], int, np.ndarray]:
    """(meshes of the selected frames in source units, source frame count, selected indices)."""
    if source.startswith("builtin:"):
        from hyperdiffusion.data import animated_shapes

        _, family, seed = source.split(":")
        n_source = animated_shapes.N_SOURCE_FRAMES
        idx = select_frames(n_source, config.n_frames)
        # Only the selected frames are built (each is a boolean union).
        made = {int(k): animated_shapes.make_frame(family, int(seed), int(k)) for k in np.unique(idx)}
        return [made[int(k)] for k in idx], n_source, idx
    path = Path(source)
    if path.is_dir():
        source_meshes = read_sequence_folder(path)
        n_source = len(source_meshes)
        idx = select_frames(n_source, config.n_frames)
        faces = [np.asarray(source_meshes[k].faces) for k in idx]
        verts = [np.asarray(source_meshes[k].vertices, np.float64) for k in idx]
    else:
        frames, f = read_anime(path)
        n_source = len(frames)
        idx = select_frames(n_source, config.n_frames)
        verts, faces = [frames[k].astype(np.float64) for k in idx], [f] * len(idx)
    bad = sum(int((~np.isfinite(v)).any(axis=1).sum()) for v in verts)
    if bad:
        raise BadSequence(source, "non-finite", f"{bad} vertices of the selected frames have NaN/Inf coordinates")
    return [trimesh.Trimesh(v, f, process=False) for v, f in zip(verts, faces)], n_source, idx


# ---------------------------------------------------------------------------------------------- one sequence


def prepare_sequence(name: str, source: str, root: str | os.PathLike, config, anim: AnimationConfig) -> dict[str, Any]:
    """Prepare one sequence into `root/shapes/<name>/`; return its manifest entry (never raises for bad data).

    Files: samples.npz (points float32 [F, N, 3], occ uint8 [F, N], n_surface, frames),
    cloud.npy float32 [F, n_cloud, 3], frames.npz (normalised source frames: vertices
    float32 [F, nv, 3] and faces int32 [nt, 3] when the topology is fixed, else frame_<k>
    arrays), meta.json last.
    """
    from hyperdiffusion.data.occupancy import inside
    from hyperdiffusion.data.prepare import SkipShape, _short, check_mesh, labelling_settings, limit_faces, \
        sample_points, shape_rng

    start = time.perf_counter()
    folder = Path(root) / "shapes" / name
    entry: dict[str, Any] = {"source": source, "status": "skipped", "reason": None, "n_vertices": None,
                             "n_faces": None, "inside_fraction": None, "seconds": None, "n_source_frames": None}
    try:
        meshes, n_source, idx = load_sequence(source, anim)
        entry["n_source_frames"] = n_source
        if anim.skip_short and n_source < anim.n_frames:
            raise SkipShape(f"short: {n_source} source frames < {anim.n_frames} (skip_short)")
        verts = [np.asarray(m.vertices, np.float64) for m in meshes]
        if anim.up == "z":  # (x, y, z) Z-up -> (x, z, -y) Y-up: a rotation, so shapes keep their handedness
            verts = [v[:, [0, 2, 1]] * np.array([1.0, 1.0, -1.0]) for v in verts]
        verts, centres, factor = normalise_frames(verts, config.scale, anim.keep_global_motion)
        rng = shape_rng(config.seed, name)
        points, occ, clouds, clean, notes = [], [], [], [], []
        for k, (v, m) in enumerate(zip(verts, meshes)):
            try:
                mesh, frame_notes = check_mesh(trimesh.Trimesh(v, np.asarray(m.faces), process=False))
                mesh, more = limit_faces(mesh, config.max_faces)
                frame_notes += more
            except SkipShape as e:
                raise SkipShape(f"{e} (frame {k}, source frame {idx[k]})") from None
            notes += [f"frame {k}: {n}" for n in frame_notes]
            p, c = sample_points(mesh, config, rng)
            o = np.asarray(inside(mesh, p), dtype=bool).astype(np.uint8)
            if o.shape != (len(p),):
                raise SkipShape(f"error: occupancy returned shape {o.shape} for {len(p)} points")
            points.append(p), occ.append(o), clouds.append(c), clean.append(mesh)
    except (SkipShape, BadSequence) as e:
        entry["reason"] = e.reason if isinstance(e, BadSequence) else str(e)
    except Exception as e:  # a library failing on odd input must not stop the whole run
        entry["reason"] = f"error: {type(e).__name__}: {_short(e)}"
    if entry["reason"] is not None:
        _remove_partial(folder)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        return entry

    folder.mkdir(parents=True, exist_ok=True)
    save_npz(folder / "samples.npz", points=np.stack(points), occ=np.stack(occ),
             n_surface=np.int64(config.n_surface), frames=idx)
    save_npy(folder / "cloud.npy", np.stack(clouds).astype(np.float32))
    save_npz(folder / "frames.npz", **_frames_arrays(clean))
    occ_all = np.stack(occ)
    if n_source < anim.n_frames:
        notes.insert(0, f"short: {n_source} source frames repeated to {anim.n_frames}")
    entry.update(status="ok", reason="; ".join(notes[:5]) or None, n_vertices=int(max(len(m.vertices) for m in clean)),
                 n_faces=int(max(len(m.faces) for m in clean)), inside_fraction=round(float(occ_all.mean()), 6),
                 seconds=round(time.perf_counter() - start, 3))
    meta = {"format": SEQUENCE_FORMAT, "name": name, **entry, "frames": idx.tolist(),
            "inside_fraction_per_frame": [round(float(o.mean()), 6) for o in occ],
            "normalisation": {"centres": centres.tolist(), "factor": factor, "up": anim.up},
            "config": config.data_settings(), "animation": asdict(anim), "labelling": labelling_settings()}
    write_json(folder / "meta.json", meta)  # last: marks the sequence finished
    return entry


def _frames_arrays(meshes: list[trimesh.Trimesh]) -> dict[str, np.ndarray]:
    same = all(len(m.vertices) == len(meshes[0].vertices) and np.array_equal(m.faces, meshes[0].faces)
               for m in meshes)
    if same:
        return {"vertices": np.stack([m.vertices for m in meshes]).astype(np.float32),
                "faces": np.asarray(meshes[0].faces, np.int32)}
    out = {}
    for k, m in enumerate(meshes):
        out[f"vertices_{k:03d}"] = np.asarray(m.vertices, np.float32)
        out[f"faces_{k:03d}"] = np.asarray(m.faces, np.int32)
    return out


def _remove_partial(folder: Path) -> None:
    from hyperdiffusion.data.prepare import _remove_partial as remove

    remove(folder, files=("samples.npz", "cloud.npy", "frames.npz"))


# ---------------------------------------------------------------------------------------------- the 4D stage


def prepare_animations(src: str | os.PathLike, out: str | os.PathLike, config, anim: AnimationConfig, *,
                       count: int | None = None, progress: bool = True, kind: str = "auto"):
    """The 4D branch of `hyperdiffusion prepare`: same layout, resumability and splits as 3D."""
    from hyperdiffusion.data import prepare as P
    from hyperdiffusion.progress import progress as progress_bar
    from hyperdiffusion.io import ensure_writable_dir

    start = time.perf_counter()
    config = config.resolved()
    if config.normalise != "mean":
        raise InputError(f"--normalise {config.normalise}: 4D sequences are centred on each frame's vertex mean "
                         "(or one common mean with --keep-global-motion); bbox centring is not offered")
    if config.split_file is not None:
        P.read_split_file(config.split_file)
    sources, layout = find_sequences(src, count=count, seed=config.seed, exclude=out)
    if not sources:
        raise InputError(f"{src}: no sequences found (.anime files, or subfolders of per-frame meshes)")
    root = ensure_writable_dir(out)
    settings = {**config.data_settings(), **asdict(anim)}
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        old = read_json(manifest_path)
        if not isinstance(old, dict) or old.get("format") != P.DATASET_FORMAT or old.get("kind") != KIND:
            raise InputError(f"{manifest_path}: not a 4D hyperdiffusion dataset; choose another OUT folder")
        _check_settings(manifest_path, {**old.get("config", {}), **old.get("animation", {})}, settings)

    entries: dict[str, dict[str, Any]] = {}
    todo = []
    n_reused = 0
    for s in sources:
        meta_path = root / "shapes" / s.name / "meta.json"
        if meta_path.exists():
            meta = read_json(meta_path)
            if not isinstance(meta, dict) or meta.get("format") != SEQUENCE_FORMAT:
                raise InputError(f"{meta_path}: not a prepared sequence's meta.json; delete it to redo the sequence")
            _check_settings(meta_path, {**meta.get("config", {}), **meta.get("animation", {})}, settings)
            keys = ("source", "status", "reason", "n_vertices", "n_faces", "inside_fraction", "seconds",
                    "n_source_frames")
            entries[s.name] = {k: meta.get(k) for k in keys}
            n_reused += 1
        else:
            todo.append(s)

    base = {"format": P.DATASET_FORMAT, "version": 1, "kind": KIND, "source": str(src), "layout": layout,
            "config": asdict(config), "animation": asdict(anim),
            "frame_selection": f"floor(linspace(0, nf, {anim.n_frames}, endpoint=False)); nf < {anim.n_frames} "
                               + ("skipped" if anim.skip_short else "repeats frames"),
            "normalisation": ("one common vertex mean for all frames" if anim.keep_global_motion
                              else "each frame centred on its own vertex mean")
                             + f"; one scale per sequence: max |coordinate| over all frames -> {config.scale}",
            "labelling": P.labelling_settings()}
    writer = P._ManifestWriter(manifest_path, base)
    writer.write(entries, force=True)
    bar = progress_bar(total=len(sources), initial=len(entries), unit="seq", desc="prepare 4d",
                       disable=not progress)
    try:
        for name, entry in P._run_shapes(todo, root, config, worker=prepare_sequence, extra=(anim,)):
            entries[name] = entry
            bar.update(1)
            writer.write(entries)
    finally:
        bar.close()
        writer.write(entries, force=True)
    ok_names = sorted(n for n, e in entries.items() if e["status"] == "ok")
    splits, warnings = P.resolve_splits(ok_names, config)
    split_of = {n: s for s, names in splits.items() for n in names}
    for name, entry in entries.items():
        entry["split"] = split_of.get(name)
    manifest = writer.write(entries, splits=splits, complete=True, force=True)
    return P.PrepareResult(manifest, len(todo), n_reused, time.perf_counter() - start, warnings)


def _check_settings(path: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if k not in ("workers", "split_fractions",
                                                                                 "split_file")
            and old.get(k) != v]
    if diff:
        raise InputError(f"{path}: prepared with other settings ({', '.join(diff)}); use another OUT folder")


# ---------------------------------------------------------------------------------------------- reading a 4D dataset


def is_4d_dataset(path: str | os.PathLike) -> bool:
    """Whether `path` (a dataset folder or its manifest.json) is a 4D dataset."""
    path = Path(path)
    manifest = path if path.is_file() else path / "manifest.json"
    if not manifest.is_file():
        return False
    m = read_json(manifest)
    return isinstance(m, dict) and m.get("kind") == KIND


def load_sequence_samples(root: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(points float32 [F, N, 3], occ uint8 [F, N], n_surface): per frame, near-surface points first."""
    path = Path(root) / "shapes" / safe_name(name) / "samples.npz"
    z = load_npz(path)
    try:
        points, occ, n_surface = z["points"], z["occ"], int(z["n_surface"])
    except KeyError as e:
        raise InputError(f"{path}: missing array {e}") from None
    if points.ndim != 3 or points.shape[2] != 3 or points.dtype != np.float32:
        raise InputError(f"{path}: points must be float32 [F, N, 3], not {points.dtype} {list(points.shape)}")
    if occ.shape != points.shape[:2] or occ.dtype != np.uint8:
        raise InputError(f"{path}: occ must be uint8 {list(points.shape[:2])}, not {occ.dtype} {list(occ.shape)}")
    return points, occ, n_surface


def load_sequence_cloud(root: str | os.PathLike, name: str) -> np.ndarray:
    """The sequence's reference clouds, float32 [F, n_cloud, 3]."""
    path = Path(root) / "shapes" / safe_name(name) / "cloud.npy"
    cloud = load_npy(path)
    if cloud.ndim != 3 or cloud.shape[2] != 3:
        raise InputError(f"{path}: expected [F, n, 3], not {list(cloud.shape)}")
    return cloud


def load_sequence_meshes(root: str | os.PathLike, name: str) -> list[trimesh.Trimesh]:
    """The prepared (normalised, cleaned) frames of a sequence as meshes."""
    path = Path(root) / "shapes" / safe_name(name) / "frames.npz"
    z = load_npz(path)
    if "vertices" in z:
        return [trimesh.Trimesh(v, z["faces"], process=False) for v in z["vertices"]]
    n = sum(k.startswith("vertices_") for k in z)
    return [trimesh.Trimesh(z[f"vertices_{k:03d}"], z[f"faces_{k:03d}"], process=False) for k in range(n)]

"""Shaded pictures of meshes on a CPU, with no GPU and no display.

`render_mesh` is a small z-buffer rasteriser in numpy: project the vertices
with a perspective camera that frames the mesh's bounding sphere, find the
pixels inside each triangle (vectorised over all triangles at once, grouped by
their on-screen size), keep the nearest triangle per pixel, and shade it with
Lambert + ambient light. Supersampling 2x2 smooths the edges. For a
1,900-face airplane at 256 pixels this takes about 0.03 s against 0.07 s for
matplotlib's Poly3DCollection, and it resolves occlusion per pixel rather than
by sorting whole polygons, so interpenetrating parts look right.

`render_grid` tiles pictures into one PNG; `hyperdiffusion render` does that for
a folder of meshes or for a file of fitted MLP weights.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import trimesh

from hyperdiffusion.io import InputError, atomic_path

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")
DEFAULT_VIEW = (25.0, 35.0)  # (elevation, azimuth) in degrees: a 3/4 view from front-right and above
DEFAULT_COLOR = (0.55, 0.66, 0.85)
_FOV = math.radians(30.0)
_FILL = 0.92  # fraction of the picture that the shape's larger projected side spans


def render_mesh(mesh: trimesh.Trimesh, size: int = 256, view: tuple[float, float] = DEFAULT_VIEW,
                color: Sequence[float] = DEFAULT_COLOR, supersample: int = 2) -> np.ndarray:
    """A shaded picture of `mesh`: uint8 [size, size, 3] on a white background.

    The camera looks at the centre of the mesh's bounding box from direction
    `view` = (elevation, azimuth) in degrees (azimuth 0 looks from +Z, the
    front; Y is up) from the distance where the bounding sphere fills a
    30-degree field of view (the same perspective for every shape); the
    picture is then zoomed so the shape spans 92% of it, centred.
    An empty mesh gives a blank (white) picture.
    """
    S = int(size) * supersample
    image = np.ones((S, S, 3), dtype=np.float32)
    verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if len(faces) and len(verts):
        xy, inv_depth, eye, basis = _project(verts, S, view)
        face_id = _rasterise(xy[faces], inv_depth[faces], S)
        hit = face_id >= 0
        shade = _shade(verts, faces, eye, basis)
        image[hit] = np.clip(np.asarray(color, float)[None] * shade[face_id[hit], None], 0, 1)
    if supersample > 1:  # box filter down to the requested size: anti-aliased edges
        image = sum(image[i::supersample, j::supersample] for i in range(supersample)
                    for j in range(supersample)) / supersample**2
    return (image * 255 + 0.5).astype(np.uint8)


def render_points(points: np.ndarray, size: int = 256, view: tuple[float, float] = DEFAULT_VIEW,
                  color: Sequence[float] = DEFAULT_COLOR, radius: float | None = None) -> np.ndarray:
    """A picture of a point cloud [n, 3]: uint8 [size, size, 3] on white, with the camera of `render_mesh`.

    Each point is a square splat of `radius` pixels (default: size / 128, at least 1), nearer points
    drawn over farther ones and shaded darker with depth, so the shape reads without normals.
    Non-finite points are skipped; no finite point gives a blank picture.
    """
    image = np.ones((size, size, 3), dtype=np.float32)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return (image * 255).astype(np.uint8)
    xy, inv_depth, _, _ = _project(pts, size, view)
    depth = 1.0 / inv_depth
    near, far = depth.min(), depth.max()
    shade = 1.0 - 0.55 * (depth - near) / max(far - near, 1e-12)  # nearest 1.0, farthest 0.45
    r = max(1, round(size / 128)) if radius is None else max(0, int(radius))
    zbuf = np.full((size, size), np.inf)
    order = np.argsort(-depth)  # far to near: later (nearer) writes win; zbuf keeps it exact per pixel
    px = np.round(xy[order]).astype(int)
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            x, y = px[:, 0] + dx, px[:, 1] + dy
            ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            xs, ys, d, sh = x[ok], y[ok], depth[order][ok], shade[order][ok]
            closer = d < zbuf[ys, xs]
            xs, ys, d, sh = xs[closer], ys[closer], d[closer], sh[closer]
            zbuf[ys, xs] = d
            image[ys, xs] = np.clip(np.asarray(color, float)[None] * sh[:, None], 0, 1)
    return (image * 255 + 0.5).astype(np.uint8)


def _project(verts: np.ndarray, S: int, view: tuple[float, float]):
    """Pixel coordinates [n, 2], inverse depth [n], eye position and camera basis (right, up, back)."""
    elev, azim = (math.radians(a) for a in view)
    back = np.array([math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim)])
    right = np.cross([0.0, 1.0, 0.0], back)
    right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-9 else np.array([1.0, 0.0, 0.0])
    up = np.cross(back, right)
    center = (verts.min(0) + verts.max(0)) / 2
    radius = max(np.linalg.norm(verts - center, axis=1).max(), 1e-9)
    dist = radius / math.sin(_FOV / 2)  # the bounding sphere just fits a 30-degree field of view
    eye = center + dist * back
    rel = verts - eye
    depth = -(rel @ back)  # distance in front of the camera, > 0
    # Image-plane coordinates; then zoom and shift (a change of focal length and
    # principal point, so still a true perspective) until the projected shape
    # fills `_FILL` of the picture: thin shapes such as airplanes stay large.
    xy = np.stack([rel @ right, -(rel @ up)], 1) / depth[:, None]
    lo, hi = xy.min(0), xy.max(0)
    scale = _FILL * S / max((hi - lo).max(), 1e-12)
    xy = (xy - (lo + hi) / 2) * scale + S / 2
    return xy, 1.0 / depth, eye, (right, up, back)


def _rasterise(tri: np.ndarray, inv_depth: np.ndarray, S: int) -> np.ndarray:
    """Index of the nearest triangle at each pixel centre ([S, S], -1 where none).

    tri: [m, 3, 2] screen positions; inv_depth: [m, 3]. Scanline conversion,
    vectorised over all triangles: for every (triangle, pixel row) pair the row
    through the pixel centres cuts the triangle in one span [x_min, x_max], so the
    work is proportional to the pixels covered, not to bounding boxes.
    1/depth is affine in screen space under perspective, so a per-triangle plane
    through the three vertices gives the exact nearest surface at each pixel.
    """
    # Plane of 1/depth over the screen: z = a x + b y + c, by Cramer's rule.
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = (np.abs(area) > 1e-9) & (inv_depth > 0).all(1)
    tri, inv_depth, area, e1, e2 = tri[ok], inv_depth[ok], area[ok], e1[ok], e2[ok]
    face_ids = np.flatnonzero(ok)
    dz1, dz2 = inv_depth[:, 1] - inv_depth[:, 0], inv_depth[:, 2] - inv_depth[:, 0]
    a = (dz1 * e2[:, 1] - dz2 * e1[:, 1]) / area
    b = (dz2 * e1[:, 0] - dz1 * e2[:, 0]) / area
    c = inv_depth[:, 0] - a * tri[:, 0, 0] - b * tri[:, 0, 1]

    # Rows whose centre (y + 0.5) lies within each triangle's vertical extent.
    y_lo = np.clip(np.ceil(tri[:, :, 1].min(1) - 0.5), 0, S).astype(np.int64)
    y_hi = np.clip(np.floor(tri[:, :, 1].max(1) - 0.5), -1, S - 1).astype(np.int64)
    n_rows = np.maximum(y_hi - y_lo + 1, 0)
    f = np.repeat(np.arange(len(tri)), n_rows)
    y = y_lo[f] + _ranks(n_rows)
    yc = y + 0.5
    # Where the row crosses each of the three edges (half-open in y, so a vertex counts once per edge pair).
    x_min = np.full(len(f), np.inf)
    x_max = np.full(len(f), -np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        p, q = tri[f, i], tri[f, j]
        crosses = (p[:, 1] <= yc) != (q[:, 1] <= yc)
        dy = np.where(crosses, q[:, 1] - p[:, 1], 1.0)
        x = p[:, 0] + (yc - p[:, 1]) * (q[:, 0] - p[:, 0]) / dy
        x_min = np.where(crosses, np.minimum(x_min, x), x_min)
        x_max = np.where(crosses, np.maximum(x_max, x), x_max)
    x_lo = np.clip(np.ceil(np.nan_to_num(x_min, posinf=S) - 0.5), 0, S).astype(np.int64)
    x_hi = np.clip(np.floor(np.nan_to_num(x_max, neginf=-1.0) - 0.5), -1, S - 1).astype(np.int64)
    n_px = np.maximum(x_hi - x_lo + 1, 0)

    # Expand spans to pixels; keep the largest 1/depth (the nearest surface) per pixel.
    g = np.repeat(np.arange(len(f)), n_px)
    px = x_lo[g] + _ranks(n_px)
    py = y[g]
    fg = f[g]
    z = a[fg] * (px + 0.5) + b[fg] * (py + 0.5) + c[fg]
    pix = py * S + px
    zbuf = np.full(S * S, -np.inf)
    np.maximum.at(zbuf, pix, z)
    win = z >= zbuf[pix]
    face_id = np.full(S * S, -1, dtype=np.int64)
    face_id[pix[win]] = face_ids[fg[win]]
    return face_id.reshape(S, S)


def _ranks(counts: np.ndarray) -> np.ndarray:
    """[0, 1, .., c0-1, 0, 1, .., c1-1, ...]: the position of each item inside its group."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _shade(verts: np.ndarray, faces: np.ndarray, eye: np.ndarray, basis) -> np.ndarray:
    """Per-face brightness: ambient + Lambert from a key light and a weaker fill light.

    Lights sit relative to the camera (key above-left, fill right) so every view
    is lit alike. Faces are lit on whichever side the camera sees, so meshes
    with flipped or inconsistent winding (common in the wild) still shade well.
    """
    right, up, back = basis
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    to_eye = eye - tri.mean(1)
    normal *= np.where((normal * to_eye).sum(1) < 0, -1.0, 1.0)[:, None]
    key = _unit(0.5 * back + 1.0 * up - 0.6 * right)
    fill = _unit(0.7 * back - 0.1 * up + 0.7 * right)
    return 0.25 + 0.7 * np.clip(normal @ key, 0, 1) + 0.25 * np.clip(normal @ fill, 0, 1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- grids


def render_grid(items: Sequence, path: str | Path | None = None, ncols: int = 4,
                titles: Sequence[str] | None = None, size: int = 256, **render_kw) -> np.ndarray:
    """Tile pictures (uint8 arrays) or meshes (rendered with `render_mesh`) into one image.

    The grid is `ncols` tiles of `size` pixels wide and ceil(n / ncols) rows
    high; with titles each row gets a text band of `title_height(size)` pixels
    under its pictures. Written as a PNG to `path` (atomically) when given.
    Returns the grid as uint8 [H, W, 3].
    """
    from PIL import Image, ImageDraw

    items = list(items)
    if titles is not None and len(titles) != len(items):
        raise ValueError(f"{len(titles)} titles for {len(items)} pictures")
    ncols = max(1, min(int(ncols), len(items) or 1))
    nrows = max(1, math.ceil(len(items) / ncols))
    band = title_height(size) if titles is not None else 0
    grid = Image.new("RGB", (ncols * size, nrows * (size + band)), "white")
    draw = ImageDraw.Draw(grid)
    font = _font(band)
    for i, item in enumerate(items):
        tile = item if isinstance(item, np.ndarray) else render_mesh(item, size=size, **render_kw)
        tile = Image.fromarray(np.asarray(tile, dtype=np.uint8)[..., :3])
        if tile.size != (size, size):
            tile = tile.resize((size, size), Image.LANCZOS)
        x, y = (i % ncols) * size, (i // ncols) * (size + band)
        grid.paste(tile, (x, y))
        if titles is not None:
            text = _fit_text(draw, str(titles[i]), font, size - 6)
            width = draw.textlength(text, font=font)
            draw.text((x + (size - width) / 2, y + size + band * 0.12), text, fill=(40, 40, 40), font=font)
    if path is not None:
        path = Path(path)
        with atomic_path(path, suffix=".png") as tmp:
            grid.save(tmp, format="PNG")
    return np.asarray(grid)


def title_height(size: int) -> int:
    """Height in pixels of the title band under each tile of `size` pixels."""
    return max(14, round(size * 0.09))


def _font(band: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(8, int(band * 0.7)))
    except TypeError:  # Pillow < 10.1 has a single bitmap font size
        return ImageFont.load_default()


def _fit_text(draw, text: str, font, width: float) -> str:
    """`text`, shortened with an ellipsis in the middle until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        short = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]
        if draw.textlength(short, font=font) <= width:
            return short
    return text[:1]


# ----------------------------------------------------------------------------- CLI


def find_meshes(folder: str | Path) -> list[Path]:
    """Mesh files under `folder` (recursive), sorted by their path relative to it."""
    folder = Path(folder)
    return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES),
                  key=lambda p: p.relative_to(folder).as_posix())


def _weights_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if path.is_dir() and (path / "weights.safetensors").is_file():
        return path / "weights.safetensors"
    return None


def _load_mesh(path: Path) -> trimesh.Trimesh | None:
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh raises many kinds on bad files
        print(f"hyperdiffusion render: warning: {path}: unreadable mesh ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    return mesh if isinstance(mesh, trimesh.Trimesh) else None


def collect(input_path: str | Path, max_items: int = 16, res: int = 128,
            level: float | None = None) -> tuple[list, list[str]]:
    """Meshes (None for unreadable files) and titles for INPUT: a mesh folder, a mesh file or a weight set."""
    path = Path(input_path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    weights = _weights_file(path)
    if weights is not None:
        from hyperdiffusion.fields.mlp import WeightSet, load_weight_set

        try:
            from hyperdiffusion.fields.mesh import extract_meshes
        except ImportError as e:
            raise InputError(f"{weights}: drawing MLPs needs hyperdiffusion.fields.mesh.extract_meshes ({e})") from None

        ws = load_weight_set(weights)
        if ws.mlp.in_dim == 4:  # 4D MLPs: frames 0, 5, 10 and 15 of each sequence (fields/mesh4d.py)
            from hyperdiffusion.fields.mesh4d import extract_sequences

            n = min(max(1, max_items // 4), len(ws.names))
            logit = 0.0 if level is None else math.log(level / (1 - level))
            seqs = extract_sequences(WeightSet(ws.weights[:n], ws.names[:n], ws.mlp, ws.meta), res=res,
                                     level_logit=logit)
            return ([seq[k] for seq in seqs for k in (0, 5, 10, 15)],
                    [f"{name} frame {k}" for name in ws.names[:n] for k in (0, 5, 10, 15)])
        n = min(max_items, len(ws.names))
        subset = WeightSet(ws.weights[:n], ws.names[:n], ws.mlp, ws.meta)
        kwargs = {"res": res} if level is None else {"res": res, "level": level}
        meshes = extract_meshes(subset, progress=n >= 4, **kwargs)
        if isinstance(meshes, dict):
            meshes = [meshes.get(name) for name in subset.names]
        return list(meshes), list(subset.names)
    if path.is_file():
        if path.suffix.lower() not in MESH_SUFFIXES:
            raise InputError(f"{path}: not a mesh ({', '.join(MESH_SUFFIXES)}) or weights.safetensors file")
        return [_load_mesh(path)], [path.stem]
    files = find_meshes(path)
    if not files:
        raise InputError(f"{path}: no mesh files ({', '.join(MESH_SUFFIXES)}) and no weights.safetensors inside")
    files = files[:max_items]
    names = [f.relative_to(path).with_suffix("").as_posix() for f in files]
    return [_load_mesh(f) for f in files], names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render", help="draw shaded pictures of meshes or fitted MLPs into a PNG grid",
        description="Render a folder of meshes (ply/obj/off/stl/glb, searched recursively, sorted by path) or "
                    "an MLP weight set (weights.safetensors or a folder holding one) as a grid of shaded pictures.")
    p.add_argument("input", type=Path, help="mesh folder, mesh file, weights.safetensors, or a folder holding one")
    p.add_argument("output", type=Path, help="PNG file to write")
    p.add_argument("--ncols", type=int, default=4, help="pictures per row (default 4)")
    p.add_argument("--size", type=int, default=256, help="pixels per picture (default 256)")
    p.add_argument("--max", type=int, default=16, dest="max_items", help="draw at most this many shapes (default 16)")
    p.add_argument("--res", type=int, default=128, help="marching-cubes grid for weight sets (default 128)")
    p.add_argument("--level", type=float, default=None,
                   help="occupancy probability of the surface, for weight sets (default: the mesh stage's, 0.5)")
    p.add_argument("--elev", type=float, default=DEFAULT_VIEW[0], help="camera elevation in degrees")
    p.add_argument("--azim", type=float, default=DEFAULT_VIEW[1], help="camera azimuth in degrees (0 = front, +Z)")
    p.add_argument("--no-titles", action="store_true", help="leave out the name under each picture")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.ncols < 1 or args.size < 8 or args.max_items < 1:
        raise InputError("--ncols and --max must be at least 1 and --size at least 8")
    if args.output.suffix.lower() != ".png":
        raise InputError(f"{args.output}: the output must be a .png file")
    meshes, names = collect(args.input, args.max_items, args.res, args.level)
    from hyperdiffusion.progress import progress

    tiles = []
    for mesh, name in progress(list(zip(meshes, names)), desc="render", unit="shape", disable=len(names) < 4):
        tiles.append(render_mesh(mesh if mesh is not None else trimesh.Trimesh(), size=args.size,
                                 view=(args.elev, args.azim)))
    titles = None if args.no_titles else [n if m is not None and len(m.faces) else f"{n} (empty)"
                                           for m, n in zip(meshes, names)]
    render_grid(tiles, args.output, ncols=args.ncols, titles=titles, size=args.size)
    print(f"wrote {args.output} ({len(tiles)} picture{'' if len(tiles) == 1 else 's'})")
    return 0

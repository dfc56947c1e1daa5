"""Built-in parametric shape families: the project's embedded default data.

The paper trains on ShapeNet chairs, tables and airplanes (Sec. 4). ShapeNet
cannot ship with the code, so the default data set is generated: each family is
a small procedural model whose parameters (proportions, part styles, part
counts) are drawn from a seeded random generator, so `make_shape(family, seed)`
gives the same mesh on every machine.

Each shape is assembled from simple closed parts (boxes, rods, lofted profiles)
that overlap slightly, then fused into ONE watertight manifold by a boolean
union (manifold3d through trimesh). Watertightness matters: the occupancy
labels of `prepare` need a well-defined inside (REFERENCE.md, data preparation).

Conventions, as in ShapeNet: Y is up, the shape stands on (or is centred near)
y = 0, and its front faces +Z (the sitter of a chair looks toward +Z; an
airplane's nose points to +Z). Sizes are roughly unit scale; `prepare`
normalises them anyway.
"""

from __future__ import annotations

import math

import numpy as np
import trimesh

FAMILIES = ("chair", "table", "airplane")

_EPS = 0.006  # overlap between touching parts, so the union fuses them into one solid


def make_shape(family: str, seed: int) -> trimesh.Trimesh:
    """A watertight mesh of `family`, deterministic in `seed`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown built-in family {family!r}; choose from {', '.join(FAMILIES)}")
    rng = np.random.default_rng([_FAMILY_SALT[family], int(seed)])
    parts = _BUILDERS[family](rng)
    return _union(parts)


# ----------------------------------------------------------------------------- parts


def _box(size, center) -> trimesh.Trimesh:
    """An axis-aligned box of extents `size` centred at `center`."""
    return trimesh.creation.box(extents=size).apply_translation(center)


def _rod(p0, p1, r0: float, r1: float | None = None, sections: int = 12) -> trimesh.Trimesh:
    """A (tapered) cylinder from p0 (radius r0) to p1 (radius r1)."""
    r1 = r0 if r1 is None else r1
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    axis = p1 - p0
    axis /= np.linalg.norm(axis)
    u = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    t = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    ring = np.cos(t)[:, None] * u + np.sin(t)[:, None] * v
    return _loft(np.stack([p0 + r0 * ring, p1 + r1 * ring]))


def _square_rod(p0, p1, w0: float, w1: float | None = None) -> trimesh.Trimesh:
    """A (tapered) square-section leg from p0 (width w0) to p1 (width w1), sides aligned with X and Z."""
    w1 = w0 if w1 is None else w1
    sq = np.array([[-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]], float) / 2
    return _loft(np.stack([np.asarray(p0, float) + w0 * sq, np.asarray(p1, float) + w1 * sq]))


def _sphere(center, radius: float) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=1, radius=radius).apply_translation(center)


def _rounded_rect(w: float, d: float, radii=(0.0, 0.0, 0.0, 0.0), n_arc: int = 5) -> np.ndarray:
    """Outline [k, 2] of a w x d rectangle centred at 0, corners (+,+), (-,+), (-,-), (+,-) rounded by `radii`."""
    pts = []
    for (sx, sy), r, a0 in zip(((1, 1), (-1, 1), (-1, -1), (1, -1)), radii, (0, 90, 180, 270)):
        r = min(r, w / 2, d / 2)
        centre = np.array([sx * (w / 2 - r), sy * (d / 2 - r)])
        if r < 1e-4:
            pts.append(centre[None])
            continue
        a = np.radians(np.linspace(a0, a0 + 90, n_arc))
        pts.append(centre + r * np.stack([np.cos(a), np.sin(a)], 1))
    return np.concatenate(pts)


def _extrude(outline: np.ndarray, axis: int, lo: float, hi: float) -> trimesh.Trimesh:
    """A prism: the (star-shaped) 2D `outline` in the two axes other than `axis`, from lo to hi along `axis`."""
    others = [i for i in range(3) if i != axis]
    rings = np.zeros((2, len(outline), 3))
    rings[:, :, others[0]], rings[:, :, others[1]] = outline[:, 0], outline[:, 1]
    rings[0, :, axis], rings[1, :, axis] = lo, hi
    return _loft(rings)


def _loft(rings: np.ndarray) -> trimesh.Trimesh:
    """A closed solid through `rings` [k, n, 3] (k cross-sections of n points each, same order).

    Neighbouring rings are joined by quads; both ends are closed by a fan around
    the ring's centroid, which is valid for the star-shaped sections used here.
    """
    k, n, _ = rings.shape
    verts = np.concatenate([rings.reshape(-1, 3), rings[0].mean(0, keepdims=True), rings[-1].mean(0, keepdims=True)])
    i = np.arange(n)
    j = (i + 1) % n
    faces = []
    for r in range(k - 1):
        a, b = r * n + i, (r + 1) * n + i
        c, d = (r + 1) * n + j, r * n + j
        faces += [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
    first, last = k * n, k * n + 1
    faces.append(np.stack([np.full(n, first), i, j], 1))
    faces.append(np.stack([np.full(n, last), (k - 1) * n + j, (k - 1) * n + i], 1))
    mesh = trimesh.Trimesh(verts, np.concatenate(faces), process=False)
    if mesh.volume < 0:  # ring winding decides the orientation; make normals point outward
        mesh.invert()
    return mesh


def _naca(chord: float, thickness: float, n: int = 9) -> np.ndarray:
    """A closed symmetric NACA 00xx section [2n-2, 2]: (distance behind the leading edge, half thickness)."""
    x = (1 - np.cos(np.linspace(0, np.pi, n))) / 2  # cosine spacing: more points near the round nose
    y = 5 * thickness * (0.2969 * np.sqrt(x) - 0.126 * x - 0.3516 * x**2 + 0.2843 * x**3 - 0.1015 * x**4)
    y = np.maximum(y, 0.004)  # keep the trailing edge thick enough to stay a proper solid
    upper = np.stack([x, y], 1)[::-1]  # trailing edge -> leading edge
    lower = np.stack([x, -y], 1)[1:-1]  # leading edge -> trailing edge, without repeating the ends
    return np.concatenate([upper, lower]) * chord


def _wing(sections: list[tuple[float, float, float, float]], thickness: float, axis: str = "x") -> trimesh.Trimesh:
    """A lifting surface lofted through sections (span, height, leading-edge z, chord).

    axis "x": a horizontal wing spanning X (span -> x, height -> y);
    axis "y": a vertical fin spanning Y (span -> y, height -> x offset).
    The chord runs from the leading edge toward -Z (the nose points to +Z).
    """
    rings = []
    for span, height, z_le, chord in sections:
        prof = _naca(chord, thickness)
        pts = np.zeros((len(prof), 3))
        if axis == "x":
            pts[:, 0], pts[:, 1] = span, height + prof[:, 1]
        else:
            pts[:, 1], pts[:, 0] = span, height + prof[:, 1]
        pts[:, 2] = z_le - prof[:, 0]
        rings.append(pts)
    return _loft(np.stack(rings))


def _union(parts: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """Fuse overlapping closed parts into one watertight manifold (manifold3d engine)."""
    fused = trimesh.boolean.union(parts, engine="manifold", check_volume=False)
    # Manifold computes in float32 and may keep distinct vertices at one position where
    # parts touch, so no vertex merging here: it would glue sheets into non-manifold edges.
    return trimesh.Trimesh(np.asarray(fused.vertices, dtype=np.float64), np.asarray(fused.faces), process=False)


def _pick(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    p = np.array([options[k] for k in names], float)
    return names[rng.choice(len(names), p=p / p.sum())]


# ----------------------------------------------------------------------------- chair


def _chair(rng: np.random.Generator) -> list[trimesh.Trimesh]:
    """Seat + back (solid / slats / spindles) + optional arms + base (four legs / star / pedestal)."""
    base = _pick(rng, {"legs": 0.55, "star": 0.25, "pedestal": 0.2})
    if base == "star":  # office chairs mostly have a solid, padded back
        back = _pick(rng, {"solid": 0.7, "slats": 0.15, "spindles": 0.15})
    else:
        back = _pick(rng, {"solid": 0.4, "slats": 0.3, "spindles": 0.3})
    arms = _pick(rng, {"none": 0.6, "posts": 0.25, "panels": 0.15})
    W, D = rng.uniform(0.42, 0.62), rng.uniform(0.40, 0.56)  # seat width (x) and depth (z)
    t = rng.uniform(0.03, 0.08)  # seat thickness
    h = rng.uniform(0.36, 0.5)  # seat bottom height
    top = h + t
    corner = rng.uniform(0.0, 0.05) * (rng.random() < 0.5)  # square or rounded seat corners
    seat = _rounded_rect(W, D, [corner] * 4)
    parts = [_extrude(seat[:, [0, 1]] * [1, -1], axis=1, lo=h, hi=top)]  # outline (x, z), extruded along y

    # Back: built upright in a local frame, then tilted back about the seat's rear edge.
    Hb = rng.uniform(0.32, 0.58)
    tilt = math.radians(rng.uniform(0, 16))
    tb = rng.uniform(0.025, 0.06)
    back_parts = []
    if back == "solid":  # a panel, narrowing or widening toward its rounded top
        r_top = rng.uniform(0.0, 0.45) * W / 2
        outline = _rounded_rect(W, Hb, [r_top, r_top, 0, 0]) + [0, Hb / 2]
        outline[:, 0] *= 1 + (rng.uniform(0.8, 1.08) - 1) * outline[:, 1] / Hb
        back_parts.append(_extrude(outline, axis=2, lo=-tb / 2, hi=tb / 2))
    else:
        post = rng.uniform(0.025, 0.045)
        for sx in (-1, 1):
            back_parts.append(_box([post, Hb, tb], [sx * (W - post) / 2, Hb / 2, 0]))
        rail = rng.uniform(0.04, 0.09)
        back_parts.append(_box([W, rail, tb], [0, Hb - rail / 2, 0]))  # top rail
        inner = W - 2 * post
        if back == "slats":
            n = int(rng.integers(2, 5))
            slat = rng.uniform(0.03, 0.06)
            for y in np.linspace(0.12 * Hb, Hb - rail - 0.6 * slat, n + 1)[:-1] + slat:
                back_parts.append(_box([inner + 2 * _EPS, slat, tb * 0.7], [0, y, 0]))
        else:
            n = int(rng.integers(3, 8))
            r = rng.uniform(0.008, 0.014)
            for x in np.linspace(-inner / 2, inner / 2, n + 2)[1:-1]:
                back_parts.append(_rod([x, -_EPS, 0], [x, Hb - rail / 2, 0], r, sections=8))
    pivot = np.array([0, top - _EPS, -D / 2 + tb / 2])
    rot = trimesh.transformations.rotation_matrix(-tilt, [1, 0, 0])
    rot[:3, 3] = pivot
    parts += [p.apply_transform(rot) for p in back_parts]

    if arms != "none":
        ah = rng.uniform(0.17, 0.27)  # armrest height above the seat
        aw = rng.uniform(0.04, 0.08)
        ad = D * rng.uniform(0.75, 0.95)
        rest_z = D / 2 - ad / 2 - 0.01
        # Posts and panels straddle the seat's side edge so that they fuse with it.
        ax = W / 2 + 0.005 if arms == "posts" else W / 2 + 0.4 * aw - 0.01
        for sx in (-1, 1):
            parts.append(_box([aw, 0.03, ad], [sx * ax, top + ah, rest_z]))
            if arms == "posts":
                for z in (D / 2 - 0.05, rest_z - ad / 2 + 0.04):
                    parts.append(_box([0.03, ah + 0.02, 0.03], [sx * ax, top + ah / 2, z]))
            else:
                bottom = h - 0.12 if base == "legs" else h - 0.02
                parts.append(_box([aw * 0.8, top + ah - bottom, ad], [sx * ax, (top + ah + bottom) / 2, rest_z]))

    if base == "legs":
        parts += _chair_legs(rng, W, D, h)
    elif base == "star":
        parts += _star_base(rng, h)
    else:
        r = rng.uniform(0.03, 0.06)
        foot = rng.uniform(0.18, 0.26)
        parts.append(_rod([0, 0.03, 0], [0, h + _EPS, 0], r * rng.uniform(1.0, 2.0), r, sections=16))
        parts.append(_rod([0, 0, 0], [0, 0.035, 0], foot, foot * 0.9, sections=24))
    return parts


def _chair_legs(rng: np.random.Generator, W: float, D: float, h: float) -> list[trimesh.Trimesh]:
    round_legs = rng.random() < 0.5
    w = rng.uniform(0.025, 0.05)
    taper = rng.uniform(0.55, 1.0)
    splay = rng.uniform(0.0, 0.05)
    inset = w / 2 + rng.uniform(0.0, 0.04)
    parts, feet = [], []
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = sx * (W / 2 - inset), sz * (D / 2 - inset)
            foot = [x + sx * splay, 0.0, z + sz * splay]
            feet.append(foot)
            if round_legs:
                parts.append(_rod(foot, [x, h + _EPS, z], w / 2 * taper, w / 2, sections=10))
            else:
                parts.append(_square_rod(foot, [x, h + _EPS, z], w * taper, w))
    if rng.random() < 0.45:  # stretchers between the legs: an H frame low down
        y = rng.uniform(0.1, 0.2)
        f = 1 - y / h  # legs lean by splay; follow them at height y
        pts = {(sx, sz): [sx * (W / 2 - inset + splay * f), y, sz * (D / 2 - inset + splay * f)]
               for sx in (-1, 1) for sz in (-1, 1)}
        r = w * 0.3
        parts.append(_rod(pts[-1, -1], pts[-1, 1], r, sections=8))
        parts.append(_rod(pts[1, -1], pts[1, 1], r, sections=8))
        mid = lambda sx: [sx * (W / 2 - inset + splay * f), y, 0.0]  # noqa: E731
        parts.append(_rod(mid(-1), mid(1), r, sections=8))
    return parts


def _star_base(rng: np.random.Generator, h: float) -> list[trimesh.Trimesh]:
    """Office-chair base: gas column, five spokes, casters."""
    reach = rng.uniform(0.24, 0.32)
    y_hub = rng.uniform(0.07, 0.1)
    parts = [_rod([0, y_hub, 0], [0, h + _EPS, 0], rng.uniform(0.02, 0.03), sections=12),
             _box([0.16, 0.04, 0.16], [0, h - 0.02 + _EPS, 0])]  # tilt mechanism under the seat
    for k in range(5):
        a = 2 * np.pi * k / 5 + np.pi / 2
        tip = np.array([reach * np.cos(a), 0.055, reach * np.sin(a)])
        caster = tip * [1, 0, 1] + [0, 0.03, 0]
        parts.append(_rod([0, y_hub, 0], tip, 0.022, 0.014, sections=8))
        parts.append(_rod(tip + [0, 0.01, 0], caster, 0.01, sections=6))  # stem joining spoke and caster
        parts.append(_sphere(caster, 0.03))
    parts.append(_rod([0, y_hub - 0.03, 0], [0, y_hub + 0.03, 0], 0.045, sections=12))
    return parts


# ----------------------------------------------------------------------------- table


def _table(rng: np.random.Generator) -> list[trimesh.Trimesh]:
    """Top (rectangular / round) + support (legs / pedestal / trestle / panel sides)."""
    shape = _pick(rng, {"rect": 0.65, "round": 0.35})
    H = rng.choice([rng.uniform(0.35, 0.48), rng.uniform(0.68, 0.8), rng.uniform(0.95, 1.05)], p=[0.25, 0.6, 0.15])
    t = rng.uniform(0.025, 0.07)
    under = H - t  # underside of the top
    if shape == "rect":
        L, Wd = rng.uniform(0.8, 1.8), rng.uniform(0.5, 1.0)
        support = _pick(rng, {"legs": 0.5, "trestle": 0.2, "panel": 0.2, "pedestal": 0.1 if L < 1.2 else 0.0})
        parts = [_box([L, t, Wd], [0, H - t / 2, 0])]
    else:
        L = Wd = rng.uniform(0.6, 1.3)
        support = _pick(rng, {"legs": 0.45, "pedestal": 0.55})
        parts = [_rod([0, under, 0], [0, H, 0], L / 2, sections=40)]
    half_x, half_z = L / 2, Wd / 2
    if shape == "round":  # legs of a round top sit on a square inside the circle
        half_x = half_z = L / 2 * 0.72

    if support == "legs":
        w = rng.uniform(0.035, 0.07)
        inset = w / 2 + rng.uniform(0.01, 0.08)
        round_legs = rng.random() < 0.5
        taper = rng.uniform(0.5, 1.0)
        apron = rng.random() < 0.6
        ah = rng.uniform(0.06, 0.14)
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * (half_x - inset), sz * (half_z - inset)
                if round_legs:
                    parts.append(_rod([x, 0, z], [x, under + _EPS, z], w / 2 * taper, w / 2, sections=12))
                else:
                    parts.append(_square_rod([x, 0, z], [x, under + _EPS, z], w * taper, w))
        if apron:  # rails under the top, joining the legs
            ax, az = half_x - inset, half_z - inset
            for s in (-1, 1):
                parts.append(_box([2 * ax, ah, 0.02], [0, under - ah / 2 + _EPS, s * az]))
                parts.append(_box([0.02, ah, 2 * az], [s * ax, under - ah / 2 + _EPS, 0]))
        if rng.random() < (0.5 if H < 0.5 else 0.2):  # lower shelf
            sy = rng.uniform(0.08, 0.2) * H / 0.5
            parts.append(_box([2 * (half_x - inset) + w, 0.025, 2 * (half_z - inset) + w], [0, sy, 0]))
    elif support == "pedestal":
        r = rng.uniform(0.04, 0.09)
        parts.append(_rod([0, 0.02, 0], [0, under + _EPS, 0], r * rng.uniform(1, 1.8), r, sections=16))
        if rng.random() < 0.5:  # round foot
            foot = min(half_x, half_z) * rng.uniform(0.5, 0.8) / (0.72 if shape == "round" else 1.0)
            parts.append(_rod([0, 0, 0], [0, 0.04, 0], foot, foot * 0.85, sections=32))
        else:  # three or four splayed feet
            n_feet = int(rng.choice([3, 4]))
            reach = min(half_x, half_z) * rng.uniform(0.85, 1.1) / (0.72 if shape == "round" else 1.0) * 0.85
            for k in range(n_feet):
                a = np.pi / 4 + k * 2 * np.pi / n_feet
                parts.append(_rod([0, 0.08, 0], [reach * np.cos(a), 0.02, reach * np.sin(a)], 0.04, 0.022, sections=8))
        if rng.random() < 0.5:  # a plate under the top
            parts.append(_rod([0, under - 0.03, 0], [0, under + _EPS, 0], r * 2.5, sections=16))
    elif support == "trestle":
        inset = rng.uniform(0.08, 0.2) * L / 1.5
        post = rng.uniform(0.05, 0.1)
        x = half_x - inset
        for sx in (-1, 1):
            parts.append(_box([post * 1.2, 0.05, Wd * 0.85], [sx * x, 0.025, 0]))  # foot beam
            parts.append(_box([post, under, post], [sx * x, under / 2 + _EPS, 0]))  # upright
            parts.append(_box([post * 1.2, 0.05, Wd * 0.75], [sx * x, under - 0.025 + _EPS, 0]))  # top cleat
        parts.append(_box([2 * x, 0.06, 0.04], [0, rng.uniform(0.25, 0.5) * under, 0]))  # stretcher
    else:  # panel: two solid end slabs, sometimes a modesty panel at the back
        th = rng.uniform(0.025, 0.06)
        x = half_x - rng.uniform(0.0, 0.1)
        for sx in (-1, 1):
            parts.append(_box([th, under + _EPS, Wd * rng.uniform(0.9, 1.0) if sx < 0 else Wd * 0.95],
                              [sx * (x - th / 2), (under + _EPS) / 2, 0]))
        if rng.random() < 0.6:
            ph = under * rng.uniform(0.3, 0.6)
            parts.append(_box([2 * x - th, ph, 0.02], [0, under - ph / 2 + _EPS, -Wd * 0.3]))
    return parts


# ----------------------------------------------------------------------------- airplane


def _airplane(rng: np.random.Generator) -> list[trimesh.Trimesh]:
    """Fuselage + swept wings + tail (conventional / T / twin) + 0, 2 or 4 engines.

    Three kinds set the priors: airliners (swept wings, 2 or 4 engines under the
    wings, or 2 at the rear under a T-tail), fighters (short delta-like wings, no
    pods, mostly twin fins) and light aircraft (straight high or low wing, nose
    propeller).
    """
    kind = _pick(rng, {"airliner": 0.45, "fighter": 0.3, "light": 0.25})
    L = 1.0
    R = L * (rng.uniform(0.04, 0.06) if kind != "light" else rng.uniform(0.05, 0.075))
    if kind == "airliner":
        sweep, span, taper = rng.uniform(20, 38), rng.uniform(0.42, 0.55), rng.uniform(0.22, 0.4)
        root, engines = rng.uniform(0.16, 0.24), int(rng.choice([2, 2, 4]))
        tail = _pick(rng, {"conventional": 0.75, "t": 0.25})
        wing_y = -0.45 * R
    elif kind == "fighter":
        sweep, span, taper = rng.uniform(35, 58), rng.uniform(0.2, 0.32), rng.uniform(0.1, 0.3)
        root, engines = rng.uniform(0.3, 0.45), 0
        tail = _pick(rng, {"twin": 0.7, "conventional": 0.3})
        wing_y = rng.uniform(-0.2, 0.2) * R
    else:
        sweep, span, taper = rng.uniform(0, 8), rng.uniform(0.42, 0.6), rng.uniform(0.55, 1.0)
        root, engines = rng.uniform(0.13, 0.18), 0
        tail = _pick(rng, {"conventional": 0.6, "t": 0.4})
        wing_y = rng.choice([-0.6, 0.85]) * R  # low wing or high wing
    dihedral = math.radians(rng.uniform(-2, 3) if kind == "fighter" else rng.uniform(1, 6))
    nose_frac = rng.uniform(0.08, 0.16) if kind != "fighter" else rng.uniform(0.18, 0.28)
    tail_frac = rng.uniform(0.25, 0.35)
    upsweep = rng.uniform(0.3, 0.9) * R if kind != "fighter" else 0.0
    parts = [_fuselage(L, R, nose_frac, tail_frac, upsweep, rng.uniform(1.0, 1.15) if kind != "fighter" else 0.8)]

    # Main wing: one loft from tip to tip through the fuselage centre (root hidden inside the body).
    z_root = L * rng.uniform(0.0, 0.12) if kind != "fighter" else -L * rng.uniform(0.0, 0.1) + root / 2
    tan_s = math.tan(math.radians(sweep))
    tip = root * taper
    sec = lambda x, c: (x, wing_y + abs(x) * math.tan(dihedral), z_root - abs(x) * tan_s, c)  # noqa: E731
    thick = rng.uniform(0.09, 0.13) if kind != "fighter" else rng.uniform(0.05, 0.08)
    parts.append(_wing([sec(-span, tip), sec(0, root), sec(span, tip)], thick))

    rear_engines = kind == "airliner" and tail == "t" and rng.random() < 0.5
    re = R * rng.uniform(0.45, 0.65)
    le = L * rng.uniform(0.11, 0.16)
    if rear_engines:  # two pods on short stubs beside the rear fuselage (DC-9 style)
        z = -L / 2 + L * tail_frac * 0.9
        for sx in (-1, 1):
            x = sx * (R + re * 1.3)
            parts.append(_pod([x, R * 0.35, z], re, le))
            parts.append(_box([abs(x), re * 0.4, le * 0.5], [x / 2, R * 0.35, z - le * 0.1]))
    elif engines:
        stations = [rng.uniform(0.3, 0.4)] if engines == 2 else [rng.uniform(0.25, 0.32), rng.uniform(0.52, 0.62)]
        for f in stations:
            for sx in (-1, 1):
                parts += _nacelle(sec(sx * f * span, 0), root + (tip - root) * f, re, le, thick)

    parts += _tail(rng, L, R, tail, kind, upsweep)
    if kind == "light":  # propeller spinner and blades at the nose
        z_nose = L / 2
        parts.append(_rod([0, 0, z_nose - 0.02], [0, 0, z_nose + 0.05], R * 0.45, R * 0.08, sections=12))
        n_blades = int(rng.choice([2, 3]))
        blade = rng.uniform(0.09, 0.14)
        for k in range(n_blades):
            spin = trimesh.transformations.rotation_matrix(2 * np.pi * k / n_blades + 0.4, [0, 0, 1])
            spin[:3, 3] = [0, 0, z_nose + 0.02]
            parts.append(_box([0.025, blade, 0.01], [0, blade / 2, 0]).apply_transform(spin))
    return parts


def _fuselage(L: float, R: float, nose_frac: float, tail_frac: float, upsweep: float, height: float) -> trimesh.Trimesh:
    """Body of revolution along Z (nose at +L/2): elliptic nose, straight cabin, tail cone rising by `upsweep`."""
    s = np.concatenate([np.linspace(0, nose_frac, 8, endpoint=False) ** 1.0,
                        np.linspace(nose_frac, 1 - tail_frac, 3, endpoint=False),
                        np.linspace(1 - tail_frac, 1, 7)])
    s[0] = 0.004  # a tiny first ring instead of a point keeps the nose a valid loft
    radius = np.ones_like(s)
    nose = s < nose_frac
    radius[nose] = np.sqrt(1 - (1 - s[nose] / nose_frac) ** 2)
    tail = s > 1 - tail_frac
    u = (s[tail] - (1 - tail_frac)) / tail_frac
    radius[tail] = 1 - 0.8 * u
    lift = np.zeros_like(s)
    lift[tail] = upsweep * u**1.5
    theta = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    rings = np.stack([
        np.stack([R * r * np.cos(theta), lift_i + R * r * height * np.sin(theta),
                  np.full_like(theta, L / 2 - si * L)], 1)
        for si, r, lift_i in zip(s, radius, lift)
    ])
    return _loft(rings)


def _nacelle(wing_le, chord: float, re: float, le: float, thick: float) -> list[trimesh.Trimesh]:
    """An engine pod hanging under the wing at the given leading-edge point, with a pylon."""
    x, y, z_le, _ = wing_le
    cy = y - thick * chord * 0.5 - re * 1.3
    cz = z_le + le * 0.35
    pylon_h = (y - cy) - re * 0.5
    pylon = _box([re * 0.3, pylon_h + thick * chord * 0.3, le * 0.6], [x, cy + re * 0.5 + pylon_h / 2, cz - le * 0.15])
    return [_pod([x, cy, cz], re, le), pylon]


def _pod(center, re: float, le: float) -> trimesh.Trimesh:
    """A jet engine nacelle along Z: rounded intake, full body, tapered exhaust."""
    x, y, z = center
    theta = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    prof = [(0.0, 0.85), (0.15, 1.0), (0.7, 0.95), (1.0, 0.6)]
    return _loft(np.stack([np.stack([x + re * r * np.cos(theta), y + re * r * np.sin(theta),
                                     np.full_like(theta, z + le / 2 - f * le)], 1) for f, r in prof]))


def _tail(rng: np.random.Generator, L: float, R: float, tail: str, kind: str, upsweep: float) -> list[trimesh.Trimesh]:
    z_end = -L / 2
    fin_h = L * rng.uniform(0.12, 0.2)
    fin_root = L * rng.uniform(0.12, 0.2)
    fin_sweep = math.tan(math.radians(rng.uniform(30, 50) if kind != "light" else rng.uniform(10, 35)))
    fin_taper = rng.uniform(0.4, 0.7)
    stab_span = L * rng.uniform(0.13, 0.2)
    stab_root = L * rng.uniform(0.08, 0.12)
    stab_sweep = math.tan(math.radians(rng.uniform(20, 40) if kind != "light" else rng.uniform(0, 15)))
    fin_z = z_end + fin_root + 0.01
    base_y = upsweep * 0.6
    parts = []

    def fin(x: float, cant: float = 0.0) -> trimesh.Trimesh:
        y0, y1 = base_y - 0.3 * R, base_y + R * 0.5 + fin_h
        sections = [(y0, x, fin_z, fin_root),
                    (y1, x + cant * (y1 - y0), fin_z - fin_h * fin_sweep, fin_root * fin_taper)]
        return _wing(sections, 0.1, axis="y")

    def stab(y: float, z_le: float, scale: float = 1.0) -> trimesh.Trimesh:
        sp, ch = stab_span * scale, stab_root * scale
        sec = lambda x: (x, y, z_le - abs(x) * stab_sweep, ch if x == 0 else ch * 0.5)  # noqa: E731
        return _wing([sec(-sp), sec(0.0), sec(sp)], 0.1)

    if tail == "conventional":
        parts.append(fin(0.0))
        parts.append(stab(base_y, z_end + stab_root + 0.02))
    elif tail == "t":
        parts.append(fin(0.0))
        top_y = base_y + R * 0.5 + fin_h
        parts.append(stab(top_y - 0.01, fin_z - fin_h * fin_sweep + 0.01, scale=0.9))
    else:  # twin fins standing on the horizontal stabiliser, canted outward
        z_le = z_end + stab_root + 0.02
        parts.append(stab(base_y, z_le, scale=1.2))
        off = R * rng.uniform(0.6, 1.6)
        cant = math.tan(math.radians(rng.uniform(0, 25)))
        parts.append(fin(-off, -cant))
        parts.append(fin(off, cant))
    return parts


_BUILDERS = {"chair": _chair, "table": _table, "airplane": _airplane}
# Separate random streams per family: seed 0 of "chair" and of "table" are unrelated draws.
_FAMILY_SALT = {"chair": 1, "table": 2, "airplane": 3}

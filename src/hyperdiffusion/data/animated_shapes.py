"""Built-in animated families: procedural 4D data for tests and the 4D demo.

The paper's 4D experiment uses DeformingThings4D animals, which cannot ship with the
code. As `shapes` does for 3D, each family here is a small procedural model whose
proportions and motion are drawn from a seeded generator, so `make_frame(family,
seed, k)` gives the same mesh on every machine. Every frame is assembled from closed
parts (ellipsoids, rods with ball joints) fused into one watertight manifold by a
boolean union (manifold3d through trimesh, as `shapes._union`), so the occupancy
labels are well defined.

Families (Y up, facing +Z; one motion cycle of N_SOURCE_FRAMES frames, looping):
  - walker: a 4- or 6-legged creature walking on the spot; body, leg and neck
    proportions, tail, stride, knee lift and gait (trot, pace, wave) vary;
  - figure: a standing figure that waves one or both arms or bends at the waist;
    limb proportions, amplitudes and style vary.
"""

from __future__ import annotations

import math

import numpy as np
import trimesh

from hyperdiffusion.data.shapes import _union

FAMILIES = ("walker", "figure")
N_SOURCE_FRAMES = 16  # one cycle; frame k is at phase k / N_SOURCE_FRAMES
_SALT = {"walker": 7101, "figure": 7102}


def make_frame(family: str, seed: int, k: int) -> trimesh.Trimesh:
    """Frame `k` of sequence `seed` of `family`: one watertight mesh."""
    if family not in FAMILIES:
        raise ValueError(f"unknown animated family {family!r}; choose from {', '.join(FAMILIES)}")
    # The shape parameters come from (family, seed) only, never from k: all frames share them.
    params = _PARAMS[family](np.random.default_rng([_SALT[family], int(seed)]))
    phase = (int(k) % N_SOURCE_FRAMES) / N_SOURCE_FRAMES
    return _union(_POSE[family](params, phase))


def make_sequence(family: str, seed: int, n_frames: int = N_SOURCE_FRAMES) -> list[trimesh.Trimesh]:
    """The first `n_frames` frames of a sequence."""
    return [make_frame(family, seed, k) for k in range(n_frames)]


# ----------------------------------------------------------------------------- parts


def _ball(center, radius: float) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=1, radius=radius).apply_translation(center)


def _ellipsoid(center, radii) -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    m.apply_scale(np.asarray(radii, float))
    return m.apply_translation(center)


def _limb(points, radius: float) -> list[trimesh.Trimesh]:
    """Rods through `points` with a ball at every joint and end (no cracks at the joints)."""
    parts = [_ball(p, radius * 1.05) for p in points]
    for p0, p1 in zip(points[:-1], points[1:]):
        if np.linalg.norm(np.subtract(p1, p0)) > 1e-6:
            parts.append(trimesh.creation.cylinder(radius=radius, segment=[p0, p1], sections=10))
    return parts


def _dir(angle_from_down: float, axis: str = "z") -> np.ndarray:
    """Unit vector rotated from -Y by `angle_from_down` towards +Z (axis "z") or +X (axis "x")."""
    d = np.array([0.0, -math.cos(angle_from_down), 0.0])
    d[2 if axis == "z" else 0] = math.sin(angle_from_down)
    return d


# ----------------------------------------------------------------------------- walker

_GAITS = {  # phase offset of each leg: (side, index from the front) -> offset in cycles
    "trot": lambda side, i: 0.5 * ((side + i) % 2),
    "pace": lambda side, i: 0.5 * side,
    "wave": lambda side, i: 0.5 * side + 0.25 * i,
}


def _walker_params(rng: np.random.Generator) -> dict:
    n_pairs = 3 if rng.random() < 0.3 else 2
    return {
        "n_pairs": n_pairs,
        "body_len": rng.uniform(0.6, 1.1),
        "body_r": rng.uniform(0.13, 0.2),
        "leg_len": rng.uniform(0.3, 0.55),
        "leg_r": rng.uniform(0.03, 0.05),
        "upper_frac": rng.uniform(0.4, 0.6),
        "stride": rng.uniform(0.3, 0.6),  # hip swing amplitude, radians
        "lift": rng.uniform(0.2, 0.8),  # knee bend during the swing, radians
        "gait": str(rng.choice(list(_GAITS))),
        "neck_len": rng.uniform(0.1, 0.35),
        "neck_angle": rng.uniform(0.3, 1.1),  # from horizontal
        "head_r": rng.uniform(0.08, 0.14),
        "tail": bool(rng.random() < 0.7),
        "tail_len": rng.uniform(0.15, 0.4),
        "tail_wag": rng.uniform(0.1, 0.6),
        "bob": rng.uniform(0.0, 0.04),
    }


def _walker_pose(p: dict, phase: float) -> list[trimesh.Trimesh]:
    L, R, ll = p["body_len"], p["body_r"], p["leg_len"]
    y = ll * 0.9 + p["bob"] * math.sin(4 * math.pi * phase)  # body height, bobbing twice per cycle
    parts = [_ellipsoid([0.0, y, 0.0], [R * 1.05, R, L / 2])]
    l1, l2 = ll * p["upper_frac"], ll * (1 - p["upper_frac"])
    for i, z in enumerate(np.linspace(L * 0.35, -L * 0.35, p["n_pairs"])):
        for side in (0, 1):
            a = 2 * math.pi * (phase + _GAITS[p["gait"]](side, i))
            swing = p["stride"] * math.sin(a)
            knee_bend = p["lift"] * max(0.0, math.cos(a))  # the leg lifts while it swings forward
            hip = np.array([(R * 0.8) * (1 if side else -1), y - R * 0.4, z])
            knee = hip + l1 * _dir(swing)
            foot = knee + l2 * _dir(swing - knee_bend)
            parts += _limb([hip, knee, foot], p["leg_r"])
    front = np.array([0.0, y + R * 0.3, L / 2 - R * 0.3])
    na = p["neck_angle"] + 0.08 * math.sin(4 * math.pi * phase)  # a small nod
    head = front + p["neck_len"] * np.array([0.0, math.sin(na), math.cos(na)])
    parts += _limb([front, head], max(p["leg_r"] * 1.3, R * 0.35))
    parts.append(_ellipsoid(head + [0.0, 0.0, p["head_r"] * 0.5], [p["head_r"] * 0.8, p["head_r"] * 0.8,
                                                                      p["head_r"] * 1.2]))
    if p["tail"]:
        back = np.array([0.0, y + R * 0.2, -L / 2 + R * 0.2])
        wag = p["tail_wag"] * math.sin(2 * math.pi * phase)
        tip = back + p["tail_len"] * np.array([math.sin(wag) * 0.9, 0.35, -math.cos(wag) * 0.9])
        parts += _limb([back, tip], p["leg_r"] * 0.7)
    return parts


# ----------------------------------------------------------------------------- figure


def _figure_params(rng: np.random.Generator) -> dict:
    return {
        "style": str(rng.choice(["wave", "wave2", "bend"], p=[0.4, 0.3, 0.3])),
        "leg_len": rng.uniform(0.7, 1.0),
        "leg_r": rng.uniform(0.05, 0.08),
        "stance": rng.uniform(0.08, 0.2),
        "torso_h": rng.uniform(0.55, 0.8),
        "torso_w": rng.uniform(0.16, 0.26),
        "torso_d": rng.uniform(0.09, 0.14),
        "arm_len": rng.uniform(0.5, 0.8),
        "arm_r": rng.uniform(0.035, 0.055),
        "head_r": rng.uniform(0.1, 0.15),
        "amp": rng.uniform(0.3, 0.7),  # wave: elbow swing; bend: not used
        "raise": rng.uniform(2.2, 2.9),  # waving arm's shoulder angle from down (radians)
        "bend": rng.uniform(0.5, 1.2),  # bend: maximal forward bend at the waist
    }


def _rotate_x(points: np.ndarray, pivot: np.ndarray, angle: float) -> np.ndarray:
    """Rotate points about the X axis through `pivot` by `angle` (towards +Z for positive angles)."""
    c, s = math.cos(angle), math.sin(angle)
    q = np.asarray(points, float) - pivot
    out = q.copy()
    out[..., 1] = c * q[..., 1] - s * q[..., 2]
    out[..., 2] = s * q[..., 1] + c * q[..., 2]
    return out + pivot


def _figure_pose(p: dict, phase: float) -> list[trimesh.Trimesh]:
    ll, th = p["leg_len"], p["torso_h"]
    hip = np.array([0.0, ll, 0.0])
    parts = []
    for side in (-1, 1):
        parts += _limb([hip + [side * p["stance"], 0.0, 0.0], [side * p["stance"] * 1.2, ll * 0.5, 0.02],
                        [side * p["stance"] * 1.3, p["leg_r"], 0.0]], p["leg_r"])
    cyc = 2 * math.pi * phase
    bend = p["bend"] * (0.5 - 0.5 * math.cos(cyc)) if p["style"] == "bend" else 0.0
    upper = []  # parts above the waist, built upright and then bent about the hip
    upper.append(("ellipsoid", hip + [0.0, th / 2, 0.0], [p["torso_w"], th / 2 + 0.03, p["torso_d"]]))
    upper.append(("ball", hip + [0.0, th + p["head_r"] * 0.9, 0.0], p["head_r"]))
    al = p["arm_len"] / 2
    for side in (-1, 1):
        shoulder = hip + [side * (p["torso_w"] + p["arm_r"] * 0.5), th * 0.92, 0.0]
        waving = p["style"] == "wave2" or (p["style"] == "wave" and side == 1)
        if waving:
            up = p["raise"]  # upper arm raised sideways, forearm swinging about the elbow
            elbow = shoulder + al * np.array([side * math.sin(up), -math.cos(up), 0.0])
            fa = up - 0.4 + p["amp"] * math.sin(cyc + (math.pi if side == -1 and p["style"] == "wave2" else 0))
            hand = elbow + al * np.array([side * math.sin(fa), -math.cos(fa), 0.0])
        else:
            sw = 0.15 * math.sin(cyc) if p["style"] != "bend" else -0.6 * (0.5 - 0.5 * math.cos(cyc))
            elbow = shoulder + al * np.array([side * 0.15, -math.cos(sw), math.sin(sw)])
            hand = elbow + al * np.array([side * 0.05, -math.cos(sw + 0.3), math.sin(sw + 0.3)])
        upper.append(("limb", np.stack([shoulder, elbow, hand]), p["arm_r"]))
    for kind, where, size in upper:
        if kind == "ellipsoid":
            parts.append(_bent_ellipsoid(where, size, hip, bend))
        elif kind == "ball":
            parts.append(_ball(_rotate_x(where, hip, bend), size))
        else:
            parts += _limb(list(_rotate_x(where, hip, bend)), size)
    return parts


def _rot_about(pivot: np.ndarray, angle: float) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(angle, [1.0, 0.0, 0.0], pivot)


def _bent_ellipsoid(center, radii, pivot: np.ndarray, angle: float) -> trimesh.Trimesh:
    """An axis-aligned ellipsoid at `center`, then rotated about the X axis through `pivot`."""
    return _ellipsoid(center, radii).apply_transform(_rot_about(pivot, angle))


_PARAMS = {"walker": _walker_params, "figure": _figure_params}
_POSE = {"walker": _walker_pose, "figure": _figure_pose}

"""4D MLPs -> 16 meshes each (one per frame), animated GLB, animated preview (docs/4D.md).

A 4D MLP at a fixed frame is a 3D MLP: the positional encoding is per coordinate and the
first layer is linear, so W1 . enc(x, y, z, t_k) = W1[:, xyz columns] . enc(x, y, z) +
W1[:, t columns] . enc(t_k). Folding the second term into the first bias gives, for every
(MLP, frame), an ordinary 3D weight vector, and the whole 3D machinery of `mesh.py` (grid
evaluation with per-axis tables, marching cubes, surface clouds) meshes it at any
resolution. The official 4D evaluation meshes each frame at 128^3, level 0, and samples
2048 points per frame (REFERENCE.md "4D").

Output of `mesh_weights_4d` (the 4D branch of `hyperdiffusion mesh`):
  OUT/sequences/<name>/frame_<kk>.<format>   one mesh per frame
  OUT/clouds/<name>.npy                       float32 [F, n_points, 3] (only when no frame is empty)
  OUT/animations/<name>.glb                   all frames as nodes, shown one at a time by a STEP
                                              scale animation (frames differ in topology, so glTF
                                              morph targets cannot hold them)
  OUT/previews/<name>.gif                     animated preview from the project's renderer
  OUT/mesh.json                               {"kind": "4d", config, status per name}
"""

from __future__ import annotations

import json
import struct
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import trimesh

from hyperdiffusion.fields.mesh import MeshConfig, evaluate_grid, field_to_mesh, surface_cloud
from hyperdiffusion.fields.mlp import MLPConfig, WeightSet, flatten_weights, load_weight_set, positional_encoding, \
    split_weights
from hyperdiffusion.io import InputError, atomic_path, ensure_writable_dir, read_json, safe_name, save_npy, \
    write_bytes, write_json


def frame_weights(weights: torch.Tensor, cfg: MLPConfig, times: torch.Tensor) -> tuple[torch.Tensor, MLPConfig]:
    """4D weights [B, P4] at frame times [F] -> 3D weights [B * F, P3] (row b * F + f) and their config."""
    if cfg.in_dim != 4:
        raise ValueError("frame_weights needs a 4D MLP (in_dim=4)")
    cfg3 = MLPConfig(in_dim=3, multires=cfg.multires, hidden=cfg.hidden, n_hidden_layers=cfg.n_hidden_layers,
                     out_dim=cfg.out_dim, include_input=cfg.include_input)
    tensors = split_weights(weights.float(), cfg)
    w1, b1 = tensors[0], tensors[1]  # [B, H, E4], [B, H]
    cols = torch.arange(w1.shape[-1])
    # Encoding columns go [x y z t, sin x .. sin t, cos x .. cos t, ...]: column c is coordinate c % 4,
    # so dropping t's columns leaves exactly the 3D layout [x y z, sin x sin y sin z, ...].
    xyz, t_cols = cols[cols % 4 != 3], cols[cols % 4 == 3]
    enc_t = positional_encoding(times.float()[:, None], cfg.multires, cfg.include_input)  # [F, E4 / 4]
    bias = b1[:, None, :] + torch.einsum("bhe,fe->bfh", w1[:, :, t_cols], enc_t)  # [B, F, H]
    n_frames = len(times)
    rows = [w1[:, :, xyz].unsqueeze(1).expand(-1, n_frames, -1, -1), bias]
    rows += [t.unsqueeze(1).expand(-1, n_frames, *t.shape[1:]) for t in tensors[2:]]
    flat = flatten_weights([r.reshape(-1, *r.shape[2:]) for r in rows], cfg3)
    return flat, cfg3


def extract_sequences(weight_set: WeightSet | str | Path, res: int = 128, level_logit: float = 0.0,
                      n_frames: int = 16, chunk: int = 2**18,
                      device: str | torch.device = "cpu") -> list[list[trimesh.Trimesh | None]]:
    """Per MLP of a 4D weight set, its n_frames meshes (None for an empty or full frame)."""
    ws = load_weight_set(weight_set) if isinstance(weight_set, (str, Path)) else weight_set
    w3, cfg3 = frame_weights(ws.weights, ws.mlp, ws.mlp.frame_times(n_frames))
    out = []
    for b in range(len(ws.names)):
        fields = evaluate_grid(w3[b * n_frames:(b + 1) * n_frames], cfg3, res, chunk, device)
        out.append([field_to_mesh(f.numpy(), level_logit)[0] for f in fields])
    return out


# ------------------------------------------------------------------------------------------ animated GLB


def animated_glb(meshes: Sequence[trimesh.Trimesh | None], fps: float = 8.0) -> bytes:
    """One GLB holding every frame as a node; a STEP animation of node scales shows one frame at a time.

    trimesh writes the scene (nodes, meshes, buffers); it has no animation writer, so the
    `animations` entry (glTF 2.0 spec, "Animations") and its two accessors per node are
    appended here. An empty frame is an empty node (nothing shown during that frame).
    """
    scene = trimesh.Scene()
    names = []
    for k, m in enumerate(meshes):
        name = f"frame_{k:02d}"
        if m is not None and len(m.faces):
            scene.add_geometry(m, node_name=name, geom_name=name)
            names.append(name)
    if not names:
        raise ValueError("every frame is empty: nothing to animate")
    glb = scene.export(file_type="glb")
    magic, version, _ = struct.unpack_from("<III", glb, 0)
    json_len, json_type = struct.unpack_from("<II", glb, 12)
    gltf = json.loads(glb[20:20 + json_len])
    at = 20 + json_len
    bin_len, _ = struct.unpack_from("<II", glb, at)
    binary = bytearray(glb[at + 8:at + 8 + bin_len])

    n = len(meshes)
    times = np.arange(n, dtype=np.float32) / fps
    node_of = {node.get("name"): i for i, node in enumerate(gltf["nodes"])}

    def add(data: np.ndarray, kind: str, minmax: bool = False) -> int:
        while len(binary) % 4:
            binary.append(0)
        gltf["bufferViews"].append({"buffer": 0, "byteOffset": len(binary), "byteLength": data.nbytes})
        binary.extend(data.tobytes())
        acc = {"bufferView": len(gltf["bufferViews"]) - 1, "componentType": 5126, "count": int(len(data)),
               "type": kind}
        if minmax:
            acc.update(min=[float(data.min())], max=[float(data.max())])
        gltf["accessors"].append(acc)
        return len(gltf["accessors"]) - 1

    t_acc = add(times, "SCALAR", minmax=True)
    samplers, channels = [], []
    for k, m in enumerate(meshes):
        name = f"frame_{k:02d}"
        if name not in names:
            continue
        scale = np.zeros((n, 3), np.float32)
        scale[k] = 1.0
        samplers.append({"input": t_acc, "output": add(scale, "VEC3"), "interpolation": "STEP"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node_of[name], "path": "scale"}})
        gltf["nodes"][node_of[name]]["scale"] = [1.0, 1.0, 1.0] if k == 0 else [0.0, 0.0, 0.0]
    gltf["animations"] = [{"name": "frames", "samplers": samplers, "channels": channels}]
    while len(binary) % 4:
        binary.append(0)
    gltf["buffers"][0]["byteLength"] = len(binary)
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return (struct.pack("<III", magic, version, total) + struct.pack("<II", len(text), json_type) + text
            + struct.pack("<II", len(binary), 0x004E4942) + bytes(binary))


# ------------------------------------------------------------------------------------------ animated previews


def _framed(mesh: trimesh.Trimesh | None, corners: np.ndarray) -> trimesh.Trimesh:
    """`mesh` plus the sequence's bounding-box corners as unused vertices: the renderer frames every
    frame of a sequence the same way, so the preview shows motion instead of a re-zooming camera."""
    if mesh is None or len(mesh.faces) == 0:
        return trimesh.Trimesh(corners, np.zeros((0, 3), np.int64), process=False)
    return trimesh.Trimesh(np.concatenate([mesh.vertices, corners]), mesh.faces, process=False)


def _corners(meshes: Sequence[trimesh.Trimesh | None]) -> np.ndarray:
    verts = [np.asarray(m.vertices) for m in meshes if m is not None and len(m.vertices)]
    if not verts:
        return np.array([[-0.5] * 3, [0.5] * 3])
    v = np.concatenate(verts)
    lo, hi = v.min(0), v.max(0)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def animation_frames(sequences: Sequence[Sequence[trimesh.Trimesh | None]], ncols: int = 4,
                     titles: Sequence[str] | None = None, size: int = 160, **render_kw) -> list[np.ndarray]:
    """Tiled pictures, one per frame, of several sequences played side by side (uint8 [H, W, 3] each)."""
    from hyperdiffusion.pictures.render import render_grid, render_mesh

    n_frames = max(len(s) for s in sequences)
    corners = [_corners(s) for s in sequences]
    frames = []
    for k in range(n_frames):
        tiles = []
        for seq, c in zip(sequences, corners):
            m = seq[min(k, len(seq) - 1)]
            tiles.append(render_mesh(_framed(m, c), size=size, **render_kw))
        frames.append(render_grid(tiles, ncols=ncols, titles=titles, size=size))
    return frames


def save_animation(frames: Sequence[np.ndarray], path: str | Path, fps: float = 8.0) -> Path:
    """Write pictures as an animated GIF (or APNG for a .png path), looping, atomically."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    fmt = "PNG" if path.suffix.lower() == ".png" else "GIF"
    with atomic_path(path) as tmp:
        images[0].save(tmp, format=fmt, save_all=True, append_images=images[1:], duration=int(1000 / fps),
                       loop=0, **({"optimize": False} if fmt == "GIF" else {}))
    return path


# ------------------------------------------------------------------------------------------ the stage


def mesh_weights_4d(weights: str | Path, out: str | Path, cfg: MeshConfig = MeshConfig(res=128),
                    device: str = "auto", progress: bool = True, n_frames: int = 16,
                    previews: bool = True, fps: float = 8.0) -> dict[str, str]:
    """The 4D branch of `hyperdiffusion mesh` (files in the module docstring); resumable; name -> status.

    status: "ok", or "empty frames k,..." / "full frames k,..." when some frame has no surface.
    """
    from hyperdiffusion.progress import progress as progress_bar

    ws = load_weight_set(weights)
    if ws.mlp.in_dim != 4:
        raise InputError(f"{weights}: a {ws.mlp.in_dim}D weight set; mesh_weights_4d needs 4D MLPs")
    out = ensure_writable_dir(out)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    status_path = out / "mesh.json"
    record = {"kind": "4d", "config": asdict(cfg), "level_logit": cfg.logit, "n_frames": n_frames,
              "t_mode": ws.mlp.t_mode, "frame_times": ws.mlp.frame_times(n_frames).tolist(),
              "weights": str(weights), "status": {}}
    if status_path.exists():
        old = read_json(status_path)
        if old.get("config") != record["config"] or old.get("n_frames") != n_frames:
            raise InputError(f"{status_path}: written with other settings; use a new output folder")
        record["status"] = {n: s for n, s in old.get("status", {}).items()
                            if (out / "sequences" / safe_name(n)).is_dir()}
    todo = [n for n in ws.names if n not in record["status"]]
    index = {n: i for i, n in enumerate(ws.names)}
    times = ws.mlp.frame_times(n_frames)
    t0 = time.perf_counter()
    with progress_bar(total=len(ws.names), initial=len(ws.names) - len(todo), desc="mesh 4d", unit="seq",
                      disable=not progress) as bar:
        for name in todo:
            w3, cfg3 = frame_weights(ws.weights[[index[name]]], ws.mlp, times)
            fields = evaluate_grid(w3, cfg3, cfg.res, cfg.chunk, dev)
            if not torch.isfinite(fields).all():
                warnings.warn(f"{name}: the field has NaN or infinite values; no meshes", stacklevel=2)
                record["status"][name] = "non-finite"
                bar.update(1)
                continue
            meshes, bad = [], {"empty": [], "full": []}
            for k, field in enumerate(fields):
                mesh, st = field_to_mesh(field.numpy(), cfg.logit)
                meshes.append(mesh)
                if st != "ok":
                    bad[st].append(k)
            folder = out / "sequences" / safe_name(name)
            for k, mesh in enumerate(meshes):
                if mesh is not None:
                    with atomic_path(folder / f"frame_{k:02d}.{cfg.format}") as tmp:
                        mesh.export(tmp, file_type=cfg.format)
            folder.mkdir(parents=True, exist_ok=True)
            st = "; ".join(f"{s} frames {','.join(map(str, ks))}" for s, ks in bad.items() if ks) or "ok"
            if st == "ok":
                seed = cfg.seed * 1_000_003 + index[name]
                clouds = np.stack([surface_cloud(m, cfg.n_points, seed * 101 + k) for k, m in enumerate(meshes)])
                save_npy(out / "clouds" / f"{safe_name(name)}.npy", clouds)
            else:
                warnings.warn(f"{name}: {st}; no cloud written", stacklevel=2)
            if any(m is not None for m in meshes):
                write_bytes(out / "animations" / f"{safe_name(name)}.glb", animated_glb(meshes, fps))
                if previews:
                    save_animation(animation_frames([meshes], ncols=1, size=192), out / "previews" /
                                   f"{safe_name(name)}.gif", fps)
            record["status"][name] = st
            bar.update(1)
            write_json(status_path, record)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(status_path, record)
    ok = sum(v == "ok" for v in record["status"].values())
    print(f"4D meshes: {ok} of {len(ws.names)} sequences with a surface in every frame -> {out}")
    return record["status"]


def load_sequence_meshes(folder: str | Path, n_frames: int = 16) -> list[trimesh.Trimesh | None]:
    """Read OUT/sequences/<name>/ back: n_frames meshes (None where a frame had no surface)."""
    folder = Path(folder)
    out = []
    for k in range(n_frames):
        files = sorted(folder.glob(f"frame_{k:02d}.*"))
        out.append(trimesh.load(files[0], force="mesh", process=False) if files else None)
    return out

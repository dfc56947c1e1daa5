"""4D data: .anime reading, frame selection, per-frame normalisation, the 4D prepare branch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from hyperdiffusion.data import animated_shapes, animation
from hyperdiffusion.data.prepare import PrepareConfig, prepare

ANIM = Path(__file__).resolve().parents[2] / "shared" / "data" / "anim"


def _tetra_anime(path: Path, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write a tetrahedron .anime by hand, byte by byte as the format describes."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], "<f4")
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], "<i4")
    nf = len(offsets) + 1
    header = np.array([nf, 4, 4], "<i4").tobytes()
    path.write_bytes(header + verts.tobytes() + faces.tobytes() + np.asarray(offsets, "<f4").tobytes())
    return verts, faces


def test_read_anime_applies_offsets_per_frame(tmp_path):
    offsets = np.zeros((2, 4, 3), np.float32)
    offsets[0, :, 0] = 2.0  # frame 1: moved +2 along x
    offsets[1, 3] = [0, 0, 5]  # frame 2: only vertex 3 moved
    verts, faces = _tetra_anime(tmp_path / "t.anime", offsets)
    frames, f = animation.read_anime(tmp_path / "t.anime")
    assert frames.shape == (3, 4, 3) and f.shape == (4, 3)
    np.testing.assert_array_equal(f, faces)
    np.testing.assert_array_equal(frames[0], verts)
    np.testing.assert_array_equal(frames[1], verts + [2, 0, 0])
    np.testing.assert_array_equal(frames[2][:3], verts[:3])
    np.testing.assert_array_equal(frames[2][3], [0, 0, 6])
    # write_anime is the inverse
    animation.write_anime(tmp_path / "u.anime", frames, f)
    assert (tmp_path / "u.anime").read_bytes() == (tmp_path / "t.anime").read_bytes()


def test_read_anime_rejects_truncated(tmp_path):
    _tetra_anime(tmp_path / "t.anime", np.zeros((2, 4, 3)))
    data = (tmp_path / "t.anime").read_bytes()
    (tmp_path / "cut.anime").write_bytes(data[:-5])
    with pytest.raises(animation.BadSequence, match="truncated"):
        animation.read_anime(tmp_path / "cut.anime")


def test_select_frames_official_linspace():
    np.testing.assert_array_equal(animation.select_frames(32), np.arange(0, 32, 2))
    np.testing.assert_array_equal(animation.select_frames(16), np.arange(16))
    # Short sequences repeat frames: floor(linspace(0, 4, 16, endpoint=False)) = 0 0 0 0 1 1 1 1 ...
    np.testing.assert_array_equal(animation.select_frames(4), np.repeat(np.arange(4), 4))
    np.testing.assert_array_equal(animation.select_frames(6), [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5])
    assert animation.select_frames(61).max() == 57


def test_normalise_frames_per_frame_mean_one_scale():
    base = np.array([[0, 0, 0], [2, 0, 0], [0, 4, 0], [0, 0, 2]], float)
    frames = [base, base + [10, 0, 0], base * 2]  # moved, then grown
    out, centres, factor = animation.normalise_frames(frames, 0.475)
    for v in out:
        np.testing.assert_allclose(v.mean(axis=0), 0, atol=1e-12)  # each frame on its own mean
    np.testing.assert_allclose(out[0], out[1])  # global motion removed
    # one scale: the largest frame reaches 0.475 and the others keep their relative size
    assert max(np.abs(v).max() for v in out) == pytest.approx(0.475)
    np.testing.assert_allclose(out[2], 2 * out[0])
    np.testing.assert_allclose(centres[1] - centres[0], [10, 0, 0])
    # keep_global_motion: one common centre, the translation stays
    kept, c, _ = animation.normalise_frames(frames[:2], 0.475, keep_global_motion=True)
    np.testing.assert_allclose(c[0], c[1])
    assert kept[1].mean(axis=0)[0] - kept[0].mean(axis=0)[0] > 0


def test_animated_families_deterministic_and_varied():
    a = animated_shapes.make_frame("walker", 3, 5)
    b = animated_shapes.make_frame("walker", 3, 5)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    assert a.is_watertight and a.volume > 0
    moved = animated_shapes.make_frame("walker", 3, 9)
    assert not np.allclose(np.sort(a.vertices, axis=0)[:100], np.sort(moved.vertices, axis=0)[:100])
    other = animated_shapes.make_frame("walker", 4, 5)
    assert abs(other.volume - a.volume) > 1e-4  # another seed: other proportions
    assert animated_shapes.make_frame("figure", 0, 0).is_watertight


def test_prepare_4d_anime_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # a box moving along x over 4 frames, plus a broken file and a NaN file
    box = trimesh.creation.box(extents=[1, 0.5, 0.25])
    v, f = np.asarray(box.vertices, np.float32), np.asarray(box.faces)
    frames = np.stack([v + [k, 0, 0] for k in range(4)])
    animation.write_anime(src / "box.anime", frames, f)
    (src / "cut.anime").write_bytes((src / "box.anime").read_bytes()[:100])
    bad = frames.copy()
    bad[2, 0, 0] = np.nan
    animation.write_anime(src / "nan.anime", bad, f)
    cfg = PrepareConfig(n_surface=600, n_uniform=600, n_cloud=128, workers=1, split_fractions=(1, 0, 0))
    result = prepare(src, tmp_path / "out", cfg, progress=False)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["kind"] == "4d" and m["animation"]["n_frames"] == 16 and m["layout"] == "anime"
    assert m["shapes"]["box"]["status"] == "ok" and m["shapes"]["box"]["n_source_frames"] == 4
    assert m["shapes"]["cut"]["reason"].startswith("truncated")
    assert m["shapes"]["nan"]["reason"].startswith("non-finite")
    points, occ, n_surface = animation.load_sequence_samples(tmp_path / "out", "box")
    assert points.shape == (16, 1200, 3) and occ.shape == (16, 1200) and n_surface == 600
    cloud = animation.load_sequence_cloud(tmp_path / "out", "box")
    assert cloud.shape == (16, 128, 3)
    # per-frame centring: the moving box sits still; one scale for the sequence
    meshes = animation.load_sequence_meshes(tmp_path / "out", "box")
    np.testing.assert_allclose([m.vertices.mean(axis=0) for m in meshes], 0, atol=1e-6)
    np.testing.assert_allclose(cloud.mean(axis=1), 0, atol=0.1)
    assert len(meshes) == 16 and np.abs(meshes[0].vertices).max() == pytest.approx(0.475, rel=1e-5)
    # uniform samples inside ~ the box's volume after scaling by 0.95: 0.95^3 * 0.125 = 0.107
    assert abs(occ[:, 600:].mean() - 0.95**3 * 0.125) < 0.02
    assert result.n_ok == 1
    # resumable: a rerun reuses the finished sequence
    again = prepare(src, tmp_path / "out", cfg, progress=False)
    assert again.n_reused == 1 and again.n_new == 2  # the skipped files are retried
    # skip_short skips it instead
    short = prepare(src, tmp_path / "short", cfg, progress=False,
                    animation=animation.AnimationConfig(skip_short=True))
    assert short.skipped["box"].startswith("short")


def test_prepare_4d_sequence_folder_needs_kind(tmp_path):
    seq = tmp_path / "src" / "walk"
    seq.mkdir(parents=True)
    for k in range(3):
        trimesh.creation.icosphere(1, radius=0.5 + 0.1 * k).export(seq / f"frame_{k:02d}.ply")
    other = tmp_path / "src" / "odd"
    other.mkdir()
    trimesh.creation.icosphere(1).export(other / "a.ply")
    trimesh.creation.icosphere(2).export(other / "b.ply")
    cfg = PrepareConfig(n_surface=300, n_uniform=300, n_cloud=64, workers=1)
    result = prepare(tmp_path / "src", tmp_path / "out", cfg, progress=False, kind="4d")
    assert result.manifest["layout"] == "sequences"
    assert result.manifest["shapes"]["walk"]["status"] == "ok"
    assert result.skipped["odd"].startswith("mismatched vertex counts")


@pytest.mark.skipif(not ANIM.is_dir(), reason="shared real data absent")
def test_real_anime_reads():
    frames, faces = animation.read_anime(ANIM / "md2-sydney-run.anime")
    assert frames.shape == (6, 342, 3) and faces.shape == (679, 3)
    assert np.isfinite(frames).all() and not np.allclose(frames[0], frames[3])

"""CPU renderer: shaded discs, blank tiles, occlusion, grids and the `render` command."""

import numpy as np
import trimesh
from PIL import Image

from hyperdiffusion.cli import main
from hyperdiffusion.pictures.render import _rasterise, render_grid, render_mesh, title_height


def test_sphere_is_a_centred_shaded_disc():
    img = render_mesh(trimesh.creation.icosphere(subdivisions=3), size=64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    ink = (img < 250).any(-1)
    ys, xs = np.nonzero(ink)
    assert abs(xs.mean() - 31.5) < 1.5 and abs(ys.mean() - 31.5) < 1.5
    # A disc fills pi/4 of its bounding square.
    box = (np.ptp(xs) + 1) * (np.ptp(ys) + 1)
    assert abs(ink.sum() / box - np.pi / 4) < 0.05
    assert (img[0, 0] == 255).all() and (img[-1, -1] == 255).all()
    # Lambert shading: not one flat colour across the disc.
    lum = img[ink].mean(-1)
    assert lum.max() - lum.min() > 40


def test_empty_mesh_gives_blank_picture():
    img = render_mesh(trimesh.Trimesh(), size=32)
    assert img.shape == (32, 32, 3) and (img == 255).all()


def test_winding_does_not_change_the_picture():
    box = trimesh.creation.box(extents=[1, 0.5, 0.3])
    flipped = box.copy()
    flipped.invert()
    np.testing.assert_array_equal(render_mesh(box, size=48), render_mesh(flipped, size=48))


def test_nearest_triangle_wins():
    tri = np.array([[[0, 0], [8, 0], [0, 8]], [[1, 1], [8, 1], [1, 8]]], float)
    near_second = _rasterise(tri, np.array([[1.0] * 3, [2.0] * 3]), 8)
    near_first = _rasterise(tri, np.array([[2.0] * 3, [1.0] * 3]), 8)
    assert near_second[2, 2] == 1 and near_first[2, 2] == 0
    assert near_second[0, 0] == 0  # only the first triangle covers the corner
    assert near_second[7, 7] == -1  # outside both


def test_grid_png_size(tmp_path):
    tiles = [render_mesh(trimesh.creation.box(), size=32) for _ in range(5)]
    out = render_grid(tiles, tmp_path / "grid.png", ncols=3, titles=list("abcde"), size=32)
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size == (3 * 32, 2 * (32 + title_height(32)))
    assert out.shape == (2 * (32 + title_height(32)), 96, 3)
    plain = render_grid(tiles + [trimesh.creation.box()], tmp_path / "plain.png", ncols=2, size=32)
    assert plain.shape == (3 * 32, 64, 3)


def test_cli_renders_a_mesh_folder(tmp_path):
    src = tmp_path / "meshes"
    (src / "sub").mkdir(parents=True)
    trimesh.creation.box().export(src / "a.ply")
    trimesh.creation.icosphere().export(src / "sub" / "b.obj")
    (src / "notes.txt").write_text("not a mesh")
    out = tmp_path / "out.png"
    assert main(["render", str(src), str(out), "--size", "32", "--ncols", "4"]) == 0
    with Image.open(out) as im:
        assert im.size == (2 * 32, 32 + title_height(32))  # two meshes: ncols shrinks to the count


def test_cli_rejects_folder_without_meshes(tmp_path, capsys):
    assert main(["render", str(tmp_path), str(tmp_path / "out.png")]) == 2
    assert "no mesh files" in capsys.readouterr().err


def _octahedron_mlp(cfg):
    """Hand-set weights whose logit is 0.3 - |x|_1: an octahedron, no fitting needed.

    The encoding keeps the raw coordinates first, so the first layer computes
    relu(+x_i) and relu(-x_i), the hidden layers pass them on, the last sums them.
    """
    import torch

    from hyperdiffusion.fields.mlp import flatten_weights

    tensors = [torch.zeros(shape) for _, shape in cfg.tensor_shapes()]
    for i in range(3):
        tensors[0][2 * i, i], tensors[0][2 * i + 1, i] = 1.0, -1.0
    for layer in range(1, cfg.n_hidden_layers):
        tensors[2 * layer][:6, :6] = torch.eye(6)
    tensors[-2][0, :6] = -1.0
    tensors[-1][0] = 0.3
    return flatten_weights([t.unsqueeze(0) for t in tensors], cfg)


def test_cli_renders_a_weight_set(tmp_path):
    from hyperdiffusion.fields.mlp import MLPConfig, save_weight_set

    cfg = MLPConfig()
    weights = _octahedron_mlp(cfg).repeat(2, 1)
    save_weight_set(tmp_path / "fit" / "weights.safetensors", weights, ["a", "b"], cfg)
    out = tmp_path / "mlps.png"
    assert main(["render", str(tmp_path / "fit"), str(out), "--size", "32", "--res", "24"]) == 0
    with Image.open(out) as im:
        assert im.size == (2 * 32, 32 + title_height(32))
        tiles = np.asarray(im)[:32]
    assert (tiles[:, :32] < 250).any(-1).mean() > 0.2  # the octahedron is drawn, not a blank tile

"""Built-in shape families: deterministic, watertight, one solid, oriented like ShapeNet."""

import numpy as np
import pytest

from hyperdiffusion.data.shapes import FAMILIES, make_shape

SEEDS = range(20)


def test_families_listed():
    assert {"chair", "table", "airplane"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_mesh(family):
    a, b = make_shape(family, 7), make_shape(family, 7)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)


@pytest.mark.parametrize("family", FAMILIES)
def test_different_seeds_differ(family):
    a, b = make_shape(family, 0), make_shape(family, 1)
    assert a.vertices.shape != b.vertices.shape or not np.allclose(a.vertices, b.vertices)


@pytest.mark.parametrize("family", FAMILIES)
def test_watertight_single_solid(family):
    for seed in SEEDS:
        mesh = make_shape(family, seed)
        assert mesh.is_watertight and mesh.is_winding_consistent, (family, seed)
        assert mesh.volume > 0, (family, seed)
        assert mesh.body_count == 1, (family, seed, mesh.body_count)
        assert 0.3 < np.ptp(mesh.vertices, axis=0).max() < 2.5, (family, seed)  # roughly unit scale
        assert len(mesh.faces) < 5000, (family, seed)


@pytest.mark.parametrize("family", ["chair", "table"])
def test_furniture_stands_on_floor(family):
    for seed in range(5):
        mesh = make_shape(family, seed)
        # Y up, feet at y = 0 (the end caps of splayed round legs dip a hair below it).
        assert abs(mesh.bounds[0, 1]) < 0.005


def test_airplane_lies_flat_nose_forward():
    for seed in range(5):
        mesh = make_shape("airplane", seed)
        extent = np.ptp(mesh.vertices, axis=0)
        assert extent[1] < extent[0] and extent[1] < extent[2]  # span (x) and length (z) exceed height (y)
        nose = mesh.vertices[mesh.vertices[:, 2].argmax()]
        assert nose[2] > 0.45 and abs(nose[0]) < 0.1  # the nose is the +Z end, on the centre line


def test_families_have_variety():
    """Part styles change with the seed: the face count spread is a cheap proxy for topology changes."""
    for family in FAMILIES:
        counts = {len(make_shape(family, s).faces) for s in range(8)}
        assert len(counts) >= 4, (family, counts)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown built-in family 'sofa'"):
        make_shape("sofa", 0)

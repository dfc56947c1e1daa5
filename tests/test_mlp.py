import math

import pytest
import torch

from hyperdiffusion.fields.mlp import (MLPConfig, OccupancyMLP, batched_forward, default_init, load_weight_set,
                                positional_encoding, save_weight_set, split_weights, flatten_weights)
from hyperdiffusion.io import InputError


def test_paper_mlp_sizes():
    cfg = MLPConfig()
    assert cfg.encoded_dim == 27
    assert cfg.n_params == 36_737  # REFERENCE.md
    assert [s for _, s in cfg.tensor_shapes()] == [(128, 27), (128,), (128, 128), (128,), (128, 128), (128,), (1, 128), (1,)]
    assert MLPConfig(in_dim=4).n_params == 37_889  # the 4D MLP


def test_positional_encoding_values():
    x = torch.tensor([[0.5, -1.0, 2.0]])
    enc = positional_encoding(x, multires=4)
    assert enc.shape == (1, 27)
    assert torch.allclose(enc[0, :3], x[0])
    # block order: x, sin(x), cos(x), sin(2x), cos(2x), sin(4x), cos(4x), sin(8x), cos(8x); no pi
    for k, f in enumerate([1, 2, 4, 8]):
        assert torch.allclose(enc[0, 3 + 6 * k : 6 + 6 * k], torch.sin(f * x[0]))
        assert torch.allclose(enc[0, 6 + 6 * k : 9 + 6 * k], torch.cos(f * x[0]))
    assert enc[0, 3].item() == pytest.approx(math.sin(0.5))


def test_vector_module_round_trip_is_exact():
    torch.manual_seed(0)
    m = OccupancyMLP()
    v = m.to_vector()
    assert v.shape == (36_737,)
    assert torch.equal(OccupancyMLP.from_vector(v).to_vector(), v)
    assert torch.equal(flatten_weights(split_weights(v, m.cfg), m.cfg), v)


def test_batched_forward_matches_module():
    torch.manual_seed(0)
    cfg = MLPConfig(in_dim=4, hidden=32)
    mods = [OccupancyMLP(cfg) for _ in range(3)]
    w = torch.stack([m.to_vector() for m in mods])
    x = torch.rand(3, 50, 4) - 0.5
    out = batched_forward(w, x, cfg)
    for i, m in enumerate(mods):
        assert torch.allclose(out[i], m(x[i]), atol=1e-6)


def test_default_init_bounds():
    cfg = MLPConfig()
    w = default_init(cfg, 2, torch.Generator().manual_seed(0))
    first = split_weights(w, cfg)[0]
    assert first.abs().max() <= 1 / math.sqrt(27)


def test_weight_set_round_trip_and_mismatch(tmp_path):
    cfg = MLPConfig(hidden=16)
    w = torch.randn(2, cfg.n_params)
    save_weight_set(tmp_path / "weights.safetensors", w, ["a", "b"], cfg, {"stage": "test"})
    ws = load_weight_set(tmp_path)
    assert torch.equal(ws.weights, w) and ws.names == ["a", "b"] and ws.mlp == cfg
    assert (tmp_path / "weights.json").is_file()
    # a file whose recorded MLP does not match its tensor is refused with the file named
    from hyperdiffusion.io import save_safetensors
    save_safetensors(tmp_path / "bad.safetensors", {"weights": w},
                     {"format": "hyperdiffusion-weights", "names": ["a", "b"], "mlp": MLPConfig().to_dict()})
    with pytest.raises(InputError, match="bad.safetensors"):
        load_weight_set(tmp_path / "bad.safetensors")

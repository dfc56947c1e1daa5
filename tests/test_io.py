import json

import numpy as np
import pytest
import torch

from hyperdiffusion import io


def test_atomic_write_leaves_no_temp_files_on_error(tmp_path):
    target = tmp_path / "a.json"
    io.write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"x": 1}  # the finished file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_npz_round_trip_and_pickle_refused(tmp_path):
    io.save_npz(tmp_path / "s.npz", points=np.arange(6, dtype=np.float32).reshape(2, 3))
    assert io.load_npz(tmp_path / "s.npz")["points"].shape == (2, 3)
    np.savez(tmp_path / "evil.npz", obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(io.InputError, match="evil.npz"):
        io.load_npz(tmp_path / "evil.npz")


def test_safetensors_round_trip_with_json_metadata(tmp_path):
    t = {"w": torch.randn(3, 4)}
    io.save_safetensors(tmp_path / "w.safetensors", t, {"names": ["a", "b"], "tag": "x"})
    back, meta = io.load_safetensors(tmp_path / "w.safetensors")
    assert torch.equal(back["w"], t["w"])
    assert meta == {"names": ["a", "b"], "tag": "x"}


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    io.save_safetensors(tmp_path / "w.safetensors", {"w": torch.randn(64)})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(io.InputError, match="w.safetensors"):
        io.load_safetensors(tmp_path / "w.safetensors")


@pytest.mark.parametrize("raw,expected", [("../../x", "x"), ("a/b c", "a_b_c"), ("..", "shape"), ("ok-1.2", "ok-1.2")])
def test_safe_name_never_escapes(raw, expected):
    assert io.safe_name(raw) == expected

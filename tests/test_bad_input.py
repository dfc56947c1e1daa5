"""Broken inputs, fuzzed file readers, malicious pickles and escaping names (docs/ROBUSTNESS.md).

The cases are those of benchmarks/bad_inputs.py, which writes the table in
docs/ROBUSTNESS.md from the same runs, so the document stays true.
"""

from __future__ import annotations

import importlib.util
import io as _io
import re
import signal
import struct
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperdiffusion import io as hio
from hyperdiffusion.io import InputError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs  # dataclasses look the module up by name
_spec.loader.exec_module(bad_inputs)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    torch.set_num_threads(1)
    return bad_inputs.build_fixtures(tmp_path_factory.mktemp("bad") / "fixtures")


# ----------------------------------------------------------------------------- the table's cases


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=lambda c: f"{c.stage}-{c.input}")
def test_bad_input(case, fixtures, tmp_path):
    o = bad_inputs.run_case(case, tmp_path / "case", fixtures)
    assert o.exception is None, f"uncaught exception (the user sees a traceback): {o.exception}"
    assert not o.marker, "a pickle in the input was executed"
    assert not o.changed, f"finished outputs changed by a failing run: {o.changed}"
    if case.expect == "error":
        assert o.code not in (0, None), f"exit code {o.code}"
        errors = re.findall(r"hyperdiffusion \w+: error: [^\r\n]*", o.stderr)
        assert len(errors) == 1, f"expected one error line, got {o.stderr!r}"
        assert case.names in errors[0], f"{errors[0]!r} does not name {case.names!r}"
    else:
        assert o.code == 0, o.stderr
    if case.expect == "skip":
        manifest = hio.read_json(tmp_path / "case" / "out" / "manifest.json")
        assert manifest["shapes"][case.names]["status"] == "skipped"
        assert manifest["shapes"][case.names]["reason"].startswith("unreadable")
        assert manifest["shapes"]["good"]["status"] == "ok"


def test_names_never_escape_the_output_folder(fixtures, tmp_path):
    """A shape file named like a path, and a split file listing `../../x`, stay inside OUT."""
    for name in ("a%2F..%2F..%2Fx .ply", "..%2F..%2Fx.ply"):
        case = bad_inputs.Case("prepare", name, bad_inputs._escaping_names(name), "", expect="ok")
        o = bad_inputs.run_case(case, tmp_path / "names", fixtures)
        assert o.code == 0 and o.exception is None
    o = bad_inputs.run_case(bad_inputs.Case("prepare", "split", bad_inputs._split_file_escape, ""),
                            tmp_path / "split", fixtures)
    assert o.code == 0 and "1 listed shapes were not prepared" in o.stdout
    manifest = hio.read_json(tmp_path / "split" / "out" / "manifest.json")
    assert "../../x" not in sum(manifest["splits"].values(), [])
    for folder in ("names", "split"):
        shapes = sorted(p.name for p in (tmp_path / folder / "out" / "shapes").iterdir())
        assert all(p == hio.safe_name(p) for p in shapes)
    assert sorted(p.name for p in (tmp_path / "names" / "out" / "shapes").iterdir()) == ["a_2F.._2F.._2Fx", "good"]
    # nothing was written beside the case folders (../../x from OUT/shapes/<name>/ would land in tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names", "split"]
    assert not list(tmp_path.parent.glob("x*"))


@pytest.mark.parametrize("name,expected", [("../../x", "x"), ("..\\..\\x", "x"), ("/etc/passwd", "etc_passwd"),
                                           ("..%2F..%2Fx", "2F.._2Fx"), ("", "shape"), ("..", "shape")])
def test_safe_name(name, expected):
    assert hio.safe_name(name) == expected
    assert "/" not in hio.safe_name(name) and hio.safe_name(name) not in (".", "..")


# ----------------------------------------------------------------------------- no code execution


def test_no_reader_unpickles(tmp_path):
    """Every loader refuses a pickle whose __reduce__ would create a marker file, without running it."""
    from hyperdiffusion.evaluation.fpd import load_feature_net
    from hyperdiffusion.fields.mlp import load_weight_set
    from hyperdiffusion.diffusion.train import read_checkpoint

    marker = tmp_path / bad_inputs.MARKER_NAME
    payload = bad_inputs.evil_pickle(marker)
    for name, load in [("weights.safetensors", load_weight_set), ("last.safetensors", read_checkpoint),
                       ("w.safetensors", hio.load_safetensors), ("net.pth", load_feature_net),
                       ("net.pt", load_feature_net), ("a.npy", hio.load_npy), ("a.npz", hio.load_npz)]:
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(InputError, match=re.escape(str(path))):
            load(path)
        assert not marker.exists(), f"{name}: the pickle ran"
    # an .npy / .npz holding a pickled object array, as np.save(allow_pickle=True) writes it
    np.save(tmp_path / "obj.npy", np.array([bad_inputs.Evil(marker)], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", a=np.array([bad_inputs.Evil(marker)], dtype=object))
    for name, load in [("obj.npy", hio.load_npy), ("obj.npz", hio.load_npz)]:
        with pytest.raises(InputError, match="allow_pickle"):
            load(tmp_path / name)
    assert not marker.exists()
    # a real torch.save() pickle with a payload, as an FPD checkpoint
    torch.save({"model_state_dict": {"fc3.weight": torch.zeros(1)}, "x": bad_inputs.Evil(marker)},
               tmp_path / "torch.pth")
    with pytest.raises(InputError, match="refused without running it"):
        load_feature_net(tmp_path / "torch.pth")
    assert not marker.exists()


def test_source_has_no_unsafe_loaders():
    """No pickle, no torch.load without weights_only=True, no allow_pickle=True in the package."""
    files = sorted((ROOT / "src" / "hyperdiffusion").rglob("*.py"))  # every sub-package, not just the top
    names = {f.relative_to(ROOT / "src" / "hyperdiffusion").as_posix() for f in files}
    assert {"io.py", "fields/mlp.py", "evaluation/fpd.py", "diffusion/train.py"} <= names, names
    for f in files:
        text = f.read_text()
        assert not re.search(r"^\s*import pickle|pickle\.loads?\(|allow_pickle\s*=\s*True", text, re.M), f
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{f.name}: {call}"


# ----------------------------------------------------------------------------- fuzzing the readers


@contextmanager
def time_limit(seconds: int):
    """Fail a reader that hangs instead of letting the test run forever."""
    def boom(*_):
        raise TimeoutError(f"reader did not return within {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, truncations of a valid file, and valid files with a few bytes overwritten."""
    truncations = st.integers(0, len(valid)).map(lambda n: valid[:n])

    def flip(edits):
        b = bytearray(valid)
        for pos, val in edits:
            b[pos % len(b)] = val
        return bytes(b)

    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(flip)
    return st.one_of(st.binary(max_size=600), truncations, flips)


def _valid_bytes(writer, suffix: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"f{suffix}"
        writer(p)
        return p.read_bytes()


def _check(reader, path: Path, data: bytes, allowed=(InputError,)):
    path.write_bytes(data)
    with time_limit(20):
        try:
            reader(path)
        except allowed:
            pass


_CLOUD = np.random.default_rng(0).uniform(-0.5, 0.5, (40, 3)).astype(np.float32)
VALID = {
    ".npy": _valid_bytes(lambda p: hio.save_npy(p, _CLOUD), ".npy"),
    ".npz": _valid_bytes(lambda p: hio.save_npz(p, points=_CLOUD, occ=np.ones(40, np.uint8)), ".npz"),
    ".json": b'{"format": "hyperdiffusion-dataset", "splits": {"train": ["a"]}, "x": [1.5, null]}',
    ".safetensors": _valid_bytes(lambda p: hio.save_safetensors(p, {"weights": torch.ones(2, 5)}, {"names": ["a"]}),
                                 ".safetensors"),
}


@FUZZ
@given(data=mutated(VALID[".npy"]))
def test_fuzz_load_npy(tmp_path, data):
    _check(hio.load_npy, tmp_path / "f.npy", data)


@FUZZ
@given(data=mutated(VALID[".npz"]))
def test_fuzz_load_npz(tmp_path, data):
    _check(hio.load_npz, tmp_path / "f.npz", data)


@FUZZ
@given(data=st.one_of(mutated(VALID[".json"]), st.text(max_size=200).map(str.encode)))
def test_fuzz_read_json(tmp_path, data):
    _check(hio.read_json, tmp_path / "f.json", data)


@FUZZ
@given(data=mutated(VALID[".safetensors"]))
def test_fuzz_load_safetensors(tmp_path, data):
    _check(hio.load_safetensors, tmp_path / "f.safetensors", data)


def _weight_set_bytes() -> bytes:
    from hyperdiffusion.fields.mlp import MLPConfig, default_init, save_weight_set

    cfg = MLPConfig(hidden=4, multires=1)
    return _valid_bytes(lambda p: save_weight_set(p, default_init(cfg, 2), ["a", "b"], cfg), ".safetensors")


@FUZZ
@given(data=mutated(_weight_set_bytes()))
def test_fuzz_load_weight_set(tmp_path, data):
    from hyperdiffusion.fields.mlp import load_weight_set

    _check(load_weight_set, tmp_path / "weights.safetensors", data)


@FUZZ
@given(data=mutated(VALID[".npy"]))
def test_fuzz_evaluate_cloud_reader(tmp_path, data):
    from hyperdiffusion.evaluation.evaluate import _read_cloud

    _check(lambda p: _read_cloud(p, 16, np.random.default_rng(0)), tmp_path / "c.npy", data)


def _mesh_bytes() -> dict[str, bytes]:
    from hyperdiffusion.data import shapes

    m = shapes.make_shape("chair", 0)
    out = {}
    for ext in ("ply", "obj", "off", "stl", "glb"):
        data = m.export(file_type=ext)
        out[ext] = data.encode() if isinstance(data, str) else data
    return out


MESHES = _mesh_bytes()


@pytest.mark.parametrize("ext", sorted(MESHES))
def test_fuzz_prepare_mesh_reader(tmp_path, ext):
    """Any bytes with a mesh extension: a mesh, or prepare's documented skip (SkipShape), nothing else."""
    from hyperdiffusion.data.prepare import SkipShape, check_mesh, load_mesh

    def read(path: Path):
        check_mesh(load_mesh(str(path)))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=mutated(MESHES[ext]))
    def run(data):
        _check(read, tmp_path / f"m.{ext}", data, allowed=(SkipShape,))

    run()

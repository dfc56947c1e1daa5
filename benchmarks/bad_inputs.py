"""Feed every stage broken inputs and record what the user sees (docs/ROBUSTNESS.md).

    python benchmarks/bad_inputs.py            # rewrites the table in docs/ROBUSTNESS.md
    python benchmarks/bad_inputs.py --print    # prints it instead

Each case builds one broken input in a scratch folder, runs the stage through
`hyperdiffusion.cli.main` in this process (stdout and stderr captured), and
records the exit code, the last line of stderr, and whether files that existed
before the run (finished outputs) are byte-for-byte unchanged afterwards.
tests/test_bad_input.py runs the same cases and asserts on them, so the table
and the tests cannot drift apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ROBUSTNESS.md"
BEGIN, END = "<!-- bad-input table: begin -->", "<!-- bad-input table: end -->"
MARKER_NAME = "PWNED"  # a file a malicious pickle would create when unpickled


# ----------------------------------------------------------------------------- shared fixtures


@dataclass
class Fixtures:
    """Valid inputs the broken ones are derived from (built once, small)."""

    root: Path
    dataset: Path  # prepared dataset, 3 built-in chairs
    weights: Path  # weights.safetensors, 3 MLPs of width 16
    run: Path  # a training OUT folder with checkpoints/last.safetensors
    clouds: Path  # folder of 3 valid clouds [64, 3]
    mesh_bytes: dict[str, bytes] = field(default_factory=dict)  # a valid chair in each mesh format


class Evil:
    """Unpickling this runs `open(marker, "w")`: the payload a safe loader must never execute."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"model_state_dict": Evil(marker)})


def build_fixtures(root: Path) -> Fixtures:
    import torch
    import trimesh

    from hyperdiffusion.data import shapes
    from hyperdiffusion.cli import main
    from hyperdiffusion.fields.mlp import MLPConfig, default_init, save_weight_set

    root.mkdir(parents=True, exist_ok=True)
    ds = root / "dataset"
    _quiet(main, ["prepare", "builtin:chair", str(ds), "--count", "3", "--n-surface", "400", "--n-uniform", "400",
                  "--n-cloud", "64", "--split", "0.34", "0.33", "0.33", "--workers", "1", "--no-progress"])
    cfg = MLPConfig(hidden=16)
    w = root / "fit" / "weights.safetensors"
    save_weight_set(w, default_init(cfg, 3, torch.Generator().manual_seed(0)), ["a", "b", "c"], cfg)
    run = root / "run"
    _quiet(main, ["train", str(w), str(run), "--preset", "cpu", "--n-embd", "32", "--n-layer", "1", "--n-head", "2",
                  "--max-steps", "2", "--device", "cpu", "--no-progress"])
    clouds = root / "clouds"
    clouds.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(clouds / f"c{i}.npy", rng.uniform(-0.4, 0.4, (64, 3)).astype(np.float32))
    chair = shapes.make_shape("chair", 0)
    fx = Fixtures(root, ds, w, run, clouds)
    for ext in ("ply", "obj", "off", "stl", "glb"):
        data = chair.export(file_type=ext)
        fx.mesh_bytes[ext] = data.encode() if isinstance(data, str) else data
    return fx


def _quiet(fn, argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = fn(argv)
    if code != 0:
        raise RuntimeError(f"fixture step failed: {argv}")


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One broken input. `build(dir, fixtures)` writes it and returns the CLI argv."""

    stage: str
    input: str  # what is broken, in words
    build: Callable[[Path, Fixtures], list[str]]
    names: str  # a string the error message must contain (usually the bad file's name)
    expect: str = "error"  # "error": non-zero exit; "skip": the run goes on and records a skip
    protect: tuple[str, ...] = ()  # paths (relative to the case folder) that must be unchanged


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    exception: str | None  # an exception that escaped the CLI (a bug: the user sees a traceback)
    changed: list[str]  # protected files that changed
    marker: bool  # the malicious pickle ran

    @property
    def message(self) -> str:
        if self.exception:
            return f"traceback: {self.exception}"
        # the CLI's error line; a progress bar drawn with \r may share its terminal line
        errors = re.findall(r"hyperdiffusion \w+: error: [^\r\n]*", self.stderr)
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return errors[-1] if errors else (lines[-1] if lines else "")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _prep(src: Path, d: Path) -> list[str]:
    return ["prepare", str(src), str(d / "out"), "--n-surface", "200", "--n-uniform", "200", "--n-cloud", "32",
            "--workers", "1", "--no-progress"]


def _mesh_file(name: str, data: bytes | Callable[[Fixtures], bytes]):
    def build(d: Path, fx: Fixtures) -> list[str]:
        return _prep(_write(d / name, data(fx) if callable(data) else data), d)
    return build


def _truncated(ext: str):
    return _mesh_file(f"truncated.{ext}", lambda fx: fx.mesh_bytes[ext][: len(fx.mesh_bytes[ext]) // 3])


PLY_HEADER = ("ply\nformat {fmt} 1.0\nelement vertex {nv}\nproperty float x\nproperty float y\nproperty float z\n"
              "element face {nf}\nproperty list uchar int vertex_indices\nend_header\n")


def _ply_ascii(verts: str, faces: str, nv: int, nf: int) -> bytes:
    return (PLY_HEADER.format(fmt="ascii", nv=nv, nf=nf) + verts + faces).encode()


def _billion_faces(fx: Fixtures) -> bytes:
    head = PLY_HEADER.format(fmt="binary_little_endian", nv=3, nf=10**9).encode()
    return head + struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0) + bytes([3]) + struct.pack("<3i", 0, 1, 2)


def _folder_with_one_bad(d: Path, fx: Fixtures) -> list[str]:
    _write(d / "src" / "good.ply", fx.mesh_bytes["ply"])
    _write(d / "src" / "bad.ply", os.urandom(300))
    return _prep(d / "src", d)


def _escaping_names(name: str):
    def build(d: Path, fx: Fixtures) -> list[str]:
        _write(d / "src" / name, fx.mesh_bytes["ply"])
        _write(d / "src" / "good.ply", fx.mesh_bytes["ply"])
        return _prep(d / "src", d)
    return build


def _split_file_escape(d: Path, fx: Fixtures) -> list[str]:
    _write(d / "src" / "a.ply", fx.mesh_bytes["ply"])
    _write(d / "split.json", b'{"train": ["../../x", "a"], "val": [], "test": []}')
    return _prep(d / "src", d) + ["--split-file", str(d / "split.json")]


def _out_under_file(stage: str):
    def build(d: Path, fx: Fixtures) -> list[str]:
        _write(d / "afile", b"not a folder")
        out = str(d / "afile" / "sub")
        return {
            "prepare": lambda: ["prepare", "builtin:chair", out, "--count", "1", "--workers", "1", "--no-progress"],
            "fit": lambda: ["fit", str(fx.dataset), out, "--preset", "cpu", "--device", "cpu"],
            "mesh": lambda: ["mesh", str(fx.weights), out, "--res", "8", "--no-progress"],
            "train": lambda: ["train", str(fx.weights), out, "--preset", "cpu", "--device", "cpu", "--no-progress"],
            "sample": lambda: ["sample", str(fx.run), out, "--n", "1", "--steps", "2", "--no-mesh", "--device", "cpu",
                               "--no-progress"],
            "evaluate": lambda: ["evaluate", str(fx.clouds), str(fx.clouds), "--points", "32", "--emd", "off",
                                 "--out", out + "/metrics.json"],
        }[stage]()
    return build


def _copy_dataset(d: Path, fx: Fixtures) -> Path:
    import shutil

    shutil.copytree(fx.dataset, d / "ds")
    return d / "ds"


def _fit_missing(what: str):
    def build(d: Path, fx: Fixtures) -> list[str]:
        ds = _copy_dataset(d, fx)
        name = sorted((ds / "shapes").iterdir())[0].name
        {"samples": lambda: (ds / "shapes" / name / "samples.npz").unlink(),
         "manifest": lambda: (ds / "manifest.json").unlink(),
         "manifest_json": lambda: (ds / "manifest.json").write_bytes((ds / "manifest.json").read_bytes()[:50]),
         "samples_bytes": lambda: (ds / "shapes" / name / "samples.npz").write_bytes(os.urandom(200)),
         }[what]()
        return ["fit", str(ds), str(d / "fit"), "--preset", "cpu", "--split", "all", "--max-epochs", "1",
                "--steps-per-epoch", "1", "--hidden", "8", "--device", "cpu"]
    return build


def _fit_rerun_keeps_weights(d: Path, fx: Fixtures) -> list[str]:
    """A finished fit folder, rerun on a dataset whose manifest is gone."""
    import shutil

    shutil.copytree(fx.weights.parent, d / "fit")
    ds = _copy_dataset(d, fx)
    (ds / "manifest.json").unlink()
    return ["fit", str(ds), str(d / "fit"), "--preset", "cpu", "--device", "cpu"]


def _weights(kind: str):
    """A weights.safetensors that is broken in one way, given to `train` (and `mesh`)."""
    def make(d: Path, fx: Fixtures) -> Path:
        import json

        import torch

        from hyperdiffusion.io import save_safetensors

        p = d / "w" / "weights.safetensors"
        good = fx.weights.read_bytes()
        if kind == "truncated":
            return _write(p, good[: len(good) // 2])
        if kind == "random":
            return _write(p, os.urandom(len(good)))
        if kind == "header_tampered":  # claims a length past the end of the file
            n = struct.unpack("<Q", good[:8])[0]
            return _write(p, good[:8] + good[8:8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[9,') + good[8 + n:])
        if kind == "pickle":
            return _write(p, evil_pickle(d / MARKER_NAME))
        meta = json.loads(fx.weights.with_suffix(".json").read_text())
        if kind == "wrong_size":  # the recorded MLP is width 16; the tensor has one column too many
            save_safetensors(p, {"weights": torch.zeros(3, 1 + sum(np.prod(s) for _, s in meta["tensor_shapes"]))},
                             meta)
        elif kind == "wrong_mlp":  # the tensor fits width 16 but the metadata says 128
            meta["mlp"]["hidden"] = 128
            save_safetensors(p, {"weights": torch.zeros(3, 641)}, meta)
        elif kind == "nan":
            n_params = sum(int(np.prod(s)) for _, s in meta["tensor_shapes"])
            save_safetensors(p, {"weights": torch.full((3, n_params), float("nan"))}, meta)
        return p
    return make


def _train_with(kind: str):
    def build(d: Path, fx: Fixtures) -> list[str]:
        return ["train", str(_weights(kind)(d, fx)), str(d / "run"), "--preset", "cpu", "--n-embd", "32",
                "--n-layer", "1", "--n-head", "2", "--max-steps", "1", "--device", "cpu", "--no-progress"]
    return build


def _mesh_with(kind: str):
    def build(d: Path, fx: Fixtures) -> list[str]:
        return ["mesh", str(_weights(kind)(d, fx)), str(d / "mesh"), "--res", "8", "--n-points", "16",
                "--device", "cpu", "--no-progress"]
    return build


def _checkpoint(kind: str, stage: str):
    """A training run folder whose last.safetensors is broken; resumed by `train` or read by `sample`."""
    def build(d: Path, fx: Fixtures) -> list[str]:
        import shutil

        run = d / "run"
        shutil.copytree(fx.run, run)
        ck = run / "checkpoints" / "last.safetensors"
        good = ck.read_bytes()
        if kind == "truncated":
            ck.write_bytes(good[: len(good) // 2])
        elif kind == "pickle":
            ck.write_bytes(evil_pickle(d / MARKER_NAME))
        elif kind == "weights":  # a weight set where a checkpoint belongs
            ck.write_bytes(fx.weights.read_bytes())
        if stage == "train":
            return ["train", str(fx.weights), str(run), "--preset", "cpu", "--n-embd", "32", "--n-layer", "1",
                    "--n-head", "2", "--max-steps", "3", "--device", "cpu", "--no-progress"]
        return ["sample", str(run), str(d / "samples"), "--n", "1", "--steps", "2", "--no-mesh", "--device", "cpu",
                "--no-progress"]
    return build


def _cloud(kind: str):
    def build(d: Path, fx: Fixtures) -> list[str]:
        import shutil

        s = d / "samples"
        shutil.copytree(fx.clouds, s)
        bad = s / "c1.npy"
        if kind == "2d":
            np.save(bad, np.zeros((64, 2), np.float32))
        elif kind == "1d":
            np.save(bad, np.zeros(64, np.float32))
        elif kind == "nan":
            a = np.zeros((64, 3), np.float32)
            a[5, 1] = np.nan
            np.save(bad, a)
        elif kind == "random":
            bad.write_bytes(os.urandom(500))
        elif kind == "pickle":  # an object array: np.load would unpickle it with allow_pickle=True
            np.save(bad, np.array([Evil(d / MARKER_NAME)], dtype=object), allow_pickle=True)
        elif kind == "mesh_random":
            bad.unlink()
            for f in s.glob("*.npy"):
                f.unlink()
            _write(s / "c1.ply", os.urandom(300))
        return ["evaluate", str(s), str(fx.clouds), "--points", "32", "--emd", "off", "--out", str(d / "m.json")]
    return build


def _fpd_pickle(d: Path, fx: Fixtures) -> list[str]:
    net = _write(d / "best_model.pth", evil_pickle(d / MARKER_NAME))
    return ["evaluate", str(fx.clouds), str(fx.clouds), "--points", "32", "--emd", "off", "--fpd-net", str(net),
            "--out", str(d / "m.json")]


CASES: list[Case] = [
    # prepare: mesh files (one file as SRC: nothing is left to prepare, so the run fails)
    *[Case("prepare", f"random bytes named .{e}", _mesh_file(f"noise.{e}", os.urandom(400)), f"noise.{e}")
      for e in ("ply", "obj", "off", "stl", "glb")],
    *[Case("prepare", f"truncated .{e} (first third of a valid chair)", _truncated(e), f"truncated.{e}")
      for e in ("ply", "obj", "off", "stl", "glb")],
    Case("prepare", "empty mesh (PLY, 0 vertices, 0 faces)", _mesh_file("empty.ply", _ply_ascii("", "", 0, 0)),
         "empty.ply"),
    Case("prepare", "empty file .obj", _mesh_file("empty.obj", b""), "empty.obj"),
    Case("prepare", "NaN vertex (OBJ)", _mesh_file("nan.obj", b"v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\n"
                                                    b"f 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"), "nan.obj"),
    Case("prepare", "Inf vertex (PLY)", _mesh_file("inf.ply", _ply_ascii("0 0 0\n1 0 0\ninf 1 0\n0 0 1\n",
                                                                        "3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n", 4, 4)),
         "inf.ply"),
    Case("prepare", "face indexes past the vertex list (OBJ)",
         _mesh_file("badface.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n"), "badface.obj"),
    Case("prepare", "face indexes past the vertex list (PLY)",
         _mesh_file("badface.ply", _ply_ascii("0 0 0\n1 0 0\n0 1 0\n", "3 0 1 7\n", 3, 1)), "badface.ply"),
    Case("prepare", "PLY header claiming 10^9 faces", _mesh_file("billion.ply", _billion_faces), "billion.ply"),
    Case("prepare", "unsupported extension (.txt)", _mesh_file("notes.txt", b"hello"), "notes.txt"),
    Case("prepare", "folder: one good mesh and one random-bytes .ply", _folder_with_one_bad, "bad", expect="skip"),
    Case("prepare", "shape file named `..%2F..%2Fx.ply` (beside good.ply)", _escaping_names("..%2F..%2Fx.ply"), "",
         expect="ok"),
    Case("prepare", "shape file named `a%2F..%2F..%2Fx .ply` (beside good.ply)",
         _escaping_names("a%2F..%2F..%2Fx .ply"), "", expect="ok"),
    Case("prepare", "split file listing `../../x`", _split_file_escape, "split.json", expect="ok"),
    Case("prepare", "OUT below a regular file", _out_under_file("prepare"), "afile"),
    # fit
    Case("fit", "dataset: one samples.npz deleted", _fit_missing("samples"), "samples.npz"),
    Case("fit", "dataset: one samples.npz replaced by random bytes", _fit_missing("samples_bytes"), "samples.npz"),
    Case("fit", "dataset: manifest.json deleted", _fit_missing("manifest"), "manifest.json"),
    Case("fit", "dataset: manifest.json truncated", _fit_missing("manifest_json"), "manifest.json"),
    Case("fit", "finished OUT rerun on a dataset without manifest", _fit_rerun_keeps_weights, "manifest.json",
         protect=("fit/weights.safetensors", "fit/weights.json")),
    Case("fit", "OUT below a regular file", _out_under_file("fit"), "afile"),
    # mesh
    Case("mesh", "weights tensor one column wider than its MLP config", _mesh_with("wrong_size"), "weights.safetensors"),
    Case("mesh", "weights metadata says width 128, tensor is width 16", _mesh_with("wrong_mlp"), "weights.safetensors"),
    Case("mesh", "weights.safetensors truncated", _mesh_with("truncated"), "weights.safetensors"),
    Case("mesh", "weights.safetensors header offsets tampered", _mesh_with("header_tampered"), "weights.safetensors"),
    Case("mesh", "weights.safetensors is a malicious pickle", _mesh_with("pickle"), "weights.safetensors"),
    Case("mesh", "OUT below a regular file", _out_under_file("mesh"), "afile"),
    # train
    Case("train", "weights tensor one column wider than its MLP config", _train_with("wrong_size"),
         "weights.safetensors"),
    Case("train", "weights.safetensors of random bytes", _train_with("random"), "weights.safetensors"),
    Case("train", "weights.safetensors is a malicious pickle", _train_with("pickle"), "weights.safetensors"),
    Case("train", "weights are all NaN", _train_with("nan"), "weights.safetensors"),
    Case("train", "resume: last.safetensors truncated", _checkpoint("truncated", "train"), "last.safetensors",
         protect=("run/checkpoints/last.safetensors", "run/checkpoints/last.json")),
    Case("train", "resume: last.safetensors is a malicious pickle", _checkpoint("pickle", "train"),
         "last.safetensors", protect=("run/checkpoints/last.safetensors",)),
    Case("train", "OUT below a regular file", _out_under_file("train"), "afile"),
    # sample
    Case("sample", "checkpoint truncated", _checkpoint("truncated", "sample"), "last.safetensors"),
    Case("sample", "checkpoint is a malicious pickle", _checkpoint("pickle", "sample"), "last.safetensors"),
    Case("sample", "a weight set where the checkpoint belongs", _checkpoint("weights", "sample"), "last.safetensors"),
    Case("sample", "OUT below a regular file", _out_under_file("sample"), "afile"),
    # evaluate
    Case("evaluate", "cloud .npy of shape [N, 2]", _cloud("2d"), "c1.npy"),
    Case("evaluate", "cloud .npy of shape [N] (1-D)", _cloud("1d"), "c1.npy"),
    Case("evaluate", "cloud with a NaN", _cloud("nan"), "c1.npy"),
    Case("evaluate", "cloud .npy of random bytes", _cloud("random"), "c1.npy"),
    Case("evaluate", "cloud .npy holding a pickled object array", _cloud("pickle"), "c1.npy"),
    Case("evaluate", "mesh file of random bytes among the samples", _cloud("mesh_random"), "c1.ply"),
    Case("evaluate", "--fpd-net .pth that is a malicious pickle", _fpd_pickle, "best_model.pth"),
    Case("evaluate", "--out below a regular file", _out_under_file("evaluate"), "afile"),
]


# ----------------------------------------------------------------------------- running


def _digest(p: Path) -> str | None:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def run_case(case: Case, folder: Path, fx: Fixtures) -> Outcome:
    from hyperdiffusion.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    argv = case.build(folder, fx)
    before = {p: _digest(folder / p) for p in case.protect}
    out, err = io.StringIO(), io.StringIO()
    code, exc = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
        except Exception as e:  # noqa: BLE001 - recorded: the user would see a traceback
            exc = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    changed = [p for p in case.protect if _digest(folder / p) != before[p]]
    return Outcome(code, out.getvalue(), err.getvalue(), exc, changed, (folder / MARKER_NAME).exists())


def _cell(text: str, root: Path) -> str:
    text = text.replace(str(root), "…")
    text = re.sub(r"/tmp/[^ ]*?/(?=[^/ ]+)", "…/", text)
    return text.replace("|", "\\|").replace("`", "'")[:260]


def table(results: list[tuple[Case, Outcome]], root: Path) -> str:
    rows = ["| stage | input | what the user sees (last line of stderr; for skips the manifest reason) | exit | "
            "outputs kept |", "|---|---|---|---|---|"]
    for case, o in results:
        msg = o.message
        if case.expect in ("skip", "ok"):
            msg = (_skip_reasons(o) or msg or "(no error)")
        kept = "yes" if case.protect and not o.changed else ("NO: " + ", ".join(o.changed) if o.changed else "–")
        if o.marker:
            kept += " (PICKLE EXECUTED)"
        rows.append(f"| {case.stage} | {case.input} | {_cell(msg, root)} | "
                    f"{'exception' if o.exception else o.code} | {kept} |")
    return "\n".join(rows)


def _skip_reasons(o: Outcome) -> str:
    lines = [ln.strip() for ln in o.stdout.splitlines() if ln.startswith(("  ", "warning:", "prepared "))]
    return "; ".join(lines)


def run_all(root: Path) -> list[tuple[Case, Outcome]]:
    fx = build_fixtures(root / "fixtures")
    return [(c, run_case(c, root / f"case{i:02d}", fx)) for i, c in enumerate(CASES)]


def main() -> None:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(Path(tmp))
        text = table(results, Path(tmp))
    if "--print" in sys.argv:
        print(text)
        return
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()

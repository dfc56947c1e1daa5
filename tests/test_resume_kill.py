"""Crash and resume: SIGKILL each stage at random points, rerun it, compare with a run that never stopped.

For `prepare`, `fit`, `train` and `sample` a tiny run is started as the CLI
(`hyperdiffusion.cli.main`, what `python -m hyperdiffusion` calls) in a child
process, killed with SIGKILL at seeded random delays, and rerun with the same
command until it exits 0. Its outputs must equal those of an uninterrupted run
bitwise (same seed, CPU, one thread: every computation here is deterministic),
and after every kill no finished-looking file may be unreadable: atomic writes
leave only hidden `.<name>.*.tmp*` files behind.

Speed: importing torch and the stages takes seconds on a loaded 2-core machine,
longer than the tiny runs themselves. The children are therefore forked from a
`forkserver` that imported the package once, so a kill lands in the stage's
work rather than in `import torch`. One test runs the real
`python -m hyperdiffusion` entry point in a fresh interpreter and kills it too.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperdiffusion.io import load_npy, load_npz, load_safetensors, read_json

STAGE_MODULES = ["hyperdiffusion.cli", "hyperdiffusion.data.prepare", "hyperdiffusion.fields.fit", "hyperdiffusion.diffusion.train",
                 "hyperdiffusion.diffusion.sample", "hyperdiffusion.fields.mesh"]
KILLS = 3
SEED = 1234

# The tiny configuration of every stage (the chain prepare -> fit -> train -> sample).
PREPARE = ["builtin:chair", "--count", "4", "--n-surface", "3000", "--n-uniform", "3000", "--n-cloud", "256",
           "--workers", "1", "--no-progress"]
FIT = ["--preset", "cpu", "--split", "all", "--batch-shapes", "1", "--hidden", "16", "--max-epochs", "4",
       "--steps-per-epoch", "25", "--device", "cpu", "--threads", "1"]
TRAIN = ["--preset", "cpu", "--n-embd", "32", "--n-layer", "1", "--n-head", "2", "--max-steps", "60",
         "--ckpt-every", "5", "--log-every", "5", "--device", "cpu", "--no-progress"]
SAMPLE = ["--n", "6", "--batch-size", "2", "--steps", "25", "--no-mesh", "--device", "cpu", "--no-progress"]


# ----------------------------------------------------------------------------- running and killing


def _child(argv: list[str]) -> None:
    """Body of a forked child: the CLI with output silenced and one torch thread (bitwise repeatable)."""
    torch.set_num_threads(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from hyperdiffusion.cli import main

    os._exit(main(argv))


_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(STAGE_MODULES)
        warm = _CTX.Process(target=os._exit, args=(0,))  # start the server now, outside any timing
        warm.start()
        warm.join()
    return _CTX


def run_to_end(argv: list[str]) -> float:
    """Run the CLI in a child; return its wall time; fail on a non-zero exit."""
    ctx = _context()
    t0 = time.perf_counter()
    p = ctx.Process(target=_child, args=(argv,))
    p.start()
    p.join(120)
    assert p.exitcode == 0, f"{argv}: exit code {p.exitcode}"
    return time.perf_counter() - t0


def kill_and_resume(argv: list[str], out: Path, duration: float, rng: np.random.Generator) -> int:
    """Kill the run KILLS times at random points of its expected duration, then let it finish.

    Returns how many kills hit a live process. After every kill, every finished-looking file must read.
    `duration` comes from the reference run and can overstate a rerun (a busy moment, a cold cache): when
    a run finishes before any kill has landed, its output is wiped and the next delays are halved, so
    the kills land in the work on any machine instead of after it.
    """
    landed, attempts, restarts = 0, 0, 0
    while attempts < KILLS:
        p = _context().Process(target=_child, args=(argv,))
        p.start()
        time.sleep(rng.uniform(0.1, 0.8) * duration)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            landed += 1
        p.join(120)
        assert p.exitcode in (0, -signal.SIGKILL), f"{argv}: exit code {p.exitcode}"
        check_no_half_written(out)
        if landed == 0 and p.exitcode == 0 and restarts < 6:
            shutil.rmtree(out, ignore_errors=True)
            duration, restarts = duration / 2, restarts + 1
            continue
        attempts += 1
    run_to_end(argv)
    check_no_half_written(out)
    return landed


def check_no_half_written(out: Path) -> None:
    """Temporary files are hidden (`.name.XXXX.tmp.ext`); every visible file of a known kind reads back."""
    if not out.exists():
        return
    for f in out.rglob("*"):
        if not f.is_file() or f.name.startswith("."):
            continue
        assert ".tmp" not in f.name, f"{f}: temporary file with a visible name"
        if f.suffix == ".safetensors":
            load_safetensors(f)
        elif f.suffix == ".json":
            read_json(f)
        elif f.suffix == ".npz":
            load_npz(f)
        elif f.suffix == ".npy":
            load_npy(f)
        elif f.suffix == ".jsonl":
            for line in f.read_text().splitlines():
                json.loads(line)


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, ma = load_safetensors(a)
    tb, mb = load_safetensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a.name}: tensor {k} differs after resume"


# ----------------------------------------------------------------------------- the chain


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.fixture(scope="module")
def dataset(work: Path) -> tuple[Path, float]:
    out = work / "ds_ref"
    return out, run_to_end(["prepare", *PREPARE[:1], str(out), *PREPARE[1:]])


@pytest.fixture(scope="module")
def fitted(work: Path, dataset) -> tuple[Path, float]:
    out = work / "fit_ref"
    return out, run_to_end(["fit", str(dataset[0]), str(out), *FIT])


@pytest.fixture(scope="module")
def trained(work: Path, fitted) -> tuple[Path, float]:
    out = work / "train_ref"
    return out, run_to_end(["train", str(fitted[0]), str(out), *TRAIN])


def test_prepare_resumes_after_kills(work, dataset, rng):
    ref, duration = dataset
    out = work / "ds_killed"
    landed = kill_and_resume(["prepare", PREPARE[0], str(out), *PREPARE[1:]], out, duration, rng)
    assert landed >= 1
    assert_same_dataset(ref, out)


def assert_same_dataset(ref: Path, out: Path) -> None:
    m_ref, m_out = read_json(ref / "manifest.json"), read_json(out / "manifest.json")
    assert m_out["splits"] == m_ref["splits"]
    assert m_out["shapes"].keys() == m_ref["shapes"].keys()
    for name, entry in m_ref["shapes"].items():
        drop = {"seconds"}  # wall time, the only field that may differ
        assert {k: v for k, v in m_out["shapes"][name].items() if k not in drop} == \
            {k: v for k, v in entry.items() if k not in drop}
        a, b = ref / "shapes" / name, out / "shapes" / name
        za, zb = load_npz(a / "samples.npz"), load_npz(b / "samples.npz")
        assert za.keys() == zb.keys() and all(np.array_equal(za[k], zb[k]) for k in za)
        assert np.array_equal(load_npy(a / "cloud.npy"), load_npy(b / "cloud.npy"))
        assert (a / "mesh.ply").read_bytes() == (b / "mesh.ply").read_bytes()


def test_fit_resumes_after_kills(work, dataset, fitted, rng):
    ref, duration = fitted
    out = work / "fit_killed"
    landed = kill_and_resume(["fit", str(dataset[0]), str(out), *FIT], out, duration, rng)
    assert landed >= 1
    assert_same_tensors(ref / "weights.safetensors", out / "weights.safetensors")
    assert read_json(out / "weights.json")["names"] == read_json(ref / "weights.json")["names"]


def test_train_resumes_after_kills(work, fitted, trained, rng):
    ref, duration = trained
    out = work / "train_killed"
    landed = kill_and_resume(["train", str(fitted[0]), str(out), *TRAIN], out, duration, rng)
    assert landed >= 1
    # model, EMA and Adam state, bitwise
    assert_same_tensors(ref / "checkpoints" / "last.safetensors", out / "checkpoints" / "last.safetensors")
    assert read_json(out / "checkpoints" / "last.json")["step"] == 60
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 61, 5)), "metrics.jsonl must hold each logged step once after resuming"


def test_sample_resumes_after_kills(work, trained, rng):
    ref = work / "sample_ref"
    duration = run_to_end(["sample", str(trained[0]), str(ref), *SAMPLE])
    out = work / "sample_killed"
    landed = kill_and_resume(["sample", str(trained[0]), str(out), *SAMPLE], out, duration, rng)
    assert landed >= 1
    assert_same_tensors(ref / "weights.safetensors", out / "weights.safetensors")


def test_real_entry_point_killed_then_resumed(work, dataset):
    """`python -m hyperdiffusion prepare` in a fresh interpreter, SIGKILLed once its first shape is written."""
    out = work / "ds_entry"
    argv = [sys.executable, "-m", "hyperdiffusion", "prepare", PREPARE[0], str(out), *PREPARE[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline and not list(out.glob("shapes/*/meta.json")):
        time.sleep(0.02)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    check_no_half_written(out)
    run_to_end(["prepare", PREPARE[0], str(out), *PREPARE[1:]])
    assert_same_dataset(dataset[0], out)
    assert killed, "the run finished before its first shape was seen; the kill did not land"

"""benchmarks/gpu_check.py --tiny: every section's code on the CPU at tiny sizes, so the GPU check cannot rot."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_tiny_runs_every_section(gpu_check, tmp_path, one_thread):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--tiny", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert set(sections) == set(gpu_check.SECTIONS)
    for name, r in sections.items():
        assert r["status"] == "ok", (name, r)
        assert gpu_check.failed_checks(r) == []
    # CPU against CPU: the fp32 paths are the same computation, so the differences are exactly 0.
    assert sections["fit"]["parity_fp32"]["loss_and_gradient_rel_err"]["value"] == 0.0
    assert sections["train"]["parity_fp32"]["loss_rel_err"]["value"] == 0.0
    # bf16 autocast really ran: it differs from fp32, within its tolerance.
    assert 0 < sections["train"]["parity_bf16"]["loss_rel_err"]["value"] < 3e-2
    assert sections["mesh"]["parity"]["meshes"] == 4  # marching cubes ran on both sides
    assert sections["chamfer"]["torch_fp32_guarded"]["cov_nna_unchanged"]
    assert sections["emd"]["within_bound"]["pass"] and sections["emd"]["max_rel_err"] < 1e-3
    assert report["environment"]["device"] == "cpu" and report["tiny"] is True


def test_runs_without_the_mesh_packages(tmp_path):
    """The GPU machine has no trimesh, POT, libigl or manifold3d: the script still starts, and the
    sections that need them are skipped with the reason, not crashed."""
    block = "import sys; [sys.modules.__setitem__(m, None) for m in ('trimesh', 'ot', 'igl', 'manifold3d')]; "
    code = block + f"sys.argv = ['gpu_check', '--tiny', '--only', 'mesh,emd', '--out', {str(tmp_path / 'c.json')!r}]; " \
        f"import runpy; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    sections = json.loads((tmp_path / "c.json").read_text())["sections"]
    assert sections["mesh"]["status"] == "skipped" and "trimesh" in sections["mesh"]["reason"]
    assert sections["emd"]["status"] == "ok"  # exact EMD through scipy, not POT

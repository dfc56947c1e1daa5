"""The fused Triton Chamfer kernel against the float64 kd-tree, run by Triton's interpreter on the CPU.

Skipped where Triton is not installed (the CPU torch wheel does not bring it); benchmarks/gpu_check.py
checks the same kernel on a GPU against the kd-tree, with COV and 1-NNA. The interpreter is chosen when
triton is first imported, so the checks run in a fresh process with TRITON_INTERPRET=1.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from hyperdiffusion.evaluation import chamfer_triton, metrics

CHECK = """
import numpy as np
from hyperdiffusion.evaluation import metrics
rng = np.random.default_rng(0)
# Point counts that are not multiples of BLOCK_N / BLOCK_M, and clouds of different sizes.
a, b = rng.normal(size=(3, 150, 3)), rng.normal(size=(2, 70, 3)) * 0.5
np.testing.assert_allclose(metrics.pairwise_chamfer(a, b, backend="triton", device="cpu"),
                           metrics.pairwise_chamfer(a, b), rtol=1e-6)
c = rng.uniform(-0.5, 0.5, size=(4, 40, 3))
got = metrics.pairwise_chamfer(c, backend="triton", device="cpu")
np.testing.assert_allclose(got, metrics.pairwise_chamfer(c), rtol=1e-6, atol=1e-12)
np.testing.assert_array_equal(got, got.T)
assert np.all(np.diag(got) == 0)
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_matches_kdtree_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


def test_refused_without_a_gpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not chamfer_triton.available("cpu")
    with pytest.raises(ValueError, match="CUDA"):
        metrics.pairwise_chamfer(np.zeros((1, 4, 3)), backend="triton", device="cpu")

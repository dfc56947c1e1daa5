"""`torchrun ... -m hyperdiffusion train`: two CPU processes (gloo) take the steps of one process.

Every rank draws the whole global step (data order, timesteps, noise) and trains on its half; DDP
averages the two halves' gradients. The weights after N steps therefore equal a one-process run with
the same global batch up to float summation order, and a torchrun run resumes from its checkpoint.
Each torchrun launch imports torch three times (agent + 2 workers): a few seconds on a quiet machine.
"""

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch

from hyperdiffusion.cli import main
from hyperdiffusion.diffusion import train as train_module
from hyperdiffusion.diffusion.checkpoint import read_checkpoint
from hyperdiffusion.diffusion.runtime import Distributed
from hyperdiffusion.diffusion.train import TrainConfig, rank_share
from hyperdiffusion.io import InputError, read_json

# Global batch 4 of 8 samples: two steps per epoch, so the epoch's data order matters.
ARGS = ["--preset", "cpu", "--n-embd", "64", "--n-layer", "2", "--n-head", "4", "--lr", "3e-3", "--batch-size", "4",
        "--ema-decay", "0.99", "--log-every", "1", "--ckpt-every", "3", "--val-every-epochs", "0", "--device", "cpu",
        "--no-progress"]
LR = 3e-3


@pytest.fixture(scope="module")
def weights(weight_set):  # tests/conftest.py: 8 tiny MLPs
    return weight_set[0]


def _torchrun(*argv: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hyperdiffusion", "train", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _one_process(*argv: str) -> None:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            assert main(["train", *argv]) == 0
    finally:
        torch.set_num_threads(n)


def _assert_same_run(one, two, step):
    a, ma = read_checkpoint(one)
    b, mb = read_checkpoint(two)
    assert ma["step"] == mb["step"] == step and a.keys() == b.keys()
    assert any(k.startswith("ema.") for k in a) and any(k.startswith("opt.") for k in a)
    # Tolerance: the gradient all-reduce sums two half-batch means where one process takes one mean
    # over the batch, so float32 rounding differs (~1e-7 relative). Adam divides by sqrt(v), which
    # enlarges that for the few weights whose gradients are near 0: measured, after 3 and 6 steps,
    # max |diff| ~1.4e-5 (20 of 152k weights above 1e-6), mean ~1e-8. atol = lr / 30 is far below
    # what a wrong split gives (other samples or noise per rank move most weights by ~lr per step).
    for k in a:
        if k.startswith(("model.", "ema.")):
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=LR / 30, msg=k)
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if k.startswith("model.")])
    assert diff.mean() < 1e-6, diff.mean()
    assert ma["scheduler"] == mb["scheduler"]


def test_two_processes_equal_one_and_resume(weights, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process(str(weights), str(one), *ARGS, "--max-steps", "3")
    _torchrun(str(weights), str(two), *ARGS, "--max-steps", "3")
    _assert_same_run(one, two, 3)
    assert read_json(one / "config.json")["world_size"] == 1
    assert read_json(two / "config.json")["world_size"] == 2

    # Rerun the same command for 6 steps: both resume from their step-3 checkpoints (the 2-process run
    # under torchrun); the run finished with the ranks' weights and EMA compared equal (check_replicas).
    _one_process(str(weights), str(one), *ARGS, "--max-steps", "6")
    _torchrun(str(weights), str(two), *ARGS, "--max-steps", "6")
    _assert_same_run(one, two, 6)
    # Rank 0 alone logged, each step once, with the global batch's (all-reduced) loss.
    logs = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4, 5, 6]
    for r1, r2 in zip(*logs):
        assert r2["train/loss"] == pytest.approx(r1["train/loss"], rel=1e-5)


def test_rank_share_splits_the_global_batch():
    idx, t, noise, labels = torch.arange(10, 15), torch.arange(5), torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    parts = [rank_share(Distributed(r, 2), idx, t, noise, None, labels) for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), idx)  # the one-process order, no overlap
    assert torch.equal(torch.cat([p[2] for p in parts]), noise) and parts[0][3] is None
    # Class labels (with their classifier-free drops) are drawn for the global step, then sliced alike.
    assert torch.equal(torch.cat([p[4] for p in parts]), labels)
    assert [p[5] for p in parts] == [3 / 5, 2 / 5]
    # An epoch's last batch of 1 sample over 2 ranks: rank 1 computes one sample at weight 0.
    i, tt, share = rank_share(Distributed(1, 2), idx[:1], t[:1])
    assert share == 0 and len(i) == 1


def test_global_batch_must_divide_across_ranks(weights, tmp_path, monkeypatch):
    @contextlib.contextmanager
    def three_ranks(device):
        yield Distributed(0, 3)

    monkeypatch.setattr(train_module, "distributed", three_ranks)
    with pytest.raises(InputError, match="global batch.*3 torchrun processes"):
        train_module.train(weights, tmp_path / "run", TrainConfig(preset="cpu", batch_size=4, device="cpu"),
                           progress=False)

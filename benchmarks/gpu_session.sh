#!/usr/bin/env bash
# Everything one GPU lease runs, in one command, so that the machine starts once (a task's lease is
# 15 minutes of device time, starts included). Run from the repository root on the GPU machine:
#
#     OUT=/some/folder bash benchmarks/gpu_session.sh [SECONDS]
#
# SECONDS (default 420) bounds the whole script: each step gets what is left, so a slow step
# shortens the later ones instead of losing the run. What it does, in order of value:
#   1. benchmarks/gpu_check.py: every CUDA path against the CPU, and the paper-scale timings;
#   2. benchmarks/overfit_pvd.py on the GPU: does PVCNN2 memorise 4 clouds, at the tiny and the cpu
#      preset (the missing PVD overfit test of issue 12);
#   3. PVD (`pvd-cpu`) on the built-in chairs of the compare run, trained on the GPU for the time
#      left and sampled (16 clouds, DDIM 50): is the CPU row's shapeless PVD just undertrained?
#      Needs the dataset at .gpudata/data (benchmarks/RESULTS.md says how it was made); the
#      samples come back in $OUT/pvd_gpu.tgz to be evaluated on a CPU machine.
# Packages the machine lacks (trimesh) come as wheels in .whl (the device tool's README).
# DEVICE=cpu CHECK_ARGS="--tiny --device cpu" bash benchmarks/gpu_session.sh 150 is a dry run on a CPU.
set -u
total=${1:-420}
DEVICE=${DEVICE:-cuda}
CHECK_ARGS=${CHECK_ARGS:-}
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( total - ($(date +%s) - start) )); }
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv; \
  python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. The GPU check: no section starts after 45 % of the time; the rest is kept for 2 and 3.
timeout $(( total * 6 / 10 )) python3 benchmarks/gpu_check.py --budget-s $(( total * 45 / 100 )) --out "$OUT/gpu_check.json" $CHECK_ARGS

# 2. PVD overfit on 4 clouds of 256 points, 40 s per preset at most.
for preset in tiny cpu; do
    (( $(left) > 150 )) || break
    timeout 40 python3 benchmarks/overfit_pvd.py --preset "$preset" --device $DEVICE --points 256 --steps 100000 \
        --lr 2e-3 --eval-every 100 --log 100 --no-ddpm --json "$OUT/overfit_pvd_$preset.json" | grep -v "^step .*: loss"
done

# 3. PVD on the chairs for the time left, minus 45 s for sampling and packing.
if [ -d .gpudata/data ] && (( $(left) > 90 )); then
    work=/tmp/pvd_gpu
    timeout $(( $(left) - 45 )) python3 -m hyperdiffusion train .gpudata/data $work/train --preset pvd-cpu \
        --max-steps 1000000 --ckpt-every 100 --log-every 50 --device $DEVICE --no-progress
    timeout $(( $(left) - 5 )) python3 -m hyperdiffusion sample $work/train $work/samples --n 16 --steps 50 \
        --device $DEVICE --no-progress
    tar czf "$OUT/pvd_gpu.tgz" --ignore-failed-read -C $work train/config.json train/metrics.jsonl samples
    ls -la $work/samples
fi
echo "gpu_session: done in $(( $(date +%s) - start )) s"

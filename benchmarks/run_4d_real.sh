#!/bin/bash
# The real animations prepared and fitted on the CPU (benchmarks/RESULTS.md, "4D").
# usage: benchmarks/run_4d_real.sh WORK   (reads ../shared/data/anim and an OpenArena subset folder
#        WORK/oa22src of .anime links: 2 sequences per character, see RESULTS.md)
set -e
W=${1:-runs-4d}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
HD=".venv/bin/hyperdiffusion"
RECIPE="--preset cpu --points-per-step 1024 --schedule cosine --lr 5e-3 --threads 1 --no-progress --split all"
date
$HD prepare ../shared/data/anim $W/anim --n-surface 6000 --n-uniform 6000 --workers 1 --no-progress
$HD prepare $W/oa22src $W/oa22 --up z --n-surface 6000 --n-uniform 6000 --workers 1 --no-progress
date
$HD fit $W/anim $W/fit_anim $RECIPE --max-epochs 60 --batch-shapes 17
date
$HD fit $W/oa22 $W/fit_oa22 $RECIPE --max-epochs 40 --batch-shapes 22
date

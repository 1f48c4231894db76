#!/usr/bin/env bash
# Data-parallel training benchmark (issue 19, docs/mpi.md): the same TopK
# training run as 1 process x 2 threads and as `mpirun -np 2` x 1 thread on
# the TopK benchmark shape (bench_train's first: d 1024, n 4096, k 32,
# global batch 4096), one invocation. Prints both samples/s, their ratio and
# the share of the step rank 0 spends in the gradient allreduce.
#
#   bench/run_bench_mpi.sh [MPI_BUILD_DIR] [--steps N]
#
# MPI_BUILD_DIR defaults to ./build-mpi (cmake -DSAEFLOW_MPI=ON, target
# saeflow). The data (synthetic, F32, (steps + 1) x 4096 rows) goes to a
# temporary folder. Figures on a busy machine are not quiet ones.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build-mpi}"
[ $# -gt 0 ] && shift
steps=8
if [ "${1:-}" = "--steps" ]; then steps="$2"; shift 2; fi
exe="$build/saeflow"
[ -x "$exe" ] || { echo "missing $exe (cmake -S . -B build-mpi -DSAEFLOW_MPI=ON && cmake --build build-mpi --target saeflow)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
d=1024 n=4096 k=32 B=4096
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "shape: d $d, n $n, k $k, global batch $B, $steps steps (+ the first, in the figure too)"
"$exe" synth --out "$tmp/x.safetensors" --d $d --n_true $((2 * d)) --samples $(((steps + 1) * B)) >/dev/null
args=(train --tensorpath "$tmp/x.safetensors" --pages $n --k $k --batch_size $B --num_epochs 1)
echo "--- 1 process x 2 threads"
one="$(OMP_NUM_THREADS=2 "$exe" "${args[@]}" --threads 2 --savedir "$tmp/one" --name r)"
echo "$one" | grep -E '^(trained|time)'
echo "--- mpirun -np 2 x 1 thread"
two="$(mpirun --oversubscribe --bind-to none -np 2 -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS \
    "$exe" "${args[@]}" --threads 1 --savedir "$tmp/two" --name r)"
echo "$two" | grep -E '^(trained|time|MPI)'
sps() { sed -n 's/.* s, \([0-9.]*\) samples\/s.*/\1/p' | head -1; }
a="$(echo "$one" | sps)"
b="$(echo "$two" | sps)"
comm="$(echo "$two" | sed -n 's/.* took \([0-9]*\)% of the step.*/\1/p')"
echo "--- summary"
printf '%-28s %12s\n' "1 x 2 threads samples/s" "$a" "2 ranks x 1 thread samples/s" "$b"
awk -v a="$a" -v b="$b" -v c="$comm" 'BEGIN { printf "ratio (2 ranks / 1 x 2 threads): %.2fx; allreduce share of the step on rank 0: %s%%\n", b / a, c }'

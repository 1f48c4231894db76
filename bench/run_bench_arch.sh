#!/usr/bin/env bash
# Architecture benchmark: saeflow's step per architecture vs a PyTorch
# statement of it, same machine, same shapes, 2 threads, one invocation.
#
#   bench/run_bench_arch.sh [BUILD_DIR] [--steps N] [--arch A ...] [--shape d,n,k,B ...]
#
# PYTHON selects the interpreter with torch (default: python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
[ $# -gt 0 ] && shift
threads=2
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1
py="${PYTHON:-python3}"
exe="$build/bench_arch"
[ -x "$exe" ] || { echo "missing $exe (cmake --build $build --target bench_arch)" >&2; exit 1; }
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "--- saeflow"
c_out="$("$exe" --threads $threads "$@")"
echo "$c_out" | grep -v '^RESULT'
echo "--- torch"
t_out="$("$py" "$here/bench_arch_torch.py" --threads $threads "$@")"
echo "$t_out" | grep -v '^RESULT'
echo "--- summary (threads $threads)"
printf '%-22s %-24s %12s %12s %8s %8s %12s\n' arch shape saeflow/s torch/s ratio L0 step/bound
echo "$c_out" | grep '^RESULT' | while read -r _ arch d n k B sps l0 sob gemms; do
    key="$arch $d $n $k $B"
    tl="$(echo "$t_out" | grep "^RESULT $key " || true)"
    tsps="$(echo "$tl" | sed -n 's/.* samples_per_s=\([0-9.]*\).*/\1/p' | head -1)"
    c="${sps#samples_per_s=}"
    ratio="$(awk -v a="$c" -v b="${tsps:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')"
    printf '%-22s %-24s %12s %12s %8s %8s %12s\n' "${arch#arch=}" "${d#d=},${n#n=},${k#k=},${B#B=}" "$c" \
        "${tsps:-n/a}" "$ratio" "${l0#l0=}" "${sob#step_over_bound=} (${gemms#gemms=})"
done

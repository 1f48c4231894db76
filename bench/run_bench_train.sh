#!/usr/bin/env bash
# Training-step benchmark: saeflow vs the PyTorch statement of the reference
# TopK step, same machine, same shapes, 2 threads, one invocation.
#
#   bench/run_bench_train.sh [BUILD_DIR] [--steps N] [--shape d,n,k,B ...]
#
# BUILD_DIR defaults to ./build (needs the bench_train target built).
# PYTHON selects the interpreter with torch (default: python3).
# REPEAT=R runs both sides R times, alternating, and ends with the median of
# each figure over the runs (on a shared machine single runs scatter by 10-20%).
# Prints both samples/s, their ratio, step/encoder-GEMM and Adam's share.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
[ $# -gt 0 ] && shift
threads=2
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1
# Debian's OpenBLAS 0.3.21 picks its slow "Prescott" kernels on CPUs it does
# not know; bench_train re-execs itself with OPENBLAS_CORETYPE set when it sees
# that (sf_kernels_fix_blas_core), so nothing to do here.
py="${PYTHON:-python3}"
exe="$build/bench_train"
[ -x "$exe" ] || { echo "missing $exe (cmake --build $build --target bench_train)" >&2; exit 1; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
repeat="${REPEAT:-1}"
rows="$(mktemp)"
trap 'rm -f "$rows"' EXIT
for rep in $(seq 1 "$repeat"); do
    [ "$repeat" -gt 1 ] && echo "=== run $rep of $repeat ($(date -u +%H:%M:%S) UTC)"
    echo "--- saeflow"
    c_out="$("$exe" --threads $threads "$@")"
    echo "$c_out" | grep -v '^RESULT'
    echo "--- torch"
    t_out="$("$py" "$here/bench_train_torch.py" --threads $threads "$@")"
    echo "$t_out" | grep -v '^RESULT'
    echo "--- summary (threads $threads)"
    printf '%-24s %11s %11s %7s %10s %7s %9s\n' shape saeflow/s torch/s ratio step/GEMM adam cpu-ratio
    echo "$c_out" | grep '^RESULT' | while read -r _ d n k B sps msps sog adam gf ccpu; do
        key="$d $n $k $B"
        tl="$(echo "$t_out" | grep "^RESULT $key " || true)"
        tsps="$(echo "$tl" | sed -n 's/.* samples_per_s=\([0-9.]*\).*/\1/p' | head -1)"
        tcpu="$(echo "$tl" | sed -n 's/.* cpu_s_per_step=\([0-9.]*\).*/\1/p' | head -1)"
        c="${sps#samples_per_s=}"
        ratio="$(awk -v a="$c" -v b="${tsps:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')"
        cratio="$(awk -v a="${ccpu#cpu_s_per_step=}" -v b="${tcpu:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", b / a; else print "n/a" }')"
        printf '%-24s %11s %11s %7s %10s %7s %9s\n' "$d,$n,$k,$B" "$c" "${tsps:-n/a}" "$ratio" \
            "${sog#step_over_gemm=}" "${adam#adam_share=}" "$cratio"
        echo "$d,$n,$k,$B ${ratio%x} ${sog#step_over_gemm=} ${cratio%x}" >>"$rows"
    done
done
if [ "$repeat" -gt 1 ]; then
    echo "--- median over $repeat runs"
    printf '%-24s %7s %10s %9s\n' shape ratio step/GEMM cpu-ratio
    for shape in $(cut -d' ' -f1 "$rows" | sort -u); do
        med() { grep "^$shape " "$rows" | cut -d' ' -f"$1" | grep -v n/a | sort -g |
            awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else print "n/a" }'; }
        printf '%-24s %6.2fx %10.3f %8.2fx\n' "$shape" "$(med 2)" "$(med 3)" "$(med 4)"
    done
fi
echo "ratio: samples/s (best step) saeflow / torch; step/GEMM: median of adjacent step/GEMM"
echo "pairs; adam: Adam's share of saeflow's step; cpu-ratio: torch / saeflow CPU seconds"
echo "per step (all threads; steadier than wall time when other jobs share the cores)."

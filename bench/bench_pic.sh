#!/usr/bin/env bash
# The cost of -fPIC and of the shared library on two hot paths
# (docs/python.md, "-fPIC"):
#   encode  bench_encode --init 1024,4096,32 --rows 4096: one sf_sae_encoder_run
#           call, wall ms (the Python binding's encode)
#   train   bench_train --shape 1024,4096,32,1024: the TopK training step,
#           CPU s per step and step / encoder-GEMM (the GEMM is OpenBLAS's,
#           the same shared library in every variant, so the ratio isolates
#           saeflow's own code from the machine's load)
# in builds of the same sources:
#   no-pie      -DSAEFLOW_SHARED=OFF -DCMAKE_C_FLAGS=-fno-pie
#               -DCMAKE_EXE_LINKER_FLAGS=-no-pie: absolute code (NOPIE_BUILD;
#               skipped when absent)
#   pie         -DSAEFLOW_SHARED=OFF: GCC's default -fPIE executable (Debian
#               builds with --enable-default-pie), what the CLI would be
#               without the shared library (PIE_BUILD)
#   static-pic  the default build: static libraries compiled -fPIC (PIC_BUILD)
#   shared      bench_encode_so: the same objects as libsaeflow.so (PIC_BUILD)
# ROUNDS (env, default 5) interleaved rounds; medians per variant.
#   bench/bench_pic.sh [NAME=ENCODE_BINARY[,TRAIN_BINARY] ...]
# (default: the four variants above from PIC_BUILD=build, PIE_BUILD=build-nopic,
# NOPIE_BUILD=build-nopie)
# Make the other builds with
#   cmake -S . -B build-nopic -DCMAKE_BUILD_TYPE=Release -DSAEFLOW_SHARED=OFF
#   cmake --build build-nopic --target bench_encode bench_train
# (and the same with the -fno-pie flags for build-nopie).
set -euo pipefail
# A variant per argument NAME=ENCODE_BINARY[,TRAIN_BINARY]; the defaults:
pic=${PIC_BUILD:-build} pie=${PIE_BUILD:-build-nopic} nopie=${NOPIE_BUILD:-build-nopie}
rounds=${ROUNDS:-5} T=${THREADS:-2}
if [ $# -eq 0 ]; then
    set -- "pie=$pie/bench_encode,$pie/bench_train" "static-pic=$pic/bench_encode,$pic/bench_train" \
        "shared=$pic/bench_encode_so"
    [ -x "$nopie/bench_encode" ] && set -- "no-pie=$nopie/bench_encode,$nopie/bench_train" "$@"
fi
declare -A enc train ratio
names=()
run_enc() { "$1" --init 1024,4096,32 --rows 4096 --threads "$T" --rounds 3 | sed -n 's/^call_ms //p'; }
run_train() {
    "$1" --threads "$T" --steps 4 --shape 1024,4096,32,1024 |
        sed -n 's/^RESULT.*step_over_gemm=\([0-9.]*\).*cpu_s_per_step=\([0-9.]*\).*/\2 \1/p'
}
for r in $(seq "$rounds"); do
    for spec in "$@"; do
        v=${spec%%=*} bins=${spec#*=}
        e=${bins%%,*} t=
        [ "$bins" != "$e" ] && t=${bins#*,}
        [ "$r" = 1 ] && names+=("$v")
        enc[$v]+=" $(run_enc "$e" | tr '\n' ' ')"
        if [ -n "$t" ]; then
            read -r cpu rat < <(run_train "$t")
            train[$v]+=" $cpu" ratio[$v]+=" $rat"
        fi
    done
    echo "round $r done" >&2
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "$T threads, $rounds interleaved rounds (medians):"
for v in "${names[@]}"; do
    line=$(printf "  %-14s encode %8.1f ms" "$v" "$(echo "${enc[$v]}" | median)")
    if [ -n "${train[$v]:-}" ]; then
        line+=$(printf "   train step %.4f CPU s, step/GEMM %.4f" "$(echo "${train[$v]}" | median)" \
            "$(echo "${ratio[$v]}" | median)")
    fi
    echo "$line"
done

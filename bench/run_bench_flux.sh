#!/bin/sh
# FLUX transformer speed and memory: saeflow vs diffusers + torch on the same
# random BF16 weights (FLUX.1 widths: D 3072, 24 heads, mlp 12288; 2 double +
# 2 single blocks), the same inputs (256 image + 256 text tokens), the same
# thread count. Torch computes in F32 (weights upcast on load); saeflow keeps
# the BF16 weights mmap'd and computes in F32.
#
#   bench/run_bench_flux.sh [BUILD_DIR] [MODEL_DIR]
#
# BUILD_DIR holds bench_flux (default build); MODEL_DIR the random model, made
# on demand (default /tmp/flux-bench, ~1.9 GB, never committed).
# Env: PY (default /work/venv/bin/python), THREADS (2), BATCHES ("1 4"),
# ROUNDS (3), ITERS (2 timed runs after 1 warm-up per process; the median is
# its figure), OUT (/tmp/bench_flux).
#
# Each round runs torch, then saeflow, as separate processes: the ratio is
# taken per round (both sides met the same machine) and the summary line
# gives the median and range over rounds. On a shared host a single pair of
# runs minutes apart moved the ratio between 1.0x and 1.4x.
set -eu
BUILD=${1:-build}
MODEL=${2:-/tmp/flux-bench}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-"1 4"}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-2}
OUT=${OUT:-/tmp/bench_flux}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
[ -f "$MODEL/transformer/config.json" ] || "$PY" "$HERE/bench_flux_torch.py" --make-model "$MODEL"

RUNS="$OUT/runs.jsonl"
: >"$RUNS"
for B in $BATCHES; do
    "$PY" "$HERE/bench_flux_torch.py" --make-inputs "$OUT/in$B.safetensors" --batch "$B"
    common="--model $MODEL --inputs $OUT/in$B.safetensors --threads $THREADS --iters $ITERS"
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        for impl in torch saeflow; do
            if [ $impl = torch ]; then
                line=$("$PY" "$HERE/bench_flux_torch.py" $common --out "$OUT/torch$B.safetensors")
            else
                line=$("$BUILD/bench_flux" $common --out "$OUT/saeflow$B.safetensors")
            fi
            echo "$line"
            echo "$line" | sed "s/^{/{\"round\": $r, /" >>"$RUNS"
        done
        r=$((r + 1))
    done
    printf '{"batch": %s, "vs_torch": ' "$B"
    "$PY" "$HERE/bench_flux_torch.py" --compare "$OUT/saeflow$B.safetensors" "$OUT/torch$B.safetensors" | tr -d '\n'
    echo "}"
done
"$PY" "$HERE/bench_flux_torch.py" --summary "$RUNS"

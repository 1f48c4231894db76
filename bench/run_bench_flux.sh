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
# PAIRS (6), OUT (/tmp/bench_flux).
#
# Both sides are loaded and warmed up once, then run one forward each in
# turn, PAIRS times (bench_flux_torch.py --alternate): on a shared host the
# speed of either moves by 20-40% within minutes, and forwards seconds apart
# meet the same machine. The summary line per batch gives the median of the
# per-pair ratios and their range; $OUT/pairs.jsonl keeps every forward.
set -eu
BUILD=${1:-build}
MODEL=${2:-/tmp/flux-bench}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-"1 4"}
PAIRS=${PAIRS:-6}
OUT=${OUT:-/tmp/bench_flux}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
[ -f "$MODEL/transformer/config.json" ] || "$PY" "$HERE/bench_flux_torch.py" --make-model "$MODEL"

LOG="$OUT/pairs.jsonl"
: >"$LOG"
for B in $BATCHES; do
    "$PY" "$HERE/bench_flux_torch.py" --make-inputs "$OUT/in$B.safetensors" --batch "$B"
    "$PY" "$HERE/bench_flux_torch.py" --model "$MODEL" --inputs "$OUT/in$B.safetensors" \
        --threads "$THREADS" --pairs "$PAIRS" --alternate "$BUILD/bench_flux" "$LOG" \
        --out "$OUT/torch$B.safetensors" --ours-out "$OUT/saeflow$B.safetensors"
    printf '{"batch": %s, "vs_torch": ' "$B"
    "$PY" "$HERE/bench_flux_torch.py" --compare "$OUT/saeflow$B.safetensors" "$OUT/torch$B.safetensors" | tr -d '\n'
    echo "}"
done
"$PY" "$HERE/bench_flux_torch.py" --summary "$LOG"

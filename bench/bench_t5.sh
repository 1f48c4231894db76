#!/bin/sh
# T5 speed: saeflow vs transformers + torch (CPU), same weights and inputs.
# Encoder: XXL widths (d_model 4096, 64 heads, d_ff 10240), 2 layers, BF16
# weights (saeflow keeps them BF16; torch computes in F32 from them), 256
# tokens, batch 1 and 8. Tokenizer: fixtures/t5/tokenizer.json, 400 captions,
# one call per caption as diffusers makes it.
#
#   bench/bench_t5.sh [BUILD_DIR] [MODEL_DIR]     env: PY, THREADS (2), ITERS (2), OUT
set -eu
BUILD=${1:-build}
MODEL=${2:-/tmp/t5-xxl-2layers}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
ITERS=${ITERS:-2}
OUT=${OUT:-/tmp/bench_t5}
HERE=$(cd "$(dirname "$0")" && pwd)
TOK="$HERE/../fixtures/t5/tokenizer.json"
mkdir -p "$OUT"
[ -f "$MODEL/config.json" ] || "$PY" "$HERE/bench_t5_torch.py" make-model "$MODEL"
"$PY" "$HERE/bench_t5_torch.py" make-captions "$TOK" "$OUT/captions.txt"
"$BUILD/bench_t5" tok "$TOK" "$OUT/captions.txt" 256 5
"$PY" "$HERE/bench_t5_torch.py" tok "$TOK" "$OUT/captions.txt" 256 5
for B in 1 8; do
    "$BUILD/bench_t5" model "$MODEL" $B 256 "$ITERS" "$THREADS" "$OUT/ours$B.safetensors"
    "$PY" "$HERE/bench_t5_torch.py" model "$MODEL" $B 256 "$ITERS" "$THREADS" "$OUT/torch$B.safetensors"
    "$PY" "$HERE/bench_t5_torch.py" compare "$OUT/ours$B.safetensors" "$OUT/torch$B.safetensors"
done

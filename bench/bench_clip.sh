#!/bin/sh
# CLIP ViT-L/14 speed, memory and error: saeflow vs transformers + torch on
# the same random weights, same inputs, same thread count.
#
#   bench/bench_clip.sh [BUILD_DIR] [MODEL_DIR]
#
# BUILD_DIR holds bench_clip (default build); MODEL_DIR a random-weight
# ViT-L/14 CLIPModel, made on demand with tools/make_clip_fixtures.py
# --full-l14 (default /tmp/clip-l14, ~1.7 GB, never committed).
# Env: PY (python with torch+transformers, default /work/venv/bin/python),
# THREADS (2), BATCH (8 images / 8 captions), ITERS (2 timed batches after
# 1 warm-up), OUT (/tmp/bench_clip).
set -eu
BUILD=${1:-build}
MODEL=${2:-/tmp/clip-l14}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
ITERS=${ITERS:-2}
OUT=${OUT:-/tmp/bench_clip}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
[ -f "$MODEL/config.json" ] || "$PY" "$HERE/../tools/make_clip_fixtures.py" --full-l14 "$MODEL"
"$PY" "$HERE/bench_clip_torch.py" --make-inputs "$OUT/inputs.safetensors" --batch "$BATCH" --text-batch "$BATCH"

run() { # name tower what tokens
    name=$1; shift
    common="--model $MODEL --inputs $OUT/inputs.safetensors --tower $1 --what $2 --tokens $3 --threads $THREADS --iters $ITERS"
    "$PY" "$HERE/bench_clip_torch.py" $common --out "$OUT/$name.torch.safetensors"
    for dt in f32 bf16; do
        "$BUILD/bench_clip" $common --dtype $dt --out "$OUT/$name.$dt.safetensors"
        printf '{"case": "%s", "dtype": "%s", "vs_torch": ' "$name" "$dt"
        "$PY" "$HERE/bench_clip_torch.py" --compare "$OUT/$name.$dt.safetensors" "$OUT/$name.torch.safetensors" | tr -d '\n'
        echo "}"
    done
}
# The reference project's vision activations: hidden_states[-2][:, 0].
run vision_l-2_cls vision layer:-2 first
# Like for like: every layer on every token.
run vision_l-1_all vision layer:-1 all
# The reference project's text activations: pooler_output.
run text_pooled text pooled first
run text_l-1_all text layer:-1 all

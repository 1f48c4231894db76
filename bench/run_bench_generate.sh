#!/bin/sh
# Whole `flux generate` (text encoders, sampler, VAE) on a FLUX pipeline folder:
# saeflow vs diffusers' FluxPipeline (CPU, F32), same prompt, size, steps,
# seed and thread count; wall time per image and peak RSS, plus the pixel
# difference of the two images (same seed -> same noise).
#
#   bench/run_bench_generate.sh [BUILD_DIR] [MODEL_DIR]
#
# MODEL_DIR defaults to the tiny test pipeline (fixtures/flux-pipe/schnell);
# any diffusers FLUX folder works. Env: PY (/work/venv/bin/python), THREADS
# (2), SIZE (256), STEPS (4), ITERS (3 timed images after 1 warm-up),
# L (max_sequence_length, 256), OUT (/tmp/bench_generate).
# Per image: saeflow encodes all ITERS + 1 prompts first, then generates;
# per_image_s = generation time / n + encode time / n. torch: the median of
# ITERS calls of pipe(...) after a warm-up (each encodes its prompt). Loading
# is not in either per-image figure; process_wall_s has everything.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-build}
MODEL=${2:-$HERE/../fixtures/flux-pipe/schnell}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
SIZE=${SIZE:-256}
STEPS=${STEPS:-4}
ITERS=${ITERS:-3}
L=${L:-256}
OUT=${OUT:-/tmp/bench_generate}
PROMPT="a photo of a cat"
rm -rf "$OUT" && mkdir -p "$OUT"
i=0
while [ $i -le "$ITERS" ]; do echo "$PROMPT" >> "$OUT/prompts.txt"; i=$((i + 1)); done

/usr/bin/time -f '%e %M' -o "$OUT/saeflow.time" "$BUILD/saeflow" flux generate --model "$MODEL" \
    --prompts "$OUT/prompts.txt" --size "$SIZE" --steps "$STEPS" --seed 0 \
    --max-sequence-length "$L" --threads "$THREADS" --out "$OUT/saeflow" 2> "$OUT/saeflow.log"
per=$(sed -n 's/.* \([0-9.]*\) s per image.*/\1/p' "$OUT/saeflow.log")
enc=$(sed -n 's/.*prompts encoded in \([0-9.]*\) s.*/\1/p' "$OUT/saeflow.log")
read -r wall rss < "$OUT/saeflow.time"
tot=$(awk -v p="$per" -v e="${enc:-0}" -v n="$((ITERS + 1))" 'BEGIN { printf "%.4f", p + e / n }')
printf '{"impl": "saeflow", "per_image_s": %s, "generate_per_image_s": %s, "encode_all_s": %s, "process_wall_s": %s, "peak_rss_kb": %s, "images": %s}\n' \
    "$tot" "$per" "${enc:-0}" "$wall" "$rss" "$((ITERS + 1))"

/usr/bin/time -f '%e %M' -o "$OUT/torch.time" "$PY" "$HERE/bench_generate_torch.py" --model "$MODEL" \
    --prompt "$PROMPT" --size "$SIZE" --steps "$STEPS" --seed 0 --max-sequence-length "$L" \
    --iters "$ITERS" --threads "$THREADS" --out "$OUT/torch.png" 2> "$OUT/torch.log"
read -r wall rss < "$OUT/torch.time"
echo "{\"process_wall_s\": $wall, \"peak_rss_kb\": $rss}"
"$PY" "$HERE/bench_generate_torch.py" --compare "$OUT/saeflow/row000000_seed0.png" "$OUT/torch.png"

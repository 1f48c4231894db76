#!/bin/sh
# Rows/s delivered to SAEs by the FLUX source (`train --source flux`) vs the
# reference's method (diffusers FluxPipeline, 1 step at 256 px, a forward hook
# at one block, the whole pipeline incl. T5, CLIP and the VAE decode), at
# FLUX.1's real widths with random BF16 weights, same weights and threads.
#
#   bench/run_bench_flux_source.sh [BUILD_DIR]
#
# A 19 + 38 block model (23.8 GB BF16) and T5-XXL (9.5 GB) do not fit this
# machine, so each side's parts are measured at real width and the per-prompt
# time is composed (docs/flux_sae.md, "Speed"):
#   transformer  /tmp/flux-bench (2 double + 2 single blocks, bench_flux_torch.py
#                --make-model): saeflow forwards stopped after transformer_blocks.0,
#                .1 and single_transformer_blocks.0 (differences: embed, one double,
#                one single block); diffusers' full forward timed per block by
#                forward pre-hooks (embed, mean double, mean single, tail)
#   T5           XXL widths, 2 of 24 layers (/tmp/t5-xxl-2layers), x 12
#   CLIP text    FLUX's text_encoder widths (CLIP-L text, 12 layers), pooled output
#   VAE decode   FLUX's VAE at real widths (/tmp/flux-vae), one 256 px image
# Then: reference = T5 + CLIP + embed + 19 double + 38 single + tail + VAE per
# prompt and hook; saeflow = [T5 + CLIP] + embed + the blocks up to the last
# hook. Rows per prompt and hook: 8 (256 rows per 32 prompts, the reference's).
# Torch computes in F32 from the BF16 weights (as bench_flux_torch.py, bench_t5_torch.py);
# saeflow keeps BF16 weights (FLUX, T5) and computes in F32.
#
# Env: PY (/work/venv/bin/python), THREADS (2), B (prompts per measured
# batch, 2), ITERS (1 timed run after 1 warm-up per part), OUT
# (/tmp/bench_flux_source); models FLUX, T5, CLIP, VAE (made on demand).
# Prints one JSON line per part ({"part": ..., "r": ...}), the composition
# (measured / derived lines) and a final ratio table.
set -eu
BUILD=${1:-build}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
B=${B:-2}
ITERS=${ITERS:-1}
OUT=${OUT:-/tmp/bench_flux_source}
FLUX=${FLUX:-/tmp/flux-bench}
T5=${T5:-/tmp/t5-xxl-2layers}
CLIP=${CLIP:-/tmp/flux-clip-text}
VAE=${VAE:-/tmp/flux-vae}
HERE=$(cd "$(dirname "$0")" && pwd)
RES="$OUT/results.jsonl"
mkdir -p "$OUT"
: > "$RES"

[ -f "$FLUX/transformer/config.json" ] || "$PY" "$HERE/bench_flux_torch.py" --make-model "$FLUX"
[ -f "$T5/config.json" ] || "$PY" "$HERE/bench_t5_torch.py" make-model "$T5"
[ -f "$CLIP/config.json" ] || "$PY" "$HERE/bench_flux_source_torch.py" --make-clip "$CLIP"
[ -f "$VAE/vae/config.json" ] || "$PY" "$HERE/../tools/make_vae_fixtures.py" --full "$VAE"

part() { # NAME EXTRA_JSON_FIELDS CMD...: one tagged JSON line into $RES
    name=$1 extra=$2
    shift 2
    "$@" > "$OUT/$name.out" # set -e stops here on a failing bench
    line=$(tail -n 1 "$OUT/$name.out")
    echo "{\"part\": \"$name\", $extra\"r\": $line}" | tee -a "$RES"
}

# transformer: B prompts, 256 image + 256 text tokens
"$PY" "$HERE/bench_flux_torch.py" --make-inputs "$OUT/flux_in.safetensors" --batch "$B"
fx="--model $FLUX --inputs $OUT/flux_in.safetensors --threads $THREADS --warmup 1 --iters $ITERS"
part saeflow_d0 "" "$BUILD/bench_flux" $fx --hook transformer_blocks.0:1
part saeflow_d1 "" "$BUILD/bench_flux" $fx --hook transformer_blocks.1:1
part saeflow_s0 "" "$BUILD/bench_flux" $fx --hook single_transformer_blocks.0
part torch_blocks "" "$PY" "$HERE/bench_flux_source_torch.py" --blocks $fx

# check: the FLUX source itself (`saeflow extract --source flux`, what `train --source
# flux` reads), 4 hooks in one pass on the same B prompts (random embeddings), wall time
# of the whole command (load + one cold forward to single_transformer_blocks.0 + writing)
"$PY" "$HERE/bench_flux_source_torch.py" --make-prompts "$OUT/prompts.safetensors" --batch "$B"
rm -f "$OUT/source.safetensors"*
t0=$(date +%s.%N)
"$BUILD/saeflow" extract --source flux --model "$FLUX" --prompts "$OUT/prompts.safetensors" \
    --hook transformer_blocks.0:0 --hook transformer_blocks.0:1 --hook transformer_blocks.1:1 \
    --hook single_transformer_blocks.0 --prompt_batch "$B" --tokens_per_image 8 \
    --threads "$THREADS" --out "$OUT/source.safetensors" 2> "$OUT/source.log"
t1=$(date +%s.%N)
echo "{\"part\": \"saeflow_source_4hooks\", \"r\": {\"wall_s\": $(echo "$t1 - $t0" | bc), \"batch\": $B, \"hooks\": 4}}" | tee -a "$RES"

# T5 (2 layers of XXL), B prompts of 256 tokens; best of ITERS after a warm-up
part saeflow_t5 "\"layers\": 2, " "$BUILD/bench_t5" model "$T5" "$B" 256 "$ITERS" "$THREADS"
part torch_t5 "\"layers\": 2, " "$PY" "$HERE/bench_t5_torch.py" model "$T5" "$B" 256 "$ITERS" "$THREADS"

# CLIP text encoder, B prompts of 77 tokens, pooled output (FLUX's pooled_projections)
"$PY" "$HERE/bench_clip_torch.py" --make-inputs "$OUT/clip_in.safetensors" --batch 1 --text-batch "$B"
cl="--model $CLIP --inputs $OUT/clip_in.safetensors --tower text --what pooled --tokens first --threads $THREADS --iters $ITERS"
part saeflow_clip "" "$BUILD/bench_clip" $cl --dtype f32
part torch_clip "" "$PY" "$HERE/bench_clip_torch.py" $cl

# VAE decode of one 256 px image (the reference decodes every image it samples)
"$PY" "$HERE/bench_vae_torch.py" --make-inputs "$OUT/latents.safetensors" --size 256 --batch 1
va="--model $VAE/vae --inputs $OUT/latents.safetensors --threads $THREADS --iters $ITERS"
part saeflow_vae "\"batch\": 1, " "$BUILD/bench_vae" $va
part torch_vae "\"batch\": 1, " "$PY" "$HERE/bench_vae_torch.py" $va

"$PY" "$HERE/bench_flux_source_torch.py" --compose "$RES" | tee "$OUT/summary.txt"
# on paper: FLOPs per prompt, one H100 at a stated efficiency, weights per hook location
"$PY" "$HERE/bench_flux_source_torch.py" --paper --model "$FLUX" | tee -a "$OUT/summary.txt"

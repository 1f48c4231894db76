#!/bin/sh
# FLUX VAE decode speed and error: saeflow vs diffusers + torch (CPU) on the
# same random weights with FLUX's real widths, same latents, same threads.
#
#   bench/bench_vae.sh [BUILD_DIR] [MODEL_DIR]
#
# MODEL_DIR: a random AutoencoderKL with FLUX.1's config, made on demand by
# tools/make_vae_fixtures.py --full (default /tmp/flux-vae, ~330 MB with the
# encoder, never committed). Env: PY (default /work/venv/bin/python),
# THREADS (2), SIZE (256 px), BATCH (1), ITERS (3 timed after 1 warm-up),
# OUT (/tmp/bench_vae).
set -eu
BUILD=${1:-build}
MODEL=${2:-/tmp/flux-vae}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
SIZE=${SIZE:-256}
BATCH=${BATCH:-1}
ITERS=${ITERS:-3}
OUT=${OUT:-/tmp/bench_vae}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
[ -f "$MODEL/vae/config.json" ] || "$PY" "$HERE/../tools/make_vae_fixtures.py" --full "$MODEL"
"$PY" "$HERE/bench_vae_torch.py" --make-inputs "$OUT/latents.safetensors" --size "$SIZE" --batch "$BATCH"
common="--inputs $OUT/latents.safetensors --threads $THREADS --iters $ITERS"
"$PY" "$HERE/bench_vae_torch.py" --model "$MODEL/vae" $common --out "$OUT/torch.safetensors"
"$BUILD/bench_vae" --model "$MODEL/vae" $common --out "$OUT/saeflow.safetensors"
"$PY" "$HERE/bench_vae_torch.py" --compare "$OUT/saeflow.safetensors" "$OUT/torch.safetensors"

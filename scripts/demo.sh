#!/usr/bin/env bash
# The main job on a fresh machine: install missing Debian packages, build
# (Release), then train a TopK SAE on embedded synthetic ground truth and
# report how much of the true dictionary it recovered (saeflow demo).
# Extra arguments go to `saeflow demo` (e.g. --dir out/demo --num_epochs 40).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target saeflow
exec build/saeflow demo --dir "${SAEFLOW_DEMO_DIR:-out/demo}" "$@"

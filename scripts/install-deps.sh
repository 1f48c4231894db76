#!/usr/bin/env bash
# Installs every Debian package saeflow needs to build and test. Idempotent.
# Usage: scripts/install-deps.sh [--with-browser]
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang clang-format
      libopenblas-dev libcjson-dev libomp-dev
      libjpeg62-turbo-dev libpng-dev libwebp-dev
      libarchive-dev libzstd-dev libsnappy-dev zlib1g-dev
      libpcre2-dev libutf8proc-dev libmicrohttpd-dev
      libopenmpi-dev openmpi-bin  # MPI: the -DSAEFLOW_MPI=ON build (docs/mpi.md)
      python3 python3-venv) # the Python package's tests (scripts/test-python.sh)
# oneDNN's sgemm runs the model GEMMs where Debian ships it (amd64 only);
# elsewhere the build falls back to OpenBLAS (src/kernels/gemm.c).
[ "$(dpkg --print-architecture)" = "amd64" ] && pkgs+=(libdnnl-dev)
[ "${1:-}" = "--with-browser" ] && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# cmake --install into a temporary prefix, then builds tests/install/hello.c
# against that prefix with `pkg-config --cflags --libs saeflow` and runs it.
# Usage: run.sh BUILD_DIR CC [EXTRA_CFLAGS]
set -euo pipefail
build=$1 cc=$2 extra=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name saeflow.pc | head -1)
[ -n "$pc" ] || { echo "saeflow.pc not installed"; exit 1; }
for f in bin/saeflow include/saeflow/saeflow.h include/saeflow/sae.h; do
  [ -e "$tmp/prefix/$f" ] || { echo "$f not installed"; exit 1; }
done
libdir=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --variable=libdir saeflow)
ls "$libdir"/libsaeflow.so.0 >/dev/null
readelf -d "$libdir/libsaeflow.so" | grep -q 'SONAME.*libsaeflow.so.0'
# shellcheck disable=SC2046,SC2086
"$cc" -std=c11 -Wall -Werror $extra -o "$tmp/hello" "$here/hello.c" \
  $(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs saeflow) -lm
LD_LIBRARY_PATH=$libdir "$tmp/hello"
"$tmp/prefix/bin/saeflow" --version

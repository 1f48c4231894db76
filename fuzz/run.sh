#!/usr/bin/env bash
# Builds every libFuzzer target (fuzz/fuzz_*.c) with clang and runs each for
# N seconds on a scratch copy of its seed corpus (fuzz/corpus/<name>/, where
# <name> is the target without the fuzz_ prefix), so the committed seeds stay
# as they are. Exits non-zero if any target finds a crash; the reproducer is
# left in the build folder (crash-*, leak-*, timeout-*, oom-*).
#
# Usage: fuzz/run.sh [SECONDS=60] [target ...]     (env BUILD=dir to change build-fuzz)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-60}"
shift || true
build="${BUILD:-$root/build-fuzz}"
CC=clang cmake -S "$root" -B "$build" -DSAEFLOW_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >/dev/null
status=0
for t in "${targets[@]}"; do
  name="${t#fuzz_}"
  work="$build/corpus-$name"
  mkdir -p "$work"
  [ -d "$root/fuzz/corpus/$name" ] && cp -n "$root/fuzz/corpus/$name"/* "$work"/ 2>/dev/null || true
  echo "== $t: ${secs}s"
  # One OpenMP thread: parallel regions only add thread hand-offs per input.
  if ! (cd "$build" && OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 "./$t" "$work" -max_total_time="$secs" \
          -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 2>&1 | tail -n 15); then
    echo "!! $t failed (reproducer in $build)"
    status=1
  fi
done
exit $status

#!/usr/bin/env bash
# clang-format every C source and header (.clang-format at the root).
#   scripts/format.sh          rewrite in place
#   scripts/format.sh --check  list unformatted files and fail (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h')
if [ "${1:-}" = "--check" ]; then
  bad=0
  for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || { echo "not clang-formatted: $f"; bad=1; }
  done
  exit $bad
fi
clang-format -i "${files[@]}"

#!/usr/bin/env bash
# The whole test suite: installs missing Debian packages, then
#   1. Release build (-Werror) + ctest,
#   2. ASan+UBSan build + ctest, on the OpenBLAS GEMM backend (the release
#      build uses oneDNN where installed, so CI covers both backends),
#   3. the Python package's pytest suite (scripts/test-python.sh: a venv
#      under build/pyvenv from PyPI with numpy + pytest only),
#   4. the MPI build (-DSAEFLOW_MPI=ON) and its mpirun tests (ctest -L mpi),
#   5. a short libFuzzer run of every fuzz target (clang, fuzz/run.sh),
# after a clang-format check.
# Env: SAEFLOW_FUZZ_SECONDS (default 20 per target; 0 skips fuzzing),
#      SAEFLOW_SKIP_ASAN=1 to skip step 2, SAEFLOW_SKIP_MPI=1 to skip step 4,
#      JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-browser
JOBS=${JOBS:-$(nproc)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

echo "== clang-format"
bash scripts/format.sh --check

echo "== release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$JOBS"
log=$(mktemp)
(cd build && ctest --output-on-failure -j"$JOBS") | tee "$log"

echo "== python package (pytest)"
pylog=$(mktemp)
set +e
bash scripts/test-python.sh 2>&1 | tee "$pylog"
pyrc=${PIPESTATUS[0]}
set -e
pysummary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error).* in [0-9.]+s' "$pylog" | tail -1 | tr -d '=' | sed 's/^ *//; s/ *$//')
rm -f "$pylog"
[ "$pyrc" = 0 ] || { echo "pytest failed (exit $pyrc): $pysummary"; exit 1; }

if [ "${SAEFLOW_SKIP_ASAN:-0}" != 1 ]; then
  echo "== ASan+UBSan build + tests"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSAEFLOW_SANITIZE=ON -DSAEFLOW_DNNL=OFF >/dev/null
  cmake --build build-asan -j"$JOBS"
  # OpenBLAS/OpenMP keep thread pools alive at exit; leaks there are not ours.
  (cd build-asan && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j"$JOBS") | tee -a "$log"
fi

if [ "${SAEFLOW_SKIP_MPI:-0}" != 1 ]; then
  # Only the binary and the MPI test: the rest is the release build above.
  # Open MPI refuses to run as root (CI containers) without these two.
  echo "== MPI build (-DSAEFLOW_MPI=ON) + mpirun tests"
  cmake -S . -B build-mpi -DCMAKE_BUILD_TYPE=Release -DSAEFLOW_MPI=ON >/dev/null
  cmake --build build-mpi -j"$JOBS" --target saeflow test_mpi_train test_mpi_rows
  (cd build-mpi && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
     ctest --output-on-failure -L mpi) | tee -a "$log"
fi

secs=${SAEFLOW_FUZZ_SECONDS:-20}
if [ "$secs" != 0 ]; then
  echo "== fuzz smoke (${secs}s per target)"
  bash fuzz/run.sh "$secs"
fi
# One closing line over both ctest runs (ctest's own lines are per build).
total=$(sed -n 's/.* tests failed out of \([0-9]*\)$/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(sed -n 's/.*, \([0-9]*\) tests failed out of .*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
rm -f "$log"
echo "== all tests passed"
echo "ctest: $((total - failed)) passed, $failed failed"
echo "pytest: $pysummary"

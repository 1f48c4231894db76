#!/bin/sh
# Parquet read speed: saeflow's reader vs pyarrow on the same generated
# LLaVA-ReCap-CC3M-style file (id, image.bytes, last conversations value),
# both with the same thread count; prints both results and the throughput ratio.
#
#   bench/bench_parquet.sh [BUILD_DIR] [FILE]
#
# BUILD_DIR holds bench_parquet (default build); FILE is made on demand by
# bench_parquet.py generate (default /tmp/saeflow_bench_recap.parquet, ~1 GB,
# snappy, 100 rows per row group like HF datasets' image parquet files, never
# committed). Env: PY (python with pyarrow, default
# /work/venv/bin/python), THREADS (2), MB (file size, 1024), CODEC (snappy;
# gzip, zstd, none: only used when FILE is generated), REPEAT (3, best
# time kept; the first pass of each reader also warms the page cache),
# RANDOM_GETS (200 sf_dataset_get calls at random rows, timed separately).
set -eu
BUILD=${1:-build}
FILE=${2:-/tmp/saeflow_bench_recap.parquet}
PY=${PY:-/work/venv/bin/python}
THREADS=${THREADS:-2}
MB=${MB:-1024}
REPEAT=${REPEAT:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
[ -f "$FILE" ] || "$PY" "$HERE/bench_parquet.py" generate "$FILE" --mb "$MB" --compression "${CODEC:-snappy}"
c=$(OMP_NUM_THREADS=$THREADS "$BUILD/bench_parquet" "$FILE" --repeat "$REPEAT" --random "${RANDOM_GETS:-200}")
p=$("$PY" "$HERE/bench_parquet.py" read "$FILE" --threads "$THREADS" --repeat "$REPEAT")
echo "$c"
echo "$p"
"$PY" - "$c" "$p" <<'PYEOF'
import json, sys
c, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert c["rows"] == p["rows"], "row counts differ"
assert abs(c["mb"] - p["mb"]) < 1e-3, "payload differs: %s vs %s MB" % (c["mb"], p["mb"])
for r in (c, p):
    print("%-16s %d threads: %.3f s  %9.0f rows/s  %7.1f MB/s" % (r["reader"], r["threads"], r["seconds"],
          r["rows"] / r["seconds"], r["mb"] / r["seconds"]))
print("ratio saeflow / pyarrow throughput: %.2fx (target >= 0.8x)" % (p["seconds"] / c["seconds"]))
PYEOF

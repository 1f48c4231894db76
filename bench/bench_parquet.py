#!/usr/bin/env python3
"""Python half of the parquet read benchmark (driver: bench/bench_parquet.sh).

  bench_parquet.py generate PATH [--mb 1024] [--rows-per-group 100] [--compression snappy]
                                               LLaVA-ReCap-CC3M-style file: id, image{bytes,path},
                                               conversations [human, gpt caption], data_source;
                                               JPEG-like incompressible image bytes (20-80 KB),
                                               captions 100-600 chars; written like Hugging Face
                                               `datasets` writes image datasets: pyarrow defaults
                                               (snappy, dictionary tried, 1 MB data pages checked
                                               every 1024 rows, so one data page per chunk) and
                                               100 rows per row group.
  bench_parquet.py read PATH [--threads 2] [--repeat 3]
                                               pyarrow reads the id, image.bytes and
                                               conversations.list.element.value leaves (the
                                               columns saeflow's cc3m reader uses); prints JSON
                                               with the best time.
"""
import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

WORDS = ("a photo of the dog cat red blue small large street house sky person tree car with on in "
         "near standing sitting image shows background green water people white black young").split()


def generate(path, mb, rows_per_group=100, compression="snappy"):
    rng = np.random.default_rng(0)
    schema = pa.schema([
        ("id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        ("data_source", pa.string()),
    ])
    target = mb * 1_000_000
    written, row = 0, 0
    with pq.ParquetWriter(path, schema, compression=compression) as w:
        while written < target:
            ids, imgs, convs = [], [], []
            for _ in range(rows_per_group):
                n = int(rng.integers(20_000, 80_000))
                b = b"\xff\xd8\xff\xe0" + rng.integers(0, 256, n - 4, dtype=np.uint8).tobytes()
                k = int(rng.integers(20, 110))
                cap = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), k))
                ids.append(f"GCC_train_{row:09d}")
                imgs.append({"bytes": b, "path": f"GCC_train_{row:09d}.jpg"})
                convs.append([{"from": "human", "value": "<image>\nWhat is in the image?"},
                              {"from": "gpt", "value": cap}])
                written += n + len(cap)
                row += 1
            t = pa.table([ids, imgs, convs, ["cc3m"] * len(ids)], schema=schema)
            w.write_table(t, row_group_size=rows_per_group)
    print(json.dumps({"path": path, "rows": row, "bytes": os.path.getsize(path)}))


def payload_mb(path, cols):
    """Image bytes + last-conversation caption bytes (what the C half counts)."""
    total = 0
    for b in pq.ParquetFile(path).iter_batches(columns=cols):
        img = b.column(b.schema.get_field_index("image")).field("bytes")
        total += int(pa.compute.sum(pa.compute.binary_length(img)).as_py() or 0)
        conv = b.column(b.schema.get_field_index("conversations"))
        offs = conv.offsets.to_numpy()
        lens = offs[1:] - offs[:-1]
        last = (offs[1:] - 1)[(lens > 0) & ~conv.is_null().to_numpy(zero_copy_only=False)]
        vals = conv.flatten().field("value").take(pa.array(last - offs[0]))
        total += int(pa.compute.sum(pa.compute.binary_length(vals)).as_py() or 0)
    return total / 1e6


def read(path, threads, repeat):
    """Best time over two pyarrow ways of reading the same leaves: the whole
    table at once (ParquetFile.read) and streamed record batches
    (iter_batches, usually faster: it does not build one big table)."""
    pa.set_cpu_count(threads)
    pa.set_io_thread_count(threads)
    cols = ["id", "image.bytes", "conversations.list.element.value"]
    times = {}
    rows = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        t = pq.ParquetFile(path).read(columns=cols, use_threads=True)
        times.setdefault("read", []).append(time.perf_counter() - t0)
        rows = t.num_rows
        del t
        t0 = time.perf_counter()
        n = sum(b.num_rows for b in pq.ParquetFile(path).iter_batches(columns=cols, use_threads=True))
        times.setdefault("iter_batches", []).append(time.perf_counter() - t0)
        assert n == rows
    best = min(min(v) for v in times.values())
    print(json.dumps({"reader": "pyarrow " + pa.__version__, "threads": threads, "rows": rows, "seconds": best,
                      "mb": payload_mb(path, cols), "times": {k: [round(x, 3) for x in v] for k, v in times.items()}}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("path")
    g.add_argument("--mb", type=int, default=1024)
    g.add_argument("--rows-per-group", type=int, default=100)
    g.add_argument("--compression", default="snappy", help="snappy (default), gzip, zstd, none")
    r = sub.add_parser("read")
    r.add_argument("path")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "generate":
        generate(a.path, a.mb, a.rows_per_group, a.compression)
    else:
        read(a.path, a.threads, a.repeat)


if __name__ == "__main__":
    main()

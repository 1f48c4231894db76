#!/usr/bin/env python3
"""Writes the data-reader fixtures under fixtures/data/ with the real pyarrow.

    /work/venv/bin/python tools/make_data_fixtures.py [--out fixtures/data]

What it makes (all small, ~0.5 MB in total):
  recap_<variant>.parquet  LLaVA-ReCap-CC3M schema (id, image{bytes,path},
                           conversations list<struct{from,value}>, data_source),
                           one file per (codec, encoding, data page version) variant,
                           several row groups and several pages per column chunk,
                           nulls at every optional level and empty lists.
  legacy_item_recap.parquet  the same with the legacy list element name "item"
                           (use_compliant_nested_type=False: pyarrow < 13, Spark).
  types_<variant>.parquet  int32/int64/bool/double/float/string/list<int32> columns
                           with nulls, required and optional, plain and dictionary.
  expected.json            what pyarrow reads back from every .parquet file: per
                           column, per row, the value (bytes as {len, crc32}) so the
                           C tests compare exactly without storing the images twice.
  wds/0000{0,1}.tar, wds/00002.tar.gz
                           webdataset shards: jpg+txt, png+json{caption}, webp+json{txt},
                           a sample without caption, a sample in a sub-folder.
  folder_tsv/, folder_jsonl/, folder_txt/
                           image folders with captions.tsv, captions.jsonl, side-car .txt.
  datasets.json            expected rows of the wds and folder datasets.
"""
import argparse
import gzip
import io
import json
import os
import random
import tarfile
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

rng = random.Random(1234)


def tiny_image(i, fmt, size=None):
    """A small real image with some structure (so JPEG is a few KB)."""
    w, h = size or (24 + 8 * (i % 5), 20 + 6 * (i % 4))
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            px[x, y] = ((x * 7 + i * 31) % 256, (y * 11 + i * 17) % 256, ((x ^ y) * 5 + i) % 256)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, fmt, quality=85)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def crc(b):
    return {"len": len(b), "crc32": zlib.crc32(b) & 0xFFFFFFFF}


WORDS = ("a photo of the dog cat red blue small large street house sky person tree "
         "car with on in near standing sitting image shows background green café naïve "
         "über 東京 🙂").split()


def caption(n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def recap_table(n=23):
    imgs = [tiny_image(i, "JPEG") for i in range(9)]
    ids, images, convs, srcs = [], [], [], []
    for r in range(n):
        ids.append(f"GCC_train_{r:09d}")
        img = imgs[r % len(imgs)]  # repeats: dictionary encoding has something to share
        if r == 3:
            images.append(None)  # null struct
        elif r == 5:
            images.append({"bytes": None, "path": f"{r}.jpg"})  # null field in struct
        elif r == 6:
            images.append({"bytes": img, "path": None})
        else:
            images.append({"bytes": img, "path": f"{ids[-1]}.jpg"})
        if r == 4:
            convs.append(None)  # null list
        elif r == 7:
            convs.append([])  # empty list
        elif r == 8:
            convs.append([{"from": "human", "value": "<image>\nDescribe."}, None])  # null element
        elif r == 9:
            convs.append([{"from": "human", "value": "q"}, {"from": "gpt", "value": None}])
        elif r == 10:
            convs.append([{"from": "human", "value": "<image>\nOnly a question"}])
        elif r == 11:
            # Multi-line caption with a tab and CR: the captions command must flatten it.
            convs.append([{"from": "human", "value": "<image>"},
                          {"from": "gpt", "value": "line one\nline two\tTabbed\r\nend"}])
        elif r == 12:
            convs.append([{"from": "human", "value": "x"}, {"from": "gpt", "value": ""}])
        else:
            k = 2 if r % 4 else 4
            c = []
            for j in range(k):
                frm = "human" if j % 2 == 0 else "gpt"
                val = "<image>\nWhat is in the image?" if frm == "human" else caption(5 + (r * 7 + j) % 40)
                c.append({"from": frm, "value": val})
            convs.append(c)
        srcs.append("cc3m" if r % 3 else None)
    schema = pa.schema([
        ("id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        ("data_source", pa.string()),
    ])
    return pa.table([ids, images, convs, srcs], schema=schema)


def types_table(n=37):
    cols = {
        "i32": pa.array([None if r % 7 == 3 else (r * 1000003) % 2**31 - 2**30 for r in range(n)], pa.int32()),
        "i32_req": pa.array([r % 5 for r in range(n)], pa.int32()),
        "i64": pa.array([None if r % 5 == 1 else (r - 18) * 123456789012345 for r in range(n)], pa.int64()),
        "flag": pa.array([None if r % 6 == 0 else (r * r) % 3 == 1 for r in range(n)], pa.bool_()),
        "flag_req": pa.array([r % 2 == 0 for r in range(n)], pa.bool_()),
        "dbl": pa.array([None if r % 4 == 2 else (r - 11) * 0.3141592653589793 for r in range(n)], pa.float64()),
        "flt": pa.array([None if r == 0 else r * 1.5 - 7.25 for r in range(n)], pa.float32()),
        "name": pa.array([None if r % 9 == 8 else ["alpha", "beta", "γάμμα", ""][r % 4] for r in range(n)], pa.string()),
        "nums": pa.array([None if r % 8 == 5 else ([] if r % 8 == 6 else list(range(r % 4 + 1))) for r in range(n)],
                         pa.list_(pa.int32())),
    }
    # *_req columns are non-nullable: REQUIRED in parquet, no definition levels.
    schema = pa.schema([pa.field(k, v.type, nullable=not k.endswith("_req")) for k, v in cols.items()])
    return pa.table(cols, schema=schema)


def write_parquet(path, table, **kw):
    pq.write_table(table, path, write_statistics=True, **kw)


def expected_for(path):
    """Per leaf-ish column, per row, what pyarrow reads."""
    t = pq.read_table(path)
    meta = pq.ParquetFile(path).metadata
    out = {"num_rows": t.num_rows, "num_row_groups": meta.num_row_groups,
           "row_group_rows": [meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
           "rows": []}

    def conv(v):
        if isinstance(v, bytes):
            return crc(v)
        if isinstance(v, float):
            return v
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    for row in t.to_pylist():
        out["rows"].append({k: conv(v) for k, v in row.items()})
    return out


def write_fuzz_seeds(corpus):
    """Tiny seeds for fuzz/fuzz_parquet.c and fuzz/fuzz_tar.c (a few KB each)."""
    pdir, tdir = os.path.join(corpus, "parquet"), os.path.join(corpus, "tar")
    os.makedirs(pdir, exist_ok=True)
    os.makedirs(tdir, exist_ok=True)
    t = recap_table(6)
    fake = [b"\xff\xd8\xff\xe0" + bytes([i]) * 5 for i in range(6)]
    imgs = [None if v is None else {"bytes": fake[i] if v["bytes"] is not None else None, "path": v["path"]}
            for i, v in enumerate(t.column("image").to_pylist())]
    t = t.set_column(1, "image", pa.array(imgs, t.schema.field("image").type))
    for codec in ("none", "snappy", "gzip", "zstd"):
        for dpv in ("1.0", "2.0"):
            pq.write_table(t, os.path.join(pdir, f"recap_{codec}_v{dpv[0]}.parquet"), compression=codec,
                           data_page_version=dpv, row_group_size=4, write_statistics=False,
                           use_dictionary=codec in ("snappy", "zstd"), data_page_size=64, write_batch_size=2)
    pq.write_table(types_table(9), os.path.join(pdir, "types.parquet"), compression="none",
                   write_statistics=False, row_group_size=5, data_page_version="2.0")
    with tarfile.open(os.path.join(tdir, "two.tar"), "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in [("a.jpg", b"\xff\xd8\xffx"), ("a.txt", b"cap"), ("d/b.png", b"\x89PNG\r\n\x1a\n"),
                           ("d/b.json", b'{"caption": "c"}')]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures", "data"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    expected = {}

    # Small pages (data_page_size + write_batch_size) so a column chunk has several
    # pages; row_group_size 7 so 23 rows make 4 row groups (the last one partial).
    recap = recap_table()
    variants = [
        ("none_plain_v1", dict(compression="none", use_dictionary=False, data_page_version="1.0")),
        ("snappy_dict_v1", dict(compression="snappy", use_dictionary=True, data_page_version="1.0")),
        ("gzip_dict_v2", dict(compression="gzip", use_dictionary=True, data_page_version="2.0")),
        ("zstd_plain_v2", dict(compression="zstd", use_dictionary=False, data_page_version="2.0")),
        # A dictionary that overflows its page limit mid-chunk: the writer falls back
        # to PLAIN pages after the dictionary-encoded ones within one column chunk.
        ("snappy_dictfallback_v2", dict(compression="snappy", use_dictionary=True, data_page_version="2.0",
                                        dictionary_pagesize_limit=3000)),
    ]
    for name, kw in variants:
        p = os.path.join(out, f"recap_{name}.parquet")
        write_parquet(p, recap, row_group_size=7, data_page_size=2048, write_batch_size=2, **kw)
        expected[os.path.basename(p)] = expected_for(p)

    # The legacy list naming: pyarrow before 13 (and Spark) name the list element
    # "item" instead of the spec's "element" (conversations.list.item.value).
    p = os.path.join(out, "legacy_item_recap.parquet")
    write_parquet(p, recap, row_group_size=7, data_page_size=2048, write_batch_size=2, compression="snappy",
                  use_compliant_nested_type=False)
    assert "conversations.list.item.value" in pq.ParquetFile(p).schema.names or any(
        c.path == "conversations.list.item.value" for c in pq.ParquetFile(p).schema)
    expected[os.path.basename(p)] = expected_for(p)

    types = types_table()
    tvariants = [
        ("snappy_dict_v1", dict(compression="snappy", use_dictionary=True, data_page_version="1.0")),
        ("zstd_plain_v2", dict(compression="zstd", use_dictionary=False, data_page_version="2.0")),
        ("none_dict_v2", dict(compression="none", use_dictionary=True, data_page_version="2.0")),
        ("gzip_plain_v1", dict(compression="gzip", use_dictionary=False, data_page_version="1.0")),
        # Format version 1.0: dictionary pages use the older PLAIN_DICTIONARY encoding id.
        ("snappy_plaindict_fmt1", dict(compression="snappy", use_dictionary=True, version="1.0")),
    ]
    for name, kw in tvariants:
        p = os.path.join(out, f"types_{name}.parquet")
        write_parquet(p, types, row_group_size=16, data_page_size=64, write_batch_size=4, **kw)
        expected[os.path.basename(p)] = expected_for(p)

    # Outside the reader's scope: each must fail with an error naming the
    # file, the column and the feature (tests/data/test_parquet.c).
    small = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", "c"]})
    write_parquet(os.path.join(out, "unsupported_delta.parquet"), small, use_dictionary=False,
                  column_encoding={"id": "DELTA_BINARY_PACKED", "s": "DELTA_LENGTH_BYTE_ARRAY"})
    write_parquet(os.path.join(out, "unsupported_lz4.parquet"), small, compression="lz4")
    import datetime
    ts = pa.table({"t": pa.array([datetime.datetime(2020, 1, 1)], pa.timestamp("ns"))})
    write_parquet(os.path.join(out, "unsupported_int96.parquet"), ts, use_deprecated_int96_timestamps=True)
    ll = pa.table({"ll": pa.array([[[1, 2], [3]], []], pa.list_(pa.list_(pa.int32())))})
    write_parquet(os.path.join(out, "unsupported_nested.parquet"), ll)

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=0, ensure_ascii=False, sort_keys=True)

    datasets = {}

    # webdataset shards. Samples are adjacent members sharing a key (path up to the
    # first dot of the basename).
    def add(tf, name, data):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mtime = 1700000000
        tf.addfile(ti, io.BytesIO(data))

    wds = os.path.join(out, "wds")
    os.makedirs(wds, exist_ok=True)
    rows = []
    shards = [
        ("00000.tar", None, [
            ("000000", "jpg", tiny_image(20, "JPEG"), "txt", b"a red car on the street\n"),
            ("000001", "png", tiny_image(21, "PNG", (9, 7)), "json",
             json.dumps({"caption": "a png with json caption", "txt": "ignored", "width": 9}).encode()),
            ("000002", "webp", tiny_image(22, "WEBP", (10, 10)), "json", json.dumps({"txt": "webp via txt key"}).encode()),
            ("000003", "jpeg", tiny_image(23, "JPEG"), None, None),  # no caption
        ]),
        ("00001.tar", None, [
            ("sub/000004", "jpg", tiny_image(24, "JPEG"), "txt", "naïve café 東京 caption".encode()),
            ("000005.x", "jpg", tiny_image(25, "JPEG"), "txt", b"multi dot key"),  # key 000005, ext x.jpg
            ("000006", None, None, "txt", b"caption without image"),
        ]),
        ("00002.tar.gz", "gz", [
            ("000007", "jpg", tiny_image(26, "JPEG"), "txt", b"from a gzipped shard"),
            ("000008", "png", tiny_image(27, "PNG", (5, 5)), "txt", b"second gz sample"),
        ]),
    ]
    for fname, comp, samples in shards:
        # gzip with mtime 0 so that regenerating gives identical bytes.
        raw = open(os.path.join(wds, fname), "wb")
        fobj = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") if comp else raw
        with tarfile.open(fileobj=fobj, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for key, iext, img, cext, cap in samples:
                if key == "000005.x":
                    add(tf, "000005.x.jpg", img)
                    add(tf, "000005.txt", cap)
                    rows.append({"id": "000005", "ext": "jpg", "image": crc(img), "caption": cap.decode()})
                    continue
                if img is not None:
                    add(tf, f"{key}.{iext}", img)
                if cap is not None:
                    add(tf, f"{key}.{cext}", cap)
                add(tf, f"{key}.cls", b"7")  # an unrelated member, ignored
                c = None
                if cap is not None:
                    c = cap.decode().rstrip("\n") if cext == "txt" else None
                    if cext == "json":
                        j = json.loads(cap)
                        c = j.get("caption", j.get("txt"))
                rows.append({"id": key, "ext": {"jpeg": "jpg"}.get(iext, iext) if iext else None,
                             "image": crc(img) if img is not None else None, "caption": c})
        if comp:
            fobj.close()
        raw.close()
    datasets["wds"] = rows

    # PAX and GNU formats with long (> 100 bytes) and non-ASCII member names:
    # extended headers precede the member header, and random access must
    # reopen the shard at the extended header, not at the ustar header.
    pdir = os.path.join(out, "wds_pax")
    os.makedirs(pdir, exist_ok=True)
    prow = []
    for fname, fmt in (("a-pax.tar", tarfile.PAX_FORMAT), ("b-gnu.tar", tarfile.GNU_FORMAT)):
        with tarfile.open(os.path.join(pdir, fname), "w", format=fmt) as tf:
            for i in range(3):
                key = ("deep/" * 25) + f"{fname[0]}-sample-{i:03d}-" + ("é" if i == 1 else "x") * 30
                img = tiny_image(50 + i, "JPEG", (8, 8))
                add(tf, key + ".jpg", img)
                add(tf, key + ".txt", f"long name {fname} {i}".encode())
                prow.append({"id": key, "ext": "jpg", "image": crc(img), "caption": f"long name {fname} {i}"})
    datasets["wds_pax"] = prow

    # Image folders.
    def folder(name, files, captions_file=None, sidecar=None):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for fn, data in files:
            with open(os.path.join(d, fn), "wb") as f:
                f.write(data)
        if captions_file:
            cf, text = captions_file
            with open(os.path.join(d, cf), "w", encoding="utf-8") as f:
                f.write(text)
        for fn, text in (sidecar or {}).items():
            with open(os.path.join(d, fn), "w", encoding="utf-8") as f:
                f.write(text)

    imgs = {f"img{i:02d}.jpg": tiny_image(30 + i, "JPEG") for i in range(3)}
    imgs["b.png"] = tiny_image(40, "PNG", (6, 4))
    imgs["c.webp"] = tiny_image(41, "WEBP", (6, 6))
    imgs["D.JPEG"] = tiny_image(42, "JPEG")
    files = sorted(imgs.items())
    ext_of = lambda fn: {"jpeg": "jpg"}.get(fn.rsplit(".", 1)[1].lower(), fn.rsplit(".", 1)[1].lower())
    caps = {fn: f"caption for {fn}" for fn, _ in files}
    caps["b.png"] = "tabs\tare fields so this one has none"
    del caps["c.webp"]
    tsv = "file\tcaption\n" + "".join(f"{fn}\t{c}\n" for fn, c in caps.items() if fn != "b.png") + \
        "b.png\ttabs\n" + "missing.jpg\tno such image\n"
    folder("folder_tsv", files + [("notes.md", b"not an image")], ("captions.tsv", tsv))
    datasets["folder_tsv"] = [{"id": fn, "ext": ext_of(fn), "image": crc(b),
                               "caption": ("tabs" if fn == "b.png" else caps.get(fn))} for fn, b in files]
    jl = "".join(json.dumps({"file": fn, "caption": c}, ensure_ascii=False) + "\n"
                 for fn, c in caps.items() if fn != "img01.jpg") + \
        json.dumps({"image": "img01.jpg", "text": "alternate keys"}) + "\n\n"
    folder("folder_jsonl", files, ("captions.jsonl", jl))
    datasets["folder_jsonl"] = [{"id": fn, "ext": ext_of(fn), "image": crc(b),
                                 "caption": ("alternate keys" if fn == "img01.jpg" else caps.get(fn))}
                                for fn, b in files]
    side = {fn.rsplit(".", 1)[0] + ".txt": caps[fn] + "\n" for fn in caps if fn != "img02.jpg"}
    folder("folder_txt", files, None, side)
    datasets["folder_txt"] = [{"id": fn, "ext": ext_of(fn), "image": crc(b),
                               "caption": (caps.get(fn) if fn != "img02.jpg" else None)} for fn, b in files]

    write_fuzz_seeds(os.path.join(os.path.dirname(out), "..", "fuzz", "corpus"))

    with open(os.path.join(out, "datasets.json"), "w") as f:
        json.dump(datasets, f, indent=1, ensure_ascii=False, sort_keys=True)
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(out) for fn in fns)
    print(f"wrote {out}: {total} bytes")


if __name__ == "__main__":
    main()

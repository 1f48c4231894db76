#!/usr/bin/env python3
"""Make fixtures/clip-inputs/unicode.json: CLIP token ids from the real
CLIPTokenizerFast (transformers 5 CLIPTokenizer = tokenizers-backed) for
strings built around sampled code points of every general category and every
Unicode version band, plus the hard captions of issue 17.

    /work/venv/bin/python tools/make_unicode_fixtures.py [--out fixtures/clip-inputs]

Sampling (seeded): code points are grouped by general category (unicodedata2,
Unicode 18) and by band -- "old" (assigned in Python's unicodedata, Unicode
14) or "new" (assigned only in 15-18) -- and up to PER_GROUP are taken from each
group; every combining mark tokenizers reorders, every lowercase mapping and
every composition pair are sampled too. Each code point c goes into a context
that exercises the regex classes, the case mapping and NFC:
    "ab{c} {c}1{c}z q\u0334{c}\u0301"
"""
import argparse
import json
import os
import random
import sys
import unicodedata

import tokenizers
import transformers
import unicodedata2 as ud

HARD = [
    "ab\u1c8a cd", "\u1c89ab", "ab\U00031350 ideograph", "x\U0001E4F1\U0001E4F2 digits",
    "a\u0345\u1df8 marks", "x\U00011935\U00011930 o",
    "\u1c89\u1c8a \ua7cb \U00010d50\U00010d70 \U00016ea0", "\u0130stanbul \u0131",
    "\uac00\u11a8 \u1100\u1161\u11a8 \u1100\u1161", "e\u0301\u0323 \u1e0b\u0323 \u0344 \u0340",
    "\u180e mongolian \u200b zw \u00a0 nbsp", "\U0001F600\U0001F3FD x\u20dd",
]
PER_GROUP = 120


def context(c):
    return f"ab{c} {c}1{c}z q\u0334{c}\u0301"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/clip-inputs")
    args = ap.parse_args()
    from transformers import CLIPTokenizer

    vocab_dir = args.out
    tok = CLIPTokenizer(vocab=os.path.join(vocab_dir, "vocab.json"), merges=os.path.join(vocab_dir, "merges.txt"))
    assert tok.is_fast
    rng = random.Random(1717)

    groups = {}
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        cat = ud.category(ch)
        if cat == "Co" and c > 0xF8FF:
            cat = "Co-plane15"
        band = "old" if unicodedata.category(ch) != "Cn" else ("new" if cat != "Cn" else "unassigned")
        groups.setdefault((cat, band), []).append(c)
    picks = set()
    for key in sorted(groups):
        cps = groups[key]
        picks.update(rng.sample(cps, min(PER_GROUP, len(cps))))
    # every mark / composition / case mapping class: sampled from the tables
    nfd = tokenizers.normalizers.NFD()
    marks = [c for c in range(0x300, 0x110000) if not 0xD800 <= c <= 0xDFFF and ud.combining(chr(c))]
    picks.update(rng.sample(marks, 400))
    lower = [c for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).lower() != chr(c)]
    picks.update(rng.sample(lower, 400))
    decomposable = [c for c in range(0xC0, 0x30000) if not 0xD800 <= c <= 0xDFFF
                    and ud.decomposition(chr(c)) and not ud.decomposition(chr(c)).startswith("<")]
    picks.update(rng.sample(decomposable, 400))
    picks.update(ord(ch) for s in HARD for ch in s)
    picks.discard(0)  # the C API takes NUL-terminated text
    picks = sorted(picks)

    recs = []
    for s in HARD:
        e = tok(s, padding="max_length", truncation=True, max_length=77)
        recs.append({"text": s, "ids": e["input_ids"], "mask": e["attention_mask"],
                     "raw_ids": tok(s, add_special_tokens=False)["input_ids"]})
    texts = [context(chr(c)) for c in picks]
    # decomposed forms of composable characters, so that composition runs
    texts += [context(nfd.normalize_str(chr(c))) for c in rng.sample(decomposable, 300)]
    raw = tok(texts, add_special_tokens=False)["input_ids"]
    points = [{"text": t, "raw_ids": r} for t, r in zip(texts, raw)]
    versions = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "unicodedata2": ud.unidata_version, "python_unicodedata": unicodedata.unidata_version}
    path = os.path.join(args.out, "unicode.json")
    json.dump({"versions": versions, "context_length": 77, "captions": recs, "random": points},
              open(path, "w", encoding="utf-8"), ensure_ascii=False, separators=(",", ":"))
    print(f"{path}: {len(recs)} hard captions, {len(points)} strings over {len(picks)} code points "
          f"({len(groups)} category/band groups)", file=sys.stderr)


if __name__ == "__main__":
    main()

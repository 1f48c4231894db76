#!/usr/bin/env python3
"""Generate src/text/clip_unicode_tables.h and clip_unicode_nfc.h: the Unicode tables the CLIP
tokenizer needs, exactly as Hugging Face `tokenizers` sees them.

    /work/venv/bin/python tools/make_unicode_tables.py [--out src/text]

Needs tokenizers (the reference's version: 0.23.3 here) and unicodedata2 (pip).

tokenizers (CLIPTokenizerFast) runs NFC (the Rust crate unicode-normalization),
Replace(\\s+ -> " ") and the split regex (Oniguruma, built into the onig crate)
and Lowercase (Rust's char::to_lowercase). Each has its own Unicode version,
none of which need be the one of the system's PCRE2 / utf8proc. So every
table is read out of the installed tokenizers package itself, for every code
point, by running its own normalizers and pre-tokenizers:

  class   \\p{L}, \\p{N}, \\s of the split regex: Split(Regex(...), "removed")
          over a string holding every code point once
  lower   normalizers.Lowercase() of every code point
  decomp  normalizers.NFD() of every code point (full canonical decomposition;
          Hangul syllables are left to the algorithm)
  ccc     canonical combining classes: the value from unicodedata2 (a
          hypothesis, Unicode 18) kept only where tokenizers' NFD reorders the
          mark against U+0345 (ccc 240) / U+0334 (ccc 1) -- i.e. where
          tokenizers knows the mark -- and every mark's order against one mark
          of each class is then checked against tokenizers
  comp    primary composites: the canonical pairs (unicodedata2) that
          tokenizers' NFC(a + b) composes

The script then checks a Python model of the C code (clip_unicode.c) against
tokenizers' NFC on every code point, every pair and random mark strings, and
fails if anything differs. Deterministic: no randomness except a seeded RNG.
"""
import argparse
import random
import sys

import tokenizers
import unicodedata2 as ud
from tokenizers import Regex, normalizers, pre_tokenizers

SEP = "\n"
ALL = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
SBASE, SCOUNT = 0xAC00, 11172


def is_hangul_syllable(c):
    return SBASE <= c < SBASE + SCOUNT


def regex_set(pattern):
    """Code points matched by `pattern` (one char) in tokenizers' regex."""
    text = "".join(map(chr, ALL))
    split = pre_tokenizers.Split(Regex(pattern), "removed")
    rest = set()
    for piece, _ in split.pre_tokenize_str(text):
        rest.update(map(ord, piece))
    return set(ALL) - rest


def per_char(norm, cps):
    """norm applied to each code point separately (batched with a separator
    that no normalizer here changes or combines with)."""
    cps = [c for c in cps if chr(c) != SEP]
    out = norm.normalize_str(SEP.join(map(chr, cps))).split(SEP)
    assert len(out) == len(cps)
    res = dict(zip(cps, out))
    res[ord(SEP)] = norm.normalize_str(SEP)
    return res


def ranges(cps_to_val):
    """{cp: val} -> [(lo, hi, val)] merged runs of consecutive equal values."""
    out = []
    for c in sorted(cps_to_val):
        v = cps_to_val[c]
        if out and out[-1][1] == c - 1 and out[-1][2] == v:
            out[-1][1] = c
        else:
            out.append([c, c, v])
    return out


class Model:
    """The NFC of clip_unicode.c, in Python, to check the tables."""

    def __init__(self, ccc, decomp, comp):
        self.ccc, self.decomp, self.comp = ccc, decomp, comp

    def nfd(self, s):
        out = []
        for ch in s:
            c = ord(ch)
            if is_hangul_syllable(c):
                si = c - SBASE
                out += [0x1100 + si // 588, 0x1161 + (si % 588) // 28]
                if si % 28:
                    out.append(0x11A7 + si % 28)
            else:
                out += self.decomp.get(c, [c])
        # canonical ordering: stable sort of each run of non-starters
        i = 0
        while i < len(out):
            if self.ccc.get(out[i], 0) == 0:
                i += 1
                continue
            j = i
            while j < len(out) and self.ccc.get(out[j], 0):
                j += 1
            out[i:j] = sorted(out[i:j], key=lambda c: self.ccc[c])
            i = j
        return out

    def compose_pair(self, a, b):
        if 0x1100 <= a < 0x1113 and 0x1161 <= b < 0x1176:
            return SBASE + ((a - 0x1100) * 21 + b - 0x1161) * 28
        if is_hangul_syllable(a) and (a - SBASE) % 28 == 0 and 0x11A8 <= b < 0x11C3:
            return a + b - 0x11A7
        return self.comp.get((a, b))

    def nfc(self, s):
        # canonical composition: a character joins the last starter unless a
        # character between them has a combining class >= its own
        out = []
        starter, last_ccc = -1, None  # last_ccc None: nothing since the starter
        for c in self.nfd(s):
            cc = self.ccc.get(c, 0)
            if starter >= 0 and (last_ccc is None or last_ccc < cc):
                p = self.compose_pair(out[starter], c)
                if p is not None:
                    out[starter] = p
                    continue
            if cc == 0:
                starter, last_ccc = len(out), None
            else:
                last_ccc = cc
            out.append(c)
        return "".join(map(chr, out))


def c_array(name, ctype, rows, per_line, comment):
    lines = [f"/* {comment} */", f"static const {ctype} {name}[][{len(rows[0])}] = {{"]
    cells = ["{" + ",".join("0x%X" % v for v in r) + "}," for r in rows]
    line = "   "
    for cell in cells:  # as many cells as fit in 100 columns
        if len(line) + 1 + len(cell) > 100:
            lines.append(line)
            line = "   "
        line += " " + cell
    lines.append(line)
    lines.append("};")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="src/text", help="folder for clip_unicode_{tables,nfc}.h")
    args = ap.parse_args()

    # ---- regex classes ----
    L, N, WS = regex_set(r"\p{L}"), regex_set(r"\p{N}"), regex_set(r"\s")
    assert not (L & N) and not (L & WS) and not (N & WS)
    cls = {}
    for c in L:
        cls[c] = 1
    for c in N:
        cls[c] = 2
    for c in WS:
        cls[c] = 3
    cls_ranges = ranges(cls)
    print(f"L {len(L)}, N {len(N)}, WS {len(WS)}: {len(cls_ranges)} ranges", file=sys.stderr)

    # ---- lowercase ----
    low = per_char(normalizers.Lowercase(), ALL)
    lower = []
    for c in ALL:
        s = low[c]
        if s != chr(c):
            assert 1 <= len(s) <= 2, (hex(c), s)
            lower.append([c, ord(s[0]), ord(s[1]) if len(s) > 1 else 0])
    print(f"lowercase: {len(lower)} mappings", file=sys.stderr)

    # ---- canonical decomposition ----
    nfd = per_char(normalizers.NFD(), ALL)
    decomp = {}
    for c in ALL:
        s = nfd[c]
        if s != chr(c) and not is_hangul_syllable(c):
            assert len(s) <= 4, (hex(c), s)
            decomp[c] = [ord(x) for x in s]
    print(f"decompositions: {len(decomp)}", file=sys.stderr)

    # ---- combining classes ----
    # (a mark that decomposes is never looked up: its decomposition is)
    cand = [c for c in ALL if ud.combining(chr(c)) and c not in decomp]
    nfd_n = normalizers.NFD()
    ccc = {}
    tests, who = [], []
    for c in cand:
        v = ud.combining(chr(c))
        if v > 1:  # known iff tokenizers moves U+0334 (ccc 1) before it
            tests.append(chr(c) + "\u0334")
        else:  # ccc 1: known iff it moves before U+0345 (ccc 240)
            tests.append("\u0345" + chr(c))
        who.append((c, v))
    res = nfd_n.normalize_str(SEP.join(tests)).split(SEP)
    ccc_unknown = []
    for i, ((c, v), r) in enumerate(zip(who, res)):
        want = ("\u0334" + chr(c)) if v > 1 else (chr(c) + "\u0345")
        if c == 0x334 or c == 0x345:
            ccc[c] = v  # the probes themselves (checked below)
        elif r == want:
            ccc[c] = v
        else:
            assert r == tests[i], (hex(c), r)  # unknown: left alone
            ccc_unknown.append(c)
    # every known mark against one representative of each class, both orders
    reps = {}
    for c, v in sorted(ccc.items()):
        reps.setdefault(v, c)
    tests, expect = [], []
    for c, v in ccc.items():
        for rv, r in reps.items():
            for a, b in ((c, r), (r, c)):
                va, vb = ccc[a], ccc[b]
                tests.append(chr(0x61) + chr(a) + chr(b))
                expect.append("a" + (chr(b) + chr(a) if vb < va else chr(a) + chr(b)))
    got = nfd_n.normalize_str(SEP.join(tests)).split(SEP)
    bad = [(t, g) for t, g, e in zip(tests, got, expect) if g != e]
    assert not bad, bad[:5]
    ccc_ranges = ranges(ccc)
    print(f"ccc: {len(ccc)} marks known, {len(ccc_unknown)} of {len(cand)} in Unicode {ud.unidata_version}, "
          f"{len(ccc_ranges)} ranges", file=sys.stderr)

    # ---- composition pairs ----
    pairs = []
    for c in ALL:
        d = ud.decomposition(chr(c))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        if len(parts) == 2:
            pairs.append((parts[0], parts[1], c))
    nfc_n = normalizers.NFC()
    got = nfc_n.normalize_str(SEP.join(chr(a) + chr(b) for a, b, _ in pairs)).split(SEP)
    comp = {(a, b): p for (a, b, p), g in zip(pairs, got) if g == chr(p)}
    print(f"compositions: {len(comp)} of {len(pairs)} pairs", file=sys.stderr)

    # ---- check the model against tokenizers' NFC ----
    m = Model(ccc, decomp, comp)
    nfc_all = per_char(nfc_n, ALL)
    bad = [c for c in ALL if m.nfc(chr(c)) != nfc_all[c]]
    assert not bad, [hex(c) for c in bad[:10]]
    rng = random.Random(17)
    marks = sorted(ccc) + [b for (_, b) in comp] + [0x300, 0x301, 0x308, 0x327, 0x345]
    bases = [a for (a, _) in comp] + [p for p in comp.values()] + [0x61, 0x41, 0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01]
    tests = []
    for _ in range(200000):
        s = [rng.choice(bases)] + [rng.choice(marks) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.3:
            s += [rng.choice(bases)] + [rng.choice(marks) for _ in range(rng.randint(0, 3))]
        tests.append("".join(map(chr, s)))
    got = nfc_n.normalize_str(SEP.join(tests)).split(SEP)
    bad = [(t, g) for t, g in zip(tests, got) if m.nfc(t) != g]
    assert not bad, [(t.encode("unicode_escape"), g.encode("unicode_escape")) for t, g in bad[:5]]
    print("model NFC == tokenizers NFC on every code point and 200000 mark strings", file=sys.stderr)

    hdr = f"""/* GENERATED by tools/make_unicode_tables.py from tokenizers {tokenizers.__version__}
 * (and unicodedata2 (Unicode {ud.unidata_version}) for the candidate combining classes and
 * composition pairs, each confirmed against tokenizers). Do not edit. */
// clang-format off
#define UNI_CLS_L 1
#define UNI_CLS_N 2
#define UNI_CLS_WS 3
"""
    tables = [
        hdr,
        c_array("UNI_CLASS", "uint32_t", cls_ranges, 4,
                "{first, last, class}: \\p{L}, \\p{N}, \\s of the split regex; others 0"),
        c_array("UNI_LOWER", "uint32_t", lower, 4, "{cp, lower, second char or 0}: Lowercase"),
        "// clang-format on\n",
    ]
    nfc = [
        hdr.split("// clang-format off")[0] + "// clang-format off",
        c_array("UNI_CCC", "uint32_t", [r for r in ccc_ranges], 4,
                "{first, last, ccc}: canonical combining classes"),
        c_array("UNI_DECOMP", "uint32_t", [[c] + d + [0] * (4 - len(d)) for c, d in sorted(decomp.items())], 3,
                "{cp, d0, d1, d2, d3}: full canonical decomposition (0-padded; not Hangul)"),
        c_array("UNI_COMP", "uint32_t", [[a, b, p] for (a, b), p in sorted(comp.items())], 4,
                "{first, second, composite}: primary composites, sorted"),
        "// clang-format on\n",
    ]
    for name, parts in (("clip_unicode_tables.h", tables), ("clip_unicode_nfc.h", nfc)):
        with open(f"{args.out}/{name}", "w") as f:
            f.write("\n\n".join(parts))
        print(f"wrote {args.out}/{name}", file=sys.stderr)


if __name__ == "__main__":
    main()

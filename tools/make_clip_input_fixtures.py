#!/usr/bin/env python3
"""Make the fixtures for saeflow's image decoding, CLIP preprocessing and CLIP
tokenizer tests (fixtures/clip-inputs/), with the real reference libraries:
Pillow, transformers (CLIPImageProcessorPil = the PIL-based CLIPImageProcessor,
CLIPTokenizer = the tokenizers-backed "fast" CLIP tokenizer) and open_clip's
SimpleTokenizer (the original OpenAI one, = the old slow CLIPTokenizer + ftfy).

    /work/venv/bin/python tools/make_clip_input_fixtures.py [--out fixtures/clip-inputs]

Writes:
  images/*.{jpg,png,webp}  synthetic images with photo-like content (smooth
                           gradients, hard edges, texture) in many formats/modes
  images.json              per image: Pillow's decoded RGB (FNV-1a 64 hash),
                           the uint8 resize+crop stage (hash + per-row sums),
                           sampled pixel_values from transformers
  normalize.json           transformers' rescale+normalize of every uint8 value
  resize_cases.bin         small random images resized by Pillow (exact bytes)
  corrupt/*                truncated / damaged files that must give errors
  captions.json            captions with ids + masks from the fast tokenizer,
                           ids from the slow (open_clip / ftfy) tokenizer
  vocab.json, merges.txt   the CLIP BPE vocabulary (copied if --vocab-dir given)
"""
import argparse
import gzip
import io
import json
import os
import shutil
import struct
import sys

import numpy as np
import PIL
from PIL import Image

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def fnv1a64(data: bytes) -> str:
    # FNV-1a over bytes; numpy-vectorised would be nicer but this is fast enough
    # for the few hundred KB per image we hash.
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def scene(w, h, seed):
    """A photo-like RGB scene: sky gradient, sun disc, hills, a striped
    building with hard edges, fine texture and mild noise. Hard edges make the
    bicubic overshoot hit the uint8 clip; texture makes JPEG work."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / max(w - 1, 1), y / max(h - 1, 1)
    img = np.zeros((h, w, 3))
    img[..., 0] = 80 + 120 * v
    img[..., 1] = 130 + 80 * v
    img[..., 2] = 230 - 60 * v
    cx, cy, r = 0.7 * w, 0.25 * h, 0.12 * min(w, h)
    sun = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
    img[sun] = [255, 230, 120]
    hill = v > 0.6 + 0.1 * np.sin(u * 7 + seed)
    img[hill, 0] = 40 + 40 * np.sin(x[hill] / 3.0)
    img[hill, 1] = 120 + 50 * np.cos(y[hill] / 5.0)
    img[hill, 2] = 40
    bx0, bx1, by0 = int(0.15 * w), int(0.4 * w), int(0.35 * h)
    bld = (x >= bx0) & (x < bx1) & (y >= by0)
    stripes = ((x.astype(int) // 3 + y.astype(int) // 5) % 2) == 0
    img[bld & stripes] = [20, 20, 30]
    img[bld & ~stripes] = [250, 250, 245]
    img += rng.normal(0, 2.5, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save(im, path, **kw):
    im.save(path, **kw)
    return os.path.basename(path)


def make_images(d):
    os.makedirs(d, exist_ok=True)
    files = []
    s = scene(640, 480, 1)
    files.append(save(Image.fromarray(s), f"{d}/landscape_640x480_q90_420.jpg", quality=90, subsampling=2))
    s = scene(300, 451, 2)
    files.append(save(Image.fromarray(s), f"{d}/portrait_300x451_prog_444.jpg", quality=92, subsampling=0, progressive=True))
    s = scene(333, 250, 3)
    files.append(save(Image.fromarray(s), f"{d}/odd_333x250_q75_422.jpg", quality=75, subsampling=1))
    s = scene(257, 199, 4)
    files.append(save(Image.fromarray(s).convert("L"), f"{d}/grey_257x199.jpg", quality=85))
    s = scene(120, 90, 5)
    files.append(save(Image.fromarray(s).convert("CMYK"), f"{d}/cmyk_120x90.jpg", quality=90))
    # EXIF orientation 6 (rotate 90): must be ignored, as Pillow's open does.
    s = scene(230, 180, 6)
    ex = Image.Exif()
    ex[0x0112] = 6
    files.append(save(Image.fromarray(s), f"{d}/exif_rot6_230x180.jpg", quality=88, exif=ex.tobytes()))

    s = scene(150, 112, 7)
    files.append(save(Image.fromarray(s), f"{d}/rgb_150x112.png"))
    s = scene(160, 210, 8)
    a = np.clip(np.arange(160)[None, :] + np.arange(210)[:, None], 0, 255).astype(np.uint8)
    files.append(save(Image.fromarray(np.dstack([s, a]), "RGBA"), f"{d}/rgba_160x210.png"))
    s = scene(180, 240, 9)
    files.append(save(Image.fromarray(s).convert("L"), f"{d}/grey_180x240.png"))
    s = scene(150, 226, 10)
    g = np.array(Image.fromarray(s).convert("L"))
    files.append(save(Image.fromarray(np.dstack([g, 255 - g]), "LA"), f"{d}/greyalpha_150x226.png"))
    s = scene(250, 160, 11)
    p = Image.fromarray(s).quantize(colors=64)
    files.append(save(p, f"{d}/palette_250x160.png"))
    p2 = Image.fromarray(scene(97, 131, 12)).quantize(colors=16)
    files.append(save(p2, f"{d}/palette_trns_97x131.png", transparency=3))
    s16 = scene(100, 80, 13).astype(np.uint16) * 257 + np.uint16(91)
    # Pillow cannot write 16-bit RGB PNG directly; write it by hand via a
    # minimal PNG encoder (zlib, filter 0).
    files.append(write_png16(f"{d}/rgb16_100x80.png", s16))
    g16 = (np.linspace(0, 600, 140 * 100).reshape(100, 140)).astype(np.uint16)
    files.append(save(Image.fromarray(g16), f"{d}/grey16_140x100.png"))
    files.append(save(Image.fromarray(scene(64, 48, 14)).convert("1"), f"{d}/bilevel_64x48.png"))

    s = scene(300, 300, 15)
    files.append(save(Image.fromarray(s), f"{d}/lossy_300x300.webp", quality=80))
    s = scene(110, 190, 16)
    a = np.clip(np.arange(190)[:, None] + np.zeros((1, 110)), 0, 255).astype(np.uint8)
    files.append(save(Image.fromarray(np.dstack([s, a]), "RGBA"), f"{d}/lossless_rgba_110x190.webp", lossless=True))
    s = scene(224, 224, 17)
    files.append(save(Image.fromarray(s), f"{d}/exact_224x224.jpg", quality=80))
    # taller than 2:1, downscaled: Pillow 13 resizes vertically first
    s = scene(230, 520, 19)
    files.append(save(Image.fromarray(s), f"{d}/tall_230x520.jpg", quality=80))
    s = scene(1000, 225, 18)
    files.append(save(Image.fromarray(s), f"{d}/wide_1000x225.jpg", quality=70))
    return files


def write_png16(path, a):
    import zlib

    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
    return os.path.basename(path)


def clip_processor(**over):
    # The PIL-backed CLIPImageProcessor with openai/clip-vit-large-patch14's
    # preprocessor_config.json values (built from a dict: no download).
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": {"shortest_edge": 224},
        "do_convert_rgb": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
    }
    cfg.update(over)
    return CLIPImageProcessorPil(**cfg), cfg


def uint8_stage(rgb: Image.Image, size=224, crop=(224, 224), resample=Image.Resampling.BICUBIC):
    """The uint8 part of CLIPImageProcessor, spelled out with the same
    transformers helpers (resize via PIL, center_crop)."""
    from transformers.image_transforms import center_crop, get_resize_output_image_size

    arr = np.array(rgb)
    oh, ow = get_resize_output_image_size(arr, size, default_to_square=False, input_data_format="channels_last")
    res = rgb.resize((ow, oh), resample=resample)
    resized = np.array(res)
    cropped = center_crop(resized, crop, input_data_format="channels_last")
    return resized, cropped


def image_records(d, files, proc, cfg):
    recs = []
    size = cfg["size"]["shortest_edge"]
    crop = (cfg["crop_size"]["height"], cfg["crop_size"]["width"])
    for fn in files:
        im = Image.open(os.path.join(d, fn))
        mode = im.mode
        fmt = im.format
        rgb = im.convert("RGB")  # Pillow's conversion: alpha dropped, not composited
        dec = np.array(rgb)
        resized, cropped = uint8_stage(rgb, size, crop, cfg["resample"])
        # transformers on the already-converted RGB pixels (a fresh image, so no
        # info["transparency"] survives: transformers 5.x's convert_to_rgb would
        # composite alpha / tRNS onto white; see docs/inputs.md).
        pv = proc(Image.fromarray(dec), return_tensors="np")["pixel_values"][0]
        # our spelled-out uint8 stage + transformers' rescale/normalize must equal it
        chk = proc.normalize(proc.rescale(np.moveaxis(cropped, -1, 0), 1 / 255), proc.image_mean, proc.image_std)
        assert np.array_equal(chk.astype(np.float32), pv), fn
        pv_white = proc(im, return_tensors="np")["pixel_values"][0]
        from transformers.image_transforms import convert_to_rgb

        white = convert_to_rgb(im, return_numpy=True)
        _, wcrop = uint8_stage(Image.fromarray(white), size, crop, cfg["resample"])
        wchk = proc.normalize(proc.rescale(np.moveaxis(wcrop, -1, 0), 1 / 255), proc.image_mean, proc.image_std)
        assert np.array_equal(wchk.astype(np.float32), pv_white), fn
        assert pv.shape == (3,) + crop
        flat = pv.reshape(-1)
        idx = list(range(0, flat.size, 3989)) + [flat.size - 1]
        recs.append(
            {
                "file": fn,
                "format": fmt,
                "pil_mode": mode,
                "width": im.size[0],
                "height": im.size[1],
                "decoded_fnv64": fnv1a64(dec.tobytes()),
                "resized_width": resized.shape[1],
                "resized_height": resized.shape[0],
                "resized_fnv64": fnv1a64(resized.tobytes()),
                "crop_fnv64": fnv1a64(cropped.tobytes()),
                "crop_row_sums": [int(r) for r in cropped.reshape(cropped.shape[0], -1).sum(axis=1)],
                "pixel_values_shape": list(pv.shape),
                "pixel_values_sum": float(pv.astype(np.float64).sum()),
                "pixel_values_idx": idx,
                "pixel_values_at": [float(flat[i]) for i in idx],
                "transformers_convert_differs": bool(not np.array_equal(pv, pv_white)),
                # transformers 5.x convert_to_rgb: alpha / tRNS composited onto white
                "white_decoded_fnv64": fnv1a64(white.tobytes()),
                "white_crop_fnv64": fnv1a64(wcrop.tobytes()),
                "white_pixel_values_sum": float(pv_white.astype(np.float64).sum()),
            }
        )
        print(f"  {fn}: {mode} {im.size} -> {resized.shape[1]}x{resized.shape[0]}", file=sys.stderr)
    return recs


def normalize_table(proc):
    # Every uint8 value through transformers' rescale + normalize, per channel.
    a = np.tile(np.arange(256, dtype=np.uint8), (3, 1))[:, None, :]  # (3, 1, 256)
    out = proc.normalize(proc.rescale(a, proc.rescale_factor), proc.image_mean, proc.image_std)
    return [[float(v) for v in out[c, 0].astype(np.float32)] for c in range(3)]


def resize_cases(path):
    # (in_w, in_h, out_w, out_h, filter): down, up, mixed, extreme, 1-pixel.
    cases = [
        (37, 23, 17, 11, 3), (37, 23, 80, 51, 3), (50, 40, 13, 90, 3), (64, 64, 1, 1, 3),
        (1, 1, 9, 7, 3), (5, 300, 3, 100, 3), (300, 7, 150, 2, 3), (51, 49, 50, 49, 3),
        (51, 49, 51, 25, 3), (33, 44, 70, 94, 3), (41, 29, 19, 23, 2), (41, 29, 83, 57, 2),
        (40, 30, 40, 30, 3), (40, 60, 20, 10, 3), (29, 73, 8, 30, 3), (60, 60, 61, 30, 2), (40, 60, 20, 20, 3), (255, 3, 7, 3, 3), (37, 23, 17, 11, 0), (37, 23, 80, 51, 0), (13, 7, 5, 19, 0),
    ]
    rng = np.random.default_rng(1234)
    with open(path, "wb") as f:
        f.write(struct.pack("<4sI", b"SFRZ", len(cases)))
        for k, (iw, ih, ow, oh, flt) in enumerate(cases):
            if k % 2 == 0:
                src = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)  # worst-case noise
            else:
                src = scene(iw, ih, 100 + k)
            out = np.array(Image.fromarray(src).resize((ow, oh), resample=flt))
            f.write(struct.pack("<5I", iw, ih, ow, oh, flt))
            f.write(src.tobytes())
            f.write(out.tobytes())


def corrupt_files(img_dir, d):
    os.makedirs(d, exist_ok=True)
    names = []
    for src, n in [("landscape_640x480_q90_420.jpg", 5000), ("rgb_150x112.png", 3000), ("lossy_300x300.webp", 2000),
                   ("portrait_300x451_prog_444.jpg", 8000), ("rgb_150x112.png", 40), ("landscape_640x480_q90_420.jpg", 300)]:
        data = open(os.path.join(img_dir, src), "rb").read()[:n]
        name = f"trunc{n}_{src}"
        open(os.path.join(d, name), "wb").write(data)
        names.append(name)
    # Damaged: bytes flipped in the middle of the entropy-coded / zlib data.
    for src in ["rgb_150x112.png", "lossy_300x300.webp"]:
        data = bytearray(open(os.path.join(img_dir, src), "rb").read())
        for i in range(len(data) // 3, len(data) // 3 + 64):
            data[i] ^= 0x5A
        name = f"damaged_{src}"
        open(os.path.join(d, name), "wb").write(bytes(data))
        names.append(name)
    open(os.path.join(d, "empty.jpg"), "wb").write(b"")
    open(os.path.join(d, "text.png"), "wb").write(b"this is not an image\n")
    open(os.path.join(d, "magic_only.jpg"), "wb").write(b"\xff\xd8\xff")
    names += ["empty.jpg", "text.png", "magic_only.jpg"]
    # What Pillow makes of each: files it rejects must be rejected; the others
    # (a VP8 stream with flipped bytes can still decode) must merely not crash.
    verdict = {}
    for n in names:
        try:
            Image.open(os.path.join(d, n)).convert("RGB")
            verdict[n] = "decodes"
        except Exception as e:  # noqa: BLE001 - any failure counts
            verdict[n] = "error: " + type(e).__name__
    json.dump(verdict, open(os.path.join(d, "pillow.json"), "w"), indent=1)
    return names


CAPTIONS = [
    "a photo of a cat",
    "A PHOTO OF A DOG sitting on the grass.",
    "",
    " ",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em\u3000ideographic",
    "it's a dog's life, isn't it? they're here; we've been; I'm; you'll; he'd",
    "IT'S SHOUTING'S CONTRACTIONS",
    "numbers: 3.14159, 1,000,000 and 2024-06-01 12:30 #42 $9.99 50%",
    "café naïve résumé coöperate Ångström",
    "cafe\u0301 nai\u0308ve (NFD) vs caf\u00e9 na\u00efve (NFC)",
    "Привет, мир! Москва — столица России.",
    "東京タワーの写真、夜景。",
    "한국어 문장입니다",
    "مرحبا بالعالم",
    "שלום עולם",
    "ελληνικά ΣΟΦΙΑ σοφία",
    "İstanbul DİYARBAKIR ıi",
    "straße STRASSE ß ẞ",
    "emoji 😀🐱‍👤 👍🏽 🇯🇵 ❤️ family 👨‍👩‍👧‍👦",
    "math ∑∫√∞ ≠ ≤ ≥ and arrows → ⇒ ←",
    "quotes “smart” ‘single’ «guillemets» „low“",
    "punctuation!!! ??? ... --- ___ *** ### @@@ (((nested))) [brackets] {braces}",
    "a<|endoftext|>b and <|startoftext|> special",
    "<|ENDOFTEXT|> is not special in upper case",
    "html &amp; entities &lt;b&gt; &quot;q&quot;",
    "mojibake: Ã©tÃ© and â€œquotesâ€\x9d",
    "zero\u200bwidth\u200djoiner\ufeffbom and soft\u00adhyphen",
    "combining: a\u0300\u0301\u0302 e\u0323\u0302 q\u0307",
    "fullwidth ＡＢＣ１２３ and ｶﾀｶﾅ",
    "super²³ fractions ½ ¾ roman Ⅻ circled ① ②",
    "ﬁ ﬂ ligatures and Ǆ ǅ ǆ digraphs",
    "URL https://example.com/path?q=1&x=2 email a.b@c.org",
    "C++ code: for (int i = 0; i < n; ++i) { x[i] *= 2; }",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "word " * 100,
    "a" * 300,
    "The quick brown fox jumps over the lazy dog. " * 12,
    "mixed 中文English混合text日本語",
    "ａｂｃ fullwidth lower",
    "\u0130\u0049\u0069\u0131 dotted",
    "tab-only\t\t\tend\t",
    "x",
    "!",
    "'s 't 're",
    "0123456789",
    "line1\u2028line2\u2029para\u0085nel",
    "Ωmega ohm \u2126 angstrom \u212b kelvin \u212a",
    "ﷺ ﷽ arabic ligatures",
    "thai ภาษาไทย devanagari हिन्दी",
]


def fast_tokenizer(vocab_dir):
    from transformers import CLIPTokenizer  # tokenizers-backed in transformers 5.x (= CLIPTokenizerFast)

    tok = CLIPTokenizer(vocab=os.path.join(vocab_dir, "vocab.json"), merges=os.path.join(vocab_dir, "merges.txt"))
    return tok


def check_vocab_matches_open_clip(vocab_dir):
    """vocab.json / merges.txt must be the vocabulary shipped in open_clip
    (bpe_simple_vocab_16e6.txt.gz), built the way open_clip builds it."""
    import open_clip.tokenizer as oct

    st = oct.SimpleTokenizer()
    vocab = json.load(open(os.path.join(vocab_dir, "vocab.json"), encoding="utf-8"))
    # open_clip 3.x spells the specials <start_of_text>/<end_of_text>; same ids.
    plain = lambda d: {k: v for k, v in d.items() if v < 49406}
    assert plain(vocab) == plain(st.encoder), "vocab.json differs from open_clip's vocabulary"
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = [tuple(l.split()) for l in open(os.path.join(vocab_dir, "merges.txt"), encoding="utf-8").read().split("\n")[1:] if l]
    ranks = {m: i for i, m in enumerate(merges)}
    assert ranks == st.bpe_ranks, "merges.txt differs from open_clip's merges"
    return st


def random_captions(n=400, seed=7):
    """Random strings over assigned code points (Python's unicodedata, Unicode
    14: every table involved knows them): ASCII-heavy, plus Latin, combining
    marks, Greek/Cyrillic, CJK, Hangul, symbols, emoji, whitespace oddities.
    A differential test of normalisation, case mapping and the regex classes."""
    import random
    import unicodedata

    def assigned(lo, hi, step=1):
        return [chr(c) for c in range(lo, hi, step) if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")]

    rng = random.Random(seed)
    pools = [
        [chr(c) for c in range(0x20, 0x7F)] * 3,
        assigned(0xA0, 0x250),
        assigned(0x300, 0x370),
        assigned(0x370, 0x530),
        assigned(0x1E00, 0x2000),
        assigned(0x2000, 0x2BFF),
        assigned(0x3000, 0x30FF),
        assigned(0x4E00, 0x4F00) + assigned(0xAC00, 0xAD00),
        assigned(0xFF00, 0xFFEF),
        assigned(0x1F300, 0x1FAFF),
        assigned(0x10000, 0x2FFFF, 37),
        list("\t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u3000\u200b\u180e\ufeff'") + ["'s", "'ll", "\u2019"],
    ]
    out = []
    for _ in range(n):
        k = rng.randint(1, 30)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(k)))
    return out


def caption_records(vocab_dir):
    tok = fast_tokenizer(vocab_dir)
    slow = check_vocab_matches_open_clip(vocab_dir)
    recs = []
    for c in CAPTIONS:
        e = tok(c, padding="max_length", truncation=True, max_length=77)
        raw = tok(c, add_special_tokens=False)["input_ids"]
        s = slow.encode(c)
        s = [49406] + s[:75] + [49407]
        s += [49407] * (77 - len(s))
        recs.append(
            {
                "text": c,
                "ids": e["input_ids"],
                "mask": e["attention_mask"],
                "raw_ids": raw,
                "slow_ids": s,
                "slow_differs": s != e["input_ids"],
            }
        )
    return recs, tok


def small_tokenizer(vocab_dir, out_dir):
    """A real tokenizer.json (written by tokenizers) with a truncated CLIP
    vocabulary -- the 512 byte tokens, the first 800 merges and the
    specials -- plus ids for the captions, to test the tokenizer.json path
    without committing the 3.6 MB full file. Also a tokenizer_config.json
    that pads with a different token, to test pad overrides."""
    from transformers import CLIPTokenizer

    vocab = json.load(open(os.path.join(vocab_dir, "vocab.json"), encoding="utf-8"))
    merges = open(os.path.join(vocab_dir, "merges.txt"), encoding="utf-8").read().split("\n")[1:801]
    inv = sorted(vocab.items(), key=lambda kv: kv[1])
    small = {k: v for k, v in inv[:512]}
    for m in merges:
        a, b = m.split()
        small[a + b] = vocab[a + b]
    small["<|startoftext|>"] = 49406
    small["<|endoftext|>"] = 49407
    tok = CLIPTokenizer(vocab=small, merges=[tuple(m.split()) for m in merges], pad_token="!")
    os.makedirs(out_dir, exist_ok=True)
    tok.backend_tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    json.dump({"pad_token": "!"}, open(os.path.join(out_dir, "tokenizer_config.json"), "w"))
    recs = []
    for c in CAPTIONS[:30]:
        e = tok(c, padding="max_length", truncation=True, max_length=40)
        recs.append({"text": c, "ids": e["input_ids"], "mask": e["attention_mask"],
                     "raw_ids": tok(c, add_special_tokens=False)["input_ids"]})
    json.dump({"context_length": 40, "captions": recs}, open(os.path.join(out_dir, "captions.json"), "w", encoding="utf-8"),
              ensure_ascii=False, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/clip-inputs")
    ap.add_argument("--vocab-dir", default=None, help="copy vocab.json + merges.txt from here into --out")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    if args.vocab_dir:
        for f in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(args.vocab_dir, f), os.path.join(out, f))
    import tokenizers
    import transformers

    versions = {"Pillow": PIL.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "numpy": np.__version__}
    print("versions:", versions, file=sys.stderr)

    img_dir = os.path.join(out, "images")
    files = make_images(img_dir)
    proc, cfg = clip_processor()
    recs = image_records(img_dir, files, proc, cfg)
    # Other configs: crop larger than the resized image in one dimension
    # (zero padding), non-square crop, bilinear, another mean/std.
    custom = []
    for over, names in [
        ({"size": {"shortest_edge": 150}, "crop_size": {"height": 180, "width": 210}},
         ["portrait_300x451_prog_444.jpg", "landscape_640x480_q90_420.jpg", "palette_trns_97x131.png"]),
        ({"size": {"shortest_edge": 96}, "crop_size": {"height": 96, "width": 96}, "resample": 2,
          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
         ["odd_333x250_q75_422.jpg", "lossy_300x300.webp"]),
    ]:
        p2, c2 = clip_processor(**over)
        custom.append({"processor": c2, "images": image_records(img_dir, names, p2, c2)})
    json.dump({"versions": versions, "processor": cfg, "images": recs, "custom": custom}, open(os.path.join(out, "images.json"), "w"), separators=(",", ":"))
    json.dump({"versions": versions, "rescale_factor": 1 / 255, "table": normalize_table(proc)},
              open(os.path.join(out, "normalize.json"), "w"))
    resize_cases(os.path.join(out, "resize_cases.bin"))
    corrupt = corrupt_files(img_dir, os.path.join(out, "corrupt"))
    caps, _ = caption_records(out)
    tok = fast_tokenizer(out)
    rnd = [{"text": c, "raw_ids": tok(c, add_special_tokens=False)["input_ids"]} for c in random_captions()]
    json.dump({"versions": versions, "context_length": 77, "captions": caps, "random": rnd},
              open(os.path.join(out, "captions.json"), "w", encoding="utf-8"), ensure_ascii=False, separators=(",", ":"))
    small_tokenizer(out, os.path.join(out, "small-tokenizer"))
    n_diff = sum(c["slow_differs"] for c in caps)
    print(f"{len(recs)} images, {len(corrupt)} corrupt files, {len(caps)} captions "
          f"({n_diff} where the slow tokenizer differs)", file=sys.stderr)


if __name__ == "__main__":
    main()

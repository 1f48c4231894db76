#!/usr/bin/env python3
"""Resize cases from Pillow <= 12 (horizontal pass always first), for
sf_image_resize_compat(..., legacy_order = 1, ...).

Pillow 13 runs the vertical pass first when the height shrinks by more than
twice as many pixels as the width; the reference project's era (Pillow 10-12)
always went horizontal first. This records what Pillow 12 makes of cases on
both sides of that rule, in the resize_cases.bin format
(tools/make_clip_input_fixtures.py):
  "SFRZ" u32 count, then per case u32 in_w, in_h, out_w, out_h, filter,
  input RGB bytes, output RGB bytes.

Run in a virtual environment with Pillow 12 (not the repo's tool venv, which
has Pillow 13):
  python3 -m venv /tmp/pil12 && /tmp/pil12/bin/pip install "pillow<13" numpy
  /tmp/pil12/bin/python tools/make_pillow12_fixture.py fixtures/clip-inputs/resize_cases_pillow12.bin
"""
import struct
import sys

import numpy as np
import PIL
from PIL import Image


def smooth(w, h, seed):
    # gradients plus a few soft blobs: natural-image-like, so rounding
    # differences between pass orders show up as +-1 here and there
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        img[..., c] = 128 + 60 * np.sin(x / (w / 3.1 + 1) + c) * np.cos(y / (h / 2.3 + 1) - c)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, 12)
            img[..., c] += rng.uniform(-80, 80) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def main(path):
    assert int(PIL.__version__.split(".")[0]) <= 12, f"needs Pillow <= 12, have {PIL.__version__}"
    # (in_w, in_h, out_w, out_h, filter). Tall shrinks, where Pillow 13 goes
    # vertical first: (in_h - h) > 2 (in_w - w); then cases where both
    # versions agree; bicubic (CLIP) and bilinear.
    cases = [
        (60, 200, 45, 150, 3), (40, 180, 30, 60, 3), (90, 300, 64, 213, 3), (33, 120, 32, 40, 3),
        (50, 400, 20, 100, 2), (64, 224, 48, 168, 3), (57, 191, 43, 144, 3), (30, 97, 29, 31, 2),
        (120, 90, 60, 45, 3), (45, 60, 40, 58, 3), (80, 100, 100, 120, 3), (37, 23, 17, 11, 3),
    ]
    with open(path, "wb") as f:
        f.write(struct.pack("<4sI", b"SFRZ", len(cases)))
        for k, (iw, ih, ow, oh, flt) in enumerate(cases):
            if k % 3 == 2:
                src = np.random.default_rng(500 + k).integers(0, 256, (ih, iw, 3), dtype=np.uint8)
            else:
                src = smooth(iw, ih, 700 + k)
            out = np.array(Image.fromarray(src).resize((ow, oh), resample=flt))
            f.write(struct.pack("<5I", iw, ih, ow, oh, flt))
            f.write(src.tobytes())
            f.write(out.tobytes())
    print(f"{path}: {len(cases)} cases, Pillow {PIL.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])

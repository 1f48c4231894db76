#!/usr/bin/env python3
"""Writes the explorer's test dataset under fixtures/analysis/ (~150 KB).

    /work/venv/bin/python tools/make_analysis_fixtures.py [--out fixtures/analysis]

shapes/NNN.png + NNN.txt   a `folder:` dataset of 192 images with known content:
                           6 colours x 4 shapes x 2 sizes x 2 backgrounds x 2
                           positions, 64x64 PNG, caption "a large red circle on
                           a white background" (side-car .txt captions).
acts.safetensors           `activations` F32 [192, 64] computed from the pixels,
                           in row order (= sorted file names, as the folder
                           reader numbers them): mean foreground RGB (3), a
                           12-bin hue histogram of the foreground (12) and the
                           7x7 foreground occupancy grid (49), so an SAE trained
                           on them finds colour and shape directions.
                           metadata: dataset = folder:fixtures/analysis/shapes
acts_rows.safetensors      the same rows as `vision` with an I64 `rows` map
                           (1000 + 2i), the layout `saeflow extract` writes
"""
import argparse
import colorsys
import json
import os

import numpy as np
from PIL import Image, ImageDraw
from safetensors.numpy import save_file

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 205, 30), "purple": (140, 60, 190), "orange": (240, 130, 20)}
SHAPES = ("circle", "square", "triangle", "cross")
BACKS = {"white": (250, 250, 250), "grey": (120, 124, 130)}
S = 64


def draw(shape, colour, size, bg, pos):
    im = Image.new("RGB", (S, S), BACKS[bg])
    d = ImageDraw.Draw(im)
    r = 24 if size == "large" else 13
    cx, cy = (32, 32) if pos == 0 else (24 + (r < 20) * 6, 38 - (r < 20) * 4)
    c = COLOURS[colour]
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=c)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=c)
    else:
        w = max(3, r // 3)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=c)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=c)
    return im


def features(im, bg):
    a = np.asarray(im).astype(np.float32)
    fg = np.abs(a - np.array(BACKS[bg], np.float32)).sum(-1) > 30  # (S, S)
    px = a[fg] / 255.0
    rgb = px.mean(0) if len(px) else np.zeros(3, np.float32)
    hues = np.zeros(12, np.float32)
    for p in px[:: max(1, len(px) // 200)]:
        h, _, _ = colorsys.rgb_to_hsv(*p)
        hues[int(h * 12) % 12] += 1
    hues /= max(1.0, hues.sum())
    occ = np.zeros((7, 7), np.float32)
    edges = np.linspace(0, S, 8).astype(int)
    for i in range(7):
        for j in range(7):
            occ[i, j] = fg[edges[i]:edges[i + 1], edges[j]:edges[j + 1]].mean()
    return np.concatenate([rgb * 2, hues * 3, occ.ravel()]).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/analysis")
    args = ap.parse_args()
    sd = os.path.join(args.out, "shapes")
    os.makedirs(sd, exist_ok=True)
    rows, expected = [], []
    i = 0
    for colour in COLOURS:
        for shape in SHAPES:
            for size in ("large", "small"):
                for bg in BACKS:
                    for pos in (0, 1):
                        im = draw(shape, colour, size, bg, pos)
                        name = f"{i:03d}"
                        im.save(os.path.join(sd, name + ".png"), optimize=True)
                        cap = f"a {size} {colour} {shape} on a {bg} background"
                        with open(os.path.join(sd, name + ".txt"), "w") as f:
                            f.write(cap + "\n")
                        rows.append(features(im, bg))
                        expected.append({"row": i, "colour": colour, "shape": shape, "caption": cap})
                        i += 1
    x = np.stack(rows)  # (192, 64)
    save_file({"activations": x}, os.path.join(args.out, "acts.safetensors"),
              metadata={"dataset": "folder:fixtures/analysis/shapes"})
    # the layout `saeflow extract` writes: activations under "vision" plus an
    # I64 "rows" map to dataset rows (here 1000 + 2i, to see the map applied)
    save_file({"vision": x, "rows": (1000 + 2 * np.arange(len(x))).astype(np.int64)},
              os.path.join(args.out, "acts_rows.safetensors"))
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=0)
    print(f"{len(rows)} images, activations {x.shape}")


if __name__ == "__main__":
    main()

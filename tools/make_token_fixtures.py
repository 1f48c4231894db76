#!/usr/bin/env python3
"""Writes the explorer's per-token test fixture under fixtures/analysis/tokens/
(~20 KB): images whose one bright patch is known, per-token activations laid
out as `saeflow extract --tokens all` writes them, and a TopK SAE that makes
feature 0 fire where the image is bright.

    /work/venv/bin/python tools/make_token_fixtures.py [--out fixtures/analysis/tokens]

images/NNN.png + NNN.txt  8 images, 64x64, dark grey with ONE white 16x16
                          patch at grid cell (r, c) of a 4x4 grid, cell
                          q = (5 * i + 1) % 16 for image i (r = q // 4, c = q % 4);
                          caption "white patch at row r column c".
acts.safetensors          `vision` F32 [8 * 17, 4]: 17 tokens per image (CLS at
                          position 0, then the 4x4 patches row-major, as CLIP
                          orders them), channels computed from the pixels:
                            0 mean brightness of the patch (CLS: 0),
                            1 darkness 1 - brightness (CLS: 0),
                            2 CLS only: 0.5 + i / 16,
                            3 always 0;
                          `vision_rows` I64 (dataset row of each token row) and
                          `vision_pos` I32 (token position); metadata dataset.
sae/                      TopK SAE checkpoint (config.json + model.safetensors):
                          d = 4, n = 6, k = 2, encoder = [I; 0] (features 4 and
                          5 never fire: dead), zero biases, decoder = its
                          transpose. Feature j of a token is channel j.
"""
import argparse
import json
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

S, G, P = 64, 4, 16  # image size, grid, patch size
NIMG = 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/analysis/tokens")
    a = ap.parse_args()
    img_dir = os.path.join(a.out, "images")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(a.out, "sae"), exist_ok=True)
    x, rows, pos = [], [], []
    for i in range(NIMG):
        q = (5 * i + 1) % (G * G)
        r, c = divmod(q, G)
        im = np.full((S, S, 3), 40, np.uint8)
        im[r * P:(r + 1) * P, c * P:(c + 1) * P] = 255
        Image.fromarray(im).save(os.path.join(img_dir, "%03d.png" % i), optimize=True)
        with open(os.path.join(img_dir, "%03d.txt" % i), "w") as f:
            f.write("white patch at row %d column %d\n" % (r, c))
        bright = im.astype(np.float32).mean(axis=2) / 255.0  # (S, S)
        cells = bright.reshape(G, P, G, P).mean(axis=(1, 3)).reshape(-1)  # (G*G)
        x.append([0.0, 0.0, 0.5 + i / 16.0, 0.0])
        for t in range(G * G):
            x.append([cells[t], 1.0 - cells[t], 0.0, 0.0])
        rows += [i] * (1 + G * G)
        pos += list(range(1 + G * G))
    save_file({"vision": np.asarray(x, np.float32),
               "vision_rows": np.asarray(rows, np.int64),
               "vision_pos": np.asarray(pos, np.int32)},
              os.path.join(a.out, "acts.safetensors"),
              metadata={"dataset": "folder:fixtures/analysis/tokens/images"})
    d, n = 4, 6
    enc = np.zeros((n, d), np.float32)
    enc[:d, :d] = np.eye(d, dtype=np.float32)
    save_file({"encoder.weight": enc, "encoder.bias": np.zeros(n, np.float32),
               "bias": np.zeros(d, np.float32), "decoder.weight": np.ascontiguousarray(enc.T)},
              os.path.join(a.out, "sae", "model.safetensors"))
    with open(os.path.join(a.out, "sae", "config.json"), "w") as f:
        json.dump({"features": d, "k": 2, "pages": n}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

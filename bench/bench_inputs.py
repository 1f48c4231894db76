"""Python half of bench/bench_inputs.c: the same JPEG through Pillow +
transformers' CLIPImageProcessor (PIL backend, as the C code reproduces),
and the same captions through the tokenizers-backed CLIP tokenizer, on one
thread (RAYON_NUM_THREADS=1 for tokenizers).

    RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 /work/venv/bin/python bench/bench_inputs.py [image] [iters]
"""
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from make_clip_input_fixtures import clip_processor, fast_tokenizer  # noqa: E402
from PIL import Image  # noqa: E402

img = sys.argv[1] if len(sys.argv) > 1 else "fixtures/clip-inputs/images/landscape_640x480_q90_420.jpg"
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 200
data = open(img, "rb").read()
proc, _ = clip_processor()
t_dec = t_pre = 0.0
for i in range(iters):
    t0 = time.perf_counter()
    im = Image.open(io.BytesIO(data)).convert("RGB")
    t1 = time.perf_counter()
    proc(im, return_tensors="np")
    t2 = time.perf_counter()
    if i:
        t_dec += t1 - t0
        t_pre += t2 - t1
n = iters - 1
print(f"decode      {1e3 * t_dec / n:.3f} ms/image (Pillow open + convert RGB)")
print(f"preprocess  {1e3 * t_pre / n:.3f} ms/image (CLIPImageProcessorPil)")
print(f"total       {n / (t_dec + t_pre):.1f} images/s")

j = json.load(open("fixtures/clip-inputs/captions.json", encoding="utf-8"))
texts = [c["text"] for c in j["captions"]] + [c["text"] for c in j["random"]]
tok = fast_tokenizer("fixtures/clip-inputs")
t0 = time.perf_counter()
for t in texts:
    tok(t, padding="max_length", truncation=True, max_length=77)
cold = time.perf_counter() - t0
reps = 20
t0 = time.perf_counter()
for _ in range(reps):
    for t in texts:
        tok(t, padding="max_length", truncation=True, max_length=77)
warm = time.perf_counter() - t0
print(f"tokenizer   {len(texts)} captions: {len(texts) / cold:.0f} captions/s first pass, "
      f"{reps * len(texts) / warm:.0f} captions/s repeated (one call per caption)")
t0 = time.perf_counter()
t2 = time.perf_counter()
for _ in range(reps):
    tok(texts, padding="max_length", truncation=True, max_length=77)
print(f"tokenizer   batched call: {reps * len(texts) / (time.perf_counter() - t2):.0f} captions/s")

#!/usr/bin/env python3
"""diffusers' FluxPipeline side of bench/run_bench_generate.sh: the same
pipeline folder, prompt, size, steps and seed as `saeflow flux generate`,
on CPU in F32 with THREADS torch threads. Prints one JSON line: seconds per
image (median of --iters timed calls after one warm-up; encode_prompt, the
sampler and the VAE, as the saeflow figure), load seconds, and writes the
image for the pixel comparison (--compare A.png B.png -> max |diff|)."""
import argparse
import json
import statistics
import sys
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--prompt", default="a photo of a cat")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=3.5)
    ap.add_argument("--max-sequence-length", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2)
    a = ap.parse_args()
    if a.compare:
        from PIL import Image
        x, y = (np.array(Image.open(p)).astype(int) for p in a.compare)
        print(json.dumps({"max_abs_diff": int(np.abs(x - y).max()), "mean_abs_diff": float(np.abs(x - y).mean())}))
        return
    import torch
    from diffusers import FluxPipeline
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    pipe = FluxPipeline.from_pretrained(a.model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0
    times = []
    for i in range(a.iters + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            img = pipe(prompt=a.prompt, height=a.size, width=a.size, num_inference_steps=a.steps,
                       guidance_scale=a.guidance, generator=torch.Generator("cpu").manual_seed(a.seed),
                       max_sequence_length=a.max_sequence_length, output_type="pil").images[0]
        if i:
            times.append(time.perf_counter() - t0)
    if a.out:
        img.save(a.out)
    print(json.dumps({"impl": "diffusers", "per_image_s": statistics.median(times), "load_s": load,
                      "threads": a.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    sys.exit(main())

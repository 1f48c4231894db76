#!/usr/bin/env python3
"""FLUX VAE decode with diffusers on torch CPU: the reference half of bench/bench_vae.sh.

    bench_vae_torch.py --make-inputs IN.safetensors --size 256 [--batch 1]
    bench_vae_torch.py --model VAE_DIR --inputs IN.safetensors --threads 2 --iters 3 --out OUT.safetensors
    bench_vae_torch.py --compare SAEFLOW.safetensors TORCH.safetensors
"""
import argparse
import json
import resource
import time

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-inputs")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--model")
    ap.add_argument("--inputs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2)
    a = ap.parse_args()
    if a.make_inputs:
        g = torch.Generator().manual_seed(0)
        s = a.size // 8
        save_file({"latents": torch.randn((a.batch, 16, s, s), generator=g)}, a.make_inputs)
        return
    if a.compare:
        x, y = load_file(a.compare[0])["decoded"], load_file(a.compare[1])["decoded"]
        print(json.dumps({"max_rel_err": float((x - y).abs().max() / y.abs().max())}))
        return
    torch.set_num_threads(a.threads)
    vae = AutoencoderKL.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    z = load_file(a.inputs)["latents"]
    times = []
    with torch.inference_mode():
        dec = vae.decode(z).sample  # warm-up
        for _ in range(a.iters):
            t0 = time.perf_counter()
            dec = vae.decode(z).sample
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"impl": "diffusers " + __import__("diffusers").__version__ + ", torch " + torch.__version__,
                      "s_per_decode": round(times[len(times) // 2], 3), "min_s": round(times[0], 3),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "threads": a.threads, "image": f"{dec.shape[2]}x{dec.shape[3]}"}))
    if a.out:
        save_file({"decoded": dec.contiguous()}, a.out)


if __name__ == "__main__":
    main()

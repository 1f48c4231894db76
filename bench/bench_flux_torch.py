#!/usr/bin/env python3
"""FLUX transformer speed: the diffusers half of bench/run_bench_flux.sh.

    bench_flux_torch.py --make-model DIR          random BF16 weights, real FLUX.1 widths
                        [--layers 2 --single-layers 2]
    bench_flux_torch.py --make-inputs FILE --batch B [--img 256 --txt 256]
    bench_flux_torch.py --model DIR --inputs FILE [--threads 2 --warmup 1 --iters 2] [--out FILE]
    bench_flux_torch.py --compare OURS.safetensors THEIRS.safetensors
    bench_flux_torch.py --summary RUNS.jsonl     per batch: torch / saeflow time per round

The model is FluxTransformer2DModel with schnell's widths (D 3072, 24 heads x
128, mlp 12288, joint 4096, pooled 768) but few blocks, saved in BF16 (the
dtype FLUX.1 ships in). Torch runs it in F32 (torch_dtype=float32, like
saeflow's F32 compute). Prints one JSON line: seconds per batch, tokens/s
(image + text tokens), load time, peak RSS (ru_maxrss).
"""
import argparse
import json
import os
import resource
import time

import torch
from safetensors.torch import load_file, save_file


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_model(path, layers, single):
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(0)
    with torch.device("meta"):
        m = FluxTransformer2DModel(num_layers=layers, num_single_layers=single)
    m = m.to_empty(device="cpu").to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    m.save_pretrained(os.path.join(path, "transformer"), safe_serialization=True, max_shard_size="20GB")


def make_inputs(path, B, n_img, n_txt):
    g = torch.Generator().manual_seed(1)
    side = int(round(n_img ** 0.5))
    assert side * side == n_img
    ids = torch.zeros(side, side, 3)
    ids[..., 1] += torch.arange(side)[:, None]
    ids[..., 2] += torch.arange(side)[None, :]
    save_file({
        "hidden_states": torch.randn(B, n_img, 64, generator=g),
        "encoder_hidden_states": torch.randn(B, n_txt, 4096, generator=g),
        "pooled_projections": torch.randn(B, 768, generator=g),
        "timestep": torch.full((B,), 1.0),
        "img_ids": ids.reshape(n_img, 3),
        "txt_ids": torch.zeros(n_txt, 3),
    }, path)


def run(args):
    from diffusers import FluxTransformer2DModel
    torch.set_num_threads(args.threads)
    t0 = time.time()
    m = FluxTransformer2DModel.from_pretrained(args.model, subfolder="transformer", torch_dtype=torch.float32).eval()
    load = time.time() - t0
    inp = load_file(args.inputs)
    B, N = inp["hidden_states"].shape[:2]
    T = inp["encoder_hidden_states"].shape[1]
    kw = {k: inp[k] for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids",
                              "txt_ids")}
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            t = time.time()
            out = m(**kw, return_dict=False)[0]
            if i >= args.warmup:
                times.append(time.time() - t)
    s = sorted(times)[len(times) // 2]
    if args.out:
        save_file({"out": out.float().contiguous()}, args.out)
    print(json.dumps({"impl": "diffusers", "torch": torch.__version__, "threads": args.threads, "batch": B,
                      "tokens": int(N + T), "s_per_batch": round(s, 4),
                      "tokens_per_s": round(B * (N + T) / s, 2), "load_s": round(load, 2),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}))


def compare(a, b):
    x, y = load_file(a)["out"], load_file(b)["out"]
    err = ((x - y).abs().max() / y.abs().max()).item()
    print(json.dumps({"rel_err": err}))


def summary(path):
    """Rounds alternate torch and saeflow processes, so both see the same
    machine: on a shared host the speed of either moves by up to 20% between
    invocations, and a ratio of two runs minutes apart measures that too.
    Reports the median of the per-round ratios, and the range."""
    runs = [json.loads(l) for l in open(path) if l.strip()]
    for B in sorted({r["batch"] for r in runs}):
        rounds = sorted({r["round"] for r in runs if r["batch"] == B})
        def get(impl, rd):
            return next(r for r in runs if r["batch"] == B and r["round"] == rd and r["impl"] == impl)
        ratios = sorted(get("diffusers", rd)["s_per_batch"] / get("saeflow", rd)["s_per_batch"] for rd in rounds)
        med = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else (sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2]) / 2
        t = [get("diffusers", rd) for rd in rounds]
        o = [get("saeflow", rd) for rd in rounds]
        print(json.dumps({"batch": B, "rounds": len(rounds),
                          "speedup_median": round(med(ratios), 3), "speedup_min": round(ratios[0], 3),
                          "speedup_max": round(ratios[-1], 3),
                          "tokens_per_s": {"saeflow": round(med([r["tokens_per_s"] for r in o]), 1),
                                           "diffusers": round(med([r["tokens_per_s"] for r in t]), 1)},
                          "saeflow_gflop_per_s": round(med([r["gflop_per_s"] for r in o]), 1),
                          "peak_rss_mb": {"saeflow": max(r["peak_rss_mb"] for r in o),
                                          "diffusers": max(r["peak_rss_mb"] for r in t)}}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-model")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--single-layers", type=int, default=2)
    ap.add_argument("--make-inputs")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--img", type=int, default=256)
    ap.add_argument("--txt", type=int, default=256)
    ap.add_argument("--model")
    ap.add_argument("--inputs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2)
    ap.add_argument("--summary")
    a = ap.parse_args()
    if a.make_model:
        make_model(a.make_model, a.layers, a.single_layers)
    elif a.make_inputs:
        make_inputs(a.make_inputs, a.batch, a.img, a.txt)
    elif a.compare:
        compare(*a.compare)
    elif a.summary:
        summary(a.summary)
    else:
        run(a)


if __name__ == "__main__":
    main()

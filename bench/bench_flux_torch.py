#!/usr/bin/env python3
"""FLUX transformer speed: the diffusers half of bench/run_bench_flux.sh.

    bench_flux_torch.py --make-model DIR          random BF16 weights, real FLUX.1 widths
                        [--layers 2 --single-layers 2]
    bench_flux_torch.py --make-inputs FILE --batch B [--img 256 --txt 256]
    bench_flux_torch.py --model DIR --inputs FILE [--threads 2 --warmup 1 --iters 2] [--out FILE]
    bench_flux_torch.py --compare OURS.safetensors THEIRS.safetensors
    bench_flux_torch.py --model DIR --inputs FILE --alternate BENCH_FLUX LOG [--pairs 6]
                        [--out TORCH_OUT --ours-out OURS_OUT]
                                                 both sides loaded, one forward each in turn
    bench_flux_torch.py --summary LOG            per batch: median per-pair time ratio

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
import subprocess
import sys
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


def load_transformer(model, inputs, threads):
    """diffusers' transformer in F32 from MODEL/transformer, and the forward's
    keyword arguments from INPUTS (--make-inputs): (model, load seconds,
    inputs, kwargs). Also used by bench_flux_source_torch.py."""
    from diffusers import FluxTransformer2DModel
    torch.set_num_threads(threads)
    t0 = time.time()
    m = FluxTransformer2DModel.from_pretrained(model, subfolder="transformer", torch_dtype=torch.float32).eval()
    load = time.time() - t0
    inp = load_file(inputs)
    kw = {k: inp[k] for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "img_ids",
                              "txt_ids")}
    return m, load, inp, kw


def run(args):
    m, load, inp, kw = load_transformer(args.model, args.inputs, args.threads)
    B, N = inp["hidden_states"].shape[:2]
    T = inp["encoder_hidden_states"].shape[1]
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            out = m(**kw, return_dict=False)[0]
        if args.stdin:  # one timed forward per line (see bench_flux.c --stdin)
            print(json.dumps({"ready": 1}), flush=True)
            for _ in sys.stdin:
                t, c = time.time(), time.process_time()
                out = m(**kw, return_dict=False)[0]
                times.append(time.time() - t)
                print(json.dumps({"s": round(times[-1], 4), "cpu_s": round(time.process_time() - c, 3)}), flush=True)
        else:
            for _ in range(args.iters):
                t = time.time()
                out = m(**kw, return_dict=False)[0]
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


def alternate(torch_cmd, ours_cmd, pairs, log):
    """Both processes loaded and warm, then one forward each in turn, `pairs`
    times, the side that goes first swapped every pair. On a shared host the
    speed of either side moves by 20-40% within minutes; forwards seconds
    apart meet the same machine, so each pair's ratio is a fair one and the
    median over pairs is the figure. Writes every line to `log`."""
    procs = {name: subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for name, cmd in (("diffusers", torch_cmd), ("saeflow", ours_cmd))}
    for name, p in procs.items():
        line = p.stdout.readline()
        if '"ready"' not in line:
            raise SystemExit(f"{name}: did not start: {line!r}")
    rows = []
    for i in range(pairs):
        order = ("diffusers", "saeflow") if i % 2 == 0 else ("saeflow", "diffusers")
        for name in order:
            p = procs[name]
            p.stdin.write("go\n")
            p.stdin.flush()
            rows.append({"pair": i, "impl": name, **json.loads(p.stdout.readline())})
    finals = []
    for name, p in procs.items():
        p.stdin.close()
        finals.append({"final": 1, **json.loads(p.stdout.readline())})
        print(json.dumps(finals[-1]))
        p.wait()
    with open(log, "a") as f:
        for r in rows + finals:
            f.write(json.dumps({"batch": finals[0]["batch"], **r}) + "\n")


def summary(path):
    """Per batch: the median of the per-pair ratios (torch time / saeflow
    time), their range, and each side's final line (median rate, peak RSS)."""
    rows = [json.loads(l) for l in open(path) if l.strip()]
    med = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else (sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2]) / 2
    for B in sorted({r["batch"] for r in rows if "batch" in r}):
        sel = [r for r in rows if r.get("batch") == B]
        pairs = sorted({r["pair"] for r in sel if "pair" in r})
        s = lambda impl, i: next(r["s"] for r in sel if r.get("pair") == i and r["impl"] == impl)
        ratios = sorted(s("diffusers", i) / s("saeflow", i) for i in pairs)
        fin = {r["impl"]: r for r in sel if r.get("final")}
        print(json.dumps({"batch": B, "pairs": len(pairs), "speedup_median": round(med(ratios), 3),
                          "speedup_min": round(ratios[0], 3), "speedup_max": round(ratios[-1], 3),
                          "s_per_batch_median": {k: round(med([s(k, i) for i in pairs]), 3) for k in fin},
                          "saeflow_gflop_per_s": fin["saeflow"]["gflop_per_s"],
                          "peak_rss_mb": {k: fin[k]["peak_rss_mb"] for k in fin}}))


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
    ap.add_argument("--stdin", action="store_true")
    ap.add_argument("--alternate", nargs=2, metavar=("BENCH_FLUX", "LOG"),
                    help="drive this script and BENCH_FLUX in turn (run_bench_flux.sh)")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--ours-out")
    a = ap.parse_args()
    if a.make_model:
        make_model(a.make_model, a.layers, a.single_layers)
    elif a.make_inputs:
        make_inputs(a.make_inputs, a.batch, a.img, a.txt)
    elif a.compare:
        compare(*a.compare)
    elif a.summary:
        summary(a.summary)
    elif a.alternate:
        common = ["--model", a.model, "--inputs", a.inputs, "--threads", str(a.threads), "--stdin"]
        torch_cmd = [sys.executable, os.path.abspath(__file__)] + common + (["--out", a.out] if a.out else [])
        ours_cmd = [a.alternate[0]] + common + (["--out", a.ours_out] if a.ours_out else [])
        alternate(torch_cmd, ours_cmd, a.pairs, a.alternate[1])
    else:
        run(a)


if __name__ == "__main__":
    main()

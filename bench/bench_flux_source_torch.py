#!/usr/bin/env python3
"""The torch half and the composition of bench/run_bench_flux_source.sh.

    bench_flux_source_torch.py --make-clip DIR
        a random CLIPTextModel with FLUX's text_encoder widths (CLIP-L text: 768, 12 layers), BF16
    bench_flux_source_torch.py --blocks --model DIR --inputs FILE [--threads 2 --warmup 1 --iters 1]
        diffusers' FluxTransformer2DModel (F32 compute from the BF16 weights) with the reference's
        forward hook on transformer_blocks.0, timed per part with forward pre-hooks on every block:
        embed (start -> block 0), each block (its start -> the next one's), tail (norm_out,
        proj_out). Prints one JSON line (seconds per batch; the median of --iters runs per part).
    bench_flux_source_torch.py --compose RESULTS.jsonl [--rows-per-prompt 8]
        composes rows/s per hook from the measured parts (see docs/flux_sae.md, "Speed"),
        prints JSON lines and the final ratio table.
"""
import argparse
import json
import os
import resource
import statistics
import time

# FLUX.1 shapes (flux-facts section 2, 6) and the reference's setup (section 1)
N_DOUBLE, N_SINGLE = 19, 38
T5_LAYERS = 24
D, L_IMG, L_TXT = 3072, 256, 256
PROMPTS_PER_STEP, ROWS_PER_STEP, STEPS = 32, 256, 4096
PUBLISHED = 6  # cc3m-transformer_blocks.{0,18}-{0,1}, cc3m-single_transformer_blocks.{9,37}


def make_clip(path):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    cfg = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                         max_position_embeddings=77, vocab_size=49408, projection_dim=768, hidden_act="quick_gelu",
                         bos_token_id=0, eos_token_id=2, pad_token_id=1)
    CLIPTextModel(cfg).to(torch.bfloat16).save_pretrained(path, safe_serialization=True)


def make_prompts(path, B):
    """B random prompts in `saeflow flux encode-prompts`' layout (256 T5 tokens, F32)."""
    import torch
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(3)
    save_file({"prompt_embeds": torch.randn(B, L_TXT, 4096, generator=g),
               "pooled_prompt_embeds": torch.randn(B, 768, generator=g),
               "rows": torch.arange(B, dtype=torch.int64)}, path)


def blocks(a):
    import torch
    from bench_flux_torch import load_transformer
    m, load, inp, kw = load_transformer(a.model, a.inputs, a.threads)
    B = inp["hidden_states"].shape[0]
    kept = {}
    # the reference's FluxActivationSampler hook (keeps the raw output; the forward goes on)
    m.get_submodule("transformer_blocks.0").register_forward_hook(lambda mod, args, out: kept.update(x=out))
    marks = []
    blks = list(m.transformer_blocks) + list(m.single_transformer_blocks)
    for b in blks:
        b.register_forward_pre_hook(lambda mod, args: marks.append(time.perf_counter()))
    blks[-1].register_forward_hook(lambda mod, args, out: marks.append(time.perf_counter()))
    nd = len(m.transformer_blocks)
    runs = []
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            marks.clear()
            s = time.perf_counter()
            m(**kw, return_dict=False)
            e = time.perf_counter()
            if i >= a.warmup:
                t = [s] + marks + [e]  # start, pre(block 0..n-1), post(last), end
                seg = [t[j + 1] - t[j] for j in range(len(t) - 1)]
                # seg: embed, block 0 .. n-1 (each to the next block's start), tail
                runs.append({"embed": seg[0], "double": seg[1:1 + nd], "single": seg[1 + nd:-1], "tail": seg[-1],
                             "total": e - s})
    med = lambda xs: statistics.median(xs)
    out = {"impl": "diffusers", "torch": torch.__version__, "threads": a.threads, "batch": B,
           "s_embed": med([r["embed"] for r in runs]),
           "s_double": med([statistics.mean(r["double"]) for r in runs]),
           "s_single": med([statistics.mean(r["single"]) for r in runs]),
           "s_tail": med([r["tail"] for r in runs]), "s_total": med([r["total"] for r in runs]),
           "n_double": nd, "n_single": len(m.single_transformer_blocks), "load_s": round(load, 2),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


def gflop_per_prompt():
    """FLOPs (GFLOP) per prompt at 256 px / 256 T5 tokens, counted like bench_flux: a block is
    24 D^2 per token (its GEMMs; every token is in one stream) + 4 L^2 D (attention) + its AdaLN
    modulation per prompt; T5-XXL (24 layers) and the VAE decode as flux-facts section 6."""
    L = L_IMG + L_TXT
    blk = 24.0 * D * D * L + 4.0 * L * L * D
    dbl, sgl = blk + 2 * 2 * 6 * D * D, blk + 2 * 3 * D * D
    embed = 2.0 * (4096 * D * L_TXT + 64 * D * L_IMG + 256 * D + 768 * D + 2 * D * D)
    t5 = T5_LAYERS * L_TXT * 2.0 * (4 * 4096 * 4096 + 3 * 4096 * 10240) + T5_LAYERS * 4.0 * L_TXT ** 2 * 4096
    clip = 12 * 77 * 2.0 * 12 * 768 * 768
    tail = 2.0 * (D * 2 * D + 256 * D * 64)
    return {k: v / 1e9 for k, v in dict(double=dbl, single=sgl, embed=embed, t5=t5, clip=clip, tail=tail,
                                         vae=0.62e12).items()}


def weight_gb(model_dir):
    """Bytes of the stored (BF16) weights per part, from the safetensors header of a real-width model."""
    import glob
    import struct
    parts = {"embed": 0, "double": 0, "single": 0, "tail": 0}
    nd = ns = 0
    for f in glob.glob(os.path.join(model_dir, "transformer", "*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
        for k, v in hdr.items():
            if k == "__metadata__":
                continue
            size = v["data_offsets"][1] - v["data_offsets"][0]
            if k.startswith("transformer_blocks."):
                parts["double"] += size
                nd = max(nd, int(k.split(".")[1]) + 1)
            elif k.startswith("single_transformer_blocks."):
                parts["single"] += size
                ns = max(ns, int(k.split(".")[1]) + 1)
            elif k.startswith(("norm_out", "proj_out")):
                parts["tail"] += size
            else:
                parts["embed"] += size
    parts["double"] /= nd
    parts["single"] /= ns
    return {k: v / 1e9 for k, v in parts.items()}


def paper(a):
    """On-paper figures for docs/flux_sae.md: FLOPs, a GPU at a stated efficiency, memory per hook."""
    g = gflop_per_prompt()
    ref = g["t5"] + g["clip"] + g["embed"] + N_DOUBLE * g["double"] + N_SINGLE * g["single"] + g["tail"] + g["vae"]
    enc = g["t5"] + g["clip"]
    locs = [("transformer_blocks.0", 1, 0), ("transformer_blocks.18", 19, 0), ("single_transformer_blocks.9", 19, 10),
            ("single_transformer_blocks.37", 19, 38)]
    print(json.dumps({"gflop_per_prompt": {k: round(v, 2) for k, v in g.items()}, "reference": round(ref, 1)}))
    rates = {"H100 BF16 at 40% of 989 TFLOP/s dense": 0.4 * 989e3, "H100 F32 at 40% of 67 TFLOP/s": 0.4 * 67e3}
    prompts = STEPS * PROMPTS_PER_STEP
    rpp = ROWS_PER_STEP // PROMPTS_PER_STEP
    for name, gf in rates.items():  # gf: GFLOP/s
        out = {"device": name, "reference_rows_per_s": round(rpp * gf / ref, 1)}
        for loc, nd, ns in locs:
            blocks = g["embed"] + nd * g["double"] + ns * g["single"]
            out[loc] = {"rows_per_s": round(rpp * gf / (blocks + enc)),
                        "rows_per_s_preencoded": round(rpp * gf / blocks)}
        out["published_6_runs_reference_h"] = round(PUBLISHED * prompts * ref / gf / 3600, 2)
        out["published_one_pass_h"] = round(prompts * (g["embed"] + 19 * g["double"] + 38 * g["single"] + enc)
                                            / gf / 3600, 2)
        out["published_one_pass_preencoded_h"] = round(prompts * (g["embed"] + 19 * g["double"] + 38 * g["single"])
                                                       / gf / 3600, 2)
        out["encode_once_h"] = round(prompts * enc / gf / 3600, 2)
        print(json.dumps(out))
    if a.model:
        w = weight_gb(a.model)
        print(json.dumps({"weights_gb_bf16": {k: round(v, 3) for k, v in w.items()}}))
        for loc, nd, ns in locs:
            print(json.dumps({"hook": loc, "transformer_weights_gb_bf16": round(w["embed"] + nd * w["double"]
                                                                                + ns * w["single"], 2)}))


def compose(a):
    R = {}
    for line in open(a.compose):
        line = line.strip()
        if line.startswith("{"):
            j = json.loads(line)
            if "part" in j:  # {"part": NAME, "r": one bench's JSON line, extras...}
                R[j["part"]] = dict(j["r"], **{k: v for k, v in j.items() if k not in ("part", "r")})
    rpp = a.rows_per_prompt

    def per_prompt(part, key, divide_by=None):
        r = R[part]
        return r[key] / (divide_by or r.get("batch") or r.get("B"))

    # --- measured parts, seconds per prompt (labelled "measured") ---
    sf_d0 = per_prompt("saeflow_d0", "s_per_batch")  # embed + double 0
    sf_d1 = per_prompt("saeflow_d1", "s_per_batch")  # embed + double 0, 1
    sf_s0 = per_prompt("saeflow_s0", "s_per_batch")  # embed + 2 double + single 0
    B_tf = R["saeflow_d0"]["batch"]
    # The parts are differences of three runs. Wall-time differences of separate runs swing
    # with the machine's load, so the split uses CPU seconds (user + sys of each timed
    # forward), scaled so that the parts add up to the wall time of the deepest run.
    c0, c1, c2 = (per_prompt("saeflow_" + k, "cpu_s_per_batch") for k in ("d0", "d1", "s0"))
    scale = sf_s0 / c2
    s = {"double": max(c1 - c0, 0.0) * scale, "single": max(c2 - c1, 0.0) * scale}
    s["embed"] = max(c0 * scale - s["double"], 0.0)
    print(json.dumps({"measured": "saeflow transformer runs, s per prompt", "wall": [sf_d0, sf_d1, sf_s0],
                      "cpu": [c0, c1, c2], "wall_differences": {"double": round(sf_d1 - sf_d0, 4),
                                                                "single": round(sf_s0 - sf_d1, 4)}}))
    s["t5"] = R["saeflow_t5"]["s_per_batch"] / R["saeflow_t5"]["B"] * T5_LAYERS / R["saeflow_t5"]["layers"]
    s["clip"] = per_prompt("saeflow_clip", "sec_per_batch")
    s["vae"] = R["saeflow_vae"]["s_per_decode"] / R["saeflow_vae"]["batch"]
    tb = R["torch_blocks"]
    t = {"embed": tb["s_embed"] / tb["batch"], "double": tb["s_double"] / tb["batch"],
         "single": tb["s_single"] / tb["batch"], "tail": tb["s_tail"] / tb["batch"]}
    t["t5"] = R["torch_t5"]["s_per_batch"] / R["torch_t5"]["B"] * T5_LAYERS / R["saeflow_t5"]["layers"]
    t["clip"] = R["torch_clip"]["sec_per_batch"] / R["torch_clip"]["batch"]
    t["vae"] = R["torch_vae"]["s_per_decode"] / R["saeflow_vae"]["batch"]
    for side, d in (("saeflow", s), ("diffusers", t)):
        print(json.dumps({"measured": side, "s_per_prompt": {k: round(v, 4) for k, v in d.items()},
                          "transformer_batch": B_tf, "note": "t5 = measured 2-layer XXL-width encoder x 12"}))

    if "saeflow_source_4hooks" in R:
        src = R["saeflow_source_4hooks"]
        print(json.dumps({"check": "saeflow extract --source flux, 4 hooks in one pass (.0:0, .0:1, .1:1, single .0)",
                          "wall_s_whole_command": src["wall_s"],
                          "bench_flux_forward_to_single_0_s": R["saeflow_s0"]["s_per_batch"],
                          "note": "the source pays its deepest hook's forward once; the wall time adds load, "
                                  "a cold pass and the write"}))

    # --- composition (labelled "derived"): seconds per prompt ---
    def ref(d):  # the reference: FluxPipeline, 1 step, all blocks, VAE decode
        return d["t5"] + d["clip"] + d["embed"] + N_DOUBLE * d["double"] + N_SINGLE * d["single"] + d["tail"] \
            + d["vae"]

    def stop(d, nd, ns, encode):  # stops after the last hooked block, no VAE
        return (d["t5"] + d["clip"] if encode else 0.0) + d["embed"] + nd * d["double"] + ns * d["single"]

    hooks = [("transformer_blocks.0", 1, 0, 1), ("transformer_blocks.18", 19, 0, 1),
             ("4 hooks: transformer_blocks.0:0, .0:1, .18:1, single_transformer_blocks.9", 19, 10, 4)]
    ref_s = ref(t)
    rows = []
    for name, nd, ns, nh in hooks:
        r = {"hook": name, "reference_s_per_prompt": ref_s * nh,
             "saeflow_s_per_prompt": stop(s, nd, ns, True), "saeflow_preencoded_s_per_prompt": stop(s, nd, ns, False),
             "torch_stopping_early_s_per_prompt": stop(t, nd, ns, True)}
        r["reference_rows_per_s"] = nh * rpp / r["reference_s_per_prompt"]
        r["saeflow_rows_per_s"] = nh * rpp / r["saeflow_s_per_prompt"]
        r["saeflow_preencoded_rows_per_s"] = nh * rpp / r["saeflow_preencoded_s_per_prompt"]
        r["ratio"] = r["reference_s_per_prompt"] / r["saeflow_s_per_prompt"]
        r["ratio_preencoded"] = r["reference_s_per_prompt"] / r["saeflow_preencoded_s_per_prompt"]
        r["ratio_method_only"] = r["reference_s_per_prompt"] / r["torch_stopping_early_s_per_prompt"]
        rows.append(r)
        print(json.dumps({"derived": {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()},
                          "rows_per_prompt_per_hook": rpp,
                          "reference_runs": nh}))

    # --- the reference's published runs on this machine (derived) ---
    prompts = STEPS * PROMPTS_PER_STEP
    pub_ref_h = PUBLISHED * prompts * ref_s / 3600
    pub_sf_h = prompts * stop(s, N_DOUBLE, N_SINGLE, True) / 3600
    pub_sf_pre_h = prompts * stop(s, N_DOUBLE, N_SINGLE, False) / 3600
    print(json.dumps({"derived": "published runs (6 SAEs x 4096 steps x 32 prompts) on this machine",
                      "reference_hours": round(pub_ref_h, 1), "saeflow_one_pass_hours": round(pub_sf_h, 1),
                      "saeflow_one_pass_preencoded_hours": round(pub_sf_pre_h, 1),
                      "encode_once_hours": round(prompts * (s["t5"] + s["clip"]) / 3600, 1)}))

    # --- the final table ---
    print()
    print(f"Rows/s to SAEs ({rpp} rows per prompt per hook = {ROWS_PER_STEP} per {PROMPTS_PER_STEP} prompts), "
          f"composed from parts measured at batch {B_tf}; threads {R['torch_blocks']['threads']}")
    print(f"{'hook':<34} {'reference':>10} {'saeflow':>10} {'ratio':>7} {'pre-enc':>10} {'ratio':>7} "
          f"{'method only':>12}")
    for r in rows:
        name = r["hook"] if len(r["hook"]) < 34 else "4 hooks, one pass vs 4 runs"
        print(f"{name:<34} {r['reference_rows_per_s']:>10.3f} {r['saeflow_rows_per_s']:>10.3f} "
              f"{r['ratio']:>6.1f}x {r['saeflow_preencoded_rows_per_s']:>10.3f} {r['ratio_preencoded']:>6.1f}x "
              f"{r['ratio_method_only']:>11.1f}x")
    print("reference = FluxPipeline (T5 + CLIP + 19 double + 38 single blocks + VAE decode) per hook run;"
          " saeflow = T5 + CLIP + blocks to the last hook (pre-enc: blocks only);"
          " method only = torch parts, stopping early, no VAE")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-clip")
    ap.add_argument("--make-prompts")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--blocks", action="store_true")
    ap.add_argument("--model")
    ap.add_argument("--inputs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--compose")
    ap.add_argument("--paper", action="store_true")
    ap.add_argument("--rows-per-prompt", type=int, default=ROWS_PER_STEP // PROMPTS_PER_STEP)
    a = ap.parse_args()
    if a.make_clip:
        make_clip(a.make_clip)
    elif a.make_prompts:
        make_prompts(a.make_prompts, a.batch)
    elif a.blocks:
        blocks(a)
    elif a.paper:
        paper(a)
    elif a.compose:
        compose(a)
    else:
        ap.error("one of --make-clip, --blocks, --compose")


if __name__ == "__main__":
    main()

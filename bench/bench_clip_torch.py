#!/usr/bin/env python3
"""transformers + torch half of bench/bench_clip.sh (same flags as bench_clip).

    bench_clip_torch.py --make-inputs FILE [--batch 8] [--text-batch 8] [--image-size 224]
    bench_clip_torch.py --model DIR --inputs FILE --tower vision|text --what layer:-2|pooled|embeds
                        [--tokens first|all|pooled] [--threads 2] [--warmup 1] [--iters 2] [--out FILE]
    bench_clip_torch.py --compare OURS.safetensors THEIRS.safetensors

The forward is what the reference project runs: CLIPVisionModel /
CLIPTextModel (sdpa attention, F32) under torch.inference_mode(), with
output_hidden_states=True when a hidden layer is asked for.
"""
import argparse
import json
import resource
import time

import torch
from safetensors.torch import load_file, save_file


def make_inputs(a):
    g = torch.Generator().manual_seed(7)
    px = torch.randn(a.batch, 3, a.image_size, a.image_size, generator=g)
    T = 77
    ids = torch.full((a.text_batch, T), 49407, dtype=torch.int32)
    mask = torch.zeros((a.text_batch, T), dtype=torch.int32)
    for b in range(a.text_batch):
        n = int(torch.randint(5, T + 1, (1,), generator=g))
        ids[b, 0] = 49406
        ids[b, 1:n - 1] = torch.randint(0, 49406, (n - 2,), generator=g, dtype=torch.int32)
        ids[b, n - 1] = 49407
        mask[b, :n] = 1
    save_file({"pixel_values": px, "input_ids": ids, "attention_mask": mask}, a.make_inputs)


def run(a):
    torch.set_num_threads(a.threads)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModel, CLIPVisionModelWithProjection
    t0 = time.perf_counter()
    text = a.tower == "text"
    if a.what == "embeds":
        cls = CLIPTextModelWithProjection if text else CLIPVisionModelWithProjection
    else:
        cls = CLIPTextModel if text else CLIPVisionModel
    import transformers
    transformers.logging.set_verbosity_error()  # the CLIPModel checkpoint has the other tower too
    model = cls.from_pretrained(a.model, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    inp = load_file(a.inputs)
    layer = int(a.what.split(":")[1]) if a.what.startswith("layer:") else None

    def fwd():
        if text:
            ids, mask = inp["input_ids"].long(), inp["attention_mask"].long()
            o = model(input_ids=ids, attention_mask=mask, output_hidden_states=layer is not None)
        else:
            o = model(pixel_values=inp["pixel_values"], output_hidden_states=layer is not None)
        if a.what == "embeds":
            return o.text_embeds if text else o.image_embeds
        if a.what == "pooled":
            return o.pooler_output
        h = o.hidden_states[layer]
        if a.tokens == "all":
            return h.reshape(h.shape[0], -1)
        if a.tokens == "first" or not text:
            return h[:, 0]
        eos = model.config.eos_token_id
        ids = inp["input_ids"].long()
        pos = ids.argmax(-1) if eos == 2 else (ids == eos).int().argmax(-1)
        return h[torch.arange(h.shape[0]), pos]

    times, cpu = [], 0.0
    with torch.inference_mode():
        for i in range(a.warmup + a.iters):
            s, c = time.perf_counter(), time.process_time()
            y = fwd()
            e = time.perf_counter() - s
            if i >= a.warmup:
                times.append(e)
                cpu += time.process_time() - c
    B = y.shape[0]
    per = sum(times) / len(times)
    print(json.dumps({"impl": "torch", "tower": a.tower, "what": a.what, "tokens": a.tokens, "dtype": "f32",
                      "threads": a.threads, "batch": B, "iters": a.iters, "sec_per_batch": round(per, 4),
                      "best_sec": round(min(times), 4), "items_per_s": round(B / per, 4),
                      "cpu_s_per_batch": round(cpu / len(times), 3), "load_s": round(load_s, 3),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "torch": torch.__version__}))
    if a.out:
        save_file({"out": y.float().contiguous()}, a.out)


def compare(ours, theirs):
    x, y = load_file(ours)["out"].double(), load_file(theirs)["out"].double()
    y = y.reshape(x.shape)
    d = (x - y).abs().max().item()
    print(json.dumps({"max_abs_err": d, "rel_err": d / y.abs().max().item()}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-inputs")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--model")
    ap.add_argument("--inputs")
    ap.add_argument("--tower", default="vision")
    ap.add_argument("--what", default="layer:-2")
    ap.add_argument("--tokens", default="first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2)
    a = ap.parse_args()
    if a.make_inputs:
        make_inputs(a)
    elif a.compare:
        compare(*a.compare)
    else:
        run(a)

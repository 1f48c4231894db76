"""The torch half of bench/bench_t5.sh.

  bench_t5_torch.py make-model DIR            random T5 with XXL widths, 2 layers, BF16 (seeded)
  bench_t5_torch.py make-captions TOKJSON OUT  400 caption-like strings (seeded)
  bench_t5_torch.py tok TOKJSON CAPTIONS MAXLEN ITERS
  bench_t5_torch.py model DIR B T ITERS THREADS [OUT]   (F32 compute from the BF16 weights)
  bench_t5_torch.py compare OURS THEIRS
"""
import json
import random
import sys
import time

import torch


def best_of(fn, iters):
    fn()
    best = 1e30
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


cmd = sys.argv[1]
if cmd == "make-model":
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=32128, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=2,
                   feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    T5EncoderModel(cfg).to(torch.bfloat16).save_pretrained(sys.argv[2])
elif cmd == "make-captions":
    rng = random.Random(0)
    words = "a photo of the cat dog sitting on red blue wooden table in front house with two people " \
            "walking beach sunset city street at night painting style close-up view".split()
    with open(sys.argv[3], "w") as f:
        for _ in range(400):
            f.write(" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))).capitalize() + ".\n")
elif cmd == "tok":
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(sys.argv[2]), pad_token="<pad>",
                                  eos_token="</s>")
    caps = open(sys.argv[3]).read().splitlines()
    L, iters = int(sys.argv[4]), int(sys.argv[5])

    def run():  # as diffusers calls it, one caption at a time
        for c in caps:
            tok(c, padding="max_length", max_length=L, truncation=True)

    print(json.dumps({"what": "tokenizer", "captions": len(caps), "s_per_caption": best_of(run, iters) / len(caps)}))
elif cmd == "model":
    from transformers import T5EncoderModel

    d, B, T, iters, threads = sys.argv[2], *map(int, sys.argv[3:7])
    torch.set_num_threads(threads)
    m = T5EncoderModel.from_pretrained(d, torch_dtype=torch.float32).eval()
    V = m.config.vocab_size
    ids = torch.tensor([[(b * 7919 + t * 104729) % V for t in range(T)] for b in range(B)])
    out = {}

    def run():
        with torch.no_grad():
            out["y"] = m(input_ids=ids).last_hidden_state

    s = best_of(run, iters)
    print(json.dumps({"what": "encoder", "B": B, "T": T, "threads": threads, "s_per_batch": s}))
    if len(sys.argv) > 7:
        from safetensors.torch import save_file

        save_file({"last_hidden_state": out["y"].contiguous()}, sys.argv[7])
elif cmd == "compare":
    from safetensors.torch import load_file

    a = load_file(sys.argv[2])["last_hidden_state"]
    b = load_file(sys.argv[3])["last_hidden_state"]
    print(json.dumps({"max_rel_err": float((a - b).abs().max() / b.abs().max())}))

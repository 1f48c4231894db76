#!/usr/bin/env python3
"""Tiny random-weight CLIP checkpoints in the real Hugging Face layout, plus
what transformers computes from them, for saeflow's C tests.

    python tools/make_clip_fixtures.py [--out fixtures/clip]
    python tools/make_clip_fixtures.py --full-l14 /tmp/clip-l14   # benchmark model, not committed

Each model lives in OUT/<name>/ (config.json + model.safetensors, written by
save_pretrained(safe_serialization=True)); OUT/<name>.expected.safetensors
holds the inputs and transformers' outputs:
  pixel_values (B,C,S,S) F32, input_ids (B,T) I32, attention_mask (B,T) I32
  vision.hidden_states.<i> (B,Tv,Dv) for i = 0..L, vision.pooler_output,
  vision.image_embeds; text.hidden_states.<i> (B,T,Dt), text.pooler_output,
  text.last_hidden_state, text.text_embeds (whichever the model has).

Models:
  tiny       CLIPModel, quick_gelu, vision 64-d/3 layers/image 32/patch 8,
             text 48-d/2 layers, eos = pad = vocab-1 (CLIP's convention)
  gelu       CLIPModel, hidden_act gelu, image 30/patch 6, legacy eos_token_id 2
             (transformers then pools at argmax(input_ids)); one caption holds a
             token id above EOS so argmax and "first EOS" differ; pad id 0
  gelu_sharded  the same weights saved with a small max_shard_size (index.json)
  b32        CLIPVisionModel alone (transformers 5 names it without the
             vision_model. prefix), patch 32 on a 64 image: B/32-like shapes
  text_proj  CLIPTextModelWithProjection alone
  bf16       tiny-like CLIPModel saved in BF16; expected outputs are the F32
             forward of the BF16-rounded weights (saeflow computes in F32)
  e2e        for `saeflow extract`: a tiny CLIPModel with a processor
             (preprocessor_config.json at 32 px) and a compact CLIP tokenizer
             (the 512 byte tokens + the first 300 merges of the real CLIP
             vocabulary, renumbered, so the embedding table stays small);
             e2e.expected.safetensors holds what the reference pipeline
             (Pillow + CLIPProcessor + CLIPModel) gives for the images in
             fixtures/clip-inputs/images and the captions in e2e_captions.txt:
             vision = hidden_states[-2][:, 0], text = pooler_output,
             text_l1 = hidden_states[1] at every non-padding token (+ rows, pos)
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                          CLIPVisionModel)


def vision_cfg(**kw):
    base = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=3, image_size=32,
                patch_size=8, projection_dim=32)
    base.update(kw)
    return base


def text_cfg(**kw):
    base = dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2, vocab_size=256,
                max_position_embeddings=16, projection_dim=32, bos_token_id=254, eos_token_id=255, pad_token_id=255)
    base.update(kw)
    return base


def make_ids(vocab, bos, eos, pad, T, lengths, gen, extra=None):
    """Captions of the given lengths (including BOS/EOS), padded to T."""
    ids = torch.full((len(lengths), T), pad, dtype=torch.int64)
    mask = torch.zeros((len(lengths), T), dtype=torch.int64)
    for b, n in enumerate(lengths):
        body = torch.randint(1, min(bos, eos) - 1, (n - 2,), generator=gen)
        ids[b, 0] = bos
        ids[b, 1:n - 1] = body
        ids[b, n - 1] = eos
        mask[b, :n] = 1
    if extra:
        for (b, t, v) in extra:
            ids[b, t] = v
    return ids, mask


def randomize_(model, gen):
    """Re-draw every parameter with a larger spread than the HF init, so that
    layer norms, attention and the MLPs all do non-trivial work (the default
    init leaves biases at 0 and LayerNorm at identity)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                continue
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def record(out, model, pixel_values=None, ids=None, mask=None):
    t = {}
    with torch.no_grad():
        vis = getattr(model, "vision_model", None) if not isinstance(model, CLIPVisionModel) else model
        txt = getattr(model, "text_model", None)
        if isinstance(model, CLIPTextModelWithProjection):
            txt = model.text_model
        if vis is not None and pixel_values is not None:
            t["pixel_values"] = pixel_values.float().contiguous()
            o = vis(pixel_values=pixel_values, output_hidden_states=True)
            for i, h in enumerate(o.hidden_states):
                t[f"vision.hidden_states.{i}"] = h.float().contiguous()
            t["vision.pooler_output"] = o.pooler_output.float().contiguous()
            if hasattr(model, "visual_projection"):
                t["vision.image_embeds"] = model.visual_projection(o.pooler_output).float().contiguous()
        if txt is not None and ids is not None:
            t["input_ids"] = ids.to(torch.int32).contiguous()
            t["attention_mask"] = mask.to(torch.int32).contiguous()
            o = txt(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            for i, h in enumerate(o.hidden_states):
                t[f"text.hidden_states.{i}"] = h.float().contiguous()
            t["text.pooler_output"] = o.pooler_output.float().contiguous()
            t["text.last_hidden_state"] = o.last_hidden_state.float().contiguous()
            if hasattr(model, "text_projection"):
                t["text.text_embeds"] = model.text_projection(o.pooler_output).float().contiguous()
    save_file(t, out)


def save(model, d, **kw):
    if os.path.exists(d):
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True, **kw)


def build(out):
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(20261126)

    # tiny CLIPModel (+ the same weights sharded)
    cfg = CLIPConfig(vision_config=vision_cfg(), text_config=text_cfg(), projection_dim=32)
    m = CLIPModel(cfg).eval()
    randomize_(m, gen)
    px = torch.randn(3, 3, 32, 32, generator=gen)
    ids, mask = make_ids(256, 254, 255, 255, 16, [16, 5, 9, 2], gen)
    save(m, f"{out}/tiny")
    record(f"{out}/tiny.expected.safetensors", m, px, ids, mask)

    # gelu, 30/6 image, legacy eos id 2 with argmax pooling, pad 0
    cfg = CLIPConfig(vision_config=vision_cfg(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                              num_hidden_layers=2, image_size=30, patch_size=6, hidden_act="gelu",
                                              layer_norm_eps=1e-6),
                     text_config=text_cfg(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                          hidden_act="gelu", eos_token_id=2, pad_token_id=0, bos_token_id=1),
                     projection_dim=24)
    m = CLIPModel(cfg).eval()
    randomize_(m, gen)
    px = torch.randn(2, 3, 30, 30, generator=gen)
    # EOS is id 254 here; caption 1 carries id 255 at position 3, so argmax
    # pools there, which is what transformers does for eos_token_id == 2.
    ids, mask = make_ids(256, 253, 254, 0, 12, [12, 7, 4], gen, extra=[(1, 3, 255)])
    save(m, f"{out}/gelu")
    save(m, f"{out}/gelu_sharded", max_shard_size="60KB")
    record(f"{out}/gelu.expected.safetensors", m, px, ids, mask)

    # B/32-like vision tower alone
    m = CLIPVisionModel(CLIPVisionConfig(**vision_cfg(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                                       num_hidden_layers=2, image_size=64, patch_size=32))).eval()
    randomize_(m, gen)
    px = torch.randn(2, 3, 64, 64, generator=gen)
    save(m, f"{out}/b32")
    record(f"{out}/b32.expected.safetensors", m, pixel_values=px)

    # text tower with projection alone
    m = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg(hidden_size=32, intermediate_size=64,
                                                                         num_hidden_layers=3))).eval()
    randomize_(m, gen)
    ids, mask = make_ids(256, 254, 255, 255, 10, [10, 3, 6], gen)
    save(m, f"{out}/text_proj")
    record(f"{out}/text_proj.expected.safetensors", m, ids=ids, mask=mask)

    # BF16 checkpoint: reference = F32 compute on the rounded weights
    cfg = CLIPConfig(vision_config=vision_cfg(num_hidden_layers=2), text_config=text_cfg(), projection_dim=32)
    m = CLIPModel(cfg).eval()
    randomize_(m, gen)
    m = m.to(torch.bfloat16)
    save(m, f"{out}/bf16")
    m = m.float()
    px = torch.randn(2, 3, 32, 32, generator=gen)
    ids, mask = make_ids(256, 254, 255, 255, 16, [7, 16], gen)
    record(f"{out}/bf16.expected.safetensors", m, px, ids, mask)

    e2e(out, gen)

    with open(f"{out}/README.md", "w") as f:
        f.write("Made by tools/make_clip_fixtures.py (transformers %s, torch %s); see its docstring.\n"
                % (__import__("transformers").__version__, torch.__version__))


E2E_CAPTIONS = [
    "a photo of a cat", "A DOG running on the beach!", "two people, one bicycle & 3 trees",
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e at na\u00efve prices", "\u6771\u4eac\u30bf\u30ef\u30fc at night",
    "emoji time \U0001F600\U0001F408\u200d\u2b1b!!", "   lots   of\twhitespace   ", "",
    "numbers 1234567 and 3.14159", "it's a dog's life, isn't it?", "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "a very long caption " + "that keeps going and going " * 12 + "until it is truncated",
    "red/green/blue: rgb", "UPPER lower MiXeD", "\u00bfqu\u00e9 tal?", "tab\tand\nnewline",
    "a photo of a photo of a photo", "x", "the end.", "one more caption for the twentieth image",
]


def compact_tokenizer(vocab_dir, n_merges=300):
    """The real CLIP BPE, cut down: byte tokens, the first merges, specials."""
    from transformers import CLIPTokenizer
    vocab = json.load(open(os.path.join(vocab_dir, "vocab.json"), encoding="utf-8"))
    merges = open(os.path.join(vocab_dir, "merges.txt"), encoding="utf-8").read().split("\n")[1:n_merges + 1]
    inv = sorted(vocab.items(), key=lambda kv: kv[1])
    small = {k: i for i, (k, _) in enumerate(inv[:512])}
    for m in merges:
        a, b = m.split()
        small.setdefault(a + b, len(small))
    small["<|startoftext|>"] = len(small)
    small["<|endoftext|>"] = len(small)
    return CLIPTokenizer(vocab=small, merges=[tuple(m.split()) for m in merges])


def e2e(out, gen):
    from PIL import Image
    # The PIL-backed processor (transformers 5 renamed it; its plain
    # CLIPImageProcessor is now the torchvision one, which resizes
    # differently). It is what the reference ran and what saeflow matches.
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    here = os.path.dirname(os.path.abspath(__file__))
    inputs = os.path.join(here, "..", "fixtures", "clip-inputs")
    tok = compact_tokenizer(inputs)
    V = len(tok.get_vocab())
    cfg = CLIPConfig(vision_config=vision_cfg(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                              num_hidden_layers=3),
                     text_config=text_cfg(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                          vocab_size=V, max_position_embeddings=77,
                                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                          pad_token_id=tok.pad_token_id),
                     projection_dim=16)
    m = CLIPModel(cfg).eval()
    randomize_(m, gen)
    d = f"{out}/e2e"
    save(m, d)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(d)
    tok.save_pretrained(d)
    imgdir = os.path.join(inputs, "images")
    exts = (".jpg", ".jpeg", ".png", ".webp")
    names = sorted(n for n in os.listdir(imgdir) if n.lower().endswith(exts) and not n.startswith("."))
    names = sorted(names, key=lambda n: n.encode())
    caps = (E2E_CAPTIONS * ((len(names) + len(E2E_CAPTIONS) - 1) // len(E2E_CAPTIONS)))[:len(names)]
    with open(f"{out}/e2e_captions.txt", "w", encoding="utf-8") as f:
        for c in caps:
            f.write(c.replace("\n", " ").replace("\r", " ") + "\n")
    caps = [c.replace("\n", " ").replace("\r", " ") for c in caps]
    # Pillow's convert("RGB") (alpha dropped), handed over as fresh pixels:
    # a converted image keeps info["transparency"], on which transformers 5's
    # convert_to_rgb would composite onto white (docs/inputs.md).
    import numpy as np
    images = [Image.fromarray(np.array(Image.open(os.path.join(imgdir, n)).convert("RGB"))) for n in names]
    px = proc(images=images, return_tensors="pt")["pixel_values"]
    enc = tok(caps, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        vo = m.vision_model(pixel_values=px, output_hidden_states=True)
        to = m.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
    h1 = to.hidden_states[1]
    mask = enc["attention_mask"].bool()
    rows = torch.arange(len(caps)).unsqueeze(1).expand_as(mask)[mask]
    pos = torch.arange(77).unsqueeze(0).expand_as(mask)[mask]
    save_file({"vision": vo.hidden_states[-2][:, 0].contiguous(), "text": to.pooler_output.contiguous(),
               "text_l1": h1[mask].contiguous(), "text_l1_rows": rows.contiguous(),
               "text_l1_pos": pos.to(torch.int32).contiguous(), "input_ids": enc["input_ids"].to(torch.int32),
               "pixel_values": px.contiguous()},
              f"{out}/e2e.expected.safetensors", metadata={"images": "\n".join(names)})


def full_l14(out):
    """openai/clip-vit-large-patch14's config with random weights (~1.7 GB)."""
    cfg = CLIPConfig(
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                           image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                         max_position_embeddings=77, vocab_size=49408, projection_dim=768, hidden_act="quick_gelu",
                         bos_token_id=0, eos_token_id=2, pad_token_id=1),
        projection_dim=768)
    torch.manual_seed(0)
    m = CLIPModel(cfg).eval()
    save(m, out)
    print("wrote", out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures", "clip"))
    ap.add_argument("--full-l14", metavar="OUTDIR", help="write a random-weight ViT-L/14 CLIPModel there instead")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.full_l14:
        full_l14(a.full_l14)
    else:
        build(a.out)
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(a.out) for f in fs)
        print(json.dumps({"out": a.out, "bytes": total}))

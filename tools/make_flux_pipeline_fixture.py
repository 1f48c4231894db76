#!/usr/bin/env python3
"""A tiny FLUX pipeline folder written by diffusers, and what FluxPipeline
computes with it, for saeflow's `flux generate` tests (tests/pipeline/
test_flux_generate.c, tests/cli/test_cli_flux_generate.c).

    /work/venv/bin/python tools/make_flux_pipeline_fixture.py [--out fixtures/flux-pipe]

OUT/schnell/  FluxPipeline folder (model_index.json + one folder per part):
  transformer/     new tiny FluxTransformer2DModel (in 16, 2 double + 2
                   single blocks, 2 heads x 16, axes [4,6,6], joint 32,
                   pooled 32, no guidance), F32, saved by diffusers
  scheduler/       FlowMatchEulerDiscreteScheduler, schnell's config (shift 1)
  vae/             -> ../../vae/tiny/vae (AutoencoderKL latent 4, (8,8,16,16),
                   scaling 0.3611, shift 0.1159)
  text_encoder/    -> ../../clip/e2e (tiny CLIP, hidden 32)
  tokenizer/       CLIP tokenizer.json (-> clip/e2e's) + model_max_length 77
  text_encoder_2/  -> ../../t5/flux_text_encoder_2 (tiny T5, d_model 32, BF16)
  tokenizer_2/     T5 tokenizer.json (-> t5/'s) + config
The reused parts are symlinks to the other fixtures (size); the pipeline is
loaded back with FluxPipeline.from_pretrained(OUT/schnell), so diffusers
reads exactly this folder.
OUT/dev/      FLUX.1-dev style: a transformer with guidance_embeds, the dev
              scheduler (dynamic shift, exponential); other parts -> schnell's.

OUT/expected.safetensors, per case C (metadata "cases" lists them, with
prompt, seed, steps, height, width, guidance, max_sequence_length, model):
  C.prompt_embeds (1, L, 32), C.pooled (1, 32)    encode_prompt
  C.latents_init (1, N, 16)   packed initial noise (prepare_latents, CPU
                              generator manual_seed(seed))
  C.step.<i> (1, N, 16)       packed latents after Euler step i
  C.image (H, W, 3) U8        the PIL output (VaeImageProcessor.postprocess)
Deterministic (seeded); all F32 (bf16 would round t: flux-facts.md 3).
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file

from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_flux_fixtures import build  # noqa: E402  (random tiny transformer, same init)

L = 16  # max_sequence_length


def symlink(target, link):
    if os.path.lexists(link):
        os.remove(link) if os.path.islink(link) or os.path.isfile(link) else shutil.rmtree(link)
    os.symlink(target, link)


def write_folder(out, name, transformer, sched_cfg, share_from=None):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    transformer.save_pretrained(os.path.join(d, "transformer"), safe_serialization=True)
    FlowMatchEulerDiscreteScheduler(**sched_cfg).save_pretrained(os.path.join(d, "scheduler"))
    if share_from:
        for part in ("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"):
            symlink(os.path.join("..", share_from, part), os.path.join(d, part))
    else:
        symlink("../../vae/tiny/vae", os.path.join(d, "vae"))
        symlink("../../clip/e2e", os.path.join(d, "text_encoder"))
        symlink("../../t5/flux_text_encoder_2", os.path.join(d, "text_encoder_2"))
        os.makedirs(os.path.join(d, "tokenizer"))
        symlink("../../../clip/e2e/tokenizer.json", os.path.join(d, "tokenizer", "tokenizer.json"))
        json.dump({"backend": "tokenizers", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                   "model_max_length": 77, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
                   "unk_token": "<|endoftext|>"}, open(os.path.join(d, "tokenizer", "tokenizer_config.json"), "w"),
                  indent=2)
        os.makedirs(os.path.join(d, "tokenizer_2"))
        symlink("../../../t5/tokenizer.json", os.path.join(d, "tokenizer_2", "tokenizer.json"))
        json.dump({"backend": "tokenizers", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "model_max_length": 512, "tokenizer_class": "T5Tokenizer"},
                  open(os.path.join(d, "tokenizer_2", "tokenizer_config.json"), "w"), indent=2)
    # model_index.json as diffusers writes it (class names of each part)
    json.dump({"_class_name": "FluxPipeline", "_diffusers_version": "0.42.1",
               "feature_extractor": [None, None], "image_encoder": [None, None],
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": ["transformers", "CLIPTextModel"],
               "text_encoder_2": ["transformers", "T5EncoderModel"],
               "tokenizer": ["transformers", "CLIPTokenizer"],
               "tokenizer_2": ["transformers", "PreTrainedTokenizerFast"],
               "transformer": ["diffusers", "FluxTransformer2DModel"],
               "vae": ["diffusers", "AutoencoderKL"]},
              open(os.path.join(d, "model_index.json"), "w"), indent=2)
    return d


def run_case(pipe, name, prompt, seed, steps, height, width, guidance, out):
    rec = {}
    orig = pipe.prepare_latents

    def prep(*a, **k):
        r = orig(*a, **k)
        rec["latents_init"] = r[0].clone()
        return r

    pipe.prepare_latents = prep

    def cb(p, i, t, kw):
        rec[f"step.{i}"] = kw["latents"].clone()
        return kw

    with torch.no_grad():
        pe, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, max_sequence_length=L)
        img = pipe(prompt=prompt, height=height, width=width, num_inference_steps=steps,
                   guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed),
                   max_sequence_length=L, output_type="pil", callback_on_step_end=cb).images[0]
    pipe.prepare_latents = orig
    out[f"{name}.prompt_embeds"] = pe.contiguous()
    out[f"{name}.pooled"] = pooled.contiguous()
    for k, v in rec.items():
        out[f"{name}.{k}"] = v.float().contiguous()
    a = np.array(img)
    out[f"{name}.image"] = torch.from_numpy(a.copy())
    print(f"{name}: latents {tuple(rec['latents_init'].shape)}, image {a.shape}, mean {a.mean():.1f}, "
          f"std {a.std():.1f}, zeros {(a == 0).mean():.2f}, 255s {(a == 255).mean():.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures", "flux-pipe"))
    out = os.path.abspath(ap.parse_args().out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    base = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                axes_dims_rope=(4, 6, 6))
    tr_s = build(11, guidance_embeds=False, **base)
    tr_d = build(12, guidance_embeds=True, **base)
    schnell_sched = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    dev_sched = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                     max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    write_folder(out, "schnell", tr_s, schnell_sched)
    write_folder(out, "dev", tr_d, dev_sched, share_from="schnell")
    cases = [
        ("schnell_1", "schnell", "a photo of a cat", 42, 1, 48, 64, 0.0),
        ("schnell_4", "schnell", "a photo of a cat", 42, 4, 48, 64, 0.0),
        ("schnell_4b", "schnell", "A DOG running on the beach!", 42, 4, 48, 64, 0.0),
        ("dev_1", "dev", "a red cube on a table", 7, 1, 64, 48, 3.5),
        ("dev_4", "dev", "a red cube on a table", 7, 4, 64, 48, 3.5),
    ]
    res, meta = {}, []
    for model in ("schnell", "dev"):
        pipe = FluxPipeline.from_pretrained(os.path.join(out, model), torch_dtype=torch.float32)
        assert pipe.tokenizer.model_max_length == 77 and pipe.vae_scale_factor == 8
        for c in cases:
            if c[1] != model:
                continue
            name, _, prompt, seed, steps, h, w, g = c
            run_case(pipe, name, prompt, seed, steps, h, w, g, res)
            meta.append(dict(name=name, model=model, prompt=prompt, seed=seed, steps=steps, height=h,
                             width=w, guidance=g, max_sequence_length=L))
    save_file(res, os.path.join(out, "expected.safetensors"), metadata={"cases": json.dumps(meta)})
    total = 0
    for root, _, files in os.walk(out):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    print(f"fixtures in {out}: {total / 1e6:.2f} MB (own files, symlinks not counted)")


if __name__ == "__main__":
    main()

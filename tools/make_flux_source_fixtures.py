#!/usr/bin/env python3
"""What the reference's FLUX activation sampler sees, on the tiny FLUX model
fixtures/flux/a, for saeflow's FLUX activation source (src/pipeline/flux_source.c).

    /work/venv/bin/python tools/make_flux_source_fixtures.py [--out fixtures/flux_source]

The reference (RE-N-Y/sae fluxsae.py) calls diffusers' FluxPipeline with
height=width=256, num_inference_steps=1, guidance_scale=0 and reads a forward
hook on one block. Here the same FluxPipeline (real class, real scheduler, no
text encoders or VAE: prompt_embeds are given and output_type="latent") runs
the tiny transformer at 64 x 32 px (non-square, so a transposed grid shows),
1 step, guidance 0, batch 2, the prompts split in groups of 2 in order, group
g drawing its noise from torch.Generator("cpu").manual_seed(SEED + g).

OUT/prompts.safetensors  (as `saeflow flux encode-prompts` writes it)
  prompt_embeds (5, 6, 32), pooled_prompt_embeds (5, 24), random N(0, 1) F32
OUT/expected.safetensors  all F32, (5, rows, 32), every token, group order:
  transformer_blocks.<i>.{0,1}          block output stream 0 (text) / 1 (image)
  transformer_blocks.<i>.{0,1}.in       block input
  single_transformer_blocks.<i>         output cat[text; image] (diffusers >= 0.35
                                        returns (text, image): concatenated, as
                                        the 2024 code's single tensor)
  single_transformer_blocks.<i>.in      input cat[text; image]
metadata: seed, batch, height, width.
OUT/c/transformer  a tiny random transformer taking the widths of the tiny text
  encoders (fixtures/clip/e2e, fixtures/t5/flux_text_encoder_2: joint 32, pooled
  32), 1 double + 1 single block, for the on-the-fly prompt encoding test (which
  compares against the same source fed an encode-prompts file).
"""
import argparse
import os

import torch
from safetensors.torch import save_file

from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

SEED, BATCH, HEIGHT, WIDTH, P, T = 7, 2, 64, 32, 5, 6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/flux_source")
    ap.add_argument("--model", default="fixtures/flux/a")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    tr = FluxTransformer2DModel.from_pretrained(os.path.join(args.model, "transformer")).float().eval()
    cfg = tr.config
    g = torch.Generator().manual_seed(123)
    pe = torch.randn(P, T, cfg.joint_attention_dim, generator=g)
    po = torch.randn(P, cfg.pooled_projection_dim, generator=g)
    save_file({"prompt_embeds": pe.contiguous(), "pooled_prompt_embeds": po.contiguous()},
              os.path.join(args.out, "prompts.safetensors"), metadata={"max_sequence_length": str(T)})

    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=tr)
    pipe.set_progress_bar_config(disable=True)
    caught = {}

    def keep(name, pre):
        def f(mod, a, kw, out=None):
            if pre:  # inputs: (hidden_states, encoder_hidden_states) by keyword
                img, txt = kw["hidden_states"], kw["encoder_hidden_states"]
                caught[name] = (txt, img)
            else:
                caught[name] = out
        return f

    for i in range(cfg.num_layers):
        m = tr.transformer_blocks[i]
        m.register_forward_pre_hook(keep(f"transformer_blocks.{i}.in", True), with_kwargs=True)
        m.register_forward_hook(keep(f"transformer_blocks.{i}", False), with_kwargs=True)
    for i in range(cfg.num_single_layers):
        m = tr.single_transformer_blocks[i]
        m.register_forward_pre_hook(keep(f"single_transformer_blocks.{i}.in", True), with_kwargs=True)
        m.register_forward_hook(keep(f"single_transformer_blocks.{i}", False), with_kwargs=True)

    acts = {}
    for g0 in range(0, P, BATCH):
        caught.clear()
        gi = g0 // BATCH
        sl = slice(g0, min(P, g0 + BATCH))
        with torch.no_grad():
            pipe(prompt_embeds=pe[sl], pooled_prompt_embeds=po[sl], height=HEIGHT, width=WIDTH,
                 num_inference_steps=1, guidance_scale=0.0, max_sequence_length=T,
                 generator=torch.Generator("cpu").manual_seed(SEED + gi), output_type="latent")
        for name, v in caught.items():
            base, sfx = (name[:-3], ".in") if name.endswith(".in") else (name, "")
            if base.startswith("transformer_blocks"):
                # block output = (encoder_hidden_states, hidden_states): 0 text, 1 image
                for s in (0, 1):
                    acts.setdefault(f"{base}.{s}{sfx}", []).append(v[s])
            else:
                x = torch.cat(list(v), 1) if isinstance(v, tuple) else v
                acts.setdefault(base + sfx, []).append(x)
    out = {k: torch.cat(v, 0).float().contiguous() for k, v in acts.items()}
    for k, v in out.items():
        assert v.shape[0] == P and torch.isfinite(v).all(), k
    save_file(out, os.path.join(args.out, "expected.safetensors"),
              metadata={"seed": str(SEED), "batch": str(BATCH), "height": str(HEIGHT), "width": str(WIDTH)})
    print({k: tuple(v.shape) for k, v in out.items()})

    torch.manual_seed(5)
    c = FluxTransformer2DModel(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                               num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                               guidance_embeds=False, axes_dims_rope=(4, 6, 6)).float().eval()
    with torch.no_grad():
        for p in c.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 2 else 0.5))
    c.save_pretrained(os.path.join(args.out, "c", "transformer"), safe_serialization=True)


if __name__ == "__main__":
    main()

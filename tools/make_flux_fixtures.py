#!/usr/bin/env python3
"""Tiny random-weight FLUX.1 transformers (diffusers FluxTransformer2DModel),
built offline, plus what diffusers computes from them, for saeflow's C tests.

    /work/venv/bin/python tools/make_flux_fixtures.py [--out fixtures/flux]

Models (OUT/<name>/):
  a         schnell's shape family, tiny: in 16, 2 double + 2 single blocks,
            2 heads x 16 (D 32), axes [4,6,6], joint 32, pooled 24, no guidance.
            transformer/config.json + diffusion_pytorch_model.safetensors (F32).
  a_bfl.safetensors
            the same weights in Black Forest Labs' single-file layout (fused
            qkv, single-block linear1/linear2, final-norm halves swapped,
            "model.diffusion_model." prefix), no config. The tool checks that
            diffusers' own convert_flux_transformer_checkpoint_to_diffusers
            maps it back to exactly a's state dict.
  a_bf16    a's weights rounded to BF16 and stored as BF16 (diffusers layout).
            Expected outputs: diffusers in F32 on the BF16-rounded weights.
  a_fp8.safetensors
            a's weights in the BFL layout with every matrix in float8_e4m3fn and
            every vector in BF16 (as FP8 community checkpoints ship). Expected
            outputs: diffusers in F32 on those rounded values.
  b         FLUX.1-dev-like: guidance_embeds, 2 heads x 20 (D 40), axes
            [4,10,6] (unequal widths), in 12, joint 40, pooled 20, 2 double +
            2 single blocks; saved SHARDED (max_shard_size small) with
            diffusion_pytorch_model.safetensors.index.json.

OUT/<name>.expected.safetensors: inputs and diffusers' activations, all F32:
  inputs:  hidden_states (B, N, in) packed latents; encoder_hidden_states
           (B, T, joint); pooled_projections (B, pooled); timestep (B) sigma;
           img_ids (N, 3); txt_ids (T, 3); guidance (B) (b only);
           latents (B, in/4, h, w) unpacked (a only: the packing is checked)
  transformer_blocks.<i>.in.{0,1}    block input  (0 = text, 1 = image)
  transformer_blocks.<i>.out.{0,1}   block output (0 = text, 1 = image)
  single_transformer_blocks.<i>.in   cat[text; image] (B, T + N, D)
  single_transformer_blocks.<i>.out  cat[text; image] (B, T + N, D)
  temb (B, D), output (B, N, in) the model's sample
Hooks are forward (pre-)hooks on the real modules; diffusers >= 0.35 single
blocks return (text, image), concatenated here as the 2024 code returned it.
"""
import argparse
import inspect
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from diffusers import FluxPipeline, FluxTransformer2DModel
from diffusers.loaders import single_file_utils


def build(seed, **cfg):
    torch.manual_seed(seed)
    m = FluxTransformer2DModel(**cfg).float().eval()
    # Random everything (norm scales start at 1, biases and the AdaLN
    # modulations get values of order one so every term matters).
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or "norm_added" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return m


def pack(lat):
    # (B, C, h, w) -> (B, h/2 * w/2, 4C), channel = 4c + 2dy + dx: the pipeline's own code
    B, C, h, w = lat.shape
    return FluxPipeline._pack_latents(lat, B, C, h, w)


def img_ids(h2, w2):
    return FluxPipeline._prepare_latent_image_ids(1, h2, w2, "cpu", torch.float32)


def run(m, inputs):
    acts = {}

    def pre_double(i):
        def f(mod, args, kwargs):
            acts[f"transformer_blocks.{i}.in.0"] = kwargs["encoder_hidden_states"]
            acts[f"transformer_blocks.{i}.in.1"] = kwargs["hidden_states"]
        return f

    def post_double(i):
        def f(mod, args, kwargs, out):
            acts[f"transformer_blocks.{i}.out.0"] = out[0]
            acts[f"transformer_blocks.{i}.out.1"] = out[1]
        return f

    def pre_single(i):
        def f(mod, args, kwargs):
            acts[f"single_transformer_blocks.{i}.in"] = torch.cat(
                [kwargs["encoder_hidden_states"], kwargs["hidden_states"]], 1)
        return f

    def post_single(i):
        def f(mod, args, kwargs, out):
            acts[f"single_transformer_blocks.{i}.out"] = torch.cat([out[0], out[1]], 1)
        return f

    hs = []
    for i, b in enumerate(m.transformer_blocks):
        hs.append(b.register_forward_pre_hook(pre_double(i), with_kwargs=True))
        hs.append(b.register_forward_hook(post_double(i), with_kwargs=True))
    for i, b in enumerate(m.single_transformer_blocks):
        hs.append(b.register_forward_pre_hook(pre_single(i), with_kwargs=True))
        hs.append(b.register_forward_hook(post_single(i), with_kwargs=True))
    hs.append(m.time_text_embed.register_forward_hook(lambda mod, a, out: acts.__setitem__("temb", out)))
    kw = {k: inputs[k] for k in ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep",
                                  "img_ids", "txt_ids", "guidance") if k in inputs}
    with torch.no_grad():
        acts["output"] = m(**kw, return_dict=False)[0]
    for h in hs:
        h.remove()
    return {k: v.float().clone().contiguous() for k, v in acts.items()}


def to_bfl(sd, cfg):
    """diffusers state dict -> BFL single-file names (inverse of diffusers'
    convert_flux_transformer_checkpoint_to_diffusers)."""
    o = {}

    def lin(dst, src):
        o[dst + ".weight"] = sd[src + ".weight"]
        o[dst + ".bias"] = sd[src + ".bias"]

    for bfl, dif in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                     ("guidance_in", "guidance_embedder")):
        if f"time_text_embed.{dif}.linear_1.weight" in sd:
            lin(f"{bfl}.in_layer", f"time_text_embed.{dif}.linear_1")
            lin(f"{bfl}.out_layer", f"time_text_embed.{dif}.linear_2")
    lin("txt_in", "context_embedder")
    lin("img_in", "x_embedder")
    for i in range(cfg["num_layers"]):
        p, q = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        lin(q + "img_mod.lin", p + "norm1.linear")
        lin(q + "txt_mod.lin", p + "norm1_context.linear")
        for s, names in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for t in ("weight", "bias"):
                o[f"{q}{s}_attn.qkv.{t}"] = torch.cat([sd[f"{p}attn.{n}.{t}"] for n in names], 0)
        o[q + "img_attn.norm.query_norm.scale"] = sd[p + "attn.norm_q.weight"]
        o[q + "img_attn.norm.key_norm.scale"] = sd[p + "attn.norm_k.weight"]
        o[q + "txt_attn.norm.query_norm.scale"] = sd[p + "attn.norm_added_q.weight"]
        o[q + "txt_attn.norm.key_norm.scale"] = sd[p + "attn.norm_added_k.weight"]
        lin(q + "img_attn.proj", p + "attn.to_out.0")
        lin(q + "txt_attn.proj", p + "attn.to_add_out")
        lin(q + "img_mlp.0", p + "ff.net.0.proj")
        lin(q + "img_mlp.2", p + "ff.net.2")
        lin(q + "txt_mlp.0", p + "ff_context.net.0.proj")
        lin(q + "txt_mlp.2", p + "ff_context.net.2")
    for i in range(cfg["num_single_layers"]):
        p, q = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for t in ("weight", "bias"):
            o[f"{q}linear1.{t}"] = torch.cat([sd[f"{p}{n}.{t}"] for n in ("attn.to_q", "attn.to_k", "attn.to_v",
                                                                          "proj_mlp")], 0)
        lin(q + "linear2", p + "proj_out")
        lin(q + "modulation.lin", p + "norm.linear")
        o[q + "norm.query_norm.scale"] = sd[p + "attn.norm_q.weight"]
        o[q + "norm.key_norm.scale"] = sd[p + "attn.norm_k.weight"]
    lin("final_layer.linear", "proj_out")
    for t in ("weight", "bias"):
        scale, shift = sd[f"norm_out.linear.{t}"].chunk(2, 0)  # diffusers: (scale, shift); BFL: (shift, scale)
        o[f"final_layer.adaLN_modulation.1.{t}"] = torch.cat([shift, scale], 0)
    return {"model.diffusion_model." + k: v.contiguous() for k, v in o.items()}


def check_bfl_with_diffusers(bfl, sd, inner_dim):
    """diffusers' converter hard-codes inner_dim = 3072; run its own source
    with the tiny width so the mapping is checked by diffusers itself."""
    src = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    assert "inner_dim = 3072" in src
    src = src.replace("inner_dim = 3072", f"inner_dim = {inner_dim}")
    ns = dict(single_file_utils.__dict__)
    exec(src, ns)
    back = ns["convert_flux_transformer_checkpoint_to_diffusers"](dict(bfl))
    assert set(back) == set(sd), set(back) ^ set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def make_inputs(seed, cfg, B, T, h, w, guidance=None, custom_ids=False):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(B, cfg["in_channels"] // 4, h, w, generator=g)
    inp = {
        "latents": lat,
        "hidden_states": pack(lat),
        "encoder_hidden_states": torch.randn(B, T, cfg["joint_attention_dim"], generator=g),
        "pooled_projections": torch.randn(B, cfg["pooled_projection_dim"], generator=g),
        "timestep": torch.tensor([1.0, 0.25][:B] if not custom_ids else [0.6, 0.9][:B]),
        "img_ids": img_ids(h // 2, w // 2),
        "txt_ids": torch.zeros(T, 3),
    }
    if custom_ids:
        # axis 0 and text positions non-zero (Kontext-style ids), so every RoPE axis is exercised
        inp["txt_ids"] = torch.randint(0, 5, (T, 3), generator=g).float()
        inp["img_ids"][:, 0] = 1.0
    if guidance is not None:
        inp["guidance"] = torch.tensor(guidance[:B])
    return inp


def save_expected(path, inputs, acts, keep_latents):
    d = {k: v.float().contiguous() for k, v in inputs.items() if keep_latents or k != "latents"}
    d.update(acts)
    save_file(d, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/flux")
    args = ap.parse_args()
    out = args.out
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    torch.set_num_threads(1)

    # ---- a: schnell-like, tiny
    cfg_a = dict(in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                 joint_attention_dim=32, pooled_projection_dim=24, guidance_embeds=False, axes_dims_rope=(4, 6, 6))
    a = build(1, **cfg_a)
    a.save_pretrained(os.path.join(out, "a", "transformer"), safe_serialization=True)
    inp_a = make_inputs(11, cfg_a, B=2, T=7, h=8, w=8)
    save_expected(os.path.join(out, "a.expected.safetensors"), inp_a, run(a, inp_a), True)

    sd = {k: v.contiguous() for k, v in a.state_dict().items()}
    bfl = to_bfl(sd, cfg_a)
    check_bfl_with_diffusers(bfl, sd, 32)
    save_file(bfl, os.path.join(out, "a_bfl.safetensors"))

    # ---- a_bf16: BF16-rounded weights stored as BF16; reference = F32 forward on them
    a16 = build(1, **cfg_a)
    with torch.no_grad():
        for p in a16.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    a16.to(torch.bfloat16).save_pretrained(os.path.join(out, "a_bf16", "transformer"), safe_serialization=True)
    a16 = a16.float()
    st = load_file(os.path.join(out, "a_bf16", "transformer", "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in st.values())
    save_expected(os.path.join(out, "a_bf16.expected.safetensors"), inp_a, run(a16, inp_a), False)

    # ---- a_fp8: BFL layout as the FP8 community files ship it: matrices in
    # float8_e4m3fn, vectors in BF16; reference = F32 forward on those values
    a8 = build(1, **cfg_a)
    with torch.no_grad():
        for p in a8.parameters():
            dt = torch.float8_e4m3fn if p.ndim == 2 else torch.bfloat16
            p.copy_(p.to(dt).float())
    sd8 = {k: v.contiguous() for k, v in a8.state_dict().items()}
    bfl8 = {k: v.to(torch.float8_e4m3fn if v.ndim == 2 else torch.bfloat16).contiguous()
            for k, v in to_bfl(sd8, cfg_a).items()}
    save_file(bfl8, os.path.join(out, "a_fp8.safetensors"))
    save_expected(os.path.join(out, "a_fp8.expected.safetensors"), inp_a, run(a8, inp_a), False)

    # ---- b: dev-like (guidance), unequal RoPE axes, non-square grid, sharded
    cfg_b = dict(in_channels=12, num_layers=2, num_single_layers=2, attention_head_dim=20, num_attention_heads=2,
                 joint_attention_dim=40, pooled_projection_dim=20, guidance_embeds=True, axes_dims_rope=(4, 10, 6))
    b = build(2, **cfg_b)
    tdir = os.path.join(out, "b", "transformer")
    b.save_pretrained(tdir, safe_serialization=True, max_shard_size="200KB")
    idx = os.path.join(tdir, "diffusion_pytorch_model.safetensors.index.json")
    assert os.path.exists(idx), "b must be sharded"
    shards = sorted(set(json.load(open(idx))["weight_map"].values()))
    assert len(shards) >= 3, shards
    inp_b = make_inputs(12, cfg_b, B=2, T=5, h=6, w=10, guidance=[3.5, 1.0], custom_ids=True)
    save_expected(os.path.join(out, "b.expected.safetensors"), inp_b, run(b, inp_b), False)

    total = 0
    for root, _, files in os.walk(out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"fixtures in {out}: {total / 1e6:.2f} MB; b shards: {len(shards)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Tiny random-weight AutoencoderKL (FLUX VAE) checkpoints in the diffusers
`vae/` layout and in BFL's ae.safetensors layout, plus what diffusers
computes from them, for saeflow's C tests (tests/models/test_vae.c).

    python tools/make_vae_fixtures.py [--out fixtures/vae]
    python tools/make_vae_fixtures.py --full /tmp/flux-vae   # real FLUX widths, random; not committed

Models (OUT/<name>/):
  tiny    latent 4, block_out (8, 8, 16, 16), layers_per_block 2, groups 4, no
          quant convs; latents (2, 4, 3, 5) (non-square, batch 2)
  flux16  latent 16, block_out (16, 32, 32), layers_per_block 1, groups 8,
          quant_conv + post_quant_conv (diffusers' class default; FLUX has
          none); latents (1, 16, 5, 7) (odd sizes)
Files:
  <name>/vae/config.json + diffusion_pytorch_model.safetensors   (F32, save_pretrained)
  <name>/vae-bf16/...   the same weights stored as BF16
  <name>/ae.safetensors BFL layout (F32; tiny only: BFL's AutoEncoder has no quant convs)
  <name>/expected.safetensors:
    latents     (B, C, h, w)  F32, what the sampler hands over (before scaling)
    decoded     (B, 3, 8h, 8w) F32 = vae.decode(latents / scaling + shift)
    image_u8    (B, 8h, 8w, 3) U8  = VaeImageProcessor.postprocess(decoded, "pil")
    decoded_bf16 the F32 forward of the BF16-rounded weights (saeflow computes in F32)
    image       (B, 3, 8h, 8w) F32 in [-1, 1], an encoder input
    latent_mean (B, C, h, w)  F32 = encode(image).latent_dist.mode() (after quant_conv)
    latents_enc (B, C, h, w)  F32 = (latent_mean - shift) * scaling (FluxImg2Img)
  <name>/expected_big.safetensors (tiny): latents (1, 4, 17, 16) (272 attention tokens,
    more than one query block) and decoded = vae.decode(latents / scaling + shift)
  Metadata: near_half = how many image_u8 values have 255*x within 1e-4 of .5
  (where float rounding can flip the uint8).
"""
import argparse
import copy
import os
import shutil

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import save_file

SCALE, SHIFT = 0.3611, 0.1159


def make_vae(latent, block_out, layers, groups, quant, seed):
    torch.manual_seed(seed)
    n = len(block_out)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=block_out,
                        layers_per_block=layers, latent_channels=latent, norm_num_groups=groups,
                        sample_size=32, scaling_factor=SCALE, shift_factor=SHIFT, use_quant_conv=quant,
                        use_post_quant_conv=quant)
    with torch.no_grad():  # non-trivial GroupNorm affines (defaults are 1 and 0)
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return vae.eval()


def to_bfl(sd):
    """diffusers AutoencoderKL state dict -> BFL ae.safetensors names (flux/modules/autoencoder.py)."""
    n_up = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.up_blocks."))
    out = {}
    for k, v in sd.items():
        side, rest = k.split(".", 1)
        r = rest
        if r.startswith("down_blocks."):
            _, i, kind, j, tail = r.split(".", 4)
            r = (f"down.{i}.block.{j}.{tail}" if kind == "resnets" else f"down.{i}.downsample.{tail}")
        elif r.startswith("up_blocks."):
            _, i, kind, j, tail = r.split(".", 4)
            b = n_up - 1 - int(i)
            r = (f"up.{b}.block.{j}.{tail}" if kind == "resnets" else f"up.{b}.upsample.{tail}")
        elif r.startswith("mid_block.resnets."):
            _, _, j, tail = r.split(".", 3)
            r = f"mid.block_{int(j) + 1}.{tail}"
        elif r.startswith("mid_block.attentions.0."):
            tail = r[len("mid_block.attentions.0."):]
            for a, b2 in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                if tail.startswith(a + "."):
                    tail = b2 + tail[len(a):]
            r = f"mid.attn_1.{tail}"
            if v.ndim == 2:  # BFL's attention projections are 1x1 convs
                v = v[:, :, None, None]
        elif r.startswith("conv_norm_out."):
            r = "norm_out." + r.split(".", 1)[1]
        r = r.replace("conv_shortcut", "nin_shortcut")
        out[f"{side}.{r}"] = v.contiguous()
    return out


def decode(vae, z):
    with torch.no_grad():
        return vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor).sample


def write_model(vae, folder, dtype):
    # a copy: casting the model itself to BF16 and back would round its weights
    copy.deepcopy(vae).to(dtype).save_pretrained(folder, safe_serialization=True)


def make(out, name, cfg, latent_shape, seed, big_latent=None):
    vae = make_vae(*cfg, seed=seed)
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(latent_shape, generator=g)
    dec = decode(vae, z)
    pil = VaeImageProcessor(vae_scale_factor=8).postprocess(dec, output_type="pil")
    u8 = np.stack([np.asarray(p) for p in pil])
    x255 = (dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255
    near_half = int((np.abs(x255 - np.floor(x255) - 0.5) < 1e-4).sum())
    write_model(vae, os.path.join(d, "vae"), torch.float32)
    write_model(vae, os.path.join(d, "vae-bf16"), torch.bfloat16)
    # the BF16 expectation: F32 compute on the BF16-rounded weights
    vb = make_vae(*cfg, seed=seed)
    with torch.no_grad():
        for p in vb.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    dec_bf16 = decode(vb, z)
    # encoder: an image in [-1, 1] (smooth + noise, like a photo's range)
    B, C, h, w = latent_shape
    img = (torch.rand((B, 3, 8 * h, 8 * w), generator=g) * 2 - 1).clamp(-1, 1)
    with torch.no_grad():
        mean = vae.encode(img).latent_dist.mode()
    tensors = {"latents": z, "decoded": dec, "image_u8": torch.from_numpy(u8.copy()), "decoded_bf16": dec_bf16,
               "image": img, "latent_mean": mean, "latents_enc": (mean - SHIFT) * SCALE}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "expected.safetensors"),
              metadata={"near_half": str(near_half)})
    if big_latent:  # more than one 256-query attention block in the mid block
        zb = torch.randn(big_latent, generator=g)
        save_file({"latents": zb, "decoded": decode(vae, zb).contiguous()}, os.path.join(d, "expected_big.safetensors"))
    if not vae.config.use_quant_conv:
        sd = vae.state_dict()
        bfl = to_bfl(sd)
        # check the mapping with diffusers' own single-file converter (BFL -> diffusers)
        back = convert_ldm_vae_checkpoint(bfl, dict(vae.config))
        assert set(back) == set(sd), set(back) ^ set(sd)
        for k in sd:
            assert torch.equal(back[k].reshape(sd[k].shape), sd[k]), k
        save_file(bfl, os.path.join(d, "ae.safetensors"))
    print(f"{name}: latents {tuple(z.shape)} -> {tuple(dec.shape)}, decoded range "
          f"[{dec.min():.3f}, {dec.max():.3f}], near-half u8 values {near_half}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures", "vae"))
    ap.add_argument("--full", help="write a random VAE with FLUX's real widths here (benchmark, not committed)")
    a = ap.parse_args()
    if a.full:
        vae = make_vae(16, (128, 256, 512, 512), 2, 32, False, seed=0)
        write_model(vae, os.path.join(a.full, "vae"), torch.float32)
        return
    os.makedirs(a.out, exist_ok=True)
    make(a.out, "tiny", (4, (8, 8, 16, 16), 2, 4, False), (2, 4, 3, 5), seed=1, big_latent=(1, 4, 17, 16))
    make(a.out, "flux16", (16, (16, 32, 32), 1, 8, True), (1, 16, 5, 7), seed=2)


if __name__ == "__main__":
    main()

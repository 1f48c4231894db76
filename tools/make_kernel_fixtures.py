"""Fixtures for the transformer-block kernels (src/kernels/rope.c, adaln.c,
attention.c's score bias), computed by the real diffusers and torch code
that saeflow's FLUX and T5 reproduce:

  rope_*      diffusers FluxPosEmbed (the cos/sin tables, repeat-interleaved
              (M, Dh)) and apply_rotary_emb(sequence_dim=1) on x (B, M, H, Dh),
              for FLUX's axes (16, 56, 56) with text zeros + an image grid,
              and for odd axes (4, 6, 10) with fractional / negative ids
  temb_*      diffusers get_timestep_embedding: FLUX's settings (256, flip,
              shift 0) and others (odd dim 33, no flip, shift 1, scale 2,
              max_period 5000)
  rms_*       diffusers RMSNorm(Dh, eps 1e-6) on x viewed (M, H, Dh), with a
              weight and without (elementwise_affine False)
  ada_*       norm(x) * (1 + scale[:, None]) + shift[:, None] and
              x + gate[:, None] * y, as in FluxTransformerBlock
  attn_*      torch.nn.functional.scaled_dot_product_attention with an
              additive float mask (1, H, Tq, Tk) shared by the batch, scale 1
              (T5) and default scale; q (B, Tq, H*Dh), k/v (B, Tk, H*Dh),
              out (B, Tq, H*Dh)

Writes fixtures/kernels/transformer.safetensors (F32 tensors, ~150 KB).
Deterministic (torch.manual_seed). Run: /work/venv/bin/python tools/make_kernel_fixtures.py
"""

import os

import diffusers
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb, get_timestep_embedding
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_flux import FluxPosEmbed
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "kernels")


def main():
    torch.manual_seed(0)
    t = {}

    # ---- RoPE, FLUX's axes: 12 text positions (ids 0) + a 5 x 7 image grid
    # placed at rows 40.., columns 57.. (large angles, as at 1024 px).
    txt = torch.zeros(12, 3)
    r, c = torch.meshgrid(torch.arange(5) + 40, torch.arange(7) + 57, indexing="ij")
    img = torch.stack([torch.zeros(35), r.flatten().float(), c.flatten().float()], -1)
    ids = torch.cat([txt, img], 0)
    cases = [("flux", ids, [16, 56, 56], 10000, 3)]
    # odd axes, fractional and negative positions, another theta
    ids2 = torch.randn(9, 3) * 30
    ids2[0] = torch.tensor([0.5, -3.0, 1000.0])
    cases.append(("odd", ids2, [4, 6, 10], 500, 2))
    for name, ids_, axes, theta, H in cases:
        cos, sin = FluxPosEmbed(theta=theta, axes_dim=axes)(ids_)
        M, Dh = cos.shape
        x = torch.randn(2, M, H, Dh)
        y = apply_rotary_emb(x, (cos, sin), sequence_dim=1)
        t[f"rope_{name}_ids"] = ids_.float()
        t[f"rope_{name}_cos"] = cos.float()
        t[f"rope_{name}_sin"] = sin.float()
        t[f"rope_{name}_x"] = x.reshape(2, M, H * Dh)
        t[f"rope_{name}_y"] = y.reshape(2, M, H * Dh)
        t[f"rope_{name}_axes"] = torch.tensor(axes, dtype=torch.float32)
        t[f"rope_{name}_theta"] = torch.tensor([theta], dtype=torch.float32)

    # ---- timestep embedding: FLUX (t = 1000 sigma, incl. bf16-rounded 752)
    ts = torch.tensor([0.0, 1.0, 250.0, 500.5, 752.0, 1000.0, 0.001, 999.99])
    t["temb_t"] = ts
    t["temb_flux"] = get_timestep_embedding(ts, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    t["temb_other"] = get_timestep_embedding(
        ts, 33, flip_sin_to_cos=False, downscale_freq_shift=1, scale=2, max_period=5000
    )

    # ---- RMSNorm per head (q/k norm), with and without weight
    M, H, Dh = 6, 3, 16
    x = torch.randn(M, H * Dh) * 3
    norm = RMSNorm(Dh, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(Dh) * 0.5 + 1)
        t["rms_x"] = x
        t["rms_w"] = norm.weight.detach().clone()
        t["rms_y"] = norm(x.view(M, H, Dh)).reshape(M, H * Dh)
        t["rms_y_noaff"] = RMSNorm(Dh, eps=1e-6, elementwise_affine=False)(
            x.view(M, H, Dh)
        ).reshape(M, H * Dh)

    # ---- AdaLN modulation and gated residual (B 2, T 5, D 24; mod (B, 6D))
    B, T, D = 2, 5, 24
    x = torch.randn(B, T, D)
    mod = torch.randn(B, 6 * D)
    shift, scale, gate = mod[:, 0:D], mod[:, D : 2 * D], mod[:, 2 * D : 3 * D]
    y = torch.randn(B, T, D)
    t["ada_x"], t["ada_mod"], t["ada_y"] = x, mod, y
    t["ada_modulated"] = x * (1 + scale[:, None]) + shift[:, None]
    t["ada_gated"] = x + gate.unsqueeze(1) * y

    # ---- attention with an additive float mask shared by the batch
    B, H, Tq, Tk, Dh = 2, 3, 5, 7, 8
    q = torch.randn(B, H, Tq, Dh)
    k = torch.randn(B, H, Tk, Dh)
    v = torch.randn(B, H, Tk, Dh)
    bias = torch.randn(H, Tq, Tk) * 2
    bias[1, 2, 3] = -1e9  # a T5-style large negative entry
    t["attn_q"] = q.transpose(1, 2).reshape(B, Tq, H * Dh).contiguous()
    t["attn_k"] = k.transpose(1, 2).reshape(B, Tk, H * Dh).contiguous()
    t["attn_v"] = v.transpose(1, 2).reshape(B, Tk, H * Dh).contiguous()
    t["attn_bias"] = bias
    for name, sc in [("scale1", 1.0), ("default", None)]:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None], scale=sc)
        t[f"attn_out_{name}"] = o.transpose(1, 2).reshape(B, Tq, H * Dh).contiguous()

    os.makedirs(OUT, exist_ok=True)
    t = {k_: v_.contiguous().float() for k_, v_ in t.items()}
    save_file(t, os.path.join(OUT, "transformer.safetensors"))
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(
            f"Made by tools/make_kernel_fixtures.py (diffusers {diffusers.__version__}, "
            f"torch {torch.__version__}); see its docstring.\n"
        )


if __name__ == "__main__":
    main()

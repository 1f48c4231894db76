"""Fixtures for saeflow's SAELens and EleutherAI-sparsify checkpoint readers.

Writes, under fixtures/formats/, one checkpoint per layout/architecture with
the real `safetensors` package, in the file layout and config keys those
projects publish:
  SAELens  (jbloomAus/SAELens):   <dir>/cfg.json + <dir>/sae_weights.safetensors
           W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec; gated: b_gate,
           b_mag, r_mag; jumprelu: threshold
  sparsify (EleutherAI/sparsify): <dir>/cfg.json + <dir>/sae.safetensors
           encoder.weight [num_latents, d_in], encoder.bias, W_dec [num_latents, d_in], b_dec
and inputs.safetensors holding x and, per checkpoint, the dense codes and the
reconstructions computed here in torch with each project's encode/decode
semantics (re-stated from their public code, see docs/architectures.md).

    /work/venv/bin/python tools/make_format_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "formats")
D, N, K, ROWS = 16, 48, 5, 10
g = torch.Generator().manual_seed(1234)


def rnd(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def write(name, cfg, tensors, weights_file):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, weights_file),
              metadata={"format": "pt"})
    with open(os.path.join(d, "cfg.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def saelens_cfg(arch, apply_b_dec=True, **extra):
    cfg = {"architecture": arch, "d_in": D, "d_sae": N, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "reshape_activations": "none",
           "metadata": {"model_name": "fixture", "hook_name": "blocks.0.hook_resid_post"}}
    cfg.update(extra)
    return cfg


x = rnd(ROWS, D)
expected = {"x": x}

# --- SAELens standard (ReLU) ---
W_enc, b_enc, W_dec, b_dec = rnd(D, N, scale=0.4), rnd(N, scale=0.2), rnd(N, D, scale=0.3), rnd(D, scale=0.2)
pre = (x - b_dec) @ W_enc + b_enc
f = torch.relu(pre)
write("saelens_standard", saelens_cfg("standard"),
      {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, "sae_weights.safetensors")
expected["saelens_standard.codes"], expected["saelens_standard.recon"] = f, f @ W_dec + b_dec

# --- SAELens gated, apply_b_dec_to_input = false (saeflow folds it) ---
W_enc, W_dec, b_dec = rnd(D, N, scale=0.4), rnd(N, D, scale=0.3), rnd(D, scale=0.2)
b_gate, b_mag, r_mag = rnd(N, scale=0.2), rnd(N, scale=0.2), rnd(N, scale=0.3)
sae_in = x  # apply_b_dec_to_input false
gating_pre = sae_in @ W_enc + b_gate
mag_pre = sae_in @ (W_enc * r_mag.exp()) + b_mag
f = (gating_pre > 0).float() * torch.relu(mag_pre)
write("saelens_gated", saelens_cfg("gated", apply_b_dec=False),
      {"W_enc": W_enc, "b_gate": b_gate, "b_mag": b_mag, "r_mag": r_mag, "W_dec": W_dec, "b_dec": b_dec},
      "sae_weights.safetensors")
expected["saelens_gated.codes"], expected["saelens_gated.recon"] = f, f @ W_dec + b_dec

# --- SAELens jumprelu ---
W_enc, b_enc, W_dec, b_dec = rnd(D, N, scale=0.4), rnd(N, scale=0.2), rnd(N, D, scale=0.3), rnd(D, scale=0.2)
threshold = torch.rand(N, generator=g) * 0.6 + 0.05
pre = (x - b_dec) @ W_enc + b_enc
f = torch.relu(pre) * (pre > threshold).float()
write("saelens_jumprelu", saelens_cfg("jumprelu"),
      {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "threshold": threshold},
      "sae_weights.safetensors")
expected["saelens_jumprelu.codes"], expected["saelens_jumprelu.recon"] = f, f @ W_dec + b_dec

# --- SAELens topk (v6 "topk" architecture with k) ---
W_enc, b_enc, W_dec, b_dec = rnd(D, N, scale=0.4), rnd(N, scale=0.2), rnd(N, D, scale=0.3), rnd(D, scale=0.2)
pre = (x - b_dec) @ W_enc + b_enc
v, i = pre.topk(K, dim=-1)
f = torch.zeros_like(pre).scatter(-1, i, torch.relu(v))
write("saelens_topk", saelens_cfg("topk", k=K),
      {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, "sae_weights.safetensors")
expected["saelens_topk.codes"], expected["saelens_topk.recon"] = f, f @ W_dec + b_dec

# --- sparsify TopK, one hookpoint folder ---
enc_w, enc_b, W_dec, b_dec = rnd(N, D, scale=0.4), rnd(N, scale=0.2), rnd(N, D, scale=0.3), rnd(D, scale=0.2)
pre = torch.relu((x - b_dec) @ enc_w.T + enc_b)
v, i = pre.topk(K, dim=-1, sorted=False)
f = torch.zeros_like(pre).scatter(-1, i, v)
write(os.path.join("sparsify", "layers.6"),
      {"activation": "topk", "expansion_factor": N // D, "normalize_decoder": True, "num_latents": N,
       "k": K, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D},
      {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": W_dec, "b_dec": b_dec}, "sae.safetensors")
expected["sparsify.codes"], expected["sparsify.recon"] = f, f @ W_dec + b_dec

save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(OUT, "inputs.safetensors"))
print("wrote", sorted(os.listdir(OUT)))

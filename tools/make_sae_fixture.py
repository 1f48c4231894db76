"""Fixture for saeflow's SAE checkpoints: a TopK SAE written the way the
reference project (RE-N-Y/sae, autoencoder.py) writes one, with real torch,
safetensors and huggingface_hub, plus inputs and outputs computed with the
reference semantics:

    encode(x)  = scatter(topk(relu(encoder(x - bias)), k, sorted=False))
    decode(z)  = decoder(z) + bias
    surgery(x, k, strength): z = encode(x); z[:, k] += strength; decode(z)

The module below restates the reference's TopK class (names, shapes, init)
for the test; it is not the reference's code.

Writes fixtures/sae/:
  topk/            config.json + model.safetensors (F32), via save_pretrained
  topk-bf16/       same weights rounded to BF16, stored as BF16
  io.safetensors   x [N, d]; z, x_hat, surgery (F32 checkpoint);
                   z_bf16, x_hat_bf16 (BF16 checkpoint, computed in F32 from
                   the rounded weights)

Run: /work/venv/bin/python tools/make_sae_fixture.py
"""

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "sae")
FEATURES, PAGES, K = 16, 512, 8
N = 12
SURGERY_FEATURE, SURGERY_STRENGTH = 12, 42.0


class TopkSparseAutoencoder(nn.Module, PyTorchModelHubMixin):
    def __init__(self, features: int, pages: int, k: int):
        super().__init__()
        self.features, self.pages, self.k = features, pages, k
        self.encoder = nn.Linear(features, pages)
        self.decoder = nn.Linear(pages, features, bias=False)
        self.bias = nn.Parameter(torch.zeros(features))
        with torch.no_grad():
            self.encoder.bias.zero_()
            w = self.encoder.weight.data.T.clone()
            self.decoder.weight.data = w / w.norm(dim=0, keepdim=True)

    def encode(self, x):
        z = F.relu(self.encoder(x - self.bias))
        values, indices = torch.topk(z, self.k, dim=-1, sorted=False)
        return torch.zeros_like(z).scatter(-1, indices, values)

    def decode(self, z):
        return self.decoder(z) + self.bias

    def surgery(self, x, k, strength):
        z = self.encode(x)
        z[:, k] += strength
        return self.decode(z)


def main():
    torch.manual_seed(1234)
    sae = TopkSparseAutoencoder(FEATURES, PAGES, K)
    # Move away from the init so every tensor matters: trained-like biases and
    # a decoder that is no longer exactly the encoder's transpose.
    with torch.no_grad():
        sae.bias.copy_(0.2 * torch.randn(FEATURES))
        # mostly negative encoder biases (as trained SAEs tend to have), five positive
        b_enc = -0.02 * torch.rand(PAGES)
        b_enc[[3, 100, 200, 300, 511]] = 0.05
        sae.encoder.bias.copy_(b_enc)
        sae.decoder.weight.mul_(1 + 0.2 * torch.rand_like(sae.decoder.weight))
    x = torch.randn(N, FEATURES)
    # A row where fewer than k pre-activations are positive (ReLU leaves zeros).
    # x = bias gives pre-activations = encoder.bias: only five are positive.
    with torch.no_grad():
        x[N - 1] = sae.bias
    out = {"x": x}
    with torch.no_grad():
        out["z"] = sae.encode(x)
        out["x_hat"] = sae.decode(out["z"])
        out["surgery"] = sae.surgery(x, SURGERY_FEATURE, SURGERY_STRENGTH)

    os.makedirs(ROOT, exist_ok=True)
    sae.save_pretrained(os.path.join(ROOT, "topk"))

    # BF16 checkpoint: the same layout with BF16 tensors.
    bdir = os.path.join(ROOT, "topk-bf16")
    os.makedirs(bdir, exist_ok=True)
    sd = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in sae.state_dict().items()}
    save_file(sd, os.path.join(bdir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(bdir, "config.json"), "w") as f:
        json.dump({"features": FEATURES, "pages": PAGES, "k": K, "note": "extra key kept"}, f)
    sae_b = TopkSparseAutoencoder(FEATURES, PAGES, K)
    sae_b.load_state_dict({k: v.float() for k, v in sd.items()})
    with torch.no_grad():
        out["z_bf16"] = sae_b.encode(x)
        out["x_hat_bf16"] = sae_b.decode(out["z_bf16"])

    meta = {"surgery_feature": str(SURGERY_FEATURE), "surgery_strength": str(SURGERY_STRENGTH),
            "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(ROOT, "io.safetensors"),
              metadata=meta)
    print("wrote", ROOT, {k: tuple(v.shape) for k, v in out.items()})


if __name__ == "__main__":
    main()

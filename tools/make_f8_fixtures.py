"""Makes fixtures/io/f8.safetensors: every byte pattern as torch.float8_e4m3fn
("e4m3") and torch.float8_e5m2 ("e5m2"), written by the real `safetensors`
package (dtypes F8_E4M3 / F8_E5M2), with torch's own conversions of them to
float32 ("*_f32") and bfloat16 ("*_bf16"), and an I8 tensor ("i8") that a
float reader must refuse by name. The C tests check saeflow's conversions
against torch's, bit for bit (NaN as NaN).

Run: /path/to/venv/bin/python tools/make_f8_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "io")
os.makedirs(out, exist_ok=True)
raw = torch.arange(256, dtype=torch.int32).to(torch.uint8)
e4m3 = raw.clone().view(torch.float8_e4m3fn)
e5m2 = raw.clone().view(torch.float8_e5m2)
tensors = {
    "e4m3": e4m3,
    "e5m2": e5m2,
    "e4m3_f32": e4m3.to(torch.float32),
    "e5m2_f32": e5m2.to(torch.float32),
    "e4m3_bf16": e4m3.to(torch.bfloat16),
    "e5m2_bf16": e5m2.to(torch.bfloat16),
    "i8": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
}
save_file(tensors, os.path.join(out, "f8.safetensors"), metadata={"format": "pt"})
print("wrote", os.path.join(out, "f8.safetensors"), "torch", torch.__version__)

"""Makes fixtures/io/: safetensors files written by the real `safetensors`
package, with the values the C tests expect (as F64 in a second file, since
every float dtype converts exactly to F64).

Run: /path/to/venv/bin/python tools/make_io_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "io")
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(0)
base = torch.randn(3, 5, generator=g) * 3
tensors = {
    "f32": base.clone(),
    "bf16": base.to(torch.bfloat16),
    "f16": base.to(torch.float16),
    "f64": base.to(torch.float64),
    "i64": torch.arange(-3, 3, dtype=torch.int64),
    "i32": torch.arange(0, 4, dtype=torch.int32).reshape(2, 2),
    "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 4),
    "special_f16": torch.tensor([0.0, -0.0, 65504.0, 6e-8, 1e-5, float("inf"), -float("inf")], dtype=torch.float16),
    "special_bf16": torch.tensor([1e-40, 3.0e38, -1.5, float("inf")], dtype=torch.bfloat16),
}
save_file(tensors, os.path.join(out, "dtypes.safetensors"), metadata={"format": "pt", "note": "saeflow fixture"})
expect = {k: v.to(torch.float64) for k, v in tensors.items() if v.dtype.is_floating_point}
save_file(expect, os.path.join(out, "dtypes_expected_f64.safetensors"))
print("wrote", out)

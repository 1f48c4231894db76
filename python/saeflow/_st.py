"""Minimal safetensors read/write for numpy (no safetensors package needed):
the tests exchange files with the CLI through it, and train() hands numpy data
to the C trainer through a temporary file."""
from __future__ import annotations

import json
import os
import struct
from typing import Dict

import numpy as np

_DT = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8}
_NAME = {np.dtype(v): k for k, v in _DT.items()}


def write(path: str, tensors: Dict[str, np.ndarray]) -> None:
    """Writes the tensors (row-major) atomically: temp file, then rename."""
    header, off, arrs = {}, 0, []
    for k, a in tensors.items():
        a = np.ascontiguousarray(a)
        if a.dtype not in _NAME:
            raise TypeError(f"{k}: dtype {a.dtype} not supported")
        header[k] = {"dtype": _NAME[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        arrs.append(a)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for a in arrs:
            f.write(a.tobytes())
    os.replace(tmp, path)


def read(path: str) -> Dict[str, np.ndarray]:
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=_DT[v["dtype"]]).reshape(v["shape"]).copy()
    return out

"""saeflow.topk: per feature, the rows with the highest activation (sf_topk,
include/saeflow/analysis.h), over activations encoded in batches."""
from __future__ import annotations

import ctypes
from ctypes import POINTER, c_double, c_float, c_int, c_int32, c_int64, c_void_p
from typing import Any, Dict

import numpy as np

from . import _lib
from ._lib import check, lib
from .model import ArrayLike, SparseAutoencoder, _as_f32_rows


class _Topk(ctypes.Structure):
    """The leading fields of sf_topk (analysis.h); the struct itself is
    allocated with the library's sf_topk_sizeof(), the rest is opaque here."""

    _fields_ = [("n", c_int64), ("N", c_int), ("rows", c_int64), ("heap_val", POINTER(c_float)),
                ("heap_row", POINTER(c_int64)), ("heap_len", POINTER(c_int32)), ("count", POINTER(c_int64)),
                ("sum", POINTER(c_double)), ("max", POINTER(c_float)), ("hist", POINTER(c_int64)),
                ("hist_exp", POINTER(c_int32)), ("stamp", POINTER(c_int64)), ("stamp_ctr", c_int64)]


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


_sizeof = _fn("sf_topk_sizeof", ctypes.c_size_t)()
I32P = POINTER(c_int32)
_init = _fn("sf_topk_init", c_int, c_void_p, c_int64, c_int)
_free = _fn("sf_topk_free", None, c_void_p)
_add = _fn("sf_topk_add_sparse", c_int, c_void_p, c_int64, c_int, I32P, POINTER(c_float), I32P, c_int64,
           c_void_p)
_sorted = _fn("sf_topk_sorted", None, c_void_p, POINTER(c_float), POINTER(c_int64))


def topk(sae: SparseAutoencoder, acts: ArrayLike, top: int = 16, batch: int = 4096) -> Dict[str, Any]:
    """For every feature of `sae`, the `top` rows of `acts` (N, d) with the
    highest activation (equal values: lower row first), as `saeflow topk`
    keeps them, plus per-feature statistics. Returns a dict of numpy arrays:
    values (n, top) float32 and rows (n, top) int64, best first (empty slots:
    row -1, value 0); count (n) rows where the feature fired, density
    (count / N), mean (over firing rows) and max activation."""
    x, _ = _as_f32_rows(acts, sae.d, "topk")
    buf = ctypes.create_string_buffer(_sizeof)
    t = _Topk.from_buffer(buf)
    check(_init(buf, sae.n, int(top)), "topk")
    try:
        for r0 in range(0, x.shape[0], int(batch)):
            idx, val, cnt = sae._encode_codes(np.ascontiguousarray(x[r0:r0 + batch]))
            check(_add(buf, idx.shape[0], idx.shape[1], idx.ctypes.data_as(I32P),
                       val.ctypes.data_as(POINTER(c_float)), cnt.ctypes.data_as(I32P), r0, None), "topk")
        n = sae.n
        values = np.empty((n, top), np.float32)
        rows = np.empty((n, top), np.int64)
        _sorted(buf, values.ctypes.data_as(POINTER(c_float)), rows.ctypes.data_as(POINTER(c_int64)))
        count = np.ctypeslib.as_array(t.count, (n,)).copy()
        total = np.ctypeslib.as_array(t.sum, (n,)).copy()
        mx = np.ctypeslib.as_array(t.max, (n,)).copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return {"values": values, "rows": rows, "count": count, "density": count / max(x.shape[0], 1),
                "mean": mean, "max": mx}
    finally:
        _free(buf)

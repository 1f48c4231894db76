"""Python call overhead of saeflow.encode over the bare C call.

A d 1024, n 4096, k 32 TopK model (sf_sae_init, seed 0) encodes x [4096, 1024]
(standard normal, seed 0) through
  c:      sf_sae_encoder_run via ctypes on preallocated code buffers (the C
          call; ctypes adds about a microsecond),
  sparse: sae.encode(x, sparse=True)  (CSR triplet/scipy from the codes),
  dense:  sae.encode(x)               (the [4096, 4096] dense array, 64 MiB),
in REPS interleaved rounds, same threads; min and median of each. Usage:
  SAEFLOW_LIB=build/libsaeflow.so python bench/bench_python.py [threads] [reps]
"""
import ctypes
import sys
import time

import numpy as np

import saeflow
from saeflow import _lib

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
sae = saeflow.SparseAutoencoder.init(1024, 4096, 32, seed=0, threads=threads)
x = np.random.default_rng(0).standard_normal((4096, 1024), dtype=np.float32)
sae.encode(x[:64])  # builds the prepared encoder once

B, k = x.shape[0], sae.k
idx, val, cnt = np.empty((B, k), np.int32), np.empty((B, k), np.float32), np.empty(B, np.int32)
I32P = ctypes.POINTER(ctypes.c_int32)
codes = _lib.Codes(B, k, idx.ctypes.data_as(I32P), val.ctypes.data_as(_lib.F32P), cnt.ctypes.data_as(I32P))
xp = x.ctypes.data_as(_lib.F32P)


def c_call():
    _lib.check(_lib.sf_sae_encoder_run(sae._enc, xp, B, ctypes.byref(codes)))


_lib.sf_kernels_set_threads(threads)
# Interleaved (c, sparse, dense) rounds, so that load from other processes hits
# all three alike; min and median per variant.
fs = {"c": c_call, "sparse": lambda: sae.encode(x, sparse=True), "dense": lambda: sae.encode(x)}
ts = {n: [] for n in fs}
for _ in range(reps):
    for n, f in fs.items():
        t = time.perf_counter()
        f()
        ts[n].append(time.perf_counter() - t)
mn = {n: min(v) for n, v in ts.items()}
md = {n: float(np.median(v)) for n, v in ts.items()}
print(f"encode [4096,1024], d 1024 n 4096 k 32, {threads} threads, {reps} interleaved rounds (min / median):")
print(f"  C call        {mn['c'] * 1e3:8.1f} / {md['c'] * 1e3:8.1f} ms")
for n in ("sparse", "dense"):
    print(f"  python {n:6s} {mn[n] * 1e3:8.1f} / {md[n] * 1e3:8.1f} ms  overhead (min) {100 * (mn[n] / mn['c'] - 1):+.1f}%")
# The Python side alone, measured without the C call (stubbed with its last
# result): what the binding adds, free of the other processes' noise on the
# C GEMM.
saved = (idx.copy(), val.copy(), cnt.copy())
real = sae._encode_codes
sae._encode_codes = lambda xa: saved
for n, f in (("sparse", lambda: sae.encode(x, sparse=True)), ("dense", lambda: sae.encode(x))):
    v = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        v.append(time.perf_counter() - t)
    print(f"  python-side work ({n:6s}, C stubbed): min {min(v) * 1e3:6.1f} ms = {100 * min(v) / mn['c']:.1f}% of the C call")
sae._encode_codes = real

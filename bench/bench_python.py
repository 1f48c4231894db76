"""saeflow from Python against the C programs, in one run (docs/python.md, "Speed").

encode: a d 1024, n 4096, k 32 TopK checkpoint (sf_sae_init seed 0, saved and
  reloaded) encodes x [4096, 1024] (standard normal, seed 0):
    C bench   build/bench_encode: sf_sae_encoder_run in a C program (its own
              timer around each call; the reference figure)
    c-ctypes  the same call through ctypes on preallocated codes
    sparse    sae.encode(x, sparse=True)  (the CSR arrays `saeflow encode` writes)
    dense     sae.encode(x)               (a fresh [4096, 4096] float32 result, 64 MiB)
    dense-out sae.encode(x, out=buf)      (the same written into a reused buffer)
train: `saeflow train` (the CLI process, wall clock) against saeflow.train on
  the same safetensors file [ROWS, 1024], arch topk, k 32, pages 4096, batch
  32, 1 epoch, seed 0, both writing their checkpoint; also saeflow.train on
  the numpy array (one extra write of a temporary file). Besides the whole
  call (wall and CPU seconds), the training loop's own rate from the
  trainer's summary line, printed by the CLI and by saeflow.train(progress=True)
  alike (captured from file descriptor 1).

ROUNDS interleaved rounds (C, then Python, each round), same threads; the
figures are medians and minima over all calls (train: wall clock and CPU
seconds of all threads). Prints the ratios Python / C for encode and Python /
CLI for train (target: <= 1.05 each); on a shared machine the minima and the
"python-side work alone" lines (the C call stubbed) are the steadier figures.
Usage:
  python bench/bench_python.py [--build build] [--threads 2] [--rounds 5] [--calls 3] [--rows 8192]
(SAEFLOW_LIB may point at the library; by default BUILD/libsaeflow.so.)
"""
import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build"))
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--calls", type=int, default=3, help="timed encode calls per side per round")
ap.add_argument("--rows", type=int, default=8192, help="training rows")
ap.add_argument("--skip-train", action="store_true")
args = ap.parse_args()
build = os.path.abspath(args.build)
os.environ.setdefault("SAEFLOW_LIB", os.path.join(build, "libsaeflow.so"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import saeflow  # noqa: E402
from saeflow import _lib, _st  # noqa: E402

T = args.threads


def _loop_rate(text):
    """samples/s of the trainer's own summary line ("trained N steps ... in X s, Y samples/s")."""
    for line in text.splitlines():
        if line.startswith("trained ") and "samples/s" in line:
            return float(line.rsplit(",", 1)[1].split()[0])
    raise RuntimeError("no trainer summary in: " + text[-500:])


def _captured_fd1(f):
    """Runs f() with file descriptor 1 (the C library's stdout) sent to a
    temporary file; returns (f's result, what was written)."""
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+") as cap:
        saved = os.dup(1)
        os.dup2(cap.fileno(), 1)
        try:
            r = f()
            ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        cap.seek(0)
        return r, cap.read()


def _children_cpu():
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

tmp = tempfile.mkdtemp(prefix="saeflow-bench-python-")
try:
    ckpt = os.path.join(tmp, "ckpt")
    saeflow.SparseAutoencoder.init(1024, 4096, 32, seed=0).save(ckpt)
    sae = saeflow.load(ckpt, threads=T)
    x = np.random.default_rng(0).standard_normal((4096, 1024), dtype=np.float32)
    xpath = os.path.join(tmp, "x.safetensors")
    _st.write(xpath, {"activations": x})
    sae.encode(x[:64])  # builds the prepared encoder once

    B, k = x.shape[0], sae.k
    idx, val, cnt = np.empty((B, k), np.int32), np.empty((B, k), np.float32), np.empty(B, np.int32)
    I32P = ctypes.POINTER(ctypes.c_int32)
    codes = _lib.Codes(B, k, idx.ctypes.data_as(I32P), val.ctypes.data_as(_lib.F32P), cnt.ctypes.data_as(I32P))
    xp = x.ctypes.data_as(_lib.F32P)

    def c_call():
        _lib.sf_kernels_set_threads(T)
        _lib.check(_lib.sf_sae_encoder_run(sae._enc, xp, B, ctypes.byref(codes)))

    zbuf = np.empty((B, sae.n), np.float32)
    fs = {"c-ctypes": c_call, "sparse": lambda: sae.encode(x, sparse=True), "dense": lambda: sae.encode(x),
          "dense-out": lambda: sae.encode(x, out=zbuf)}
    ts = {"C bench": [], **{n: [] for n in fs}}
    bench = os.path.join(build, "bench_encode")
    print(f"encode [4096,1024], d 1024 n 4096 k 32, {T} threads, {args.rounds} rounds x {args.calls} calls "
          f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')})", flush=True)
    for _ in range(args.rounds):
        r = subprocess.run([bench, ckpt, xpath, "--threads", str(T), "--rounds", str(args.calls)],
                           capture_output=True, text=True, check=True)
        ts["C bench"] += [float(line.split()[1]) / 1e3 for line in r.stdout.splitlines() if line.startswith("call_ms")]
        for n, f in fs.items():
            f()  # untimed: the first call after the other side's run
            for _ in range(args.calls):
                t = time.perf_counter()
                f()
                ts[n].append(time.perf_counter() - t)
    med = {n: statistics.median(v) for n, v in ts.items()}
    for n, v in ts.items():
        print(f"  {n:9s} min {min(v) * 1e3:8.1f}  median {med[n] * 1e3:8.1f} ms")
    # The Python side alone, the C call replaced by its last result: what the
    # binding adds, free of the other processes' noise on the GEMM.
    saved = (idx.copy(), val.copy(), cnt.copy())
    real = sae._encode_codes
    sae._encode_codes = lambda xa: saved
    side = {}
    for n, f in (("sparse", lambda: sae.encode(x, sparse=True)), ("dense", lambda: sae.encode(x)),
                 ("dense-out", lambda: sae.encode(x, out=zbuf))):
        v = []
        for _ in range(args.rounds * args.calls):
            t = time.perf_counter()
            f()
            v.append(time.perf_counter() - t)
        side[n] = statistics.median(v)
    sae._encode_codes = real
    for n in ("sparse", "dense", "dense-out"):
        print(f"  python-side work alone ({n}, C stubbed): median {side[n] * 1e3:.2f} ms "
              f"= {100 * side[n] / med['C bench']:.2f}% of the C bench")

    if not args.skip_train:
        tx = np.random.default_rng(1).standard_normal((args.rows, 1024), dtype=np.float32)
        tpath = os.path.join(tmp, "train.safetensors")
        _st.write(tpath, {"activations": tx})
        common = dict(k=32, pages=4096, batch_size=32, num_epochs=1, seed=0)
        cli = [os.path.join(build, "saeflow"), "train", "--tensorpath", tpath, "--threads", str(T),
               "--savedir", os.path.join(tmp, "cli"), "--name", "m"] + [f"--{a}={v}" for a, v in common.items()]
        tt = {"CLI": [], "python (file)": [], "python (array)": []}
        tc = {n: [] for n in tt}  # CPU seconds (all threads): less sensitive to the other processes
        tl = {n: [] for n in tt}  # the training loop's own samples/s (its summary line)
        print(f"train topk d 1024 pages 4096 k 32, {args.rows} rows, batch 32, 1 epoch, {T} threads, "
              f"{args.rounds} rounds", flush=True)
        for _ in range(args.rounds):
            c0, t = _children_cpu(), time.perf_counter()
            r = subprocess.run(cli, check=True, capture_output=True, text=True)
            tt["CLI"].append(time.perf_counter() - t)
            tl["CLI"].append(_loop_rate(r.stdout))
            tc["CLI"].append(_children_cpu() - c0)
            for n, data in (("python (file)", tpath), ("python (array)", tx)):
                c0, t = time.process_time(), time.perf_counter()
                (m, _), text = _captured_fd1(lambda: saeflow.train(
                    data, savedir=os.path.join(tmp, "py"), name="m", progress=True, threads=T, **common))
                tt[n].append(time.perf_counter() - t)
                tl[n].append(_loop_rate(text))
                tc[n].append(time.process_time() - c0)
                m.close()
        tmed = {n: statistics.median(v) for n, v in tt.items()}
        cmed = {n: statistics.median(v) for n, v in tc.items()}
        for n, v in tt.items():
            print(f"  {n:14s} wall min {min(v):7.2f}  median {tmed[n]:7.2f} s   CPU min {min(tc[n]):7.2f}  "
                  f"median {cmed[n]:7.2f} s   loop max {max(tl[n]):7.0f}  median {statistics.median(tl[n]):7.0f} "
                  f"samples/s")

    mn = {n: min(v) for n, v in ts.items()}
    print("RATIOS (target <= 1.05):")
    for what, f in (("median", med), ("min", mn)):
        print(f"  encode python/C ({what}): sparse {f['sparse'] / f['C bench']:.3f}, "
              f"dense {f['dense'] / f['C bench']:.3f}, dense out= {f['dense-out'] / f['C bench']:.3f}, "
              f"ctypes call {f['c-ctypes'] / f['C bench']:.3f}")
    if not args.skip_train:
        tmin = {n: min(v) for n, v in tt.items()}
        cmin = {n: min(v) for n, v in tc.items()}
        for what, f in (("wall median", tmed), ("wall min", tmin), ("CPU median", cmed), ("CPU min", cmin)):
            print(f"  train python/CLI ({what}): file {f['python (file)'] / f['CLI']:.3f}, "
                  f"array {f['python (array)'] / f['CLI']:.3f}")
        lmed = {n: statistics.median(v) for n, v in tl.items()}
        lmax = {n: max(v) for n, v in tl.items()}
        for what, f in (("loop median", lmed), ("loop best", lmax)):  # time ratio = inverse rate ratio
            print(f"  train python/CLI ({what} time): file {f['CLI'] / f['python (file)']:.3f}, "
                  f"array {f['CLI'] / f['python (array)']:.3f}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

"""saeflow.train: the C trainer (include/saeflow/sae_train.h, sf_sae_train_run)
on a numpy array or safetensors files, with the CLI's defaults, so that the same
settings give the checkpoint `saeflow train` writes."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from ctypes import POINTER, c_char_p, c_double, c_int, c_int64, c_uint64, c_void_p
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib, _st
from ._lib import SaeflowError, check, lib
from ._relay import relay_c_output
from .model import SparseAutoencoder


class TrainOpts(ctypes.Structure):
    """sf_sae_train_opts (sae_train.h); size checked against the library."""

    _fields_ = [("lr", c_double), ("beta1", c_double), ("beta2", c_double), ("eps", c_double),
                ("wd", c_double), ("lr_warmup_steps", c_int64), ("clip", c_double),
                ("normalise", c_int), ("auxk_coef", c_double), ("aux_k", c_int),
                ("bodycount", c_int64), ("lmbda", c_double), ("lmbda_warmup_steps", c_int64),
                ("bandwidth", c_double), ("ghost_grads", c_int), ("resample_every", c_int64),
                ("resample_pool", c_int64), ("threshold_decay", c_double)]


class RunOpts(ctypes.Structure):
    """sf_sae_run_opts (sae_train.h)."""

    _fields_ = [("train", TrainOpts), ("batch_size", c_int), ("num_epochs", c_int),
                ("seed", c_uint64), ("outdir", c_char_p), ("save_every", c_int64), ("quiet", c_int)]


class Spec(ctypes.Structure):
    """sf_sae_spec (sae_arch.h): the one builder of a fresh SAE, as the CLI uses it."""

    _fields_ = [("arch", c_int), ("d", c_int), ("n", c_int), ("k", c_int), ("seed", c_uint64),
                ("groups", c_char_p), ("matryoshka_base", c_char_p), ("jumpthreshold", c_double),
                ("b_dec_init", c_char_p), ("normalize_input", c_int)]


class Metrics(ctypes.Structure):
    """sf_sae_metrics (sae_train.h)."""

    _fields_ = [(f, c_double) for f in ("loss", "l2", "l2_normalised", "l1", "l0", "cossim", "alive",
                                        "survival", "dead", "auxk", "lr", "grad_norm")] + \
               [("hist", c_int * 13)]


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


_sizeof = {n: _fn(f"sf_sae_{n}_sizeof", ctypes.c_size_t)() for n in ("train_opts", "run_opts", "data", "metrics",
                                                                      "spec")}


def _check_sizes() -> None:
    """The mirrored structs must match the library's (checked when train runs,
    so that a changed trainer header does not break the rest of the package)."""
    for name, cls in (("train_opts", TrainOpts), ("run_opts", RunOpts), ("metrics", Metrics), ("spec", Spec)):
        if ctypes.sizeof(cls) != _sizeof[name]:
            raise SaeflowError(f"saeflow: sf_sae_{name} is {_sizeof[name]} bytes in libsaeflow.so, "
                               f"{ctypes.sizeof(cls)} in the binding: python/saeflow/train.py is out of date")


_opts_default = _fn("sf_sae_train_opts_default", None, POINTER(TrainOpts))
_data_open = _fn("sf_sae_data_open", c_int, c_void_p, POINTER(c_char_p), c_int, c_char_p)
_data_close = _fn("sf_sae_data_close", None, c_void_p)
_train_run = _fn("sf_sae_train_run", c_int, c_void_p, c_void_p, POINTER(RunOpts), POINTER(Metrics))
_build = _fn("sf_sae_build", c_int, c_void_p, POINTER(Spec), c_void_p, POINTER(TrainOpts))


def train(data: Union[np.ndarray, str, os.PathLike, Sequence[Union[str, os.PathLike]]], *,
          arch: str = "topk", k: int = 128, expansion: int = 32, pages: Optional[int] = None,
          key: str = "activations", lr: float = 5e-5, beta1: float = 0.9, beta2: float = 0.999,
          wd: float = 0.0, lr_warmup_steps: int = 256, clip: float = 1.0, normalise: bool = False,
          auxk: float = 1.0 / 32, aux_k: int = 512, bodycount: int = 16384, batch_size: int = 32,
          num_epochs: int = 10, seed: int = 0, lmbda: float = 0.01, lmbda_warmup_steps: int = 256,
          bandwidth: float = 0.001, jumpthreshold: Optional[float] = None, threshold_decay: float = 0.99,
          ghost_grads: bool = False, resample_every: int = 0, resample_pool: int = 65536,
          b_dec_init: str = "zero", normalize_input: bool = False,
          groups: Optional[Union[str, Sequence[Union[int, str]]]] = None, matryoshka_base: str = "topk",
          savedir: Optional[Union[str, os.PathLike]] = None,
          name: Optional[str] = None, save_every: int = 0, threads: Optional[int] = None,
          progress: bool = True) -> Tuple[SparseAutoencoder, Dict[str, Any]]:
    """Trains an SAE with the C trainer; the arguments and defaults are
    `saeflow train`'s flags. `data`: a float (N, d) numpy array (written once to
    a temporary safetensors file, which the trainer memory-maps) or one or more
    safetensors paths holding `key`. The checkpoint goes to savedir/name (a
    temporary directory, removed after loading, when savedir is None).
    arch="matryoshka": `groups` are the nested group sizes, `--groups`'s
    "512,512,1024,rest" or a list such as [512, 512, 1024, "rest"] (None:
    n/8, n/8, n/4, n/2), `matryoshka_base` "topk" or "batchtopk". An option
    that does not apply to `arch` is an error, as on the command line.

    Returns (model, metrics): metrics["last"] is the final step's metrics,
    metrics["steps"] every step's line of metrics.jsonl. `progress`: the C
    trainer's progress bar (stderr) and summary (stdout); where sys.stdout /
    sys.stderr are not the process's descriptors (Jupyter) they are relayed
    there, bar included. False: quiet."""
    _check_sizes()
    if threads is not None:
        _lib.sf_kernels_set_threads(int(threads))
    tmp = tempfile.mkdtemp(prefix="saeflow-train-")
    try:
        if isinstance(data, (str, os.PathLike)):
            paths = [os.fspath(data)]
        elif isinstance(data, (list, tuple)):
            paths = [os.fspath(p) for p in data]
        else:
            a = np.asarray(data)
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"train: data must be a float [N, d] array, found {a.dtype} {list(a.shape)}")
            paths = [os.path.join(tmp, "data.safetensors")]
            _st.write(paths[0], {key: np.asarray(a, np.float32)})
        return _train(paths, tmp, locals())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _train(paths: List[str], tmp: str, a: Dict[str, Any]) -> Tuple[SparseAutoencoder, Dict[str, Any]]:
    archv = c_int()
    check(_lib.sf_sae_arch_parse(a["arch"].encode(), ctypes.byref(archv)), "train")
    groups = a["groups"]
    if groups is not None and not isinstance(groups, str):
        groups = ",".join(str(g) for g in groups)
    ro = RunOpts()
    _opts_default(ctypes.byref(ro.train))
    t = ro.train
    t.lr, t.beta1, t.beta2, t.wd = a["lr"], a["beta1"], a["beta2"], a["wd"]
    t.lr_warmup_steps, t.clip, t.normalise = a["lr_warmup_steps"], a["clip"], int(a["normalise"])
    t.auxk_coef, t.aux_k, t.bodycount = a["auxk"], int(a["aux_k"]), a["bodycount"]
    t.lmbda, t.lmbda_warmup_steps, t.bandwidth = a["lmbda"], a["lmbda_warmup_steps"], a["bandwidth"]
    t.ghost_grads, t.resample_every, t.resample_pool = int(a["ghost_grads"]), a["resample_every"], a["resample_pool"]
    t.threshold_decay = a["threshold_decay"]
    sp = Spec(arch=archv.value, k=int(a["k"]), seed=int(a["seed"]),
              groups=groups.encode() if groups is not None else None,
              matryoshka_base=a["matryoshka_base"].encode(),
              jumpthreshold=float(a["jumpthreshold"]) if a["jumpthreshold"] is not None else 0.0,
              b_dec_init=a["b_dec_init"].encode(), normalize_input=int(bool(a["normalize_input"])))
    D = ctypes.create_string_buffer(_sizeof["data"])
    cpaths = (c_char_p * len(paths))(*[os.fsencode(p) for p in paths])
    check(_data_open(D, cpaths, len(paths), a["key"].encode()), "train")
    s = None
    try:
        d = ctypes.c_int.from_buffer(D, _data_d_offset()).value
        n = int(a["pages"]) if a["pages"] else d * int(a["expansion"])
        if n > (1 << 26) or (a["arch"] in ("topk", "batchtopk", "matryoshka") and a["k"] > n):
            raise SaeflowError(f"train: pages {n} (features x expansion) must be >= k {a['k']} and at most 2^26")
        sp.d, sp.n = d, n
        buf = ctypes.create_string_buffer(_lib.sf_sae_sizeof())
        # the model, its architecture options and the settings recorded in its
        # config: the library's builder, as `saeflow train` (errors name the option)
        check(_build(buf, ctypes.byref(sp), D, ctypes.byref(t)), "train")
        s = buf
        head = _lib.SaeHead.from_buffer(s)
        t.aux_k = min(int(a["aux_k"]), head.n)
        savedir = os.fspath(a["savedir"]) if a["savedir"] is not None else tmp
        k_name = a["k"] if a["arch"] in ("topk", "batchtopk", "matryoshka") else 0  # the CLI's k_sel
        name = a["name"] or f"{a['arch']}-k{k_name}-x{n // d if n % d == 0 else 0}"
        outdir = os.path.join(savedir, name)
        ro.batch_size, ro.num_epochs, ro.seed = int(a["batch_size"]), int(a["num_epochs"]), int(a["seed"])
        ro.outdir, ro.save_every, ro.quiet = os.fsencode(outdir), int(a["save_every"]), int(not a["progress"])
        last = Metrics()
        if a["progress"]:
            with relay_c_output():  # a notebook shows the C progress bar and summary
                rc = _train_run(s, D, ctypes.byref(ro), ctypes.byref(last))
        else:
            rc = _train_run(s, D, ctypes.byref(ro), ctypes.byref(last))
        check(rc, "train")
        steps = []
        mpath = os.path.join(outdir, "metrics.jsonl")
        if os.path.exists(mpath):
            with open(mpath) as f:
                steps = [json.loads(line) for line in f if line.strip()]
        metrics = {f: getattr(last, f) for f, _ in Metrics._fields_ if f != "hist"}
        metrics["hist"] = list(last.hist)
        model = SparseAutoencoder.load(outdir, threads=a["threads"])  # the saved weights (input scale folded in)
        return model, {"last": metrics, "steps": steps, "checkpoint": outdir if a["savedir"] is not None else None}
    finally:
        if s is not None:
            _lib.sf_sae_free(s)
        _data_close(D)


def _data_d_offset() -> int:
    """Offset of sf_sae_data.d: after files, t, start (pointers), n_files (int), N (int64)."""

    class _Head(ctypes.Structure):
        _fields_ = [("files", c_void_p), ("t", c_void_p), ("start", c_void_p), ("n_files", c_int),
                    ("N", c_int64), ("d", c_int)]

    return _Head.d.offset

"""Loading libsaeflow.so and declaring the C functions the package calls.

Only public headers are bound (include/saeflow/*.h). Structs the binding reads
are mirrored up to the fields it needs; their full size comes from the library
(sf_sae_sizeof), so a header change that grows them cannot overflow a buffer.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_int64, c_size_t, c_uint64, c_void_p


class SaeflowError(RuntimeError):
    """An error reported by the C library; the message is its sf_errmsg() text."""


def _candidates() -> list[str]:
    out = []
    env = os.environ.get("SAEFLOW_LIB")
    if env:
        out.append(env)
    try:
        from . import _where  # written by setup.py at install time

        out.append(os.path.join(_where.REPO, "build", "libsaeflow.so"))
    except ImportError:
        pass
    # running from the source tree (python/saeflow): the repository's build/
    here = os.path.dirname(os.path.abspath(__file__))
    out.append(os.path.join(here, "..", "..", "build", "libsaeflow.so"))
    try:
        libdir = subprocess.run(
            ["pkg-config", "--variable=libdir", "saeflow"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if libdir:
            out.append(os.path.join(libdir, "libsaeflow.so"))
    except (OSError, subprocess.SubprocessError):
        pass
    name = ctypes.util.find_library("saeflow")  # ldconfig's cache
    if name:
        out.append(name)
    return out


_CORE_PROBE = """
import ctypes, sys
f = ctypes.CDLL(sys.argv[1]).sf_kernels_blas_core_wanted
f.restype = ctypes.c_char_p
print((f() or b"").decode())
"""


def _blas_core(path: str) -> None:
    """Sets OPENBLAS_CORETYPE as the CLI's re-exec would (sf_kernels_fix_blas_core,
    docs/kernels.md): an OpenBLAS older than the CPU falls back to generic
    kernels, and the variable is read only when OpenBLAS loads, so a child
    process asks the library (sf_kernels_blas_core_wanted) before this one
    loads it. The same kernels as the CLI: the same speed and bits."""
    if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("SAEFLOW_NO_REEXEC"):
        return
    try:
        core = subprocess.run([sys.executable, "-c", _CORE_PROBE, path], capture_output=True, text=True,
                              timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return
    if core:
        os.environ["OPENBLAS_CORETYPE"] = core


def _load() -> ctypes.CDLL:
    tried = []
    for p in _candidates():
        if os.path.sep in p and not os.path.exists(p):
            tried.append(p + " (absent)")
            continue
        try:
            _blas_core(p)
            return ctypes.CDLL(p)
        except OSError as e:
            tried.append(f"{p} ({e})")
    raise ImportError(
        "saeflow: libsaeflow.so not found; build the C library (cmake --build build) or set "
        "SAEFLOW_LIB. Tried: " + "; ".join(tried)
    )


lib = _load()


class Codes(ctypes.Structure):
    """sf_sae_codes (sae.h)."""

    _fields_ = [
        ("B", c_int64),
        ("k", c_int),
        ("idx", POINTER(ctypes.c_int32)),
        ("val", POINTER(c_float)),
        ("cnt", POINTER(ctypes.c_int32)),
    ]


class SaeHead(ctypes.Structure):
    """The leading fields of sf_sae (sae.h); the rest is opaque here."""

    _fields_ = [("arch", c_int), ("d", c_int), ("n", c_int), ("k", c_int)]


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


F32P = POINTER(c_float)
sf_errmsg = _fn("sf_errmsg", c_char_p)
sf_error_clear = _fn("sf_error_clear", None)
sf_version = _fn("sf_version", c_char_p)
sf_sae_sizeof = _fn("sf_sae_sizeof", c_size_t)
sf_sae_init = _fn("sf_sae_init", c_int, c_void_p, c_int, c_int, c_int, c_int, c_uint64)
sf_sae_free = _fn("sf_sae_free", None, c_void_p)
sf_sae_load = _fn("sf_sae_load", c_int, c_void_p, c_char_p)
sf_sae_save_as = _fn("sf_sae_save_as", c_int, c_void_p, c_char_p, c_int)
sf_sae_format_parse = _fn("sf_sae_format_parse", c_int, c_char_p, POINTER(c_int))
sf_sae_arch_parse = _fn("sf_sae_arch_parse", c_int, c_char_p, POINTER(c_int))
sf_sae_arch_name = _fn("sf_sae_arch_name", c_char_p, c_int)
sf_sae_encoder_new = _fn("sf_sae_encoder_new", c_void_p, c_void_p)
sf_sae_encoder_run = _fn("sf_sae_encoder_run", c_int, c_void_p, F32P, c_int64, POINTER(Codes))
sf_sae_encoder_free = _fn("sf_sae_encoder_free", None, c_void_p)
sf_sae_codes_dense = _fn("sf_sae_codes_dense", None, POINTER(Codes), c_int, F32P)
sf_sae_decode = _fn("sf_sae_decode", None, c_void_p, POINTER(Codes), F32P)
sf_sae_surgery = _fn("sf_sae_surgery", c_int, c_void_p, F32P, c_int64, c_int, c_float, F32P)
sf_kernels_set_threads = _fn("sf_kernels_set_threads", None, c_int)
sf_sae_config_set_number = _fn("sf_sae_config_set_number", None, c_void_p, c_char_p, c_double)
sf_sae_config_set_string = _fn("sf_sae_config_set_string", None, c_void_p, c_char_p, c_char_p)


def check(rc: int, what: str = "") -> None:
    """Raises SaeflowError with the C library's message when rc != 0."""
    if rc != 0:
        msg = sf_errmsg().decode("utf-8", "replace")
        raise SaeflowError(f"{what}: {msg}" if what else msg)

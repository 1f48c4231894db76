"""The SAE model object over sf_sae (include/saeflow/sae.h)."""
from __future__ import annotations

import ctypes
import os
from typing import Any, Optional, Tuple, Union

import numpy as np

from . import _lib
from ._lib import F32P, Codes, SaeflowError, check

ArrayLike = Any  # numpy array, torch tensor, anything np.asarray takes
CSR = Tuple[np.ndarray, np.ndarray, np.ndarray]  # indptr int64, indices int32, values float32


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _as_f32_rows(x: ArrayLike, width: int, what: str) -> Tuple[np.ndarray, bool]:
    """x as a C-contiguous float32 (B, width) array, copying only when it is not
    one already. Torch CPU tensors are viewed through DLPack (no copy). Returns
    (array, was_1d)."""
    if not isinstance(x, np.ndarray):
        if _is_torch(x):
            x = x.detach()
            if x.device.type != "cpu":
                x = x.cpu()
            try:
                x = np.from_dlpack(x)
            except (AttributeError, TypeError, RuntimeError, BufferError):
                x = x.numpy()
        else:
            x = np.asarray(x)
    one = x.ndim == 1
    if one:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected shape [B, {width}] or [{width}], found {list(x.shape)}")
    if x.shape[1] != width:
        raise ValueError(f"{what}: expected width {width}, found shape {list(x.shape)}")
    if x.dtype != np.float32:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"{what}: expected a float array, found dtype {x.dtype}")
        x = x.astype(np.float32)
    return np.ascontiguousarray(x), one  # no copy when already C-contiguous


def _like(out: np.ndarray, x: Any, one: bool) -> Any:
    """The result in the caller's kind: a torch tensor for torch input."""
    if one:
        out = out[0]
    if _is_torch(x):
        import torch

        return torch.from_numpy(out)
    return out


def _fptr(a: np.ndarray):
    return a.ctypes.data_as(F32P)


class SparseAutoencoder:
    """A loaded SAE checkpoint (any of the seed, saelens, sparsify layouts).

    `threads` sets the OpenMP threads of every call made through this model
    (None: leave the library's setting, by default OMP_NUM_THREADS or all cores).
    Calls release the GIL while C runs (ctypes does so for every foreign call).
    """

    def __init__(self, _buf: ctypes.Array, threads: Optional[int] = None):
        self._buf = _buf
        self._head = _lib.SaeHead.from_buffer(_buf)
        self._enc = None
        self.threads = threads

    # -- construction --------------------------------------------------
    @classmethod
    def load(cls, path: Union[str, os.PathLike], threads: Optional[int] = None) -> "SparseAutoencoder":
        """Loads a checkpoint directory; the layout is detected from its files."""
        buf = ctypes.create_string_buffer(_lib.sf_sae_sizeof())
        check(_lib.sf_sae_load(buf, os.fsencode(path)), f"saeflow.load({os.fspath(path)!r})")
        return cls(buf, threads)

    @classmethod
    def init(cls, d: int, n: int, k: int, arch: str = "topk", seed: int = 0,
             threads: Optional[int] = None) -> "SparseAutoencoder":
        """A fresh model initialised as the reference does (sf_sae_init)."""
        a = ctypes.c_int()
        check(_lib.sf_sae_arch_parse(arch.encode(), ctypes.byref(a)), "arch")
        buf = ctypes.create_string_buffer(_lib.sf_sae_sizeof())
        check(_lib.sf_sae_init(buf, a.value, int(d), int(n), int(k), int(seed)), "init")
        return cls(buf, threads)

    def close(self) -> None:
        """Frees the C model now (also done when the object is collected)."""
        if getattr(self, "_enc", None):
            _lib.sf_sae_encoder_free(self._enc)
            self._enc = None
        if getattr(self, "_buf", None) is not None:
            _lib.sf_sae_free(self._buf)
            self._buf = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _ptr(self):
        if self._buf is None:
            raise SaeflowError("model is closed")
        if self.threads is not None:
            _lib.sf_kernels_set_threads(int(self.threads))
        return self._buf

    # -- shape ----------------------------------------------------------
    @property
    def d(self) -> int:
        """Input width ("features")."""
        return self._head.d

    @property
    def n(self) -> int:
        """Dictionary size ("pages")."""
        return self._head.n

    @property
    def k(self) -> int:
        """Active latents per row (code capacity per row for non-TopK)."""
        return self._head.k

    @property
    def arch(self) -> str:
        return _lib.sf_sae_arch_name(self._head.arch).decode()

    def __repr__(self) -> str:
        return f"saeflow.SparseAutoencoder(arch={self.arch}, d={self.d}, n={self.n}, k={self.k})"

    # -- encode / decode ---------------------------------------------------
    def _encode_codes(self, x: np.ndarray):
        s = self._ptr()
        if self._enc is None:
            self._enc = _lib.sf_sae_encoder_new(s)
            if not self._enc:
                check(-1, "encode")
        B, k = x.shape[0], self.k
        idx = np.empty((B, k), np.int32)
        val = np.empty((B, k), np.float32)
        cnt = np.empty(B, np.int32)
        c = Codes(B, k, idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), _fptr(val),
                  cnt.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)))
        check(_lib.sf_sae_encoder_run(self._enc, _fptr(x), B, ctypes.byref(c)), "encode")
        return idx, val, cnt

    def encode(self, x: ArrayLike, sparse: bool = False, out: Optional[np.ndarray] = None) -> Any:
        """x (B, d) -> codes z = TopK_k(ReLU(W_enc (x - b) + b_enc)).

        Dense (B, n) float32 by default (a torch tensor for torch input),
        written into `out` when given (a C-contiguous float32 numpy array of
        that shape, reused across calls: a fresh 64 MiB result costs its page
        faults on every call). With sparse=True: a scipy.sparse.csr_matrix
        when scipy is installed, else the CSR triplet (indptr int64 [B+1],
        indices int32 [nnz], values float32 [nnz]) -- the arrays `saeflow
        encode` writes."""
        xa, one = _as_f32_rows(x, self.d, "encode")
        B = xa.shape[0]
        if out is not None and not sparse:
            if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
                    and out.flags.writeable and out.size == B * self.n and out.ndim == (1 if one else 2)):
                raise ValueError(f"encode: out must be a writeable C-contiguous float32 array of shape "
                                 f"{[self.n] if one else [B, self.n]}")
        idx, val, cnt = self._encode_codes(xa)
        if sparse:
            mask = np.arange(idx.shape[1])[None, :] < cnt[:, None]
            indptr = np.zeros(B + 1, np.int64)
            np.cumsum(cnt, out=indptr[1:])
            indices, values = idx[mask], val[mask]
            try:
                import scipy.sparse as sp
            except ImportError:
                return indptr, indices, values
            return sp.csr_matrix((values, indices, indptr), shape=(B, self.n))
        z = np.empty((B, self.n), np.float32) if out is None else out.reshape(B, self.n)
        c = Codes(B, idx.shape[1], idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), _fptr(val),
                  cnt.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)))
        _lib.sf_sae_codes_dense(ctypes.byref(c), self.n, _fptr(z))  # one pass, rows in parallel
        if out is not None:
            return out
        return _like(z, x, one)

    def _codes_from(self, h: Any):
        """Dense (B, n), scipy sparse, or CSR triplet -> (idx, val, cnt) arrays."""
        if hasattr(h, "tocsr") and not isinstance(h, np.ndarray):
            h = h.tocsr()
            if h.shape[1] != self.n:
                raise ValueError(f"decode: expected {self.n} columns, found shape {list(h.shape)}")
            indptr, indices, values = h.indptr, h.indices, h.data
        elif isinstance(h, tuple) and len(h) == 3:
            indptr, indices, values = (np.asarray(a) for a in h)
        else:
            ha, _ = _as_f32_rows(h, self.n, "decode")
            counts = np.count_nonzero(ha, axis=1)
            indptr = np.zeros(ha.shape[0] + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            _, indices = np.nonzero(ha)
            values = ha[ha != 0]
        indptr = np.asarray(indptr, np.int64)
        indices = np.asarray(indices, np.int64)
        values = np.asarray(values, np.float32)
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("decode: indptr must start at 0 and not decrease")
        nnz = int(indptr[-1])
        if indices.shape != (nnz,) or values.shape != (nnz,):
            raise ValueError(f"decode: indptr says {nnz} entries, indices {indices.shape}, values {values.shape}")
        if nnz and (indices.min() < 0 or indices.max() >= self.n):
            raise ValueError(f"decode: latent index out of range [0, {self.n})")
        B = indptr.size - 1
        cnt = np.diff(indptr).astype(np.int32)
        kmax = max(int(cnt.max()) if B else 0, 1)
        idx = np.zeros((B, kmax), np.int32)
        val = np.zeros((B, kmax), np.float32)
        rows = np.repeat(np.arange(B), cnt)
        pos = np.arange(nnz) - np.repeat(indptr[:-1], cnt)
        idx[rows, pos] = indices
        val[rows, pos] = values
        return idx, val, cnt

    def decode(self, h: Any) -> Any:
        """Codes -> x_hat = W_dec z + b, (B, d) float32. Takes what encode returns
        (dense, scipy CSR or the CSR triplet)."""
        idx, val, cnt = self._codes_from(h)
        B = cnt.shape[0]
        out = np.empty((B, self.d), np.float32)
        c = Codes(B, idx.shape[1], idx.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), _fptr(val),
                  cnt.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)))
        _lib.sf_sae_decode(self._ptr(), ctypes.byref(c), _fptr(out))
        one = isinstance(h, np.ndarray) and h.ndim == 1 or _is_torch(h) and h.dim() == 1
        return _like(out, h, one)

    def surgery(self, x: ArrayLike, feature: int, strength: float) -> Any:
        """decode(encode(x) + strength * e_feature), (B, d)."""
        xa, one = _as_f32_rows(x, self.d, "surgery")
        out = np.empty_like(xa)
        check(_lib.sf_sae_surgery(self._ptr(), _fptr(xa), xa.shape[0], int(feature), float(strength),
                                  _fptr(out)), "surgery")
        return _like(out, x, one)

    def save(self, path: Union[str, os.PathLike], format: str = "seed") -> None:
        """Writes the checkpoint directory in `format` (seed, saelens, sparsify),
        each file atomically."""
        f = ctypes.c_int()
        check(_lib.sf_sae_format_parse(format.encode(), ctypes.byref(f)), "save")
        check(_lib.sf_sae_save_as(self._ptr(), os.fsencode(path), f.value), f"save({os.fspath(path)!r})")


class TopkSparseAutoencoder(SparseAutoencoder):
    """The reference project's names (autoencoder.py): from_pretrained, encode,
    decode, surgery(acts, k, strength) where k is the latent to boost."""

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], threads: Optional[int] = None,
                        **_ignored: Any) -> "TopkSparseAutoencoder":
        return cls.load(path, threads=threads)

    def surgery(self, acts: ArrayLike, k: int, strength: float = 1.0) -> Any:  # type: ignore[override]
        return super().surgery(acts, k, strength)


def load(path: Union[str, os.PathLike], threads: Optional[int] = None) -> SparseAutoencoder:
    """Loads an SAE checkpoint directory (seed, saelens or sparsify layout)."""
    return SparseAutoencoder.load(path, threads=threads)

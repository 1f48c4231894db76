"""saeflow.extract: CLIP activations of images and captions held in Python,
through the C library's CLIP source (include/saeflow/pipeline.h,
sf_clip_source_open over samples in memory): the same decoding,
CLIPImageProcessor preprocessing, BPE tokenizer and towers as `saeflow
extract`, so the same inputs give the same bits."""
from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_float, c_int, c_int32, c_int64, c_size_t, c_uint8, c_void_p
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import SaeflowError, check, lib

_MAX_STREAMS = 16  # SF_ACT_MAX_STREAMS


class _Sample(ctypes.Structure):
    """sf_sample (dataset.h)."""

    _fields_ = [("row", c_int64), ("id", c_char_p), ("image", POINTER(c_uint8)), ("image_len", c_size_t),
                ("image_ext", c_char_p), ("caption", c_char_p), ("caption_len", c_size_t)]


class _Opts(ctypes.Structure):
    """sf_clip_source_opts (pipeline.h)."""

    _fields_ = [("model", c_char_p), ("dataset", c_char_p), ("captions_path", c_char_p),
                ("tokenizer_dir", c_char_p), ("vision", c_char_p), ("text", c_char_p),
                ("vision_required", c_int), ("text_required", c_int), ("tokens_all", c_int),
                ("dtype", c_int), ("batch", c_int), ("fixed_groups", c_int), ("pillow_legacy", c_int),
                ("alpha_white", c_int), ("limit", c_int64), ("samples", POINTER(_Sample)),
                ("n_samples", c_int64), ("clip", c_void_p)]


class _LoadOpts(ctypes.Structure):
    """sf_clip_load_opts (clip.h)."""

    _fields_ = [("dtype", c_int), ("vision", c_int), ("text", c_int)]


class _Stream(ctypes.Structure):
    """sf_act_stream (pipeline.h)."""

    _fields_ = [("name", c_char_p), ("d", c_int64), ("n", c_int64), ("x", POINTER(c_float)),
                ("rows", POINTER(c_int64)), ("pos", POINTER(c_int32))]


class _Skip(ctypes.Structure):
    """sf_act_skip (pipeline.h)."""

    _fields_ = [("row", c_int64), ("id", c_char_p), ("why", c_char_p)]


class _Batch(ctypes.Structure):
    """sf_act_batch (pipeline.h)."""

    _fields_ = [("n_streams", c_int), ("stream", _Stream * _MAX_STREAMS), ("n_examples", c_int64),
                ("ex_rows", POINTER(c_int64)), ("ex_ids", POINTER(c_char_p)), ("n_skipped", c_int64),
                ("skipped", POINTER(_Skip)), ("next_row", c_int64)]


class _Source(ctypes.Structure):
    """The common head of sf_act_source (pipeline.h)."""

    _fields_ = [("ops", c_void_p), ("n_streams", c_int), ("names", c_char_p * _MAX_STREAMS),
                ("d", c_int64 * _MAX_STREAMS), ("per_token", c_int * _MAX_STREAMS), ("n_rows", c_int64)]


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


_open = _fn("sf_clip_source_open", POINTER(_Source), POINTER(_Opts))
_next = _fn("sf_act_source_next", c_int, POINTER(_Source), POINTER(_Batch))
_close = _fn("sf_act_source_close", None, POINTER(_Source))
_dtype_name = _fn("sf_dtype_name", c_char_p, c_int)
_clip_load = _fn("sf_clip_load", c_void_p, c_char_p, POINTER(_LoadOpts))
_clip_free = _fn("sf_clip_free", None, c_void_p)
_sizeof = {n: _fn(f"sf_{n}_sizeof", c_size_t)() for n in ("clip_source_opts", "act_batch", "sample")}


def _check_sizes() -> None:
    for name, cls in (("clip_source_opts", _Opts), ("act_batch", _Batch), ("sample", _Sample)):
        if ctypes.sizeof(cls) != _sizeof[name]:
            raise SaeflowError(f"saeflow: sf_{name} is {_sizeof[name]} bytes in libsaeflow.so, "
                               f"{ctypes.sizeof(cls)} in the binding: python/saeflow/clip.py is out of date")


def _dtype(name: str) -> int:
    want = {"f32": b"F32", "bf16": b"BF16"}.get(name)
    if want is None:
        raise ValueError(f"extract: dtype must be 'f32' or 'bf16', found {name!r}")
    for i in range(64):
        if _dtype_name(i) == want:
            return i
    raise SaeflowError(f"extract: the library has no dtype {want.decode()}")  # pragma: no cover


def _ppm(a: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) pixels as binary PGM / PPM, the raw container
    the C decoder reads without changing a sample."""
    if a.ndim == 2:
        magic = b"P5"
    elif a.ndim == 3 and a.shape[2] == 3:
        magic = b"P6"
    else:
        raise ValueError(f"extract: an image array must be uint8 [H, W] or [H, W, 3], found {list(a.shape)}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"extract: empty image array {list(a.shape)}")
    return b"%s\n%d %d\n255\n" % (magic, a.shape[1], a.shape[0]) + np.ascontiguousarray(a).tobytes()


def _image_bytes(im: Any, i: int, alpha: str) -> Tuple[bytes, str]:
    """One image input -> (encoded bytes for the C decoder, id for messages)."""
    if isinstance(im, (str, os.PathLike)):
        path = os.fspath(im)
        try:
            with open(path, "rb") as f:
                return f.read(), path
        except OSError as e:
            raise SaeflowError(f"extract: image {i}: {path}: {e.strerror or e}") from None
    if isinstance(im, (bytes, bytearray, memoryview)):
        return bytes(im), f"#{i}"
    if type(im).__module__.startswith("PIL."):
        # Pillow's own conversion, as the reference's pipeline (convert("RGB")
        # drops alpha; transformers 5's convert_to_rgb composites onto white)
        if alpha == "white" and im.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa"):
            from PIL import Image

            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        return _ppm(np.asarray(im.convert("RGB"), dtype=np.uint8)), f"#{i}"
    if _is_torch_like(im) or isinstance(im, np.ndarray):
        a = np.asarray(im)
        if a.dtype != np.uint8:
            raise TypeError(f"extract: image {i}: expected a uint8 array, found dtype {a.dtype}")
        if a.ndim == 3 and a.shape[2] == 4:
            if alpha == "white":
                raise ValueError(f"extract: image {i}: alpha='white' needs a PIL image or encoded bytes, "
                                 "not an RGBA array")
            a = a[:, :, :3]  # alpha dropped, like Pillow's convert("RGB")
        return _ppm(a), f"#{i}"
    raise TypeError(f"extract: image {i}: expected a path, bytes, a uint8 array or a PIL image, "
                    f"found {type(im).__name__}")


def _is_torch_like(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def extract(model: Union[str, os.PathLike], images: Optional[Sequence[Any]] = None,
            captions: Optional[Sequence[str]] = None, *, vision: str = "layer:-2", text: str = "pooled",
            tokens: str = "cls", batch_size: int = 32, dtype: str = "f32", threads: Optional[int] = None,
            alpha: str = "drop", pillow: int = 13, tokenizer: Optional[Union[str, os.PathLike]] = None,
            on_error: str = "raise", _clip: Optional["CLIP"] = None) -> Dict[str, Any]:
    """CLIP activations of `images` and/or `captions`, as `saeflow extract`
    computes them (same decoding, preprocessing, tokenizer and forward groups
    of `batch_size`, so the same inputs give the same bits).

    model: a Hugging Face CLIP directory (config.json + model.safetensors).
    images: a list of paths, encoded bytes (JPEG/PNG/WebP), uint8 arrays
      [H, W] / [H, W, 3] / [H, W, 4] (alpha dropped) or PIL images (converted
      with Pillow's convert("RGB")); one such image alone; or a uint8 array
      [N, H, W, 3]. None: the vision tower is off.
    captions: a list of strings (one per image when both are given); None:
      the text tower is off.
    vision / text: "layer:N" (hidden_states[N], negative from the end),
      "pooled", "embeds" or "none"; defaults are the reference's activations.
    tokens: "cls" (one row per input) or "all" (every token of a layer
      output; text: the non-padding tokens).

    Returns a dict of numpy arrays: "vision" [N, d_v] and/or "text" [N, d_t]
    float32, "rows" int64 [N] (the input index of each row); with tokens="all"
    also "<stream>_rows" int64 and "<stream>_pos" int32 per token row; and
    "skipped", a list of (input index, reason). on_error="raise" (default)
    raises SaeflowError for an image that fails to decode; "skip" drops it
    (from every stream) and lists it in "skipped", as the CLI does.
    """
    _check_sizes()
    if on_error not in ("raise", "skip"):
        raise ValueError(f"extract: on_error must be 'raise' or 'skip', found {on_error!r}")
    if tokens not in ("cls", "all"):
        raise ValueError(f"extract: tokens must be 'cls' or 'all', found {tokens!r}")
    if alpha not in ("drop", "white"):
        raise ValueError(f"extract: alpha must be 'drop' or 'white', found {alpha!r}")
    if pillow not in (12, 13):
        raise ValueError(f"extract: pillow must be 12 or 13, found {pillow!r}")
    if isinstance(captions, str):
        captions = [captions]
    if images is not None:
        if isinstance(images, (str, os.PathLike, bytes, bytearray)) or type(images).__module__.startswith("PIL."):
            images = [images]  # one image
        elif isinstance(images, np.ndarray) or _is_torch_like(images):
            a = np.asarray(images)
            # (H, W) / (H, W, C): one image; (N, H, W, C): a batch of them
            images = list(a) if a.ndim == 4 else [a]
    if images is None and captions is None:
        raise ValueError("extract: give images, captions or both")
    n = len(images) if images is not None else len(captions)  # type: ignore[arg-type]
    if images is not None and captions is not None and len(captions) != n:
        raise ValueError(f"extract: {n} images but {len(captions)} captions (one caption per image)")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 65536:
        raise ValueError("extract: batch_size must be in [1, 65536]")
    vision_s = vision if images is not None else "none"
    text_s = text if captions is not None else "none"

    keep: List[Any] = []  # the bytes the C samples point to, alive until the source closes
    samples = (_Sample * max(n, 1))()
    for i in range(n):
        s = samples[i]
        s.row = i
        if images is not None:
            data, ident = _image_bytes(images[i], i, alpha)
            buf = ctypes.create_string_buffer(data, len(data))
            keep.append(buf)
            s.image = ctypes.cast(buf, POINTER(c_uint8))
            s.image_len = len(data)
            idb = ident.encode("utf-8", "replace")
            keep.append(idb)
            s.id = idb
        if captions is not None:
            c = captions[i]
            if not isinstance(c, str):
                raise TypeError(f"extract: caption {i}: expected str, found {type(c).__name__}")
            cb = c.encode("utf-8")
            if b"\0" in cb:
                raise ValueError(f"extract: caption {i} holds a NUL character")
            keep.append(cb)
            s.caption = cb
            s.caption_len = len(cb)

    o = _Opts()
    o.model = os.fsencode(model)
    o.tokenizer_dir = os.fsencode(tokenizer) if tokenizer is not None else None
    o.vision, o.text = vision_s.encode(), text_s.encode()
    o.vision_required, o.text_required = int(images is not None), int(captions is not None)
    o.tokens_all = int(tokens == "all")
    o.dtype = _dtype(dtype)
    o.batch = batch_size
    o.fixed_groups = 0  # as extract: each read of batch_size inputs is one forward group
    o.pillow_legacy = int(pillow == 12)
    o.alpha_white = int(alpha == "white")
    o.limit = -1
    o.samples = samples
    o.n_samples = n
    if _clip is not None:
        o.clip = _clip._handle()

    if threads is not None:
        _lib.sf_kernels_set_threads(int(threads))
    src = _open(ctypes.byref(o))
    if not src:
        check(-1, "extract")
    try:
        head = src.contents
        names = [head.names[i].decode() for i in range(head.n_streams)]
        widths = [int(head.d[i]) for i in range(head.n_streams)]
        per_token = [bool(head.per_token[i]) for i in range(head.n_streams)]
        xs: List[List[np.ndarray]] = [[] for _ in names]
        trows: List[List[np.ndarray]] = [[] for _ in names]
        tpos: List[List[np.ndarray]] = [[] for _ in names]
        rows: List[np.ndarray] = []
        skipped: List[Tuple[int, str]] = []
        b = _Batch()
        while True:
            r = _next(src, ctypes.byref(b))
            if r < 0:
                check(-1, "extract")
            if r == 0:
                break
            for j in range(b.n_skipped):
                sk = b.skipped[j]
                why = sk.why.decode("utf-8", "replace")
                if on_error == "raise":
                    raise SaeflowError(f"extract: input {sk.row}: {why}")
                skipped.append((int(sk.row), why))
            if b.n_examples:
                rows.append(np.ctypeslib.as_array(b.ex_rows, (b.n_examples,)).copy())
            for j in range(b.n_streams):
                st = b.stream[j]
                if st.n == 0:
                    continue
                xs[j].append(np.ctypeslib.as_array(st.x, (st.n, st.d)).copy())
                if per_token[j]:
                    trows[j].append(np.ctypeslib.as_array(st.rows, (st.n,)).copy())
                    tpos[j].append(np.ctypeslib.as_array(st.pos, (st.n,)).copy())
    finally:
        _close(src)
    out: Dict[str, Any] = {}
    for j, name in enumerate(names):
        out[name] = np.concatenate(xs[j]) if xs[j] else np.zeros((0, widths[j]), np.float32)
        if per_token[j]:
            out[f"{name}_rows"] = np.concatenate(trows[j]) if trows[j] else np.zeros(0, np.int64)
            out[f"{name}_pos"] = np.concatenate(tpos[j]) if tpos[j] else np.zeros(0, np.int32)
    out["rows"] = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    out["skipped"] = skipped
    return out


class CLIP:
    """A CLIP checkpoint loaded once (sf_clip_load) for many extract calls:
    `CLIP(model).extract(images, captions, ...)` is `extract(model, ...)`
    without loading the weights again (seconds for a ViT-L/14). dtype: "f32"
    or "bf16" weights in memory; vision / text: load that tower. Free it with
    close() (also done when collected)."""

    def __init__(self, model: Union[str, os.PathLike], dtype: str = "f32", vision: bool = True,
                 text: bool = True):
        self.model = os.fspath(model)
        self.dtype = dtype
        self._h = None
        lo = _LoadOpts(_dtype(dtype), int(vision), int(text))
        h = _clip_load(os.fsencode(self.model), ctypes.byref(lo))
        if not h:
            check(-1, f"saeflow.CLIP({self.model!r})")
        self._h = h

    def _handle(self) -> int:
        if not self._h:
            raise SaeflowError("CLIP model is closed")
        return self._h

    def extract(self, images: Optional[Sequence[Any]] = None, captions: Optional[Sequence[str]] = None,
                **kw: Any) -> Dict[str, Any]:
        """extract(model, images, captions, **kw) on this loaded model (see
        saeflow.extract; dtype is the one it was loaded with)."""
        if "dtype" in kw and kw["dtype"] != self.dtype:
            raise ValueError(f"extract: this model was loaded as {self.dtype}")
        kw["dtype"] = self.dtype
        return extract(self.model, images, captions, _clip=self, **kw)

    def close(self) -> None:
        if getattr(self, "_h", None):
            _clip_free(self._h)
            self._h = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "CLIP":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

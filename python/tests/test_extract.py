"""saeflow.extract equals `saeflow extract` on the same inputs, bit for bit:
both run the C library's CLIP source (decoding, CLIPImageProcessor
preprocessing, BPE tokenizer, towers) with the same forward groups. The model
is the e2e fixture (a tiny random CLIPModel with preprocessor and tokenizer)."""
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from conftest import FIX

import saeflow
from saeflow import _st

MODEL = os.path.join(FIX, "clip", "e2e")
IMAGES = os.path.join(FIX, "clip-inputs", "images")
CAPTIONS = os.path.join(FIX, "clip", "e2e_captions.txt")
PATHS = sorted(os.path.join(IMAGES, f) for f in os.listdir(IMAGES))  # the folder dataset's row order


def _captions():
    with open(CAPTIONS, encoding="utf-8") as f:
        return f.read().split("\n")[: len(PATHS)]


def _cli_extract(cli, tmp_path, images=IMAGES, *flags):
    out = tmp_path / f"cli{len(os.listdir(tmp_path))}.safetensors"
    cli("extract", "--model", MODEL, "--images", images, "--out", out, *flags)
    return _st.read(str(out))


def _png(path, a):
    """A minimal PNG writer (zlib, no Pillow): 8-bit grey, RGB or RGBA."""
    h, w = a.shape[:2]
    ch = 1 if a.ndim == 2 else a.shape[2]
    ctype = {1: 0, 3: 2, 4: 6}[ch]
    raw = b"".join(b"\0" + a[y].tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_paths_and_captions_equal_cli(cli, tmp_path):
    ref = _cli_extract(cli, tmp_path, IMAGES, "--captions", CAPTIONS)
    got = saeflow.extract(MODEL, PATHS, _captions(), threads=2)
    for k in ("vision", "text", "rows"):
        assert got[k].dtype == ref[k].dtype
        np.testing.assert_array_equal(got[k], ref[k])
    assert got["skipped"] == []
    # encoded bytes are the same input as the files
    raw = [open(p, "rb").read() for p in PATHS]
    np.testing.assert_array_equal(saeflow.extract(MODEL, raw)["vision"], ref["vision"])


def test_tokens_all_and_batches_equal_cli(cli, tmp_path):
    flags = ("--captions", CAPTIONS, "--vision", "layer:1", "--text", "layer:1", "--tokens", "all",
             "--batch_size", "7")
    ref = _cli_extract(cli, tmp_path, IMAGES, *flags)
    got = saeflow.extract(MODEL, PATHS, _captions(), vision="layer:1", text="layer:1", tokens="all",
                          batch_size=7)
    for k in ("vision", "vision_rows", "vision_pos", "text", "text_rows", "text_pos", "rows"):
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_captions_only_and_embeds(cli, tmp_path):
    ref = _cli_extract(cli, tmp_path, IMAGES, "--captions", CAPTIONS, "--vision", "none", "--text", "embeds")
    got = saeflow.extract(MODEL, captions=_captions(), text="embeds")
    assert set(got) == {"text", "rows", "skipped"}
    np.testing.assert_array_equal(got["text"], ref["text"])


def test_arrays_equal_cli_on_png(cli, tmp_path, rng):
    """uint8 arrays (grey, RGB, RGBA with alpha dropped) give what the CLI
    gives on the same pixels stored as PNG files."""
    d = tmp_path / "imgs"
    d.mkdir()
    arrs = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.integers(0, 256, (300, 41), dtype=np.uint8),
            rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), rng.integers(0, 256, (16, 200, 3), dtype=np.uint8)]
    for i, a in enumerate(arrs):
        _png(d / f"{i}.png", a)
    ref = _cli_extract(cli, tmp_path, d, "--text", "none")
    got = saeflow.extract(MODEL, arrs)
    np.testing.assert_array_equal(got["vision"], ref["vision"])
    # a non-contiguous view is the same image (alone: a forward group of 1)
    big = np.zeros((37, 106, 3), np.uint8)
    big[:, ::2] = arrs[0]
    np.testing.assert_array_equal(saeflow.extract(MODEL, [big[:, ::2]])["vision"],
                                  saeflow.extract(MODEL, arrs[:1])["vision"])


def test_pil_images_equal_cli():
    """PIL images (Pillow's convert("RGB")) give the CLI's bits for every
    fixture image: the C decoder matches Pillow."""
    Image = pytest.importorskip("PIL.Image")
    ref = saeflow.extract(MODEL, PATHS)
    ims = [Image.open(p) for p in PATHS]
    np.testing.assert_array_equal(saeflow.extract(MODEL, ims)["vision"], ref["vision"])


def test_pil_alpha_white_equals_cli(cli, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    d = tmp_path / "alpha"
    d.mkdir()
    names = ["rgba_160x210.png", "greyalpha_150x226.png", "palette_trns_97x131.png"]
    for n in names:
        shutil.copy(os.path.join(IMAGES, n), d / n)
    ref = _cli_extract(cli, tmp_path, d, "--alpha", "white", "--text", "none")
    got = saeflow.extract(MODEL, [Image.open(d / n) for n in sorted(names)], alpha="white")
    np.testing.assert_array_equal(got["vision"], ref["vision"])


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(saeflow.SaeflowError, match="not a JPEG, PNG, WebP or PPM image"):
        saeflow.extract(MODEL, [open(PATHS[0], "rb").read(), b"junk"])
    with pytest.raises(saeflow.SaeflowError, match="nope.png"):
        saeflow.extract(MODEL, [str(tmp_path / "nope.png")])
    with pytest.raises(saeflow.SaeflowError, match="config.json"):
        saeflow.extract(str(tmp_path), captions=["a"])
    with pytest.raises(saeflow.SaeflowError, match="layer"):
        saeflow.extract(MODEL, PATHS[:1], vision="layer:99")
    with pytest.raises(ValueError, match="one caption per image"):
        saeflow.extract(MODEL, PATHS[:2], ["a"])
    with pytest.raises(TypeError, match="uint8"):
        saeflow.extract(MODEL, [np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        saeflow.extract(MODEL, [np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(TypeError, match="expected a path"):
        saeflow.extract(MODEL, [42])
    with pytest.raises(ValueError):
        saeflow.extract(MODEL)
    with pytest.raises(ValueError, match="dtype"):
        saeflow.extract(MODEL, PATHS[:1], dtype="f16")


def test_skip_keeps_streams_aligned():
    raw = [open(p, "rb").read() for p in PATHS[:3]]
    got = saeflow.extract(MODEL, [raw[0], b"junk", raw[2]], ["a", "b", "c"], on_error="skip")
    assert [r for r, _ in got["skipped"]] == [1] and "unrecognised magic bytes" in got["skipped"][0][1]
    np.testing.assert_array_equal(got["rows"], [0, 2])
    ref = saeflow.extract(MODEL, [raw[0], raw[2]], ["a", "c"])
    np.testing.assert_array_equal(got["vision"], ref["vision"])
    np.testing.assert_array_equal(got["text"], ref["text"])
    empty = saeflow.extract(MODEL, [], [])
    assert empty["vision"].shape == (0, 32) and empty["rows"].shape == (0,)


def test_single_inputs_and_batch_array(rng):
    """One image (path, bytes, array) or one caption alone; an [N, H, W, 3]
    array is N images."""
    one = saeflow.extract(MODEL, PATHS[0], "a cat")
    np.testing.assert_array_equal(one["vision"], saeflow.extract(MODEL, [PATHS[0]], ["a cat"])["vision"])
    np.testing.assert_array_equal(one["text"], saeflow.extract(MODEL, [PATHS[0]], ["a cat"])["text"])
    np.testing.assert_array_equal(saeflow.extract(MODEL, open(PATHS[0], "rb").read())["vision"], one["vision"])
    batch = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    got = saeflow.extract(MODEL, batch)
    assert got["vision"].shape == (3, 32)
    np.testing.assert_array_equal(got["vision"], saeflow.extract(MODEL, list(batch))["vision"])
    assert saeflow.extract(MODEL, batch[0])["vision"].shape == (1, 32)


def test_loaded_model_reused():
    """CLIP(model).extract gives extract(model)'s bits on every call, for
    both towers and one alone; a missing tower or a closed model raises."""
    caps = _captions()
    ref = saeflow.extract(MODEL, PATHS, caps)
    with saeflow.CLIP(MODEL) as m:
        for _ in range(2):
            got = m.extract(PATHS, caps)
            np.testing.assert_array_equal(got["vision"], ref["vision"])
            np.testing.assert_array_equal(got["text"], ref["text"])
        np.testing.assert_array_equal(m.extract(captions=caps)["text"], saeflow.extract(MODEL, captions=caps)["text"])
    with pytest.raises(saeflow.SaeflowError, match="closed"):
        m.extract(PATHS[:1])
    v = saeflow.CLIP(MODEL, text=False)
    with pytest.raises(saeflow.SaeflowError, match="no text tower"):
        v.extract(captions=["a"])
    v.close()
    with pytest.raises(saeflow.SaeflowError, match="config.json"):
        saeflow.CLIP(os.path.join(FIX, "nope"))

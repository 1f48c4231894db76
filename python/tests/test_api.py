"""Reference quickstart, input handling, errors, memory."""
import ctypes
import gc
import os
import threading
import time

import numpy as np
import pytest
from conftest import CHECKPOINTS

import saeflow


def test_reference_quickstart():
    # The reference README's quickstart with one changed import (and numpy
    # activations in place of CLIP's, which need torch and the weights).
    from saeflow import TopkSparseAutoencoder

    sae = TopkSparseAutoencoder.from_pretrained(CHECKPOINTS["seed"])
    acts = np.random.default_rng(0).standard_normal((4, sae.d)).astype(np.float32)
    hiddens = sae.encode(acts)
    reconstructed = sae.decode(hiddens)
    botched = sae.surgery(acts, k=12, strength=42.)
    assert hiddens.shape == (4, sae.n) and reconstructed.shape == acts.shape
    assert (np.count_nonzero(hiddens, axis=1) <= sae.k).all()
    # surgery adds 42 x decoder column 12 to the reconstruction
    e = np.zeros((1, sae.n), np.float32)
    e[0, 12] = 1
    col = sae.decode(e) - sae.decode(np.zeros((1, sae.n), np.float32))
    np.testing.assert_allclose(botched, reconstructed + 42 * col, rtol=1e-5, atol=1e-4)


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    sae = saeflow.TopkSparseAutoencoder.from_pretrained(CHECKPOINTS["seed"])
    acts = torch.randn(3, sae.d)
    h = sae.encode(acts)
    assert isinstance(h, torch.Tensor) and h.shape == (3, sae.n)
    np.testing.assert_array_equal(sae.encode(acts.numpy()), h.numpy())
    assert sae.decode(h).shape == (3, sae.d)


def test_inputs_no_copy_and_conversions(rng):
    sae = saeflow.load(CHECKPOINTS["seed"])
    x = rng.standard_normal((6, sae.d))
    want = sae.encode(x.astype(np.float32))
    np.testing.assert_array_equal(sae.encode(x), want)  # float64 converted
    np.testing.assert_array_equal(sae.encode(np.asfortranarray(x)), want)  # non-contiguous
    np.testing.assert_array_equal(sae.encode(x[2].astype(np.float32)), sae.encode(x[2:3])[0])  # one row
    np.testing.assert_array_equal(sae.encode(x.astype(np.float32).tolist()), want)


def test_dense_out_reused(rng):
    """encode(x, out=buf) writes the dense codes into buf (every entry: the
    zeros too), equal to a fresh result; a wrong buffer raises."""
    sae = saeflow.load(CHECKPOINTS["seed"])
    x = rng.standard_normal((7, sae.d)).astype(np.float32)
    buf = np.full((7, sae.n), np.nan, np.float32)
    assert sae.encode(x, out=buf) is buf
    np.testing.assert_array_equal(buf, sae.encode(x))
    sp = sae.encode(x, sparse=True)
    rows = np.repeat(np.arange(7), np.diff(sp[0] if isinstance(sp, tuple) else sp.indptr))
    assert np.count_nonzero(buf) == rows.size
    one = np.empty(sae.n, np.float32)
    np.testing.assert_array_equal(sae.encode(x[3], out=one), buf[3])
    for bad in (np.empty((7, sae.n), np.float64), np.empty((6, sae.n), np.float32),
                np.empty((sae.n, 7), np.float32).T, np.empty((7, sae.n), np.float32)[::1, :-1]):
        with pytest.raises(ValueError, match="out must be"):
            sae.encode(x, out=bad)


def test_sparse_output(rng):
    sae = saeflow.load(CHECKPOINTS["seed"])
    x = rng.standard_normal((5, sae.d)).astype(np.float32)
    sp = sae.encode(x, sparse=True)
    try:
        import scipy.sparse

        assert isinstance(sp, scipy.sparse.csr_matrix)
        np.testing.assert_array_equal(sp.toarray(), sae.encode(x))
    except ImportError:
        indptr, indices, values = sp
        assert indptr.dtype == np.int64 and indices.dtype == np.int32 and values.dtype == np.float32
        assert indptr[-1] == indices.size == values.size
    np.testing.assert_array_equal(sae.decode(sp), sae.decode(sae.encode(x)))


def test_bad_inputs_raise(tmp_path):
    sae = saeflow.load(CHECKPOINTS["seed"])
    with pytest.raises(ValueError, match="width"):
        sae.encode(np.zeros((2, sae.d + 1), np.float32))
    with pytest.raises(ValueError):
        sae.encode(np.zeros((2, 2, sae.d), np.float32))
    with pytest.raises(TypeError):
        sae.encode(np.zeros((2, sae.d), complex))
    with pytest.raises(saeflow.SaeflowError, match="NaN or Inf"):
        sae.encode(np.full((2, sae.d), np.nan, np.float32))
    with pytest.raises(saeflow.SaeflowError, match="out of range"):
        sae.surgery(np.zeros((1, sae.d), np.float32), sae.n, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        sae.decode((np.array([0, 1]), np.array([sae.n]), np.array([1.0])))
    with pytest.raises(ValueError):
        sae.decode((np.array([0, 2]), np.array([1]), np.array([1.0])))
    with pytest.raises(saeflow.SaeflowError, match="cannot open"):
        saeflow.load(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"features": 4, "pages": 8, "k": 2}')
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(saeflow.SaeflowError):
        saeflow.load(bad)
    with pytest.raises(saeflow.SaeflowError, match="unknown"):
        sae.save(tmp_path / "x", format="onnx")
    with pytest.raises(saeflow.SaeflowError):
        saeflow.train(np.zeros((64, 8), np.float32), k=100, expansion=2, progress=False)
    with pytest.raises(saeflow.SaeflowError):
        saeflow.train(str(tmp_path / "none.safetensors"), progress=False)


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_no_leak_over_10000_encodes(rng):
    sae = saeflow.load(CHECKPOINTS["seed"], threads=1)
    x = rng.standard_normal((8, sae.d)).astype(np.float32)
    for _ in range(500):  # warm up allocator and thread pools
        sae.encode(x)
    gc.collect()
    before = _rss_kib()
    for i in range(10000):
        sae.encode(x, sparse=(i % 2 == 1))
    gc.collect()
    grown = _rss_kib() - before
    assert grown < 8 * 1024, f"RSS grew {grown} KiB over 10,000 encode calls"


def test_load_close_many():
    before = None
    for i in range(300):
        m = saeflow.load(CHECKPOINTS["seed"])
        m.encode(np.zeros((1, m.d), np.float32))
        m.close()
        if i == 50:
            gc.collect()
            before = _rss_kib()
    gc.collect()
    assert _rss_kib() - before < 8 * 1024


def test_contiguous_f32_not_copied(rng):
    from saeflow.model import _as_f32_rows

    x = rng.standard_normal((4, 16)).astype(np.float32)
    a, _ = _as_f32_rows(x, 16, "t")
    assert a is x or np.shares_memory(a, x)
    b, _ = _as_f32_rows(x[:, ::-1], 16, "t")  # strided: copied once
    assert not np.shares_memory(b, x)


def test_torch_dlpack_no_copy():
    torch = pytest.importorskip("torch")
    from saeflow.model import _as_f32_rows

    t = torch.randn(4, 16)
    a, _ = _as_f32_rows(t, 16, "t")
    assert a.ctypes.data == t.data_ptr()


def test_threads_do_not_change_results(rng):
    a = saeflow.load(CHECKPOINTS["seed"], threads=1)
    b = saeflow.load(CHECKPOINTS["seed"], threads=2)
    x = rng.standard_normal((64, a.d)).astype(np.float32)
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    np.testing.assert_array_equal(a.surgery(x, 3, 2.0), b.surgery(x, 3, 2.0))


def test_threads_respected():
    """threads= sets the library's OpenMP thread count for that model's calls."""
    omp = saeflow.lib.omp_get_max_threads  # libgomp, found through libsaeflow.so's dependencies
    omp.restype = ctypes.c_int
    x = np.zeros((2, 16), np.float32)
    for t in (1, 2, 3):
        sae = saeflow.SparseAutoencoder.init(16, 64, 4, threads=t)
        sae.encode(x)
        assert omp() == t
    saeflow.train(np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32), k=2, expansion=2,
                  num_epochs=1, progress=False, threads=1)
    assert omp() == 1


def test_gil_released_during_c():
    """Another Python thread runs while a long C call is in progress: the
    binding releases the GIL (ctypes.CDLL) for the whole call."""
    sae = saeflow.SparseAutoencoder.init(256, 4096, 32, threads=1)
    x = np.random.default_rng(0).standard_normal((4096, 256)).astype(np.float32)
    sae.encode(x[:8])
    window = []

    def work():
        t0 = time.perf_counter()
        sae.encode(x, sparse=True)
        window.append((t0, time.perf_counter()))

    th = threading.Thread(target=work)
    ticks = []
    th.start()
    while th.is_alive():
        ticks.append(time.perf_counter())
    th.join()
    t0, t1 = window[0]
    inside = [t for t in ticks if t0 + 0.2 * (t1 - t0) < t < t1 - 0.2 * (t1 - t0)]
    assert t1 - t0 > 0.005, "the call was too short to tell"
    assert len(inside) > 100, f"the main thread ran {len(inside)} times during a {t1 - t0:.3f} s C call"


def test_train_progress_and_metrics(capfd):
    """progress=True: the C trainer's progress and summary on the terminal's
    streams; the metrics come back as numbers, one line per step."""
    x = np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32)
    os.environ["SAEFLOW_PROGRESS"] = "1"
    try:
        model, metrics = saeflow.train(x, k=2, expansion=2, batch_size=32, num_epochs=2, progress=True)
    finally:
        del os.environ["SAEFLOW_PROGRESS"]
    out, err = capfd.readouterr()
    assert out + err, "no progress output"
    assert len(metrics["steps"]) == 16 and {"loss", "l0"} <= set(metrics["steps"][-1])
    assert set(metrics["last"]) >= {"loss", "l2", "l0", "cossim", "dead", "lr", "hist"}
    assert metrics["last"]["l0"] <= 2
    _, quiet = saeflow.train(x, k=2, expansion=2, batch_size=32, num_epochs=1, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_extract_rss_bounded():
    """Repeated extraction (model loaded, run and freed each call) does not grow."""
    from test_extract import MODEL, PATHS

    raw = [open(p, "rb").read() for p in PATHS[:4]]
    for _ in range(5):
        saeflow.extract(MODEL, raw, ["a", "b", "c", "d"])
    gc.collect()
    before = _rss_kib()
    for _ in range(100):
        saeflow.extract(MODEL, raw, ["a", "b", "c", "d"])
    gc.collect()
    assert _rss_kib() - before < 8 * 1024


def test_train_progress_reaches_python_streams(capsys):
    """Where sys.stdout/sys.stderr are Python objects, not fds 1 and 2 (as in
    Jupyter; here pytest's capsys), the C trainer's summary and progress bar
    are relayed to them."""
    x = np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32)
    assert "SAEFLOW_PROGRESS" not in os.environ
    saeflow.train(x, k=2, expansion=2, batch_size=32, num_epochs=1, progress=True)
    out, err = capsys.readouterr()
    assert "trained 8 steps" in out
    assert "train [" in err and "100%" in err
    assert "SAEFLOW_PROGRESS" not in os.environ
    saeflow.train(x, k=2, expansion=2, batch_size=32, num_epochs=1, progress=False)
    assert capsys.readouterr() == ("", "")

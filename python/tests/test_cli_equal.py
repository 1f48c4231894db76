"""The binding's results equal the CLI's on the same inputs (bit for bit: both
run the same C functions on the same float32 bytes)."""
import json
import os

import numpy as np
import pytest
from conftest import CHECKPOINTS

import saeflow
from saeflow import _st


@pytest.mark.parametrize("layout", sorted(CHECKPOINTS))
def test_encode_decode_surgery_equal_cli(layout, cli, rng, tmp_path):
    ckpt = CHECKPOINTS[layout]
    sae = saeflow.load(ckpt, threads=2)
    x = rng.standard_normal((37, sae.d)).astype(np.float32)
    inp = tmp_path / "x.safetensors"
    _st.write(str(inp), {"activations": x})

    cli("encode", "--checkpoint", ckpt, "--input", inp, "--out", tmp_path / "z.safetensors", "--threads", 2)
    z = _st.read(str(tmp_path / "z.safetensors"))
    indptr, indices, values = sae.encode(x, sparse=True) if not _has_scipy() else _triplet(sae.encode(x, sparse=True))
    np.testing.assert_array_equal(indptr, z["indptr"])
    np.testing.assert_array_equal(indices, z["indices"])
    np.testing.assert_array_equal(values, z["values"])

    dense = sae.encode(x)
    assert dense.shape == (37, sae.n) and dense.dtype == np.float32
    np.testing.assert_array_equal(np.count_nonzero(dense, axis=1), np.diff(z["indptr"]))

    cli("decode", "--checkpoint", ckpt, "--input", tmp_path / "z.safetensors", "--out", tmp_path / "r.safetensors",
        "--threads", 2)
    r = _st.read(str(tmp_path / "r.safetensors"))["reconstruction"]
    np.testing.assert_array_equal(sae.decode(dense), r)
    np.testing.assert_array_equal(sae.decode((z["indptr"], z["indices"], z["values"])), r)

    cli("surgery", "--checkpoint", ckpt, "--input", inp, "--feature", 5, "--strength", 42, "--out",
        tmp_path / "s.safetensors", "--threads", 2)
    s = _st.read(str(tmp_path / "s.safetensors"))["steered"]
    np.testing.assert_array_equal(sae.surgery(x, 5, 42.0), s)


def _has_scipy():
    try:
        import scipy  # noqa: F401

        return True
    except ImportError:
        return False


def _triplet(m):
    return m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data


def test_train_equals_cli(cli, rng, tmp_path):
    """saeflow.train and `saeflow train` with the same settings write the same checkpoint."""
    x = rng.standard_normal((1024, 16)).astype(np.float32)
    inp = tmp_path / "x.safetensors"
    _st.write(str(inp), {"activations": x})
    args = dict(k=4, expansion=4, batch_size=64, num_epochs=2, seed=3, lr=1e-3)
    cli("train", "--tensorpath", inp, "--savedir", tmp_path / "cli", "--name", "m", "--quiet", "--threads", 2,
        *[f"--{k}={v}" for k, v in args.items()])
    model, metrics = saeflow.train(x, savedir=tmp_path / "py", name="m", progress=False, threads=2, **args)
    a = _st.read(str(tmp_path / "cli" / "m" / "model.safetensors"))
    b = _st.read(str(tmp_path / "py" / "m" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert len(metrics["steps"]) == 2 * 1024 // 64
    assert metrics["last"]["l0"] <= 4 and np.isfinite(metrics["last"]["loss"])
    assert (model.d, model.n, model.k) == (16, 64, 4)
    # a model trained from the path equals the one from the array
    m2, _ = saeflow.train(str(inp), progress=False, threads=2, **args)
    np.testing.assert_array_equal(m2.encode(x), model.encode(x))


def test_save_roundtrip_all_formats(rng, tmp_path):
    sae = saeflow.load(CHECKPOINTS["seed"])
    x = rng.standard_normal((9, sae.d)).astype(np.float32)
    for fmt in ("seed", "saelens", "sparsify"):
        sae.save(tmp_path / fmt, format=fmt)
        back = saeflow.load(tmp_path / fmt)
        np.testing.assert_allclose(back.decode(back.encode(x)), sae.decode(sae.encode(x)), rtol=0, atol=1e-5)
    assert os.path.exists(tmp_path / "saelens" / "cfg.json")


@pytest.mark.parametrize("arch,cli_flags,py_args", [
    ("matryoshka", ["--groups", "8,8,16,rest", "--matryoshka_base", "batchtopk"],
     dict(groups="8,8,16,rest", matryoshka_base="batchtopk")),
    ("matryoshka", ["--groups", "16,16,rest"], dict(groups=[16, 16, "rest"])),
    ("matryoshka", [], {}),
    ("jumprelu", ["--jumpthreshold", "0.002"], dict(jumpthreshold=0.002)),
    ("standard", ["--b_dec_init", "mean", "--normalize_input"], dict(b_dec_init="mean", normalize_input=True)),
    ("batchtopk", [], {}),
])
def test_train_archs_equal_cli(arch, cli_flags, py_args, cli, rng, tmp_path):
    """Every architecture (matryoshka with --groups spelled as on the command
    line or as a list) writes the CLI's checkpoint, config and default name."""
    x = rng.standard_normal((512, 16)).astype(np.float32)
    inp = tmp_path / "x.safetensors"
    _st.write(str(inp), {"activations": x})
    args = dict(k=4, expansion=4, batch_size=64, num_epochs=1, seed=5, lr=1e-3)
    cli("train", "--tensorpath", inp, "--savedir", tmp_path / "cli", "--quiet", "--threads", 2, "--arch", arch,
        *cli_flags, *[f"--{k}={v}" for k, v in args.items()])
    model, _ = saeflow.train(x, arch=arch, savedir=tmp_path / "py", progress=False, threads=2, **args, **py_args)
    (name,) = os.listdir(tmp_path / "cli")
    assert os.listdir(tmp_path / "py") == [name]
    a = _st.read(str(tmp_path / "cli" / name / "model.safetensors"))
    b = _st.read(str(tmp_path / "py" / name / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with open(tmp_path / "cli" / name / "config.json") as f, open(tmp_path / "py" / name / "config.json") as g:
        assert json.load(f) == json.load(g)
    assert model.arch == arch


def test_train_bad_options_raise(rng):
    x = rng.standard_normal((64, 8)).astype(np.float32)
    with pytest.raises(saeflow.SaeflowError, match="groups"):
        saeflow.train(x, arch="topk", k=2, expansion=2, groups="4,rest", progress=False)
    with pytest.raises(saeflow.SaeflowError, match="groups|sum|rest"):
        saeflow.train(x, arch="matryoshka", k=2, expansion=2, groups="4,4", progress=False)
    with pytest.raises(saeflow.SaeflowError, match="arch"):
        saeflow.train(x, arch="nope", progress=False)

"""saeflow from Python: a ctypes binding over libsaeflow.so (docs/python.md).

    import saeflow
    sae = saeflow.load("checkpoints/topk-k32-x4")
    z = sae.encode(x)            # (B, n) float32
    x_hat = sae.decode(z)
"""
from ._lib import SaeflowError, lib
from .model import SparseAutoencoder, TopkSparseAutoencoder, load
from .train import train
from .topk import topk
from .clip import CLIP, extract

__version__ = "0.1.0"


def library_version() -> str:
    """SF_VERSION of the loaded libsaeflow.so."""
    from . import _lib

    return _lib.sf_version().decode()


__all__ = ["SaeflowError", "SparseAutoencoder", "TopkSparseAutoencoder", "load", "train", "topk", "extract", "CLIP", "library_version", "lib"]

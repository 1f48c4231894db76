import os
import subprocess

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXE = os.environ.get("SAEFLOW_EXE", os.path.join(REPO, "build", "saeflow"))
FIX = os.path.join(REPO, "fixtures")
# Every layout the C loader reads, each a committed fixture.
CHECKPOINTS = {
    "seed": os.path.join(FIX, "sae", "topk"),
    "seed-bf16": os.path.join(FIX, "sae", "topk-bf16"),
    "saelens_topk": os.path.join(FIX, "formats", "saelens_topk"),
    "saelens_gated": os.path.join(FIX, "formats", "saelens_gated"),
    "saelens_jumprelu": os.path.join(FIX, "formats", "saelens_jumprelu"),
    "saelens_standard": os.path.join(FIX, "formats", "saelens_standard"),
    "sparsify": os.path.join(FIX, "formats", "sparsify", "layers.6"),
}


@pytest.fixture
def cli():
    """Runs the saeflow binary; skips when it is not built."""
    if not os.path.exists(EXE):
        pytest.skip(f"{EXE} not built")

    def run(*args):
        r = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r

    return run


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

"""saeflow.topk against a brute-force numpy top-N over the same codes."""
import numpy as np
from conftest import CHECKPOINTS

import saeflow


def test_topk_matches_bruteforce(rng):
    sae = saeflow.load(CHECKPOINTS["seed"], threads=2)
    x = rng.standard_normal((300, sae.d)).astype(np.float32)
    top = 5
    r = saeflow.topk(sae, x, top=top)  # one batch: the same encode call as below
    z = sae.encode(x)
    assert r["values"].shape == (sae.n, top) and r["rows"].dtype == np.int64
    for j in range(sae.n):
        col = z[:, j]
        fired = np.nonzero(col > 0)[0]
        order = fired[np.lexsort((fired, -col[fired]))][:top]  # value desc, lower row first
        want_rows = np.full(top, -1, np.int64)
        want_vals = np.zeros(top, np.float32)
        want_rows[:order.size] = order
        want_vals[:order.size] = col[order]
        np.testing.assert_array_equal(r["rows"][j], want_rows, err_msg=f"feature {j}")
        np.testing.assert_array_equal(r["values"][j], want_vals, err_msg=f"feature {j}")
        assert r["count"][j] == fired.size
        if fired.size:
            assert r["max"][j] == col.max()
            np.testing.assert_allclose(r["mean"][j], col[fired].astype(np.float64).mean(), rtol=1e-6)

"""The Numba kernels' own exp (fastrnn._kernels.softmax.exp_shifted), over its whole range.

Every softmax of the Numba backend goes through it: float64 rows through a degree-12
polynomial in float64, float32 rows into float32 outputs through a float32 path.  Checked
here element by element against ``np.exp`` in float64, including the flush-to-zero cut-offs.
"""
import numpy as np
import pytest

from fastrnn._kernels.softmax import exp_shifted


@pytest.mark.parametrize("dtype,out_dtype,cut,rtol", [
    (np.float64, np.float64, -708.0, 4e-16),
    (np.float32, np.float32, float(np.float32(-87.3)), 2 * 2.0 ** -23),   # two float32 ulps
    (np.float32, np.float64, -708.0, 4e-16),             # float32 in, float64 out: float64 path
])
def test_exp_shifted_is_accurate_and_flushes_only_below_the_cut(dtype, out_dtype, cut, rtol):
    x = np.concatenate([np.linspace(-800.0, 0.0, 400001),
                        np.linspace(cut - 0.01, cut + 0.01, 1001)]).astype(dtype)
    m = 2.5                                   # the row maximum need not be in the row
    row = (x + dtype(m)).astype(dtype)
    arg = row.astype(np.float64) - m         # exact: what the kernel exponentiates
    out = np.full(row.shape, np.nan, out_dtype)
    pbuf, nbuf = np.empty(row.size), np.empty(row.size)
    total = exp_shifted(row, m, out, pbuf, nbuf)
    want = np.exp(arg)
    keep = arg >= cut
    rel = np.abs(out[keep] - want[keep]) / want[keep]
    assert rel.max() <= rtol, (rel.max(), arg[keep][np.argmax(rel)])
    assert np.all(out[~keep] == 0.0)
    assert np.all(want[~keep] <= np.exp(cut) * 1.01)      # flushed values were negligible
    assert abs(total - want.sum()) <= 1e-6 * want.sum()   # the returned sum, in float64
    assert isinstance(total, float)

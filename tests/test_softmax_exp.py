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
    total = exp_shifted(row, m, out)
    want = np.exp(arg)
    keep = arg >= cut
    rel = np.abs(out[keep] - want[keep]) / want[keep]
    assert rel.max() <= rtol, (rel.max(), arg[keep][np.argmax(rel)])
    assert np.all(out[~keep] == 0.0)
    assert np.all(want[~keep] <= np.exp(cut) * 1.01)      # flushed values were negligible
    assert abs(total - want.sum()) <= 1e-6 * want.sum()   # the returned sum, in float64
    assert isinstance(total, float)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_shifted_in_place_equals_into_another_row(dtype):
    """The in-place loop and the two-array loop are separate code: same bits, same sum."""
    rng = np.random.default_rng(3)
    row = (rng.standard_normal(1003) * 30).astype(dtype)
    m = float(row.max())
    out = np.empty_like(row)
    total = exp_shifted(row, m, out)
    inplace = row.copy()
    total_in = exp_shifted(inplace, m, inplace)
    np.testing.assert_array_equal(inplace, out)
    assert total_in == total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_orders_every_float_like_numpy(dtype):
    """row_max compares integer keys of the bits: check the orderings where that could go
    wrong -- signs, zeros, infinities, the extremes, one element, ragged lengths."""
    from fastrnn._kernels.softmax import row_max
    info = np.finfo(dtype)
    rng = np.random.default_rng(4)
    rows = [np.array([x], dtype) for x in (0.0, -0.0, -1.0, info.max, -info.max, np.inf, -np.inf,
                                           info.tiny, -info.tiny, info.smallest_subnormal)]
    rows += [np.array([-np.inf, -info.max], dtype), np.array([-3.0, -2.0, -5.0], dtype),
             np.array([-0.0, -info.smallest_subnormal], dtype), np.array([1.0, np.inf], dtype),
             np.full(37, -7.5, dtype)]
    rows += [(rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30)).astype(dtype)
             for n in (2, 7, 8, 9, 31, 1000, 10001)]
    rows += [-np.abs(r) for r in rows[-7:]]
    for r in rows:
        got = row_max(r)
        assert isinstance(got, float)
        assert got == float(r.max()), (r[:5], got, r.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_with_a_nan_leads_to_a_nan_softmax(dtype):
    """A NaN in a row makes its softmax NaN, whatever row_max then returns (a NaN or the
    largest other element)."""
    from fastrnn._kernels.softmax import row_max
    for pos in (0, 5, 8):
        for nan in (np.nan, -np.nan):
            r = np.linspace(-3.0, 2.0, 12).astype(dtype)
            r[pos] = nan
            m = row_max(r)
            assert np.isnan(m) or m == 2.0
            out = np.empty_like(r)
            assert np.isnan(exp_shifted(r, m, out))

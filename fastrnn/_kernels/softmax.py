"""Row softmax, log-sum-exp and softmax-minus-one-hot with an exp that vectorises.

Why not ``np.exp``: inside a Numba loop it becomes one call to libm per element (SVML is not
available to the llvmlite wheels), about 6 ns each -- 1.1 ms of a 6 ms training step at the
tutorial's size (T=23 rows of V=8000).  The version here is straight-line arithmetic that
LLVM turns into SIMD code:

    exp(x) = 2**n * exp(r),   n = round(x / ln 2),   r = x - n ln 2,   |r| <= ln(2)/2

``exp(r)`` is its Taylor polynomial of degree 12 (truncation error below 2e-16 relative on
that interval), evaluated by Horner in float64; float32 rows going to float32 outputs
use a float32 version with a degree-7 polynomial instead (:func:`_exp_shifted32`); ``ln 2`` is split into a
high and a low part so ``r`` is exact to double rounding; ``2**n`` is built from its bit
pattern.  Arguments are ``z - max(z) <= 0``; below -708 the result is flushed to 0 (the
true value is < 1e-307, irrelevant next to the row sum, which is >= 1).
Tests compare every kernel using it against the NumPy reference at rtol 1e-10.
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import numpy as np
from numba import njit

from .._config import NUMBA_OPTIONS

# The polynomial alone may fuse multiply-adds ("contract"): one rounding instead of two per
# Horner step, so it is at least as accurate, and 1.45x faster measured here.  No other
# fast-math flag is used: NaN and inf keep their meaning.
_POLY_OPTIONS = dict(NUMBA_OPTIONS, fastmath={"contract"})

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# 1.5 * 2**52 + 1023: adding it to an integral float n leaves n + 1023 in the low bits.
_SHIFTER = 6755399441055744.0 + 1023.0
_SHIFTER_BITS = np.int64(0x4338000000000000)
_C = tuple(1.0 / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(13))


@njit(**NUMBA_OPTIONS)
def exp_shifted(row, m, out, pbuf, nbuf):
    """``out[j] = exp(row[j] - m)`` for ``row[j] <= m``; returns ``sum_j out[j]`` (float64).

    ``pbuf`` and ``nbuf`` are float64 scratch rows of the same length; ``out`` may be
    ``row`` itself.  A float32 ``row`` into a float32 ``out`` takes the float32 path
    (:func:`_exp_shifted32`, 8 lanes per AVX2 register and a shorter polynomial); every
    other combination the float64 one.  The branch is on constants of the array types.
    """
    if row.itemsize == 4 and out.itemsize == 4:
        return _exp_shifted32(row, m, out, pbuf, nbuf)
    return _exp_shifted64(row, m, out, pbuf, nbuf)


# float32 constants (a float64 literal would promote the arithmetic to float64).  ln 2 in
# two parts, the high one exact in 9 bits so that n * _LN2_HI_F is exact for |n| <= 127;
# the polynomial is the classic minimax one for exp on |r| <= ln(2)/2 (relative error
# about 1e-7, float32 rounding level).  Arguments below -87.3 give 0: exp(-87.3) is
# 1.2e-38, the smallest normal float32, negligible next to a row sum >= 1.
_F = np.float32
_LOG2E_F = _F(1.44269504088896341)
_LN2_HI_F = _F(0.693359375)
_LN2_LO_F = _F(-2.12194440e-4)
_UNDER_F = _F(-87.3)
_HALF_F = _F(0.5)
_ONE_F = _F(1.0)
_ZERO_F = _F(0.0)
_P_F = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3), _F(4.1665795894e-2),
        _F(1.6666665459e-1), _F(5.0000001201e-1))
# 1.5 * 2**23 + 127: adding it to an integral float32 n leaves n + 127 in the low bits.
_SHIFTER_F = _F(12582912.0 + 127.0)
_SHIFTER_F_BITS = np.int32(0x4B400000)


@njit(**_POLY_OPTIONS)
def _exp_shifted32(row, m, out, pbuf, nbuf):
    """The float32 path of :func:`exp_shifted` (``row`` and ``out`` float32).

    ``m`` is the float64 row maximum of a float32 row, so it is exact in float32.  2**n is
    built like the float64 path's, in 32-bit integers, inside the scratch rows viewed as
    float32.  The sum is still taken in float64 (:func:`_sum`).
    """
    n_el = row.shape[0]
    mf = np.float32(m)
    p0, p1, p2, p3, p4, p5 = _P_F
    pb = pbuf.view(np.float32)
    nb = nbuf.view(np.float32)
    for j in range(n_el):
        x = row[j] - mf
        under = x < _UNDER_F
        x = _UNDER_F if under else x
        n = np.floor(x * _LOG2E_F + _HALF_F)
        r = (x - n * _LN2_HI_F) - n * _LN2_LO_F
        p = p0
        p = p * r + p1
        p = p * r + p2
        p = p * r + p3
        p = p * r + p4
        p = p * r + p5
        p = (p * (r * r) + r) + _ONE_F
        pb[j] = _ZERO_F if under else p
        nb[j] = n + _SHIFTER_F
    bits = nb[:n_el].view(np.int32)
    for j in range(n_el):
        bits[j] = (bits[j] - _SHIFTER_F_BITS) << 23      # now the bits of 2**n
    for j in range(n_el):
        out[j] = pb[j] * nb[j]
    return _sum(out)


@njit(**_POLY_OPTIONS)
def _exp_shifted64(row, m, out, pbuf, nbuf):
    """The float64 path of :func:`exp_shifted`: Horner in float64 for any dtype.

    No float-to-integer conversion is used (AVX2 has no packed one): the
    integer ``n + 1023`` is placed in the low mantissa bits of ``nbuf`` by adding 1.5*2**52,
    then shifted into the exponent field with integer SIMD.
    """
    n_el = row.shape[0]
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12 = _C
    for j in range(n_el):
        x = np.float64(row[j]) - m
        under = x < -708.0
        x = -708.0 if under else x
        n = np.floor(x * _LOG2E + 0.5)
        r = (x - n * _LN2_HI) - n * _LN2_LO
        p = c12
        p = p * r + c11
        p = p * r + c10
        p = p * r + c9
        p = p * r + c8
        p = p * r + c7
        p = p * r + c6
        p = p * r + c5
        p = p * r + c4
        p = p * r + c3
        p = p * r + c2
        p = p * r + c1
        p = p * r + c0
        pbuf[j] = 0.0 if under else p
        nbuf[j] = n + _SHIFTER
    bits = nbuf.view(np.int64)
    for j in range(n_el):
        bits[j] = (bits[j] - _SHIFTER_BITS) << 52      # now the bits of 2**n
    for j in range(n_el):
        out[j] = pbuf[j] * nbuf[j]
    return _sum(out)


@njit(**NUMBA_OPTIONS)
def _sum(a):
    """Sum with eight independent accumulators, in a fixed order.

    A single running sum is a chain of dependent additions that strict IEEE semantics
    forbid the compiler to reorder (no SIMD); eight chains break it, deterministically.
    """
    n = a.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for j in range(0, n8, 8):
        a0 += a[j]
        a1 += a[j + 1]
        a2 += a[j + 2]
        a3 += a[j + 3]
        a4 += a[j + 4]
        a5 += a[j + 5]
        a6 += a[j + 6]
        a7 += a[j + 7]
    total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
    for j in range(n8, n):
        total += a[j]
    return total


@njit(**NUMBA_OPTIONS)
def row_max(row):
    m = row[0]
    for j in range(1, row.shape[0]):
        if row[j] > m:
            m = row[j]
    return np.float64(m)


@njit(**NUMBA_OPTIONS)
def softmax_rows(z):
    """Rows of logits ``z`` become probabilities, in place."""
    T, V = z.shape
    pbuf = np.empty(V, np.float64)
    nbuf = np.empty(V, np.float64)
    for t in range(T):
        row = z[t]
        total = exp_shifted(row, row_max(row), row, pbuf, nbuf)
        inv = 1.0 / total
        for j in range(V):
            row[j] *= inv


@njit(**NUMBA_OPTIONS)
def nll_rows(z, y):
    """``sum_t logsumexp(z_t) - z_t[y_t]`` without modifying ``z`` (loss-only path)."""
    T, V = z.shape
    pbuf = np.empty(V, np.float64)
    nbuf = np.empty(V, np.float64)
    scratch = np.empty(V, np.float64)
    loss = 0.0
    for t in range(T):
        row = z[t]
        m = row_max(row)
        total = exp_shifted(row, m, scratch, pbuf, nbuf)
        loss += np.log(total) + m - np.float64(row[y[t]])
    return loss


@njit(**NUMBA_OPTIONS)
def softmax_delta_rows(z, y, first):
    """Rows ``t >= first`` of logits become ``softmax(z_t) - onehot(y_t)``; returns their NLL."""
    T, V = z.shape
    pbuf = np.empty(V, np.float64)
    nbuf = np.empty(V, np.float64)
    loss = 0.0
    for t in range(first, T):
        row = z[t]
        m = row_max(row)
        zy = np.float64(row[y[t]])
        total = exp_shifted(row, m, row, pbuf, nbuf)
        inv = 1.0 / total
        for j in range(V):
            row[j] *= inv
        row[y[t]] -= 1.0
        loss += np.log(total) + m - zy
    return loss

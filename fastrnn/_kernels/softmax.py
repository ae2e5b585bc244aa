"""Row softmax, log-sum-exp and softmax-minus-one-hot with an exp that vectorises.

Why not ``np.exp``: inside a Numba loop it becomes one call to libm per element (SVML is not
available to the llvmlite wheels), about 6 ns each -- 1.1 ms of a 6 ms training step at the
tutorial's size (T=23 rows of V=8000).  The version here is straight-line arithmetic that
LLVM turns into SIMD code:

    exp(x) = 2**n * exp(r),   n = round(x / ln 2),   r = x - n ln 2,   |r| <= ln(2)/2

``exp(r)`` is its Taylor polynomial of degree 12 (truncation error below 2e-16 relative on
that interval), evaluated by Horner in float64; float32 rows going to float32 outputs
use a float32 version with a degree-7 polynomial instead (:func:`_exp32`); ``ln 2`` is split
into a high and a low part so ``r`` is exact to double rounding; ``2**n`` is built from its
bit pattern in registers (:func:`_pow2_from_shifted`), so each row is one vectorised loop.
Arguments are ``z - max(z) <= 0``; below -708 the result is flushed to 0 (the true value is
< 1e-307, irrelevant next to the row sum, which is >= 1).  Tests compare every kernel using
it against the NumPy reference at rtol 1e-10.

The row maximum (:func:`row_max`) and the row sum (:func:`_sum`) vectorise too.  Measured
on the PTB-small logits (400 rows of 10,000, float32, one thread), the fused softmax,
cross-entropy and gradient (:func:`fastrnn._kernels.common.softmax_xent`) took 3.4 ms
against 5.4 ms with the exponential in three loops over two scratch rows, a maximum
compared one element at a time and a sum in eight scalar chains (minima of 20 runs).
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import numpy as np
from llvmlite import ir
from numba import config as _numba_config
from numba import njit, types
from numba.extending import intrinsic, overload

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


def exp_shifted(row, m, out):
    """``out[j] = exp(row[j] - m)`` for ``row[j] <= m``; returns ``sum_j out[j]`` (float64).

    ``out`` is ``row`` itself or an array of the same length that does not overlap it.  A
    float32 ``row`` into a float32 ``out`` takes the float32 path (:func:`_exp32`, 8 lanes
    per AVX2 register and a shorter polynomial); every other combination the float64 one
    (:func:`_exp64`).  In compiled code the path is chosen when the caller compiles.
    """
    if row.dtype == np.float32 and out.dtype == np.float32:
        return _exp_shifted32(row, np.float32(m), out)
    return _exp_shifted64(row, np.float64(m), out)


@overload(exp_shifted, jit_options=NUMBA_OPTIONS)
def _ov_exp_shifted(row, m, out):
    if row.dtype == types.float32 and out.dtype == types.float32:
        return lambda row, m, out: _exp_shifted32(row, np.float32(m), out)
    return lambda row, m, out: _exp_shifted64(row, np.float64(m), out)


# 2**n from the float ``n + shifter`` (an integral n; the shifter puts ``n`` plus the
# exponent bias into the low bits of the mantissa): the bits reinterpreted as an integer,
# the shifter's bits subtracted, the result shifted into the exponent field and
# reinterpreted as a float.  Reinterpreting in registers (an LLVM ``bitcast``) keeps the
# exponential one vectorised loop; through an array view it took three loops and two
# scratch rows.

def _pow2_codegen(width, fbits, shifter_bits):
    def codegen(context, builder, sig, args):
        it = ir.IntType(width)
        b = builder.bitcast(args[0], it)
        b = builder.sub(b, ir.Constant(it, shifter_bits))
        b = builder.shl(b, ir.Constant(it, fbits))
        return builder.bitcast(b, args[0].type)
    return codegen


@intrinsic
def _pow2_from_shifted(typingctx, shifted):
    """``2**n`` from ``n + _SHIFTER_F`` (float32) or ``n + _SHIFTER`` (float64)."""
    if shifted == types.float32:
        return types.float32(types.float32), _pow2_codegen(32, 23, int(_SHIFTER_F_BITS))
    if shifted == types.float64:
        return types.float64(types.float64), _pow2_codegen(64, 52, int(_SHIFTER_BITS))
    return None


if _numba_config.DISABLE_JIT:
    # NUMBA_DISABLE_JIT=1 (coverage runs): an intrinsic cannot run in Python; NumPy
    # scalars reinterpret the same bits.
    def _pow2_from_shifted(shifted):  # noqa: F811
        if isinstance(shifted, np.float32):
            b = shifted.view(np.int32) - _SHIFTER_F_BITS
            return (b << np.int32(23)).view(np.float32)
        b = np.float64(shifted).view(np.int64) - _SHIFTER_BITS
        return (b << np.int64(52)).view(np.float64)


@njit(inline="always", **_POLY_OPTIONS)
def _exp32(x):
    """``exp(x)`` of a float32 ``x <= 0``, 0 below ``_UNDER_F``."""
    under = x < _UNDER_F
    x = _UNDER_F if under else x
    n = np.floor(x * _LOG2E_F + _HALF_F)
    r = (x - n * _LN2_HI_F) - n * _LN2_LO_F
    p0, p1, p2, p3, p4, p5 = _P_F
    p = p0
    p = p * r + p1
    p = p * r + p2
    p = p * r + p3
    p = p * r + p4
    p = p * r + p5
    p = (p * (r * r) + r) + _ONE_F
    e = p * _pow2_from_shifted(n + _SHIFTER_F)
    return _ZERO_F if under else e


@njit(inline="always", **_POLY_OPTIONS)
def _exp64(x):
    """``exp(x)`` of a float64 ``x <= 0``, 0 below -708."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12 = _C
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
    e = p * _pow2_from_shifted(n + _SHIFTER)
    return 0.0 if under else e


@njit(**_POLY_OPTIONS)
def _exp_shifted32(row, mf, out):
    """The float32 path of :func:`exp_shifted` (``row``, ``out`` float32, ``mf`` the
    float32 row maximum, exact: a float32 row's maximum is one of its elements)."""
    n_el = row.shape[0]
    if out.ctypes.data == row.ctypes.data:
        # one array in the loop: two would fail LLVM's run-time overlap check and run
        # the scalar version of the loop
        for j in range(n_el):
            row[j] = _exp32(row[j] - mf)
    else:
        for j in range(n_el):
            out[j] = _exp32(row[j] - mf)
    return _sum(out)


@njit(**_POLY_OPTIONS)
def _exp_shifted64(row, m, out):
    """The float64 path of :func:`exp_shifted`: the polynomial in float64 for any dtype
    of ``row`` and ``out``."""
    n_el = row.shape[0]
    if out.ctypes.data == row.ctypes.data and out.itemsize == row.itemsize:
        for j in range(n_el):
            row[j] = _exp64(np.float64(row[j]) - m)
    else:
        for j in range(n_el):
            out[j] = _exp64(np.float64(row[j]) - m)
    return _sum(out)


@njit(**dict(NUMBA_OPTIONS, fastmath={"reassoc"}))
def _sum(a):
    """The sum of a row, in float64, vectorised.

    A running sum is a chain of dependent additions, which strict IEEE semantics forbid
    the compiler to reorder, so it runs one element at a time (as did eight fixed chains:
    LLVM did not put them in vector registers).  Only this function may reassociate: the
    compiler sums in vector lanes and adds the lanes at the end.  The order depends on the
    machine's vector width, not on the data or the threads, so a given machine gives the
    same sum every time.  Measured on a 10,000-element float32 row: 1.2 us against
    4.3 us for the eight chains.
    """
    total = 0.0
    for j in range(a.shape[0]):
        total += a[j]
    return total


# A float's bits, read as a signed integer of its width and with the magnitude bits of
# the negative ones flipped, order as the floats do (-0 just below +0; NaN with the sign
# bit clear above +inf, with it set below -inf).  An integer maximum vectorises without
# any fast-math flag; a float one does not.
_KEY32 = np.int32(0x7FFFFFFF)
_KEY64 = np.int64(0x7FFFFFFFFFFFFFFF)


@njit(**NUMBA_OPTIONS)
def _key_max(u, mask, sign):
    """The largest ordering key of the float bits ``u``, back as bits."""
    k = u[0] ^ ((u[0] >> sign) & mask)
    for j in range(1, u.shape[0]):
        b = u[j]
        k = max(k, b ^ ((b >> sign) & mask))
    return k ^ ((k >> sign) & mask)


@njit(**NUMBA_OPTIONS)
def row_max(row):
    """The largest element of a non-empty float row, as a float64.

    A row without NaN gets its maximum (the sign of a zero aside); a row with a NaN gets a
    NaN or its largest other element -- either way the softmax that follows is NaN, as
    the loss and gradient are.  Measured on a 10,000-element float32 row: 2.1 us against
    3.7 us for a compare-and-select loop over the floats.
    """
    if row.itemsize == 4:
        b = np.empty(1, np.int32)
        b[0] = _key_max(row.view(np.int32), _KEY32, np.int32(31))
        return np.float64(b.view(np.float32)[0])
    b = np.empty(1, np.int64)
    b[0] = _key_max(row.view(np.int64), _KEY64, np.int64(63))
    return np.float64(b.view(np.float64)[0])


@njit(**NUMBA_OPTIONS)
def softmax_rows(z):
    """Rows of logits ``z`` become probabilities, in place."""
    T, V = z.shape
    for t in range(T):
        row = z[t]
        total = exp_shifted(row, row_max(row), row)
        inv = 1.0 / total
        for j in range(V):
            row[j] *= inv


@njit(**NUMBA_OPTIONS)
def nll_rows(z, y):
    """``sum_t logsumexp(z_t) - z_t[y_t]`` without modifying ``z`` (loss-only path)."""
    T, V = z.shape
    scratch = np.empty(V, np.float64)
    loss = 0.0
    for t in range(T):
        row = z[t]
        m = row_max(row)
        total = exp_shifted(row, m, scratch)
        loss += np.log(total) + m - np.float64(row[y[t]])
    return loss


@njit(**NUMBA_OPTIONS)
def softmax_delta_rows(z, y, first):
    """Rows ``t >= first`` of logits become ``softmax(z_t) - onehot(y_t)``; returns their NLL."""
    T, V = z.shape
    loss = 0.0
    for t in range(first, T):
        row = z[t]
        m = row_max(row)
        zy = np.float64(row[y[t]])
        total = exp_shifted(row, m, row)
        inv = 1.0 / total
        for j in range(V):
            row[j] *= inv
        row[y[t]] -= 1.0
        loss += np.log(total) + m - zy
    return loss

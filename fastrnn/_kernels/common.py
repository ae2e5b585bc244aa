"""Shared Numba math for the layer kernels: gates and the fused softmax + NLL + gradient.

Caution for development: Numba's on-disk cache of a kernel module does not notice edits
to the functions it calls from *this* module (they are compiled into the caller).  After
editing this file, clear ``fastrnn/_kernels/__pycache__`` (or set ``FASTRNN_NO_CACHE=1``).

Gate activations
----------------
``sigmoid(x)``
    evaluated without overflow for either sign: ``1 / (1 + exp(-x))`` for ``x >= 0``,
    ``exp(x) / (1 + exp(x))`` otherwise.
``hard_sigmoid(x) = clip(0.2 x + 0.5, 0, 1)``
    Theano's / Keras 1's piecewise-linear gate.

The backward passes need the derivative of a gate with respect to its pre-activation; both
are functions of the gate's *output* ``y`` so nothing but ``y`` is cached:
``sigmoid' = y (1 - y)``; ``hard_sigmoid' = 0.2`` where ``0 < y < 1``, else ``0`` (the
kinks at ``x = +-2.5`` take the one-sided value 0, as Theano and Keras do).

Output layer
------------
:func:`softmax_xent` turns logits ``Z (N, V)`` (rows = flattened time x batch) into the
masked cross-entropy and, in place, its gradient ``dL/dZ``, row by row, never storing
probabilities apart; the exponentials come from the vectorised, float64-accurate
:func:`fastrnn._kernels.softmax.exp_shifted`.
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import math

import numpy as np
from numba import get_num_threads, njit, prange, types
from numba.extending import overload

from .._config import NUMBA_OPTIONS
from ._blas_lib import library
from .softmax import exp_shifted, row_max


def signatures(pattern, ret=None):
    """Explicit float64 and float32 signatures, so each public kernel compiles (or loads from
    the on-disk cache) at import for exactly these two specialisations, C-contiguous.

    ``pattern`` has one code per argument: ``1``/``2``/``3`` a C-contiguous float array of
    that many dimensions (the specialisation's dtype), ``b`` a bool, ``i`` a C-contiguous
    ``intp`` vector, ``s`` a float64 scalar, ``n`` an int64 scalar.  ``ret`` is ``None`` (void) or ``"s"``.
    """
    out = []
    for f in (types.float64, types.float32):
        code = {"1": f[::1], "2": f[:, ::1], "3": f[:, :, ::1], "b": types.boolean,
                "i": types.intp[::1], "s": types.float64, "n": types.int64}
        args = [code[c] for c in pattern.split()]
        out.append((types.float64 if ret == "s" else types.void)(*args))
    return out


@njit(**NUMBA_OPTIONS)
def sigmoid(x):
    """Logistic function, stable for large ``|x|`` (scalar)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(**NUMBA_OPTIONS)
def hard_sigmoid(x):
    """``clip(0.2 x + 0.5, 0, 1)`` (scalar)."""
    y = 0.2 * x + 0.5
    if y < 0.0:
        return 0.0
    if y > 1.0:
        return 1.0
    return y


@njit(**NUMBA_OPTIONS)
def gate(x, hard):
    """Gate activation: hard sigmoid if ``hard`` else the logistic sigmoid (scalar)."""
    if hard:
        return hard_sigmoid(x)
    return sigmoid(x)


@njit(**NUMBA_OPTIONS)
def gate_grad(y, hard):
    """Derivative of the gate at the pre-activation whose output is ``y`` (scalar)."""
    if hard:
        if 0.0 < y < 1.0:
            return 0.2
        return 0.0
    return y * (1.0 - y)


# ----------------------------------------------------------------------------- vector gates
#
# The kernels apply the activations a row at a time.  In float64 they call libm per
# element (the same functions as the NumPy reference, so results agree to ~1e-15).  In
# float32 a scalar ``expf``/``tanhf`` call per element made the Numba kernels twice as
# slow as NumPy's SIMD ufuncs (measured: LSTM layer forward at T=20, B=20, H=200, 10.8 ms
# vs 5.7 ms CPU), so float32 uses an exp that LLVM vectorises: Cody-Waite range reduction,
# a degree-6 polynomial and the exponent assembled in an int32 buffer (``ib``), max
# relative error 6e-8 (float32's epsilon) -- measured 3 ns vs 9 ns per element.

_F = np.float32


@njit(inline="always", **NUMBA_OPTIONS)
def _exp_parts_f32(x):
    """``exp(x) = p * 2**k`` for a float32 ``x``: returns ``(p, k)``, ``k`` a float32
    integer; ``x`` clamped to ``[-87.3, 88.7]`` (see :func:`exp_f32`)."""
    v = min(max(x, _F(-87.3)), _F(88.7))
    k = np.floor(v * _F(1.44269504) + _F(0.5))
    r = v - k * _F(0.693359375) - k * _F(-2.12194440e-4)
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    return p * r * r + r + _F(1.0), k


@njit(**NUMBA_OPTIONS)
def exp_f32(x, out, ib):
    """``out[:n] = exp(x[:n])`` for float32 vectors (``out`` may be ``x``).

    ``ib`` is int32 scratch of at least ``2 n`` elements: the first half receives the bits
    of ``2**k``, the second half (viewed as float32) the polynomial.  Every loop thus
    writes an array it does not read: with ``out`` being ``x``, a loop reading and
    writing it failed LLVM's run-time overlap check and ran scalar (measured 5.7 ns
    against 0.9 ns per element).

    With a shorter ``ib`` (a caller's mistake: these helpers never see user input) the
    same values are computed one element at a time with ``math.ldexp``, without scratch.

    Inputs are clamped to ``[-87.3, 88.7]``: below, the result is 1.2e-38 instead of a
    denormal or 0; from about 88.38 up (where ``k`` reaches 128, the exponent field's
    all-ones value) the result is ``inf``, although float32 ``exp`` is finite up to 88.72.
    The callers (sigmoid of ``-x``, tanh via ``exp(2x)``) reach their limits 0 and 1
    exactly either way.
    """
    n = x.shape[0]
    if ib.shape[0] < 2 * n:
        for i in range(n):
            p, k = _exp_parts_f32(x[i])
            out[i] = p * _F(math.ldexp(1.0, int(k)))
        return
    pb = ib[n:2 * n].view(np.float32)
    for i in range(n):
        p, k = _exp_parts_f32(x[i])
        pb[i] = p
        ib[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
    scale = ib[:n].view(np.float32)
    for i in range(n):
        out[i] = pb[i] * scale[i]


@njit(**NUMBA_OPTIONS)
def _gate_row_f32(src, dst, hard, ib):
    n = src.shape[0]
    if hard:
        for i in range(n):
            dst[i] = min(max(src[i] * _F(0.2) + _F(0.5), _F(0.0)), _F(1.0))
    else:
        for i in range(n):
            dst[i] = -src[i]
        exp_f32(dst, dst, ib)
        for i in range(n):
            dst[i] = _F(1.0) / (_F(1.0) + dst[i])


@njit(**NUMBA_OPTIONS)
def _gate_row_f64(src, dst, hard, ib):
    n = src.shape[0]
    if hard:
        for i in range(n):
            dst[i] = min(max(src[i] * 0.2 + 0.5, 0.0), 1.0)
    else:
        for i in range(n):
            dst[i] = sigmoid(src[i])


@njit(**NUMBA_OPTIONS)
def _tanh_row_f32(src, dst, ib):
    n = src.shape[0]
    for i in range(n):
        dst[i] = src[i] + src[i]
    exp_f32(dst, dst, ib)
    for i in range(n):
        x = src[i]
        big = _F(1.0) - _F(2.0) / (dst[i] + _F(1.0))
        x2 = x * x
        small = x * (_F(1.0) + x2 * (_F(-1.0 / 3.0) + x2 * (_F(2.0 / 15.0) + x2 * (
            _F(-17.0 / 315.0) + x2 * _F(62.0 / 2835.0)))))
        dst[i] = small if abs(x) < _F(0.25) else big


@njit(**NUMBA_OPTIONS)
def _tanh_row_f64(src, dst, ib):
    for i in range(src.shape[0]):
        dst[i] = math.tanh(src[i])


def gate_row(src, dst, hard, ib):
    """``dst = sigmoid(src)`` or ``hard_sigmoid(src)`` for vectors (``dst`` may be ``src``).

    float32 uses :func:`exp_f32` (max relative error 1.5e-7 measured over [-20, 20]);
    float64 calls libm per element.  ``ib``: int32 scratch at least twice as long as ``src``.
    """
    if src.dtype == np.float32:
        _gate_row_f32(src, dst, hard, ib)
    else:
        _gate_row_f64(src, dst, hard, ib)


def tanh_row(src, dst, ib):
    """``dst = tanh(src)`` for vectors; ``dst`` must not overlap ``src``; ``ib``: int32
    scratch at least twice as long as ``src``.

    float32: ``1 - 2 / (exp(2x) + 1)``, and for ``|x| < 0.25`` (where that formula loses
    relative accuracy) the odd Taylor series to ``x**9``; max relative error 4.4e-7
    measured over [-20, 20].  float64: libm per element.
    """
    if src.dtype == np.float32:
        _tanh_row_f32(src, dst, ib)
    else:
        _tanh_row_f64(src, dst, ib)


# Inside compiled code the dtype is known at compile time: each kernel specialisation
# compiles only its own branch (compiling both doubled the cold start).
@overload(gate_row, jit_options=NUMBA_OPTIONS)
def _ov_gate_row(src, dst, hard, ib):
    if src.dtype == types.float32:
        return lambda src, dst, hard, ib: _gate_row_f32(src, dst, hard, ib)
    return lambda src, dst, hard, ib: _gate_row_f64(src, dst, hard, ib)


@overload(tanh_row, jit_options=NUMBA_OPTIONS)
def _ov_tanh_row(src, dst, ib):
    if src.dtype == types.float32:
        return lambda src, dst, ib: _tanh_row_f32(src, dst, ib)
    return lambda src, dst, ib: _tanh_row_f64(src, dst, ib)


# Below this many logits a parallel region costs more than it saves (measured here: the
# break-even is near 2e5 on two threads).
_PARALLEL_MIN = 1 << 18


def _blas_single_threaded():
    """True when the BLAS of the kernels runs on one thread (None -- unknown -- is not).

    A multi-threaded OpenBLAS leaves its workers spinning for a while after every product,
    and the logits were just made by one.  A Numba parallel region started then fights
    those workers for the cores: measured on two cores (OpenBLAS and Numba both at two
    threads), the PTB-small LSTM step took 85-98 ms with the rows split over threads
    against 78-88 ms with the serial softmax, interleaved in one process.  So the rows
    are split only when BLAS itself is single-threaded.
    """
    return library().num_threads() == 1


@njit(**NUMBA_OPTIONS)
def _xent_row(row, y_n, mask_n, scale):
    """One row of :func:`softmax_xent`; returns its loss term ``-mask * log p[y]``."""
    V = row.shape[0]
    if mask_n == 0.0:
        for v in range(V):
            row[v] = 0.0
        return 0.0
    m = row_max(row)
    zy = row[y_n] - m      # kept before exponentiating: exp(zy) may underflow to 0
    s = exp_shifted(row, m, row)
    w = scale * mask_n / s
    for v in range(V):
        row[v] = row[v] * w
    row[y_n] -= scale * mask_n
    return -mask_n * (zy - math.log(s))


@njit(signatures("2 i 1 s", ret="s"), **NUMBA_OPTIONS)
def _softmax_xent_serial(Z, y, mask, scale):
    N, V = Z.shape
    loss = 0.0
    for n in range(N):
        loss += _xent_row(Z[n], y[n], mask[n], scale)
    return loss


@njit(signatures("2 i 1 s n", ret="s"), parallel=True, **NUMBA_OPTIONS)
def _softmax_xent_parallel(Z, y, mask, scale, chunks):
    """The parallel variant: rows in contiguous chunks over threads, per-row losses
    summed afterwards in row order -- so the result is bitwise the serial one, whatever
    the thread count or the scheduling."""
    N, V = Z.shape
    chunks = max(1, min(N, chunks))
    terms = np.empty(N, np.float64)
    for c in prange(chunks):
        lo = c * N // chunks
        hi = (c + 1) * N // chunks
        for n in range(lo, hi):
            terms[n] = _xent_row(Z[n], y[n], mask[n], scale)
    loss = 0.0
    for n in range(N):
        loss += terms[n]
    return loss


def softmax_xent(Z, y, mask, scale):
    """Masked softmax cross-entropy of the rows of ``Z``; overwrites ``Z`` with its gradient.

    Parameters
    ----------
    Z : ndarray, shape (N, V), float32 or float64
        Logits, one row per (time step, sequence).  On return, ``Z[n]`` holds
        ``scale * mask[n] * (softmax(Z[n]) - onehot(y[n]))``, i.e. ``d(scale * L)/dZ``.
    y : ndarray of intp, shape (N,)
        Target ids, validated in ``[0, V)`` by the caller.
    mask : ndarray, shape (N,), same float dtype as ``Z``
        1 for a token that counts, 0 for padding (its row of the gradient is zero).
    scale : float
        Factor applied to the gradient (``1 / count`` for a mean loss).

    Returns
    -------
    float
        ``L = -sum_n mask[n] * log softmax(Z[n])[y[n]]`` (unscaled), accumulated in float64.

    Notes
    -----
    The exponentials use :func:`fastrnn._kernels.softmax.exp_shifted` (vectorised,
    float64-accurate, summed in float64): a libm call per element would cost about 6 ns x
    ``N V`` (25 ms at N=400, V=10000).
    """
    # Chosen in Python, not inside a jitted caller: a parallel function called from
    # another jitted function makes the caller uncacheable in Numba.
    if Z.shape[0] * Z.shape[1] >= _PARALLEL_MIN and get_num_threads() > 1 \
            and _blas_single_threaded():
        # the thread count is read here: read inside the parallel function it would be a
        # call Numba cannot cache
        return _softmax_xent_parallel(Z, y, mask, scale, 4 * get_num_threads())
    return _softmax_xent_serial(Z, y, mask, scale)



@njit(signatures("2 2"), **NUMBA_OPTIONS)
def log_softmax(Z, out):
    """Row-wise ``log softmax`` of ``Z (N, V)`` into ``out (N, V)`` (may alias ``Z``)."""
    N, V = Z.shape
    ebuf = np.empty(V, np.float64)
    for n in range(N):
        m = row_max(Z[n])
        lse = m + math.log(exp_shifted(Z[n], m, ebuf))
        for v in range(V):
            out[n, v] = Z[n, v] - lse

"""Numba kernels for :mod:`fastrnn.optim`: the plain SGD update in one pass over memory,
and the gradients' finiteness check in one pass.

NumPy's way is two ufuncs, ``buf = g * lr`` then ``p -= buf``: ``buf`` is written and read
back, one more pass than the update needs.  Measured on a 2-million-element float32 array
(the PTB-small decoder), medians: 0.41 ms against 0.67 ms for NumPy's two ufuncs.

The result is NumPy's bit for bit: ``p - (g * lr)`` with ``lr`` rounded to the parameter's
dtype, both operations rounded in that dtype (no fused multiply-add: Numba contracts only
with ``FASTRNN_FASTMATH=1``).

Serial on purpose: the update is memory-bound, and split over two Numba threads it took
0.65-1.1 ms on this 2-core machine, slower than on one; inside the PTB-small step too
(the optimizer's step 3.6 against 2.9 ms, medians of six processes).

:func:`count_nonfinite` is :func:`fastrnn.optim._all_finite`'s check, one pass that counts
the elements whose exponent bits are all ones (inf and NaN).  On data in cache it takes
what NumPy's ``min`` and ``max`` take together (0.25 ms for the 2-million-element float32
gradient); in the PTB-small step, where the gradients were just written and are partly out
of cache, the optimizer's step took 2.4 ms with it against 2.7 ms with ``min`` and ``max``
(the median of eight processes' medians of 30 steps, four on one thread and four on two;
ranges 2.1-2.9 and 2.5-3.1 ms).

The callers (:meth:`fastrnn.optim.SGD._update`, :func:`fastrnn.optim._all_finite`) pass
C-contiguous float32/float64 arrays (for ``sgd`` 1-D, of one dtype, not overlapping); the
kernels check nothing.
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import numpy as np
from numba import njit

from .._config import NUMBA_OPTIONS

# the exponent field of a float32 / float64, as the unsigned integer of the same width
_EXPONENT = {np.dtype(np.float32): (np.uint32, np.uint32(0x7F800000)),
             np.dtype(np.float64): (np.uint64, np.uint64(0x7FF0000000000000))}


@njit(**NUMBA_OPTIONS)
def _sgd(p, g, lr):
    for i in range(p.shape[0]):
        p[i] = p[i] - g[i] * lr


def sgd(p, g, lr):
    """``p -= lr * g`` in place (``p``, ``g`` 1-D, C-contiguous, one float dtype)."""
    _sgd(p, g, p.dtype.type(lr))


@njit(**NUMBA_OPTIONS)
def _count_exponent_ones(u, mask):
    n = 0
    for i in range(u.shape[0]):
        n += (u[i] & mask) == mask
    return n


def count_nonfinite(a):
    """The number of NaN and inf elements of ``a`` (C-contiguous, float32 or float64)."""
    utype, mask = _EXPONENT[a.dtype]
    return int(_count_exponent_ones(a.reshape(-1).view(utype), mask))

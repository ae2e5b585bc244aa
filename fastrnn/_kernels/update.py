"""Numba kernel for :mod:`fastrnn.optim`: the plain SGD update in one pass over memory.

NumPy's way is two ufuncs, ``buf = g * lr`` then ``p -= buf``: ``buf`` is written and read
back, one more pass than the update needs.  Measured on a 2-million-element float32 array
(the PTB-small decoder), medians: 0.41 ms against 0.67 ms for NumPy's two ufuncs.

The result is NumPy's bit for bit: ``p - (g * lr)`` with ``lr`` rounded to the parameter's
dtype, both operations rounded in that dtype (no fused multiply-add: Numba contracts only
with ``FASTRNN_FASTMATH=1``).

Serial on purpose: the update is memory-bound, and split over two Numba threads it took
0.65-1.1 ms on this 2-core machine, slower than on one.  The same held for a compiled
finiteness check (0.25 ms on one thread, as NumPy's ``min`` and ``max``; 0.6-1.0 ms on
two), which is why :func:`fastrnn.optim._all_finite` stays NumPy's.

The caller (:meth:`fastrnn.optim.SGD._update`) passes 1-D C-contiguous arrays of one float
dtype that do not overlap; the kernel checks nothing.
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
from numba import njit

from .._config import NUMBA_OPTIONS


@njit(**NUMBA_OPTIONS)
def _sgd(p, g, lr):
    for i in range(p.shape[0]):
        p[i] = p[i] - g[i] * lr


def sgd(p, g, lr):
    """``p -= lr * g`` in place (``p``, ``g`` 1-D, C-contiguous, one float dtype)."""
    _sgd(p, g, p.dtype.type(lr))

"""One place for configuration: Numba options and environment switches, read once at import.

Environment variables
---------------------
FASTRNN_BACKEND
    Default backend name (``numba``, ``cython`` or ``numpy``) when no ``backend=`` is passed.
FASTRNN_FASTMATH
    ``1`` turns on Numba's ``fastmath`` with the flags that keep NaN/Inf semantics
    (``nnan``/``ninf`` are never used: a NaN loss must stay visible).  Off by default.
FASTRNN_NO_CACHE
    ``1`` disables Numba's on-disk cache of compiled kernels.
"""
import os

MODE_WINDOW = 0   # the seed NumPy RNNNumpy.bptt: each output's error flows back k+1 steps
MODE_LAST = 1     # the seed Theano scan(truncate_gradient=k): only the last k steps of the sequence
MODE_FULL = 2     # full backpropagation through time

TRUNCATION_NAMES = {"window": MODE_WINDOW, "last": MODE_LAST, "full": MODE_FULL}

ENV_BACKEND = os.environ.get("FASTRNN_BACKEND", "").strip().lower() or None

_fastmath = os.environ.get("FASTRNN_FASTMATH", "") not in ("", "0")
NUMBA_OPTIONS = dict(
    nogil=True,
    # Python's error model would add a division-by-zero check to every division in
    # the inner loops; the kernels only divide by sums of exponentials (>= 1).
    error_model="numpy",
    cache=os.environ.get("FASTRNN_NO_CACHE", "") in ("", "0"),
    fastmath={"nsz", "arcp", "contract", "afn", "reassoc"} if _fastmath else False,
)

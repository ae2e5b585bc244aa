"""BLAS level-3 calls from Numba with ``alpha``/``beta``, in the library of :mod:`._blas_lib`.

Numba's ``np.dot`` cannot accumulate into its output (``beta = 1``) or scale the product
(``alpha``), so a parameter update ``V -= lr * Δᵀ S`` would need a dense ``(V, H)``
gradient and an extra pass over it (two reads and a write of 6.4 MB at the tutorial's
size, ~1 ms).  Calling ``?gemm`` directly folds the update into the product.

Layout: our arrays are C-contiguous (row-major); BLAS is column-major.  A row-major
``(r, c)`` array is the column-major ``(c, r)`` matrix with leading dimension ``c``, so
``C = op(A) op(B)`` (row-major) is computed as ``Cᵀ = op(B)ᵀ op(A)ᵀ`` (column-major) by
passing ``B`` first.  Leading dimensions come from the row strides, so row blocks and
column blocks of C-contiguous arrays are fine; the last axis must have unit stride.
Arguments are passed as ``void*`` so one Numba function serves both float32 (``sgemm``) and
float64 (``dgemm``); the dtype branch is resolved per compile.

The integer arguments are 64-bit for NumPy's ILP64 OpenBLAS and 32-bit for SciPy's.  The
width is a compile-time constant here, and the external symbols are named by it
(``fastrnn_sgemm_i64`` ...), each bound to a library of that width: a cached kernel compiled
for the other choice can never pass wrong-sized integers (see ``_register_other_width``).
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import ctypes
import os
import sys

import llvmlite.binding as _llvm
import numpy as np
from numba import config as _numba_config
from numba import njit, prange, types

from .._config import NUMBA_OPTIONS
from ._blas_lib import library

# The BLAS entry points are bound as named external symbols, not as ctypes function
# pointers: a pointer is a "dynamic global" that stops Numba from caching any kernel that
# calls it, while a symbol is resolved again at link time in every process.
LIBRARY = library()
_WIDTH = "i64" if LIBRARY.ilp64 else "i32"
_INT = np.int64 if LIBRARY.ilp64 else np.int32


def _register(lib):
    width = "i64" if lib.ilp64 else "i32"
    for name in ("dgemm", "sgemm"):
        _llvm.add_symbol(f"fastrnn_{name}_{width}", lib.addr[name])


def _register_other_width():
    """Bind the other integer width's symbols too, to the other library, when it exists.

    The cache stamp keeps kernels compiled for the other width out of the cache in the
    normal case, but not when two processes with different ``FASTRNN_BLAS`` fill one cache
    at the same time, nor when the stamp cannot be written (a read-only install, where
    Numba falls back to a per-user cache).  A kernel compiled for the other width then
    still links to a library of its own width -- a correct result on the other library,
    instead of "LLVM ERROR: Symbol not found" and an abort.

    With NumPy's 64-bit library in use, the other is SciPy's, and finding it imports
    ``scipy.linalg`` (0.2-0.5 s), which nothing else at start-up needs any more
    (:func:`fastrnn._kernels._defer_scipy_import`).  So its symbols are bound to stand-ins
    (:func:`_scipy_stand_ins`) that look SciPy's routines up at their first call, which only
    such a stale kernel ever makes.  Returns what was bound, or None.
    """
    from ._blas_lib import BlasNotFound, _from_numpy
    if LIBRARY.ilp64:
        stand_ins = _scipy_stand_ins()
        if stand_ins is not None:
            for name, fn in stand_ins.items():
                _llvm.add_symbol(f"fastrnn_{name}_i32", ctypes.cast(fn, ctypes.c_void_p).value)
        return stand_ins
    try:
        other = _from_numpy()
    except BlasNotFound:
        return None
    if other.ilp64 == LIBRARY.ilp64:
        return None
    _register(other)
    return other


_GEMM_CFUNC = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))


def _scipy_stand_ins():
    """C-callable ``dgemm``/``sgemm`` with SciPy's 32-bit arguments that pass each call on
    to SciPy's routine, found (``scipy.linalg`` imported) at the first call; None when
    SciPy's BLAS module is not installed.  They take the GIL (ctypes callbacks do; every
    kernel is compiled ``nogil``, so a parallel kernel's worker thread can), so they are
    slow -- a correct result for a stale kernel, not a fast one.  Should SciPy's BLAS
    then fail to load, the process stops with a message: returning would leave the
    product unwritten."""
    from . import _scipy_blas_present
    if not _scipy_blas_present():
        return None
    found = {}

    def stand_in(name):
        def call(*args):
            fn = found.get(name)
            if fn is None:
                try:
                    from ._blas_lib import _from_scipy
                    fn = found[name] = _GEMM_CFUNC(_from_scipy().addr[name])
                except Exception as exc:                     # noqa: BLE001 - reported, fatal
                    sys.stderr.write(f"fastrnn: a kernel compiled for SciPy's 32-bit BLAS "
                                     f"called {name}, and SciPy's BLAS did not load: {exc}\n")
                    sys.stderr.flush()
                    os.abort()
            fn(*args)
        return _GEMM_CFUNC(call)

    return {name: stand_in(name) for name in ("dgemm", "sgemm")}


_register(LIBRARY)
OTHER_WIDTH = _register_other_width()
_GEMM_SIG = types.void(*([types.voidptr] * 13))
_dgemm = types.ExternalFunction(f"fastrnn_dgemm_{_WIDTH}", _GEMM_SIG)
_sgemm = types.ExternalFunction(f"fastrnn_sgemm_{_WIDTH}", _GEMM_SIG)

_N = ord("N")
_T = ord("T")


@njit(**NUMBA_OPTIONS)
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """``C = alpha * op(A) @ op(B) + beta * C`` for row-major (C-contiguous-row) arrays.

    ``op(X)`` is ``X.T`` when the matching ``trans_*`` is true.  ``A``, ``B``, ``C`` must have
    unit stride along their last axis (any row or column block of a C-contiguous array).
    """
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        if beta != 1.0:
            for i in range(m):
                for j in range(n):
                    C[i, j] = beta * C[i, j] if beta != 0.0 else 0.0
        return
    ints = np.empty(6, _INT)
    ints[0] = n
    ints[1] = m
    ints[2] = k
    ints[3] = max(B.strides[0] // B.itemsize, B.shape[1], 1)
    ints[4] = max(A.strides[0] // A.itemsize, A.shape[1], 1)
    ints[5] = max(C.strides[0] // C.itemsize, C.shape[1], 1)
    ch = np.empty(2, np.uint8)
    ch[0] = _T if trans_b else _N
    ch[1] = _T if trans_a else _N
    sc = np.empty(2, C.dtype)
    sc[0] = alpha
    sc[1] = beta
    if C.itemsize == 8:
        _dgemm(ch[0:1].ctypes, ch[1:2].ctypes, ints[0:1].ctypes, ints[1:2].ctypes,
               ints[2:3].ctypes, sc[0:1].ctypes, B.ctypes, ints[3:4].ctypes, A.ctypes,
               ints[4:5].ctypes, sc[1:2].ctypes, C.ctypes, ints[5:6].ctypes)
    else:
        _sgemm(ch[0:1].ctypes, ch[1:2].ctypes, ints[0:1].ctypes, ints[1:2].ctypes,
               ints[2:3].ctypes, sc[0:1].ctypes, B.ctypes, ints[3:4].ctypes, A.ctypes,
               ints[4:5].ctypes, sc[1:2].ctypes, C.ctypes, ints[5:6].ctypes)


@njit(**NUMBA_OPTIONS)
def gemm_bias(trans_a, trans_b, A, B, bias, C):
    """``C = op(A) @ op(B) + bias``, ``bias`` a vector of ``C``'s width added to every row:
    written into ``C`` first, then one BLAS call with ``beta = 1`` (also each block of
    :func:`gemm_parallel` with a bias).  Adding the bias after a ``beta = 0`` product is one more
    pass over ``C``: at PTB-small's logits ((400, 200) x (200, 10000), float32) 20.2
    against 19.3 ms (medians of 25), the same values bit for bit."""
    for i in range(C.shape[0]):
        C[i, :] = bias
    gemm(trans_a, trans_b, 1.0, A, B, 1.0, C)


# Below this many multiply-adds a product is not split.  Measured on two threads (minima
# over 400 calls, float32, (m, 200) x (200, n)): 0.8 million multiply-adds took 0.025 ms
# whole against 0.026 ms split, 3.2 million 0.096 against 0.052 ms, 64 million 1.38
# against 0.96 ms.
PARALLEL_MIN_MACS = 1 << 20


@njit(parallel=True, **NUMBA_OPTIONS)
def gemm_parallel(trans_a, trans_b, A, B, bias, C, blocks):
    """``C = op(A) @ op(B) + bias`` split into ``blocks`` products on Numba's threads.

    ``bias`` is a vector of ``C``'s width added to every row, or of length 0 for none.
    For the case where the caller's threads are Numba's and the BLAS runs on one thread
    (see :func:`fastrnn.models._step_threads`).  ``C`` is cut into column blocks when it
    is at least as wide as tall, else into row blocks; each block is one single-threaded
    BLAS call on its slices of ``A`` or ``B`` (with the bias written into the block first
    and ``beta = 1``: the block's rows are added to in the same pass), and the blocks share
    no output.
    """
    m, n = C.shape
    has_bias = bias.shape[0] > 0
    if n >= m:
        blocks = max(1, min(blocks, n))
        for k in prange(blocks):
            c0 = k * n // blocks
            c1 = (k + 1) * n // blocks
            Bk = B[c0:c1] if trans_b else B[:, c0:c1]
            if has_bias:
                gemm_bias(trans_a, trans_b, A, Bk, bias[c0:c1], C[:, c0:c1])
            else:
                gemm(trans_a, trans_b, 1.0, A, Bk, 0.0, C[:, c0:c1])
    else:
        blocks = max(1, min(blocks, m))
        for k in prange(blocks):
            r0 = k * m // blocks
            r1 = (k + 1) * m // blocks
            Ak = A[:, r0:r1] if trans_a else A[r0:r1]
            if has_bias:
                gemm_bias(trans_a, trans_b, Ak, B, bias, C[r0:r1])
            else:
                gemm(trans_a, trans_b, 1.0, Ak, B, 0.0, C[r0:r1])


if _numba_config.DISABLE_JIT:
    # NUMBA_DISABLE_JIT=1 (coverage runs): external symbols cannot be called from Python,
    # so the same contract is met with NumPy.
    def gemm(trans_a, trans_b, alpha, A, B, beta, C):  # noqa: F811
        a = A.T if trans_a else A
        b = B.T if trans_b else B
        if beta == 0.0:
            C[...] = alpha * (a @ b)
        else:
            C[...] = alpha * (a @ b) + beta * C

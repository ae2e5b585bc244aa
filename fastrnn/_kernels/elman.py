"""Batched vanilla (Elman) tanh layer, Numba kernels; same table as :mod:`fastrnn.reference.elman`.

Design (see the reference module for the equations and layouts): time-major ``(T, B, .)``
arrays; the caller does the whole-sequence GEMMs (``Xp = X W_ihᵀ + b_ih`` before, the
weight gradients after); these kernels run only the sequential recurrence, one BLAS GEMM
``(B, H) x (H, H)`` per step plus fused element-wise loops (``tanh`` a row at a time,
vectorised in float32: :func:`fastrnn._kernels.common.tanh_row`).  Workspaces of shape ``(B, H)``
are allocated once per call, before the time loop.

Also exports the output-layer kernels every language model uses, ``rnn_softmax_xent`` and
``rnn_log_softmax`` (from :mod:`fastrnn._kernels.common`).
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import numpy as np
from numba import njit, prange

from .._config import NUMBA_OPTIONS
from .blas import gemm
from .common import log_softmax as rnn_log_softmax  # noqa: F401
from .common import signatures, tanh_row
from .common import softmax_xent as rnn_softmax_xent  # noqa: F401


@njit(inline="always", **NUMBA_OPTIONS)
def _forward_rows(Xp, W_hh, b_hh, mask, Hs, b0, b1, a, ib):
    """The forward recurrence of sequences ``b0:b1`` (``Hs[0]`` set); ``a (b1 - b0, H)``
    float and ``ib (2H,)`` int32 scratch."""
    T = Xp.shape[0]
    H = Xp.shape[2]
    B = b1 - b0
    for t in range(T):
        hp = Hs[t][b0:b1]
        gemm(False, True, 1.0, hp, W_hh, 0.0, a)
        x = Xp[t][b0:b1]
        hn = Hs[t + 1][b0:b1]
        mk = mask[t][b0:b1]
        for b in range(B):
            if mk[b] == 0:
                for j in range(H):
                    hn[b, j] = hp[b, j]
            else:
                ab = a[b]
                for j in range(H):
                    ab[j] += x[b, j] + b_hh[j]
                tanh_row(ab, hn[b], ib)


@njit(signatures("3 2 1 2 2 3"), **NUMBA_OPTIONS)
def rnn_layer_forward(Xp, W_hh, b_hh, h0, mask, Hs):
    """Forward recurrence; see :func:`fastrnn.reference.elman.rnn_layer_forward`."""
    T, B, H = Xp.shape
    a = np.empty((B, H), Xp.dtype)
    ib = np.empty(2 * H, np.int32)   # exp scratch: twice the row
    Hs[0, :, :] = h0
    _forward_rows(Xp, W_hh, b_hh, mask, Hs, 0, B, a, ib)


@njit(inline="always", **NUMBA_OPTIONS)
def _backward_rows(W_hh, mask, Hs, dHs, dG, dh0, b0, b1, dh, tmp):
    """The backward recurrence of sequences ``b0:b1``; ``dh`` (zeros) and ``tmp
    (b1 - b0, H)`` scratch."""
    T = dHs.shape[0]
    H = dHs.shape[2]
    B = b1 - b0
    for t in range(T - 1, -1, -1):
        g = dG[t][b0:b1]
        h = Hs[t + 1][b0:b1]
        up = dHs[t][b0:b1]
        mk = mask[t][b0:b1]
        for b in range(B):
            on = mk[b] != 0
            for j in range(H):
                d = dh[b, j] + up[b, j]
                dh[b, j] = d
                g[b, j] = d * (1.0 - h[b, j] * h[b, j]) if on else 0.0
        gemm(False, False, 1.0, g, W_hh, 0.0, tmp)
        for b in range(B):
            if mk[b] != 0:
                for j in range(H):
                    dh[b, j] = tmp[b, j]
            else:   # padding: the state was held, its gradient passes through unchanged
                for j in range(H):
                    dh[b, j] += tmp[b, j]   # tmp[b] is 0 here (g[b] == 0)
    dh0[b0:b1, :] = dh


@njit(signatures("2 2 3 3 3 2"), **NUMBA_OPTIONS)
def rnn_layer_backward(W_hh, mask, Hs, dHs, dG, dh0):
    """Backward recurrence; see :func:`fastrnn.reference.elman.rnn_layer_backward`."""
    T, B, H = dHs.shape
    dh = np.zeros((B, H), dHs.dtype)
    tmp = np.empty((B, H), dHs.dtype)
    _backward_rows(W_hh, mask, Hs, dHs, dG, dh0, 0, B, dh, tmp)


# ----------------------------------------------------------------------------- parallel
# The recurrences in blocks of sequences on Numba's threads, as the GRU's
# (:mod:`fastrnn._kernels.gru`): each thread runs the serial loops on its rows, one parallel
# region per call; used from 16 sequences a thread after ``fastrnn.set_num_threads``
# (:func:`parallel_rnn_by_rows`; the GRU's from 8).


@njit(**NUMBA_OPTIONS)
def _forward_block(Xp, W_hh, b_hh, mask, Hs, b0, b1, a, ib):
    _forward_rows(Xp, W_hh, b_hh, mask, Hs, b0, b1, a, ib)


@njit(**NUMBA_OPTIONS)
def _backward_block(W_hh, mask, Hs, dHs, dG, dh0, b0, b1, dh, tmp):
    _backward_rows(W_hh, mask, Hs, dHs, dG, dh0, b0, b1, dh, tmp)


@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_rnn_layer_forward(Xp, W_hh, b_hh, h0, mask, Hs, chunks):
    """:func:`rnn_layer_forward` in ``chunks`` blocks of sequences over Numba's threads."""
    T, B, H = Xp.shape
    chunks = max(1, min(B, chunks))
    m = (B + chunks - 1) // chunks
    Hs[0, :, :] = h0
    af = np.empty((chunks, m * H), Xp.dtype)
    ib = np.empty((chunks, 2 * H), np.int32)
    for k in prange(chunks):
        b0 = k * B // chunks
        b1 = (k + 1) * B // chunks
        _forward_block(Xp, W_hh, b_hh, mask, Hs, b0, b1,
                       af[k, :(b1 - b0) * H].reshape((b1 - b0, H)), ib[k])


@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_rnn_layer_backward(W_hh, mask, Hs, dHs, dG, dh0, chunks):
    """:func:`rnn_layer_backward` in ``chunks`` blocks of sequences over Numba's threads."""
    T, B, H = dHs.shape
    chunks = max(1, min(B, chunks))
    m = (B + chunks - 1) // chunks
    sf = np.empty((chunks, 2 * m * H), dHs.dtype)
    for k in prange(chunks):
        b0 = k * B // chunks
        b1 = (k + 1) * B // chunks
        r = b1 - b0
        dh = sf[k, :r * H].reshape((r, H))
        dh[:, :] = 0.0
        _backward_block(W_hh, mask, Hs, dHs, dG, dh0, b0, b1, dh,
                        sf[k, r * H:2 * r * H].reshape((r, H)))


def parallel_rnn_by_rows(B, chunks):
    """Whether the parallel Elman kernels are used: from 16 sequences a thread.

    Measured on two threads (float32, T=20, H=200, interleaved in one process, 150 calls
    each; minimum / median ms, serial against parallel): forward B=4 0.24/0.36 against
    0.28/0.41, B=16 0.54/0.74 against 0.56/0.70, B=20 0.64/0.86 against 0.60/0.77, B=32
    0.88/1.23 against 0.62/0.94, B=64 1.57/2.12 against 0.98/1.51.  Below 16 sequences a
    thread the layer is a small part of a step and the gain is within the noise: the
    PTB-shaped Elman step (2 x 200, V=10000, B=20, fresh processes, 5 rounds of 40 steps)
    took 51.8 ms with the serial layer against 53.7 ms with the parallel one."""
    return B >= 16 * chunks

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
from numba import njit

from .._config import NUMBA_OPTIONS
from .blas import gemm
from .common import log_softmax as rnn_log_softmax  # noqa: F401
from .common import signatures, tanh_row
from .common import softmax_xent as rnn_softmax_xent  # noqa: F401


@njit(signatures("3 2 1 2 2 3"), **NUMBA_OPTIONS)
def rnn_layer_forward(Xp, W_hh, b_hh, h0, mask, Hs):
    """Forward recurrence; see :func:`fastrnn.reference.elman.rnn_layer_forward`."""
    T, B, H = Xp.shape
    a = np.empty((B, H), Xp.dtype)
    ib = np.empty(2 * H, np.int32)   # exp scratch: twice the row
    Hs[0, :, :] = h0
    for t in range(T):
        hp = Hs[t]
        gemm(False, True, 1.0, hp, W_hh, 0.0, a)
        x = Xp[t]
        hn = Hs[t + 1]
        for b in range(B):
            if mask[t, b] == 0:
                for j in range(H):
                    hn[b, j] = hp[b, j]
            else:
                ab = a[b]
                for j in range(H):
                    ab[j] += x[b, j] + b_hh[j]
                tanh_row(ab, hn[b], ib)


@njit(signatures("2 2 3 3 3 2"), **NUMBA_OPTIONS)
def rnn_layer_backward(W_hh, mask, Hs, dHs, dG, dh0):
    """Backward recurrence; see :func:`fastrnn.reference.elman.rnn_layer_backward`."""
    T, B, H = dHs.shape
    dh = np.zeros((B, H), dHs.dtype)
    tmp = np.empty((B, H), dHs.dtype)
    for t in range(T - 1, -1, -1):
        g = dG[t]
        h = Hs[t + 1]
        for b in range(B):
            on = mask[t, b] != 0
            for j in range(H):
                d = dh[b, j] + dHs[t, b, j]
                dh[b, j] = d
                g[b, j] = d * (1.0 - h[b, j] * h[b, j]) if on else 0.0
        gemm(False, False, 1.0, g, W_hh, 0.0, tmp)
        for b in range(B):
            if mask[t, b] != 0:
                for j in range(H):
                    dh[b, j] = tmp[b, j]
            else:   # padding: the state was held, its gradient passes through unchanged
                for j in range(H):
                    dh[b, j] += tmp[b, j]   # tmp[b] is 0 here (g[b] == 0)
    dh0[:, :] = dh

"""Batched LSTM layer, Numba kernels; same table as :mod:`fastrnn.reference.lstm`.

Design: time-major arrays, PyTorch gate order ``i, f, g, o``; equations and the cache
layout (gate outputs ``(T, B, 4H)``, states ``Hs, Cs (T + 1, B, H)``) are in the reference
module.  The caller does the whole-sequence GEMMs (``Xp = X W_ihᵀ + b_ih`` before, the
weight gradients ``dGᵀ X``, ``dGᵀ H_prev`` after).  Per step: one BLAS GEMM
``(B, H) x (H, 4H)`` forward and one ``(B, 4H) x (4H, H)`` backward; activations a row at a
time (:func:`fastrnn._kernels.common.gate_row` / ``tanh_row``, vectorised in float32), the
rest fused in loops.  ``tanh(c_t)`` is recomputed in the backward pass with the same
function as the forward pass rather than cached (one ``(T, B, H)`` array less).

Measured (``bench/test_bench_cells.py``, T=20, B=20, H=200, float32, one BLAS thread, CPU
time on a busy shared 2-core machine, so +-30 %): forward and forward + backward take
0.6-1.0x the NumPy reference's time (float64: 0.8-0.9x); the per-step GEMMs alone
(``blas-only``) are about half of it.
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import numpy as np
from numba import njit

from .._config import NUMBA_OPTIONS
from .blas import gemm
from .common import gate_grad, gate_row, signatures, tanh_row


@njit(signatures("3 2 1 2 2 2 b 3 3 3"), **NUMBA_OPTIONS)
def lstm_layer_forward(Xp, W_hh, b_hh, h0, c0, mask, hard_gates, Hs, Cs, cache):
    """Forward recurrence; see :func:`fastrnn.reference.lstm.lstm_layer_forward`."""
    T, B, G = Xp.shape
    H = G // 4
    a = np.empty((B, G), Xp.dtype)
    cb = np.empty(H, Xp.dtype)
    tc = np.empty(H, Xp.dtype)
    ib = np.empty(4 * H, np.int32)   # exp scratch: twice the row
    Hs[0, :, :] = h0
    Cs[0, :, :] = c0
    for t in range(T):
        hp = Hs[t]
        cp = Cs[t]
        x = Xp[t]
        ca = cache[t]
        hout = Hs[t + 1]
        cout = Cs[t + 1]
        gemm(False, True, 1.0, hp, W_hh, 0.0, a)
        for b in range(B):
            ab = a[b]
            cab = ca[b]
            for j in range(G):
                ab[j] += x[b, j] + b_hh[j]
            gate_row(ab[:2 * H], cab[:2 * H], hard_gates, ib)            # i, f
            tanh_row(ab[2 * H:3 * H], cab[2 * H:3 * H], ib)              # g
            gate_row(ab[3 * H:], cab[3 * H:], hard_gates, ib)            # o
            if mask[t, b] != 0:
                for j in range(H):
                    cb[j] = cab[H + j] * cp[b, j] + cab[j] * cab[2 * H + j]
                tanh_row(cb, tc, ib)
                for j in range(H):
                    cout[b, j] = cb[j]
                    hout[b, j] = cab[3 * H + j] * tc[j]
            else:
                for j in range(H):
                    cout[b, j] = cp[b, j]
                    hout[b, j] = hp[b, j]


@njit(signatures("2 2 b 3 3 3 3 3 2 2"), **NUMBA_OPTIONS)
def lstm_layer_backward(W_hh, mask, hard_gates, Hs, Cs, cache, dHs, dG, dh0, dc0):
    """Backward recurrence; see :func:`fastrnn.reference.lstm.lstm_layer_backward`."""
    T, B, H = dHs.shape
    dt = dHs.dtype
    dh = np.zeros((B, H), dt)
    dc = np.zeros((B, H), dt)
    tmp = np.empty((B, H), dt)
    tcb = np.empty(H, dt)
    ib = np.empty(2 * H, np.int32)   # exp scratch: twice the row
    for t in range(T - 1, -1, -1):
        ca = cache[t]
        g4 = dG[t]
        cp = Cs[t]
        cn = Cs[t + 1]
        for b in range(B):
            on = mask[t, b] != 0
            if on:
                tanh_row(cn[b], tcb, ib)    # the forward pass's tanh(c_t), bit for bit
            for j in range(H):
                d = dh[b, j] + dHs[t, b, j]
                dh[b, j] = d
                if not on:   # state held: both gradients pass through; no gate gradient
                    g4[b, j] = 0.0
                    g4[b, H + j] = 0.0
                    g4[b, 2 * H + j] = 0.0
                    g4[b, 3 * H + j] = 0.0
                    continue
                i = ca[b, j]
                f = ca[b, H + j]
                g = ca[b, 2 * H + j]
                o = ca[b, 3 * H + j]
                tc = tcb[j]
                dct = dc[b, j] + d * o * (1.0 - tc * tc)
                g4[b, j] = dct * g * gate_grad(i, hard_gates)
                g4[b, H + j] = dct * cp[b, j] * gate_grad(f, hard_gates)
                g4[b, 2 * H + j] = dct * i * (1.0 - g * g)
                g4[b, 3 * H + j] = d * tc * gate_grad(o, hard_gates)
                dc[b, j] = dct * f
        gemm(False, False, 1.0, g4, W_hh, 0.0, tmp)
        for b in range(B):
            if mask[t, b] != 0:
                for j in range(H):
                    dh[b, j] = tmp[b, j]
            else:
                for j in range(H):
                    dh[b, j] += tmp[b, j]   # tmp[b] is 0 here
    dh0[:, :] = dh
    dc0[:, :] = dc

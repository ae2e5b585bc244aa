"""Batched LSTM layer, Numba kernels; same table as :mod:`fastrnn.reference.lstm`.

Design: time-major arrays, PyTorch gate order ``i, f, g, o``; equations and the cache
layout (gate outputs ``(T, B, 4H)``, states ``Hs, Cs (T + 1, B, H)``) are in the reference
module.  The caller does the whole-sequence GEMMs (``Xp = X W_ihᵀ + b_ih`` before, the
weight gradients ``dGᵀ X``, ``dGᵀ H_prev`` after).  Per step: one BLAS GEMM
``(B, H) x (H, 4H)`` forward and one ``(B, 4H) x (4H, H)`` backward, the gate arithmetic
fused in loops; ``tanh(c_t)`` is recomputed in the backward pass rather than cached.
"""
import math

import numpy as np
from numba import njit

from .._config import NUMBA_OPTIONS
from .common import gate, gate_grad


@njit(**NUMBA_OPTIONS)
def lstm_layer_forward(Xp, W_hh, b_hh, h0, c0, mask, hard_gates, Hs, Cs, cache):
    """Forward recurrence; see :func:`fastrnn.reference.lstm.lstm_layer_forward`."""
    T, B, G = Xp.shape
    H = G // 4
    a = np.empty((B, G), Xp.dtype)
    Hs[0, :, :] = h0
    Cs[0, :, :] = c0
    for t in range(T):
        hp = Hs[t]
        cp = Cs[t]
        x = Xp[t]
        ca = cache[t]
        hout = Hs[t + 1]
        cout = Cs[t + 1]
        np.dot(hp, W_hh.T, a)
        for b in range(B):
            on = mask[t, b] != 0
            for j in range(H):
                i = gate(x[b, j] + a[b, j] + b_hh[j], hard_gates)
                f = gate(x[b, H + j] + a[b, H + j] + b_hh[H + j], hard_gates)
                g = math.tanh(x[b, 2 * H + j] + a[b, 2 * H + j] + b_hh[2 * H + j])
                o = gate(x[b, 3 * H + j] + a[b, 3 * H + j] + b_hh[3 * H + j], hard_gates)
                ca[b, j] = i
                ca[b, H + j] = f
                ca[b, 2 * H + j] = g
                ca[b, 3 * H + j] = o
                if on:
                    c = f * cp[b, j] + i * g
                    cout[b, j] = c
                    hout[b, j] = o * math.tanh(c)
                else:
                    cout[b, j] = cp[b, j]
                    hout[b, j] = hp[b, j]


@njit(**NUMBA_OPTIONS)
def lstm_layer_backward(W_hh, mask, hard_gates, Hs, Cs, cache, dHs, dG, dh0, dc0):
    """Backward recurrence; see :func:`fastrnn.reference.lstm.lstm_layer_backward`."""
    T, B, H = dHs.shape
    dt = dHs.dtype
    dh = np.zeros((B, H), dt)
    dc = np.zeros((B, H), dt)
    tmp = np.empty((B, H), dt)
    for t in range(T - 1, -1, -1):
        ca = cache[t]
        g4 = dG[t]
        cp = Cs[t]
        cn = Cs[t + 1]
        for b in range(B):
            on = mask[t, b] != 0
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
                tc = math.tanh(cn[b, j])
                dct = dc[b, j] + d * o * (1.0 - tc * tc)
                g4[b, j] = dct * g * gate_grad(i, hard_gates)
                g4[b, H + j] = dct * cp[b, j] * gate_grad(f, hard_gates)
                g4[b, 2 * H + j] = dct * i * (1.0 - g * g)
                g4[b, 3 * H + j] = d * tc * gate_grad(o, hard_gates)
                dc[b, j] = dct * f
        np.dot(g4, W_hh, tmp)
        for b in range(B):
            if mask[t, b] != 0:
                for j in range(H):
                    dh[b, j] = tmp[b, j]
            else:
                for j in range(H):
                    dh[b, j] += tmp[b, j]   # tmp[b] is 0 here
    dh0[:, :] = dh
    dc0[:, :] = dc

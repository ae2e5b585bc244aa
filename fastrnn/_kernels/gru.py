"""Batched GRU layer, Numba kernels; same table as :mod:`fastrnn.reference.gru`.

Design: time-major arrays, PyTorch gate order ``r, z, n`` (equations, flags and the cache
layout ``[r, z, n, a]`` are in the reference module).  The caller does the whole-sequence
GEMMs: ``Xp = X W_ihᵀ + b_ih`` before, ``dW_ih = dGxᵀ X`` and ``dW_hh = dGhᵀ hin`` after.
Per step these kernels make one or two BLAS calls on the ``(B, H)`` state (two when the
reset is applied before ``W_hn``, whose input ``r * h`` depends on the first) and fuse the
gate arithmetic in loops.  Workspaces are allocated once per call, before the time loop;
every GEMM reads and writes C-contiguous blocks (``W_hh[:2H]`` row slices, ``(B, .)``
buffers) so BLAS never gets a strided operand.
"""
import math

import numpy as np
from numba import njit

from .._config import NUMBA_OPTIONS
from .common import gate, gate_grad


@njit(**NUMBA_OPTIONS)
def gru_layer_forward(Xp, W_hh, b_hh, h0, mask, reset_after, hard_gates, Hs, cache):
    """Forward recurrence; see :func:`fastrnn.reference.gru.gru_layer_forward`."""
    T, B, G = Xp.shape
    H = G // 3
    W_rz = W_hh[:2 * H]
    W_n = W_hh[2 * H:]
    ghrz = np.empty((B, 2 * H), Xp.dtype)
    ghn = np.empty((B, H), Xp.dtype)
    rh = np.empty((B, H), Xp.dtype)
    Hs[0, :, :] = h0
    for t in range(T):
        hp = Hs[t]
        x = Xp[t]
        ca = cache[t]
        hout = Hs[t + 1]
        np.dot(hp, W_rz.T, ghrz)
        if reset_after:
            np.dot(hp, W_n.T, ghn)
        for b in range(B):
            for j in range(H):
                r = gate(x[b, j] + ghrz[b, j] + b_hh[j], hard_gates)
                z = gate(x[b, H + j] + ghrz[b, H + j] + b_hh[H + j], hard_gates)
                ca[b, j] = r
                ca[b, H + j] = z
                if reset_after:
                    ca[b, 3 * H + j] = ghn[b, j] + b_hh[2 * H + j]
                else:
                    rh[b, j] = r * hp[b, j]
                    ca[b, 3 * H + j] = rh[b, j]
        if not reset_after:
            np.dot(rh, W_n.T, ghn)
        for b in range(B):
            on = mask[t, b] != 0
            for j in range(H):
                r = ca[b, j]
                z = ca[b, H + j]
                if reset_after:
                    n = math.tanh(x[b, 2 * H + j] + r * ca[b, 3 * H + j])
                else:
                    n = math.tanh(x[b, 2 * H + j] + ghn[b, j] + b_hh[2 * H + j])
                ca[b, 2 * H + j] = n
                if on:
                    hout[b, j] = (1.0 - z) * n + z * hp[b, j]
                else:
                    hout[b, j] = hp[b, j]


@njit(**NUMBA_OPTIONS)
def gru_layer_backward(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0):
    """Backward recurrence; see :func:`fastrnn.reference.gru.gru_layer_backward`."""
    T, B, H = dHs.shape
    W_rz = W_hh[:2 * H]
    W_n = W_hh[2 * H:]
    dt = dHs.dtype
    dh = np.zeros((B, H), dt)       # dL/dh_t through the recurrence and from above
    dprev = np.empty((B, H), dt)    # dL/dh_{t-1}, built up over the step
    dnb = np.empty((B, H), dt)      # dL/d(pre-activation of n)
    drz = np.empty((B, 2 * H), dt)  # dL/d(pre-activations of r, z)
    da = np.empty((B, H), dt)       # dL/d(r * h_{t-1})   (reset before W_hn only)
    tmp = np.empty((B, H), dt)
    for t in range(T - 1, -1, -1):
        hp = Hs[t]
        ca = cache[t]
        gx = dGx[t]
        gh = dGh[t]
        for b in range(B):
            on = mask[t, b] != 0
            for j in range(H):
                d = dh[b, j] + dHs[t, b, j]
                dh[b, j] = d
                if not on:
                    dnb[b, j] = 0.0
                    drz[b, j] = 0.0
                    drz[b, H + j] = 0.0
                    dprev[b, j] = d
                    continue
                r = ca[b, j]
                z = ca[b, H + j]
                n = ca[b, 2 * H + j]
                dnp = d * (1.0 - z) * (1.0 - n * n)
                dnb[b, j] = dnp
                drz[b, H + j] = d * (hp[b, j] - n) * gate_grad(z, hard_gates)
                dprev[b, j] = d * z
                if reset_after:
                    drz[b, j] = dnp * ca[b, 3 * H + j] * gate_grad(r, hard_gates)
        if not reset_after:
            np.dot(dnb, W_n, da)
            for b in range(B):
                if mask[t, b] != 0:
                    for j in range(H):
                        r = ca[b, j]
                        drz[b, j] = da[b, j] * hp[b, j] * gate_grad(r, hard_gates)
                        dprev[b, j] += da[b, j] * r
        for b in range(B):
            for j in range(H):
                gx[b, j] = drz[b, j]
                gx[b, H + j] = drz[b, H + j]
                gx[b, 2 * H + j] = dnb[b, j]
                gh[b, j] = drz[b, j]
                gh[b, H + j] = drz[b, H + j]
                if reset_after:
                    gh[b, 2 * H + j] = dnb[b, j] * ca[b, j]
                else:
                    gh[b, 2 * H + j] = dnb[b, j]
        if reset_after:
            np.dot(gh, W_hh, tmp)
        else:
            np.dot(drz, W_rz, tmp)
        for b in range(B):
            for j in range(H):
                dh[b, j] = dprev[b, j] + tmp[b, j]
    dh0[:, :] = dh

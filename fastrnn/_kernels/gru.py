"""Batched GRU layer, Numba kernels; same table as :mod:`fastrnn.reference.gru`.

Design: time-major arrays, PyTorch gate order ``r, z, n`` (equations, flags and the cache
layout ``[r, z, n, a]`` are in the reference module).  The caller does the whole-sequence
GEMMs: ``Xp = X W_ihᵀ + b_ih`` before, ``dW_ih = dGxᵀ X`` and ``dW_hh = dGhᵀ hin`` after.
Per step these kernels make one or two BLAS calls on the ``(B, H)`` state (two when the
reset is applied before ``W_hn``, whose input ``r * h`` depends on the first); the gate
activations run a row at a time (:func:`fastrnn._kernels.common.gate_row`, vectorised in
float32) and the rest of the gate arithmetic is fused in loops.  Workspaces are allocated
once per call, before the time loop; every GEMM reads and writes C-contiguous blocks
(``W_hh[:2H]`` row slices, ``(B, .)`` buffers) so BLAS never gets a strided operand.

Measured (``bench/test_bench_cells.py``, T=20, B=20, H=200, float32, one BLAS thread, CPU
time on a busy shared 2-core machine, so +-30 %): forward and forward + backward take
0.6-1.0x the NumPy reference's time (float64: 0.8-0.9x); the per-step GEMMs alone
(``blas-only``) are about half of it.
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import numpy as np
from numba import njit, prange

from .._config import NUMBA_OPTIONS
from .blas import gemm
from .common import gate_grad, gate_row, signatures, tanh_row


@njit(inline="always", **NUMBA_OPTIONS)
def _forward_rows(Xp, W_hh, b_hh, mask, reset_after, hard_gates, Hs, cache, b0, b1, ghrz, ghn,
                  rh, npre, ib):
    """The forward recurrence of sequences ``b0:b1`` (``Hs[0]`` set); ``ghrz (b1 - b0, 2H)``,
    ``ghn``, ``rh (b1 - b0, H)``, ``npre (H,)`` float and ``ib (4H,)`` int32 scratch."""
    T = Xp.shape[0]
    H = Hs.shape[2]
    B = b1 - b0
    W_rz = W_hh[:2 * H]
    W_n = W_hh[2 * H:]
    for t in range(T):
        hp = Hs[t][b0:b1]
        x = Xp[t][b0:b1]
        ca = cache[t][b0:b1]
        hout = Hs[t + 1][b0:b1]
        mk = mask[t][b0:b1]
        gemm(False, True, 1.0, hp, W_rz, 0.0, ghrz)
        if reset_after:
            gemm(False, True, 1.0, hp, W_n, 0.0, ghn)
        for b in range(B):
            g = ghrz[b]
            for j in range(2 * H):
                g[j] += x[b, j] + b_hh[j]
            gate_row(g, ca[b, :2 * H], hard_gates, ib)          # r, z
            if reset_after:
                for j in range(H):
                    ca[b, 3 * H + j] = ghn[b, j] + b_hh[2 * H + j]
            else:
                for j in range(H):
                    rh[b, j] = ca[b, j] * hp[b, j]
                    ca[b, 3 * H + j] = rh[b, j]
        if not reset_after:
            gemm(False, True, 1.0, rh, W_n, 0.0, ghn)
        for b in range(B):
            if reset_after:
                for j in range(H):
                    npre[j] = x[b, 2 * H + j] + ca[b, j] * ca[b, 3 * H + j]
            else:
                for j in range(H):
                    npre[j] = x[b, 2 * H + j] + ghn[b, j] + b_hh[2 * H + j]
            tanh_row(npre, ca[b, 2 * H:3 * H], ib)                # n
            if mk[b] != 0:
                for j in range(H):
                    z = ca[b, H + j]
                    hout[b, j] = (1.0 - z) * ca[b, 2 * H + j] + z * hp[b, j]
            else:
                for j in range(H):
                    hout[b, j] = hp[b, j]




@njit(signatures("3 2 1 2 2 b b 3 3"), **NUMBA_OPTIONS)
def gru_layer_forward(Xp, W_hh, b_hh, h0, mask, reset_after, hard_gates, Hs, cache):
    """Forward recurrence; see :func:`fastrnn.reference.gru.gru_layer_forward`."""
    T, B, G = Xp.shape
    H = G // 3
    ghrz = np.empty((B, 2 * H), Xp.dtype)
    ghn = np.empty((B, H), Xp.dtype)
    rh = np.empty((B, H), Xp.dtype)
    npre = np.empty(H, Xp.dtype)
    ib = np.empty(4 * H, np.int32)   # exp scratch: twice the row
    Hs[0, :, :] = h0
    _forward_rows(Xp, W_hh, b_hh, mask, reset_after, hard_gates, Hs, cache, 0, B, ghrz, ghn, rh,
                  npre, ib)


@njit(inline="always", **NUMBA_OPTIONS)
def _backward_rows(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0, b0, b1,
                   dh, dprev, dnb, drz, da, tmp):
    """The backward recurrence of sequences ``b0:b1``; ``dh`` (zeros), ``dprev``, ``dnb``,
    ``da``, ``tmp (b1 - b0, H)`` and ``drz (b1 - b0, 2H)`` scratch."""
    T = dHs.shape[0]
    H = dHs.shape[2]
    B = b1 - b0
    W_rz = W_hh[:2 * H]
    W_n = W_hh[2 * H:]
    for t in range(T - 1, -1, -1):
        hp = Hs[t][b0:b1]
        ca = cache[t][b0:b1]
        gx = dGx[t][b0:b1]
        gh = dGh[t][b0:b1]
        up_t = dHs[t][b0:b1]
        mk = mask[t][b0:b1]
        for b in range(B):
            dhb = dh[b]
            up = up_t[b]
            if mk[b] == 0:     # state held: the gradient passes through, no gate gradient
                for j in range(H):
                    dhb[j] += up[j]
                    dprev[b, j] = dhb[j]
                for j in range(3 * H):
                    gx[b, j] = 0.0
                    gh[b, j] = 0.0
                if not reset_after:
                    for j in range(H):
                        dnb[b, j] = 0.0
                        drz[b, j] = 0.0
                        drz[b, H + j] = 0.0
                continue
            cab = ca[b]
            hpb = hp[b]
            gxb = gx[b]
            ghb = gh[b]
            dpb = dprev[b]
            if reset_after:
                for j in range(H):
                    d = dhb[j] + up[j]
                    dhb[j] = d
                    r = cab[j]
                    z = cab[H + j]
                    n = cab[2 * H + j]
                    dnp = d * (1.0 - z) * (1.0 - n * n)
                    dzp = d * (hpb[j] - n) * gate_grad(z, hard_gates)
                    drp = dnp * cab[3 * H + j] * gate_grad(r, hard_gates)
                    dpb[j] = d * z
                    gxb[j] = drp
                    gxb[H + j] = dzp
                    gxb[2 * H + j] = dnp
                    ghb[j] = drp
                    ghb[H + j] = dzp
                    ghb[2 * H + j] = dnp * r
            else:
                for j in range(H):
                    d = dhb[j] + up[j]
                    dhb[j] = d
                    z = cab[H + j]
                    n = cab[2 * H + j]
                    dnp = d * (1.0 - z) * (1.0 - n * n)
                    dzp = d * (hpb[j] - n) * gate_grad(z, hard_gates)
                    dpb[j] = d * z
                    dnb[b, j] = dnp
                    drz[b, H + j] = dzp
                    gxb[H + j] = dzp
                    gxb[2 * H + j] = dnp
                    ghb[H + j] = dzp
                    ghb[2 * H + j] = dnp
        if reset_after:
            gemm(False, False, 1.0, gh, W_hh, 0.0, tmp)
        else:
            gemm(False, False, 1.0, dnb, W_n, 0.0, da)
            for b in range(B):
                if mk[b] != 0:
                    cab = ca[b]
                    hpb = hp[b]
                    for j in range(H):
                        r = cab[j]
                        drp = da[b, j] * hpb[j] * gate_grad(r, hard_gates)
                        drz[b, j] = drp
                        gx[b, j] = drp
                        gh[b, j] = drp
                        dprev[b, j] += da[b, j] * r
            gemm(False, False, 1.0, drz, W_rz, 0.0, tmp)
        for b in range(B):
            for j in range(H):
                dh[b, j] = dprev[b, j] + tmp[b, j]
    dh0[b0:b1, :] = dh


@njit(signatures("2 2 b b 3 3 3 3 3 2"), **NUMBA_OPTIONS)
def gru_layer_backward(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0):
    """Backward recurrence; see :func:`fastrnn.reference.gru.gru_layer_backward`."""
    T, B, H = dHs.shape
    dt = dHs.dtype
    dh = np.zeros((B, H), dt)       # dL/dh_t through the recurrence and from above
    dprev = np.empty((B, H), dt)    # dL/dh_{t-1}, built up over the step
    dnb = np.empty((B, H), dt)      # dL/d(pre-activation of n)        (reset before W_hn)
    drz = np.empty((B, 2 * H), dt)  # dL/d(pre-activations of r, z)    (reset before W_hn)
    da = np.empty((B, H), dt)       # dL/d(r * h_{t-1})                (reset before W_hn)
    tmp = np.empty((B, H), dt)
    _backward_rows(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0, 0, B, dh,
                   dprev, dnb, drz, da, tmp)


# ----------------------------------------------------------------------------- parallel
# The same recurrences on Numba's threads in blocks of sequences, for a step whose threads
# are Numba's while the BLAS runs on one (fastrnn.models._step_threads), used from 16
# sequences a thread (:func:`parallel_gru_by_rows`).  Sequences are independent: each
# thread runs the serial recurrence (_forward_rows, _backward_rows) on its rows of every
# array, one parallel region per call, so results equal the serial kernels' up to the
# BLAS's summation inside a product (tests/test_parallel.py).  As for the LSTM, each
# thread's work is a separately compiled function called from the prange body.  No
# explicit signatures: these compile on first use.


@njit(**NUMBA_OPTIONS)
def _forward_block(Xp, W_hh, b_hh, mask, reset_after, hard_gates, Hs, cache, b0, b1, ghrz, ghn,
                   rh, npre, ib):
    _forward_rows(Xp, W_hh, b_hh, mask, reset_after, hard_gates, Hs, cache, b0, b1, ghrz, ghn,
                  rh, npre, ib)


@njit(**NUMBA_OPTIONS)
def _backward_block(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0, b0, b1,
                    dh, dprev, dnb, drz, da, tmp):
    _backward_rows(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0, b0, b1,
                   dh, dprev, dnb, drz, da, tmp)


@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_gru_layer_forward(Xp, W_hh, b_hh, h0, mask, reset_after, hard_gates, Hs, cache,
                               chunks):
    """:func:`gru_layer_forward` in ``chunks`` blocks of sequences over Numba's threads."""
    T, B, G = Xp.shape
    H = G // 3
    dt = Xp.dtype
    chunks = max(1, min(B, chunks))
    m = (B + chunks - 1) // chunks
    Hs[0, :, :] = h0
    sf = np.empty((chunks, 4 * m * H), dt)        # ghrz (2H), ghn, rh per sequence
    npre = np.empty((chunks, H), dt)
    ib = np.empty((chunks, 4 * H), np.int32)
    for k in prange(chunks):
        b0 = k * B // chunks
        b1 = (k + 1) * B // chunks
        r = b1 - b0
        _forward_block(Xp, W_hh, b_hh, mask, reset_after, hard_gates, Hs, cache, b0, b1,
                       sf[k, :2 * r * H].reshape((r, 2 * H)),
                       sf[k, 2 * r * H:3 * r * H].reshape((r, H)),
                       sf[k, 3 * r * H:4 * r * H].reshape((r, H)), npre[k], ib[k])


@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_gru_layer_backward(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh,
                                dh0, chunks):
    """:func:`gru_layer_backward` in ``chunks`` blocks of sequences over Numba's threads."""
    T, B, H = dHs.shape
    dt = dHs.dtype
    chunks = max(1, min(B, chunks))
    m = (B + chunks - 1) // chunks
    sf = np.empty((chunks, 7 * m * H), dt)        # dh, dprev, dnb, da, tmp, drz (2H)
    for k in prange(chunks):
        b0 = k * B // chunks
        b1 = (k + 1) * B // chunks
        r = b1 - b0
        w = sf[k, :7 * r * H]
        dh = w[:r * H].reshape((r, H))
        dh[:, :] = 0.0
        _backward_block(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0, b0,
                        b1, dh, w[r * H:2 * r * H].reshape((r, H)),
                        w[2 * r * H:3 * r * H].reshape((r, H)),
                        w[5 * r * H:7 * r * H].reshape((r, 2 * H)),
                        w[3 * r * H:4 * r * H].reshape((r, H)),
                        w[4 * r * H:5 * r * H].reshape((r, H)))


def parallel_gru_by_rows(B, chunks):
    """Whether the parallel GRU kernels are used: from 8 sequences a thread.

    Measured on two threads (float32, T=20, ``reset_after``, interleaved in one process,
    150 calls each; minimum / median ms, serial against parallel).  H=200: B=4 forward
    0.72/1.01 against 0.84/1.16 and B=6 1.10/1.52 against 1.18/1.57 (the serial kernel
    ahead), B=12 1.23/1.42 against 1.10/1.37, B=16 1.67/2.23 against 1.46/1.91, B=20
    2.02/2.78 against 1.74/2.24 (backward 1.93/2.66 against 1.79/2.13), B=32 2.84/3.94
    against 1.68/2.65.  H=128: B=8 0.59/0.61 against 0.63/0.64 forward, 0.50/0.52 against
    0.46/0.47 backward; B=20 0.85/0.96 against 0.66/0.91.  The whole PTB-shaped GRU step
    (2 x 200, V=10000, B=20, ``fastrnn.set_num_threads(2)``; fresh processes, 5 rounds of
    40 steps): 62.7 ms (median of medians) from 8 sequences a thread against 66.0 ms from
    16, as the LSTM's threshold had been."""
    return B >= 8 * chunks


# ------------------------------------------------------------------ the tutorial's update
# RMSprop with eps inside the square root (GRUTheano.sgd_step); the rule, the order of its
# roundings and ``coef = [rho, 1 - rho, lr, eps]`` (the parameters' dtype) are those of
# :func:`fastrnn.reference.gru.gru_rmsprop`, and the results equal it bit for bit: one pass
# over each array instead of NumPy's seven, with no temporaries.

@njit(signatures("1 1 1 1"), **NUMBA_OPTIONS)
def gru_rmsprop(P, M, G, coef):
    """See :func:`fastrnn.reference.gru.gru_rmsprop`."""
    rho = coef[0]
    one_minus_rho = coef[1]
    lr = coef[2]
    eps = coef[3]
    for i in range(P.shape[0]):
        g = G[i]
        m = M[i] * rho + one_minus_rho * g * g
        M[i] = m
        P[i] -= lr * g / np.sqrt(m + eps)


@njit(signatures("2 2 i 2 1"), **NUMBA_OPTIONS)
def gru_rmsprop_columns(P, M, cols, G, coef):
    """See :func:`fastrnn.reference.gru.gru_rmsprop_columns` (``cols`` distinct, in
    range: checked by the caller)."""
    rho = coef[0]
    one_minus_rho = coef[1]
    lr = coef[2]
    eps = coef[3]
    R, C = P.shape
    for r in range(R):
        for c in range(C):
            M[r, c] *= rho
        for i in range(cols.shape[0]):
            c = cols[i]
            g = G[i, r]
            m = M[r, c] + one_minus_rho * g * g
            M[r, c] = m
            P[r, c] -= lr * g / np.sqrt(m + eps)

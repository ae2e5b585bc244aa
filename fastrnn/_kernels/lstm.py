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
from numba import njit, prange

from .._config import NUMBA_OPTIONS
from .blas import gemm
from .common import gate_grad, gate_row, signatures, tanh_row


@njit(inline="always", **NUMBA_OPTIONS)
def _forward_units(a, x, b_hh, hp, cp, mk, hard_gates, ca, hout, cout, j0, j1, cb, tc, ib):
    """One forward step of hidden units ``j0:j1``, every sequence.

    ``a (B, 4H)`` holds ``h_{t-1} W_hhᵀ`` in the four gate columns of those units (no other
    column is read or written); ``x`` is the step's ``Xp[t]``, ``mk`` its mask row, ``ca``
    its cache rows; ``cb``, ``tc`` float scratch of ``j1 - j0`` and ``ib`` int32 scratch of
    twice that.  Activations are elementwise, so a unit's values do not depend on how the
    units are split.
    """
    B, G = a.shape
    H = G // 4
    n = j1 - j0
    for b in range(B):
        ab = a[b]
        cab = ca[b]
        for q in range(4):
            for j in range(q * H + j0, q * H + j1):
                ab[j] += x[b, j] + b_hh[j]
        gate_row(ab[j0:j1], cab[j0:j1], hard_gates, ib)                                  # i
        gate_row(ab[H + j0:H + j1], cab[H + j0:H + j1], hard_gates, ib)                  # f
        tanh_row(ab[2 * H + j0:2 * H + j1], cab[2 * H + j0:2 * H + j1], ib)              # g
        gate_row(ab[3 * H + j0:3 * H + j1], cab[3 * H + j0:3 * H + j1], hard_gates, ib)  # o
        if mk[b] != 0:
            for jj in range(n):
                j = j0 + jj
                cb[jj] = cab[H + j] * cp[b, j] + cab[j] * cab[2 * H + j]
            tanh_row(cb[:n], tc[:n], ib)
            for jj in range(n):
                j = j0 + jj
                cout[b, j] = cb[jj]
                hout[b, j] = cab[3 * H + j] * tc[jj]
        else:
            for j in range(j0, j1):
                cout[b, j] = cp[b, j]
                hout[b, j] = hp[b, j]


@njit(inline="always", **NUMBA_OPTIONS)
def _backward_units(ca, g4, cp, cn, mk, dHt, dh, dc, hard_gates, j0, j1, tcb, ib):
    """Gate gradients ``g4 (B, 4H)`` of hidden units ``j0:j1`` at one step, every
    sequence; adds the step's ``dHt`` into ``dh`` and moves ``dc`` one step back, for those
    units.  ``tcb`` float scratch of ``j1 - j0``, ``ib`` int32 scratch of twice that."""
    B, H = dh.shape
    n = j1 - j0
    for b in range(B):
        on = mk[b] != 0
        if on:
            tanh_row(cn[b, j0:j1], tcb[:n], ib)    # the forward pass's tanh(c_t), bit for bit
        for jj in range(n):
            j = j0 + jj
            d = dh[b, j] + dHt[b, j]
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
            tc = tcb[jj]
            dct = dc[b, j] + d * o * (1.0 - tc * tc)
            g4[b, j] = dct * g * gate_grad(i, hard_gates)
            g4[b, H + j] = dct * cp[b, j] * gate_grad(f, hard_gates)
            g4[b, 2 * H + j] = dct * i * (1.0 - g * g)
            g4[b, 3 * H + j] = d * tc * gate_grad(o, hard_gates)
            dc[b, j] = dct * f


@njit(inline="always", **NUMBA_OPTIONS)
def _carry_units(tmp, dh, mk, j0, j1):
    """``dh`` of units ``j0:j1`` after the step's ``tmp = dG W_hh``: replaced where the
    step was real, kept (plus ``tmp``, which is 0 there) where the state was held."""
    for b in range(dh.shape[0]):
        if mk[b] != 0:
            for j in range(j0, j1):
                dh[b, j] = tmp[b, j]
        else:
            for j in range(j0, j1):
                dh[b, j] += tmp[b, j]


@njit(signatures("3 2 1 2 2 2 b 3 3 3"), **NUMBA_OPTIONS)
def lstm_layer_forward(Xp, W_hh, b_hh, h0, c0, mask, hard_gates, Hs, Cs, cache):
    """Forward recurrence; see :func:`fastrnn.reference.lstm.lstm_layer_forward`."""
    T, B, G = Xp.shape
    H = G // 4
    a = np.empty((B, G), Xp.dtype)
    cb = np.empty(H, Xp.dtype)
    tc = np.empty(H, Xp.dtype)
    ib = np.empty(2 * H, np.int32)   # exp scratch: twice the row
    Hs[0, :, :] = h0
    Cs[0, :, :] = c0
    for t in range(T):
        gemm(False, True, 1.0, Hs[t], W_hh, 0.0, a)
        _forward_units(a, Xp[t], b_hh, Hs[t], Cs[t], mask[t], hard_gates, cache[t],
                       Hs[t + 1], Cs[t + 1], 0, H, cb, tc, ib)


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
        _backward_units(cache[t], dG[t], Cs[t], Cs[t + 1], mask[t], dHs[t], dh, dc, hard_gates,
                        0, H, tcb, ib)
        gemm(False, False, 1.0, dG[t], W_hh, 0.0, tmp)
        _carry_units(tmp, dh, mask[t], 0, H)
    dh0[:, :] = dh
    dc0[:, :] = dc


# ----------------------------------------------------------------------------- parallel
# The same recurrences with the hidden units split over Numba's threads, for a step whose
# threads are Numba's while the BLAS runs on one (fastrnn.models._step_threads).  Each
# time step is one parallel region (forward: a thread's four gate blocks of h_{t-1} W_hhᵀ,
# then its units' gates and states) or two (backward: its units' gate gradients; then,
# once every unit's are written, its columns of dG W_hh).  Results equal the serial
# kernels' up to the BLAS's summation inside a product (tests/test_parallel.py).
#
# Why units and not sequences: the per-step product is bound by packing W_hh, which every
# thread would do in full for its half of the batch.  Measured at the PTB-small shape
# (T=20, B=20, H=200, float32, two threads, in the step): units 2.5 ms forward and 2.3 ms
# backward per layer against 2.8 and 2.8 ms serial; halves of the batch 2.9 and 2.8 ms.
#
# No explicit signatures: these compile on first use (about 15 s per dtype), not at the
# import of every LSTM user.

@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_lstm_layer_forward(Xp, W_hh, b_hh, h0, c0, mask, hard_gates, Hs, Cs, cache,
                                chunks):
    """:func:`lstm_layer_forward` with the hidden units in ``chunks`` blocks over threads."""
    T, B, G = Xp.shape
    H = G // 4
    chunks = max(1, min(H, chunks))
    a = np.empty((B, G), Xp.dtype)
    cb = np.empty((chunks, H), Xp.dtype)
    tc = np.empty((chunks, H), Xp.dtype)
    ib = np.empty((chunks, 2 * H), np.int32)
    Hs[0, :, :] = h0
    Cs[0, :, :] = c0
    for t in range(T):
        for k in prange(chunks):
            j0 = k * H // chunks
            j1 = (k + 1) * H // chunks
            for q in range(4):
                gemm(False, True, 1.0, Hs[t], W_hh[q * H + j0:q * H + j1], 0.0,
                     a[:, q * H + j0:q * H + j1])
            _forward_units(a, Xp[t], b_hh, Hs[t], Cs[t], mask[t], hard_gates, cache[t],
                           Hs[t + 1], Cs[t + 1], j0, j1, cb[k], tc[k], ib[k])


@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_lstm_layer_backward(W_hh, mask, hard_gates, Hs, Cs, cache, dHs, dG, dh0, dc0,
                                 chunks):
    """:func:`lstm_layer_backward` with the hidden units in ``chunks`` blocks over threads."""
    T, B, H = dHs.shape
    dt = dHs.dtype
    chunks = max(1, min(H, chunks))
    dh = np.zeros((B, H), dt)
    dc = np.zeros((B, H), dt)
    tmp = np.empty((B, H), dt)
    tcb = np.empty((chunks, H), dt)
    ib = np.empty((chunks, 2 * H), np.int32)
    for t in range(T - 1, -1, -1):
        for k in prange(chunks):
            j0 = k * H // chunks
            j1 = (k + 1) * H // chunks
            _backward_units(cache[t], dG[t], Cs[t], Cs[t + 1], mask[t], dHs[t], dh, dc,
                            hard_gates, j0, j1, tcb[k], ib[k])
        for k in prange(chunks):
            j0 = k * H // chunks
            j1 = (k + 1) * H // chunks
            gemm(False, False, 1.0, dG[t], W_hh[:, j0:j1], 0.0, tmp[:, j0:j1])
            _carry_units(tmp, dh, mask[t], j0, j1)
    dh0[:, :] = dh
    dc0[:, :] = dc

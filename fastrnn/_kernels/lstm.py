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
# The same recurrences on Numba's threads, for a step whose threads are Numba's while the
# BLAS runs on one (fastrnn.models._step_threads).  Two ways to split, both measured to beat
# the serial kernels at one of the shapes below, chosen by :func:`parallel_lstm_by_rows`:
#
# * Blocks of sequences (``by_rows``): sequences are independent, so each thread runs the
#   serial recurrence on its rows of every array -- one parallel region per call, no
#   barrier per step.  Each thread's product packs all of W_hh every step, which pays when
#   the thread has enough rows to amortise it.
# * Blocks of hidden units: one parallel region per step (forward: the block's product and
#   gates; backward: the carry of the later step -- its dG W_hh, once every block's dG is
#   written -- then this step's gate gradients).  W_hh is packed once per call into a
#   contiguous copy per block (forward: the block's four gate row blocks, one GEMM per step
#   into a ``(B, 4n)`` buffer of the block's own; backward: its column block); dh and dc of
#   a block live in buffers of its own.
#
# The block functions repeat the gate arithmetic of _forward_units and _backward_units on
# block-local buffers (a gate stride of n, columns from 0).  Sharing one function, with the
# stride and column offset as arguments, made the serial kernels slower: float32 minima
# 2.45-2.50 -> 2.69-2.74 ms forward and 2.24-2.33 -> 2.33-2.42 ms backward (T=20, B=20,
# H=200, interleaved runs), so the copies stay; tests/test_parallel.py holds them equal.
#
# Each thread's work is one separately compiled (serial) function called from the prange
# body: inlined into the ``parallel=True`` function, as before, the unit code ran 20-40 %
# slower per unit of work than in the serial kernel (the previous forward on one thread:
# 23 ms median against 16.5 ms serial at T=40, B=128, H=128).  The gate arithmetic is
# elementwise and the same as the serial kernels', so results equal theirs up to the
# BLAS's summation inside a product (tests/test_parallel.py).
#
# Measured (two threads, OpenMP layer, BLAS on one thread; the serial kernel, the previous
# parallel kernel -- four gate-block GEMMs on the unpacked W_hh, the unit code inlined
# into the prange body -- and this one interleaved in one process; minimum / median over
# 150-300 calls, ms, on a shared 2-core machine, otherwise nearly idle):
#
#   float32                        serial       previous     units        sequences
#   T=20, B=20, H=200   forward    2.48 / 3.32  1.84 / 2.83  1.72 / 2.72  2.04 / 3.11
#                       backward   2.29 / 3.08  1.58 / 2.46  1.43 / 2.20  1.68 / 2.51
#   T=40, B=128, H=128  forward   12.7 / 15.9  10.8 / 16.2  10.1 / 14.6   7.84 / 11.4
#                       backward  13.1 / 16.7   9.68 / 13.2  8.99 / 12.5  7.24 / 10.2
#   float64
#   T=20, B=20, H=200   forward    9.76 / 12.5  7.44 / 8.53  7.26 / 8.30  6.74 / 8.68
#                       backward   6.13 / 7.85  4.28 / 5.13  3.99 / 4.82  4.77 / 5.56
#   T=40, B=128, H=128  forward   67.6 / 79.7  39.3 / 54.7  36.7 / 51.7  34.2 / 49.1
#                       backward  33.7 / 41.2  20.9 / 27.2  19.1 / 25.3  17.6 / 23.7
#
# With more runnable threads than cores a per-step barrier waits whenever a thread is
# descheduled.  Under a load of 3-4 other processes on the two cores (float32, T=20,
# H=200), medians: B=20 serial 3.7, units 8.0, sequences 9.5 ms; B=40 serial 9.5, units
# 176, sequences 24 ms; B=32 serial 5.1, units 5.1, sequences 3.8 ms.
#
# No explicit signatures: these compile on first use, not at the import of every LSTM user,
# and the on-disk cache keeps them after that.  With an empty cache, the first threaded
# float32 LSTM step (everything it compiles, both ways of splitting) took 94 s here against
# 86 s with the previous unit-only kernels.


@njit(**NUMBA_OPTIONS)
def _forward_block(h, Wk, ak, x, b_hh, hp, cp, mk, hard_gates, ca, hout, cout, j0, j1, cb, tc,
                   ib):
    """One forward step of hidden units ``j0:j1``: ``ak = h Wkᵀ`` (``Wk (4n, H)`` their
    four gate blocks of ``W_hh``, packed), then :func:`_forward_units`'s arithmetic on
    ``ak (B, 4n)``, gate ``q`` of unit ``j0 + jj`` in column ``q n + jj``."""
    gemm(False, True, 1.0, h, Wk, 0.0, ak)
    B = ak.shape[0]
    H = hp.shape[1]
    n = j1 - j0
    for b in range(B):
        ab = ak[b]
        cab = ca[b]
        for q in range(4):
            for jj in range(n):
                ab[q * n + jj] += x[b, q * H + j0 + jj] + b_hh[q * H + j0 + jj]
        gate_row(ab[0:n], cab[j0:j1], hard_gates, ib)                                  # i
        gate_row(ab[n:2 * n], cab[H + j0:H + j1], hard_gates, ib)                      # f
        tanh_row(ab[2 * n:3 * n], cab[2 * H + j0:2 * H + j1], ib)                      # g
        gate_row(ab[3 * n:4 * n], cab[3 * H + j0:3 * H + j1], hard_gates, ib)          # o
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


@njit(**NUMBA_OPTIONS)
def _backward_block(dGn, mkn, Wk, tmpk, ca, g4, cp, cn, mk, dHt, dhk, dck, hard_gates, j0, j1,
                    tcb, ib, carry, units):
    """Units ``j0:j1`` of two half steps of the backward recurrence, local ``dhk``,
    ``dck (B, n)``: with ``carry``, the later step's ``tmpk = dGn Wk`` (``Wk (4H, n)`` the
    units' columns of ``W_hh``, packed) moved into ``dhk`` by its mask row ``mkn``
    (:func:`_carry_units`); with ``units``, this step's gate gradients
    (:func:`_backward_units`) into ``g4``."""
    B = dhk.shape[0]
    n = j1 - j0
    if carry:
        gemm(False, False, 1.0, dGn, Wk, 0.0, tmpk)
        _carry_units(tmpk, dhk, mkn, 0, n)
    if not units:
        return
    H = cp.shape[1]
    for b in range(B):
        on = mk[b] != 0
        if on:
            tanh_row(cn[b, j0:j1], tcb[:n], ib)
        for jj in range(n):
            j = j0 + jj
            d = dhk[b, jj] + dHt[b, j]
            dhk[b, jj] = d
            if not on:
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
            dct = dck[b, jj] + d * o * (1.0 - tc * tc)
            g4[b, j] = dct * g * gate_grad(i, hard_gates)
            g4[b, H + j] = dct * cp[b, j] * gate_grad(f, hard_gates)
            g4[b, 2 * H + j] = dct * i * (1.0 - g * g)
            g4[b, 3 * H + j] = d * tc * gate_grad(o, hard_gates)
            dck[b, jj] = dct * f


@njit(**NUMBA_OPTIONS)
def _forward_rows(Xp, W_hh, b_hh, mask, hard_gates, Hs, Cs, cache, b0, b1, a, cb, tc, ib):
    """The serial forward recurrence of sequences ``b0:b1`` (``Hs[0]``, ``Cs[0]`` set)."""
    T = Xp.shape[0]
    H = Hs.shape[2]
    for t in range(T):
        gemm(False, True, 1.0, Hs[t][b0:b1], W_hh, 0.0, a)
        _forward_units(a, Xp[t][b0:b1], b_hh, Hs[t][b0:b1], Cs[t][b0:b1], mask[t][b0:b1],
                       hard_gates, cache[t][b0:b1], Hs[t + 1][b0:b1], Cs[t + 1][b0:b1], 0, H,
                       cb, tc, ib)


@njit(**NUMBA_OPTIONS)
def _backward_rows(W_hh, mask, hard_gates, Hs, Cs, cache, dHs, dG, dh0, dc0, b0, b1, dh, dc,
                   tmp, tcb, ib):
    """The serial backward recurrence of sequences ``b0:b1``."""
    T, _, H = dHs.shape
    dh[:, :] = 0.0
    dc[:, :] = 0.0
    for t in range(T - 1, -1, -1):
        _backward_units(cache[t][b0:b1], dG[t][b0:b1], Cs[t][b0:b1], Cs[t + 1][b0:b1],
                        mask[t][b0:b1], dHs[t][b0:b1], dh, dc, hard_gates, 0, H, tcb, ib)
        gemm(False, False, 1.0, dG[t][b0:b1], W_hh, 0.0, tmp)
        _carry_units(tmp, dh, mask[t][b0:b1], 0, H)
    dh0[b0:b1, :] = dh
    dc0[b0:b1, :] = dc


@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_lstm_layer_forward(Xp, W_hh, b_hh, h0, c0, mask, hard_gates, Hs, Cs, cache,
                                chunks, by_rows):
    """:func:`lstm_layer_forward` on ``chunks`` threads: blocks of hidden units (one
    parallel region per step), or with ``by_rows`` blocks of sequences (one region)."""
    T, B, G = Xp.shape
    H = G // 4
    dt = Xp.dtype
    Hs[0, :, :] = h0
    Cs[0, :, :] = c0
    if by_rows:
        chunks = max(1, min(B, chunks))
        m = (B + chunks - 1) // chunks
        af = np.empty((chunks, m * G), dt)
        cb = np.empty((chunks, H), dt)
        tc = np.empty((chunks, H), dt)
        ib = np.empty((chunks, 2 * H), np.int32)
        for k in prange(chunks):
            b0 = k * B // chunks
            b1 = (k + 1) * B // chunks
            _forward_rows(Xp, W_hh, b_hh, mask, hard_gates, Hs, Cs, cache, b0, b1,
                          af[k, :(b1 - b0) * G].reshape((b1 - b0, G)), cb[k], tc[k], ib[k])
        return
    chunks = max(1, min(H, chunks))
    n = (H + chunks - 1) // chunks
    Wf = np.empty((chunks, 4 * n * H), dt)
    af = np.empty((chunks, B * 4 * n), dt)
    cb = np.empty((chunks, n), dt)
    tc = np.empty((chunks, n), dt)
    ib = np.empty((chunks, 2 * n), np.int32)
    for k in prange(chunks):           # each block's four gate row blocks of W_hh, contiguous
        j0 = k * H // chunks
        j1 = (k + 1) * H // chunks
        nk = j1 - j0
        Wk = Wf[k, :4 * nk * H].reshape((4 * nk, H))
        for q in range(4):
            Wk[q * nk:(q + 1) * nk, :] = W_hh[q * H + j0:q * H + j1]
    for t in range(T):
        for k in prange(chunks):
            j0 = k * H // chunks
            j1 = (k + 1) * H // chunks
            nk = j1 - j0
            _forward_block(Hs[t], Wf[k, :4 * nk * H].reshape((4 * nk, H)),
                           af[k, :B * 4 * nk].reshape((B, 4 * nk)), Xp[t], b_hh, Hs[t], Cs[t],
                           mask[t], hard_gates, cache[t], Hs[t + 1], Cs[t + 1], j0, j1, cb[k],
                           tc[k], ib[k])


@njit(parallel=True, **NUMBA_OPTIONS)
def parallel_lstm_layer_backward(W_hh, mask, hard_gates, Hs, Cs, cache, dHs, dG, dh0, dc0,
                                 chunks, by_rows):
    """:func:`lstm_layer_backward` on ``chunks`` threads: blocks of hidden units (one
    parallel region per step), or with ``by_rows`` blocks of sequences (one region)."""
    T, B, H = dHs.shape
    G = 4 * H
    dt = dHs.dtype
    if T == 0:
        dh0[:, :] = 0.0
        dc0[:, :] = 0.0
        return
    if by_rows:
        chunks = max(1, min(B, chunks))
        m = (B + chunks - 1) // chunks
        sf = np.empty((chunks, 3 * m * H), dt)
        tcb = np.empty((chunks, H), dt)
        ib = np.empty((chunks, 2 * H), np.int32)
        for k in prange(chunks):
            b0 = k * B // chunks
            b1 = (k + 1) * B // chunks
            mk = b1 - b0
            _backward_rows(W_hh, mask, hard_gates, Hs, Cs, cache, dHs, dG, dh0, dc0, b0, b1,
                           sf[k, :mk * H].reshape((mk, H)),
                           sf[k, mk * H:2 * mk * H].reshape((mk, H)),
                           sf[k, 2 * mk * H:3 * mk * H].reshape((mk, H)), tcb[k], ib[k])
        return
    chunks = max(1, min(H, chunks))
    n = (H + chunks - 1) // chunks
    Wf = np.empty((chunks, G * n), dt)
    sf = np.zeros((chunks, 3 * B * n), dt)      # dh, dc (from 0) and tmp of each block
    tcb = np.empty((chunks, n), dt)
    ib = np.empty((chunks, 2 * n), np.int32)
    for k in prange(chunks):           # each block's columns of W_hh, contiguous
        j0 = k * H // chunks
        j1 = (k + 1) * H // chunks
        Wk = Wf[k, :G * (j1 - j0)].reshape((G, j1 - j0))
        for r in range(G):
            Wk[r, :] = W_hh[r, j0:j1]
    # Region s: the carry of step s (its dG W_hh, once every block's dG[s] is written),
    # then step s - 1's gate gradients.
    for s in range(T, -1, -1):
        tn = min(s, T - 1)
        tu = max(s - 1, 0)
        for k in prange(chunks):
            j0 = k * H // chunks
            j1 = (k + 1) * H // chunks
            nk = j1 - j0
            _backward_block(dG[tn], mask[tn], Wf[k, :G * nk].reshape((G, nk)),
                            sf[k, 2 * B * nk:3 * B * nk].reshape((B, nk)), cache[tu], dG[tu],
                            Cs[tu], Cs[tu + 1], mask[tu], dHs[tu],
                            sf[k, :B * nk].reshape((B, nk)),
                            sf[k, B * nk:2 * B * nk].reshape((B, nk)), hard_gates, j0, j1,
                            tcb[k], ib[k], s < T, s > 0)
            if s == 0:
                dh0[:, j0:j1] = sf[k, :B * nk].reshape((B, nk))
                dc0[:, j0:j1] = sf[k, B * nk:2 * B * nk].reshape((B, nk))


def parallel_lstm_by_rows(B, chunks):
    """Whether the parallel kernels split the batch (``True``) or the hidden units: the
    batch from 16 sequences per thread.  Measured (float32, two threads, minima): at B=20
    (10 per thread) units won (T=20, H=200: forward 1.8 against 2.1 ms, backward 1.5
    against 1.8 ms); at B=32 sequences won the forward (2.5 against 2.7 ms) and tied the
    backward (2.5 / 2.4 ms), with lower medians on a loaded machine (3.8 against 5.1 ms);
    at B=64 and 128 (H=128) sequences won both."""
    return B >= 16 * chunks

"""Numba kernels of the vanilla tanh RNN language model: forward and truncated BPTT.

Same function table and semantics as :mod:`fastrnn.reference.rnn` (read its docstring for
the model, the ``s`` layout and the truncation modes).  Dimensions: ``T`` steps, ``H``
hidden units, ``V`` vocabulary.  Workspaces, all caller-allocated:

``s (T+1, H)``  hidden states, row ``T`` = initial state (never written here)
``z (T, V)``    logits, then probabilities, then ``Δ = P - onehot(y)`` in place
``g (T, H)``    first ``dS = Δ V`` (error reaching each ``s_t`` from its own output),
                then the per-step pre-activation gradients ``G``

Where the time goes (tutorial shape T≈23, V=8000, H=100): the output layer is three
matrix-matrix products over the whole sentence -- ``Z = S Vᵀ``, ``dS = Δ V`` and
``dV = Δᵀ S`` -- about ``6 T V H`` flops, done by BLAS.  Only the ``H×H`` recurrence is
sequential, and it is small.  In :func:`rnn_sgd` the updates of ``V`` and ``W`` are folded
into their GEMMs (``alpha = -lr``, ``beta = 1``) and ``U`` is updated only in the columns
of the tokens that occur, so no dense gradient is ever materialised.

Compilation is lazy and per dtype: a process that trains in float64 (the tutorial's
case) compiles -- or loads from the on-disk cache -- only the float64 kernels, which halves
the cold start of ``fastrnn demo``.  The Python boundary (:mod:`fastrnn.functional`) hands
the kernels C-contiguous float32/float64 arrays and ``intp`` ids only, so no other
specialisation is ever made.

The window truncation is computed by accumulating each output's error into ``G`` at the
steps it reaches, then forming ``dW`` once as a GEMM (``Gᵀ S_prev``), instead of one
outer product per (output, step) pair as the reference does; results agree to rounding.
"""
from . import _numba_init  # noqa: F401,I001 - the cache stamp first
import numpy as np
from numba import njit


from .._config import MODE_FULL, MODE_LAST, MODE_WINDOW, NUMBA_OPTIONS
from .blas import gemm
from .softmax import nll_rows as _nll
from .softmax import softmax_delta_rows as _softmax_delta
from .softmax import softmax_rows as _softmax_rows


@njit(**NUMBA_OPTIONS)
def _recurrence(U, W, x, s):
    """s[t] = tanh(U[:, x[t]] + W s[t-1]) for t = 0..T-1 (s[-1] is row T)."""
    T = x.shape[0]
    H = W.shape[0]
    for t in range(T):
        prev = s[t - 1] if t > 0 else s[T]
        col = x[t]
        for i in range(H):
            acc = U[i, col]
            for j in range(H):
                acc += W[i, j] * prev[j]
            s[t, i] = np.tanh(acc)


@njit(**NUMBA_OPTIONS)
def _step_gradients(W, s, g, mode, k, first):
    """Turn g = dS (error from each step's own output) into G = dL/d(pre-activation).

    Rows of g below ``first`` are set to zero (MODE_LAST).  Returns nothing; g is G.
    """
    T, H = g.shape
    if mode == MODE_WINDOW:
        # Each output t sends its error back through steps t .. max(0, t-k).
        ds = g.copy()                      # one (T, H) allocation per call, outside loops
        g[:] = 0.0
        delta = np.empty(H, g.dtype)
        nxt = np.empty(H, g.dtype)
        for t in range(T):
            for i in range(H):
                delta[i] = ds[t, i] * (1.0 - s[t, i] * s[t, i])
            stop = max(0, t - k)
            for tau in range(t, stop - 1, -1):
                for i in range(H):
                    g[tau, i] += delta[i]
                if tau > stop:
                    prev = s[tau - 1]
                    for j in range(H):
                        nxt[j] = 0.0
                    for i in range(H):
                        di = delta[i]
                        for j in range(H):
                            nxt[j] += W[i, j] * di
                    for j in range(H):
                        delta[j] = nxt[j] * (1.0 - prev[j] * prev[j])
        return
    # Full BPTT over steps first..T-1 (MODE_LAST starts at T-k, MODE_FULL at 0).
    dh = np.zeros(H, g.dtype)
    for t in range(T - 1, first - 1, -1):
        for i in range(H):
            g[t, i] = (dh[i] + g[t, i]) * (1.0 - s[t, i] * s[t, i])
        for j in range(H):
            dh[j] = 0.0
        for i in range(H):
            gi = g[t, i]
            for j in range(H):
                dh[j] += W[i, j] * gi
    for t in range(first):
        for i in range(H):
            g[t, i] = 0.0


@njit(**NUMBA_OPTIONS)
def _first_step(mode, k, T):
    if mode == MODE_LAST:
        return max(0, T - k)
    return 0


@njit(**NUMBA_OPTIONS)
def rnn_forward(U, V, W, x, s, o):
    """Fill s[:T] and o (T, V) with probabilities; s[T] holds the initial state."""
    T = x.shape[0]
    _recurrence(U, W, x, s)
    gemm(False, True, 1.0, s[:T], V, 0.0, o)            # logits S Vᵀ
    _softmax_rows(o)


@njit(**NUMBA_OPTIONS)
def rnn_loss(U, V, W, x, y, s, z):
    """Total cross-entropy; fills s; z receives the logits."""
    T = x.shape[0]
    _recurrence(U, W, x, s)
    gemm(False, True, 1.0, s[:T], V, 0.0, z)
    return _nll(z, y)


@njit(**NUMBA_OPTIONS)
def _backward_common(U, V, W, x, y, mode, k, s, z, g):
    """Forward, Δ in z (rows >= first), dS = Δ V in g, then G in g.  Returns (loss, first)."""
    T = x.shape[0]
    _recurrence(U, W, x, s)
    gemm(False, True, 1.0, s[:T], V, 0.0, z)
    first = _first_step(mode, k, T)
    loss_tail = _softmax_delta(z, y, first)
    if first > 0:
        # MODE_LAST: the loss is still the whole sentence's; outputs before `first`
        # only count towards the value, never the gradient.
        loss = loss_tail + _nll(z[:first], y[:first])
    else:
        loss = loss_tail
    gemm(False, False, 1.0, z[first:], V, 0.0, g[first:])   # dS = Δ V
    return loss, first


@njit(**NUMBA_OPTIONS)
def rnn_grad(U, V, W, x, y, mode, k, s, z, g, dU, dV, dW):
    """Loss and truncated gradient into dU, dV, dW (overwritten)."""
    T = x.shape[0]
    H = W.shape[0]
    loss, first = _backward_common(U, V, W, x, y, mode, k, s, z, g)
    gemm(True, False, 1.0, z[first:], s[first:T], 0.0, dV)   # dV = Δᵀ S
    _step_gradients(W, s, g, mode, k, first)
    # dW = sum_t outer(G[t], s[t-1]) = G[1:]ᵀ S[:T-1] + outer(G[0], s[T])
    gemm(True, False, 1.0, g[1:], s[:T - 1], 0.0, dW)
    for i in range(H):
        gi = g[0, i]
        for j in range(H):
            dW[i, j] += gi * s[T, j]
    dU[:] = 0.0
    for t in range(T):
        col = x[t]
        for i in range(H):
            dU[i, col] += g[t, i]
    return loss


@njit(**NUMBA_OPTIONS)
def rnn_sgd(U, V, W, x, y, mode, k, lr, s, z, g, dW):
    """One in-place SGD step (the gradient of rnn_grad); returns the loss before it."""
    T = x.shape[0]
    H = W.shape[0]
    loss, first = _backward_common(U, V, W, x, y, mode, k, s, z, g)
    gemm(True, False, -lr, z[first:], s[first:T], 1.0, V)    # V -= lr Δᵀ S
    _step_gradients(W, s, g, mode, k, first)
    gemm(True, False, -lr, g[1:], s[:T - 1], 1.0, W)         # W -= lr G[1:]ᵀ S[:T-1]
    for i in range(H):
        gi = -lr * g[0, i]
        for j in range(H):
            W[i, j] += gi * s[T, j]
    for t in range(T):
        col = x[t]
        for i in range(H):
            U[i, col] -= lr * g[t, i]
    return loss

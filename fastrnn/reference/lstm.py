"""Batched LSTM layer, NumPy reference; time-major, PyTorch gate order ``i, f, g, o``.

One layer over a batch (``T`` steps, ``B`` sequences, ``H`` units, ``G = 4H``).  With
``Xp_t = W_ih x_t + b_ih`` precomputed (one GEMM)::

    [i, f, g, o] = [σ, σ, tanh, σ](Xp_t + W_hh h_{t-1} + b_hh)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

``σ`` is the logistic sigmoid, or ``clip(0.2 x + 0.5, 0, 1)`` with ``hard_gates``.  Where
``mask[t, b] == 0`` both ``h`` and ``c`` are held.

Cached between the passes: ``Hs, Cs (T + 1, B, H)`` (row 0 the initial state) and the gate
outputs ``cache (T, B, 4H)``.  The backward pass returns ``dG = dL/dXp``, which is also the
gradient of the recurrent term, so ``dW_ih = dGᵀ X``, ``dW_hh = dGᵀ H_prev``,
``db_ih = db_hh = sum dG``.
"""
import numpy as np

from .layers import gate, gate_grad


def lstm_layer_forward(Xp, W_hh, b_hh, h0, c0, mask, hard_gates, Hs, Cs, cache):
    """Forward recurrence of an LSTM layer.

    Parameters
    ----------
    Xp : ndarray, shape (T, B, 4H)
        Input projections ``X W_ihᵀ + b_ih``, gate blocks ``i, f, g, o``.
    W_hh : ndarray, shape (4H, H)
    b_hh : ndarray, shape (4H,)
    h0, c0 : ndarray, shape (B, H)
    mask : ndarray, shape (T, B)
    hard_gates : bool
    Hs, Cs : ndarray, shape (T + 1, B, H)
        Output states, row 0 the initial state.
    cache : ndarray, shape (T, B, 4H)
        Output gate values ``[i, f, g, o]``.
    """
    T = Xp.shape[0]
    H = h0.shape[1]
    Hs[0] = h0
    Cs[0] = c0
    for t in range(T):
        a = Xp[t] + Hs[t] @ W_hh.T + b_hh
        i = gate(a[:, :H], hard_gates)
        f = gate(a[:, H:2 * H], hard_gates)
        g = np.tanh(a[:, 2 * H:3 * H])
        o = gate(a[:, 3 * H:], hard_gates)
        c = f * Cs[t] + i * g
        h = o * np.tanh(c)
        m = (mask[t] != 0)[:, None]
        Hs[t + 1] = np.where(m, h, Hs[t])
        Cs[t + 1] = np.where(m, c, Cs[t])
        cache[t] = np.concatenate([i, f, g, o], axis=1)


def lstm_layer_backward(W_hh, mask, hard_gates, Hs, Cs, cache, dHs, dG, dh0, dc0):
    """Backward recurrence of an LSTM layer (full BPTT).

    Parameters
    ----------
    W_hh : ndarray, shape (4H, H)
    mask : ndarray, shape (T, B)
    hard_gates : bool
    Hs, Cs : ndarray, shape (T + 1, B, H)
    cache : ndarray, shape (T, B, 4H)
        From :func:`lstm_layer_forward`.
    dHs : ndarray, shape (T, B, H)
        ``dL/dh_t`` from above.
    dG : ndarray, shape (T, B, 4H)
        Output ``dL/dXp``.
    dh0, dc0 : ndarray, shape (B, H)
        Output gradients of the initial state.
    """
    T = dHs.shape[0]
    H = dh0.shape[1]
    dh = np.zeros_like(dh0)
    dc = np.zeros_like(dc0)
    for t in range(T - 1, -1, -1):
        i, f, g, o = (cache[t, :, k * H:(k + 1) * H] for k in range(4))
        dh = dh + dHs[t]
        m = (mask[t] != 0)[:, None]
        dhn = np.where(m, dh, 0.0)
        tc = np.tanh(Cs[t + 1])
        dct = np.where(m, dc, 0.0) + dhn * o * (1.0 - tc * tc)
        di = dct * g * gate_grad(i, hard_gates)
        df = dct * Cs[t] * gate_grad(f, hard_gates)
        dg = dct * i * (1.0 - g * g)
        do = dhn * tc * gate_grad(o, hard_gates)
        dG[t] = np.concatenate([di, df, dg, do], axis=1)
        dh = dG[t] @ W_hh + np.where(m, 0.0, dh)
        dc = dct * f + np.where(m, 0.0, dc)
    dh0[...] = dh
    dc0[...] = dc

"""Batched GRU layer, NumPy reference; time-major, PyTorch gate order ``r, z, n``.

One layer over a batch (``T`` steps, ``B`` sequences, ``H`` units, ``G = 3H``).  With
``Xp_t = W_ih x_t + b_ih`` precomputed (one GEMM) and ``gh_t = W_hh h_{t-1} + b_hh``::

    r = σ(Xp_r + gh_r)          z = σ(Xp_z + gh_z)
    reset_after=True  (PyTorch, cuDNN):   n = tanh(Xp_n + r * (W_hn h_{t-1} + b_hn))
    reset_after=False (Theano tutorial):  n = tanh(Xp_n + W_hn (r * h_{t-1}) + b_hn)
    h_t = (1 - z) * n + z * h_{t-1}

``σ`` is the logistic sigmoid, or ``clip(0.2 x + 0.5, 0, 1)`` with ``hard_gates``.  Where
``mask[t, b] == 0`` the state is held, ``h_t = h_{t-1}``.

Cached between the passes: ``Hs (T + 1, B, H)`` (``Hs[0] = h0``) and
``cache (T, B, 4H) = [r, z, n, a]`` where ``a = W_hn h_{t-1} + b_hn`` (reset_after) or
``a = r * h_{t-1}`` (the input of ``W_hn`` otherwise).

The backward pass returns two pre-activation gradients: ``dGx = dL/dXp`` (so
``dW_ih = dGxᵀ X``) and ``dGh`` = the gradient of the recurrent term ``W_hh hin + b_hh``
(so ``dW_hh = dGhᵀ hin``, ``db_hh = sum dGh``), where the recurrent input ``hin`` is
``h_{t-1}`` for the rows ``r, z`` and, for ``n``, ``h_{t-1}`` (reset_after) or
``r * h_{t-1}`` (``cache[..., 3H:]``).  They differ only in the ``n`` block with reset_after.
"""
import numpy as np

from .layers import gate, gate_grad


def gru_layer_forward(Xp, W_hh, b_hh, h0, mask, reset_after, hard_gates, Hs, cache):
    """Forward recurrence of a GRU layer.

    Parameters
    ----------
    Xp : ndarray, shape (T, B, 3H)
        Input projections ``X W_ihᵀ + b_ih``, gate blocks ``r, z, n``.
    W_hh : ndarray, shape (3H, H)
    b_hh : ndarray, shape (3H,)
    h0 : ndarray, shape (B, H)
    mask : ndarray, shape (T, B)
        1 for a real step, 0 for padding (state held).
    reset_after, hard_gates : bool
        See the module docstring.
    Hs : ndarray, shape (T + 1, B, H)
        Output states, ``Hs[0] = h0``.
    cache : ndarray, shape (T, B, 4H)
        Output ``[r, z, n, a]`` for the backward pass.
    """
    T = Xp.shape[0]
    H = h0.shape[1]
    Hs[0] = h0
    for t in range(T):
        hp = Hs[t]
        x = Xp[t]
        ghrz = hp @ W_hh[:2 * H].T + b_hh[:2 * H]
        r = gate(x[:, :H] + ghrz[:, :H], hard_gates)
        z = gate(x[:, H:2 * H] + ghrz[:, H:], hard_gates)
        if reset_after:
            a = hp @ W_hh[2 * H:].T + b_hh[2 * H:]
            n = np.tanh(x[:, 2 * H:] + r * a)
        else:
            a = r * hp
            n = np.tanh(x[:, 2 * H:] + a @ W_hh[2 * H:].T + b_hh[2 * H:])
        h = (1.0 - z) * n + z * hp
        m = (mask[t] != 0)[:, None]
        Hs[t + 1] = np.where(m, h, hp)
        cache[t] = np.concatenate([r, z, n, a], axis=1)


def gru_layer_backward(W_hh, mask, reset_after, hard_gates, Hs, cache, dHs, dGx, dGh, dh0):
    """Backward recurrence of a GRU layer (full BPTT).

    Parameters
    ----------
    W_hh : ndarray, shape (3H, H)
    mask : ndarray, shape (T, B)
    reset_after, hard_gates : bool
    Hs : ndarray, shape (T + 1, B, H)
    cache : ndarray, shape (T, B, 4H)
        From :func:`gru_layer_forward`.
    dHs : ndarray, shape (T, B, H)
        ``dL/dh_t`` from above.
    dGx : ndarray, shape (T, B, 3H)
        Output ``dL/dXp``.
    dGh : ndarray, shape (T, B, 3H)
        Output: gradient of the recurrent pre-activation term (see module docstring).
    dh0 : ndarray, shape (B, H)
        Output ``dL/dh0``.
    """
    T = dHs.shape[0]
    H = dh0.shape[1]
    W_rz, W_n = W_hh[:2 * H], W_hh[2 * H:]
    dh = np.zeros_like(dh0)
    for t in range(T - 1, -1, -1):
        hp = Hs[t]
        r, z, n, a = (cache[t, :, k * H:(k + 1) * H] for k in range(4))
        dh = dh + dHs[t]
        m = (mask[t] != 0)[:, None]
        dhn = np.where(m, dh, 0.0)          # gradient reaching the new state
        dz = dhn * (hp - n)
        dnp = dhn * (1.0 - z) * (1.0 - n * n)   # d/d(pre-activation of n)
        dprev = dhn * z
        if reset_after:
            dr = dnp * a
            dgh_n = dnp * r
        else:
            dgh_n = dnp
            da = dnp @ W_n                  # d/d(r * h_prev)
            dr = da * hp
            dprev = dprev + da * r
        drp = dr * gate_grad(r, hard_gates)
        dzp = dz * gate_grad(z, hard_gates)
        dGx[t] = np.concatenate([drp, dzp, dnp], axis=1)
        dGh[t] = np.concatenate([drp, dzp, dgh_n], axis=1)
        dprev = dprev + dGh[t, :, :2 * H] @ W_rz
        if reset_after:
            dprev = dprev + dgh_n @ W_n
        dh = dprev + np.where(m, 0.0, dh)
    dh0[...] = dh


# ------------------------------------------------------------------ the tutorial's update
# RMSprop with eps inside the square root, as the GRU tutorial's Theano code updates its
# parameters (``GRUTheano.sgd_step``):
#
#     m = rho * m + (1 - rho) * g**2;     p -= lr * g / sqrt(m + eps)
#
# ``coef`` is the array ``[rho, 1 - rho, lr, eps]`` in the parameters' dtype, so float32
# parameters are updated in float32 arithmetic, as NumPy does with Python-float scalars.
# Each operation is rounded once, in this order; the compiled kernels follow it exactly,
# so their results equal these bit for bit.

def gru_rmsprop(P, M, G, coef):
    """Update ``P`` and its mean square ``M`` in place with the gradient ``G`` (1-D, one
    length)."""
    rho, one_minus_rho, lr, eps = coef
    M *= rho
    M += one_minus_rho * G * G
    P -= lr * G / np.sqrt(M + eps)


def gru_rmsprop_columns(P, M, cols, G, coef):
    """The update of :func:`gru_rmsprop` for a 2-D ``P (R, C)`` whose gradient is zero
    outside the columns ``cols`` (distinct): ``G (len(cols), R)`` holds the gradient of
    column ``cols[i]`` in row ``i``.  Every element of ``M`` decays; ``P`` changes only in
    those columns.  Equal, bit for bit, to the dense update with the scattered gradient
    (where it is zero, ``m * rho + 0`` is ``m * rho`` and ``p - 0`` is ``p``).
    """
    rho, one_minus_rho, lr, eps = coef
    M *= rho
    for i, c in enumerate(cols):
        g = G[i]
        M[:, c] += one_minus_rho * g * g
        P[:, c] -= lr * g / np.sqrt(M[:, c] + eps)

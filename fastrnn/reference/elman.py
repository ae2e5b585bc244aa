"""Batched vanilla (Elman) tanh layer, NumPy reference; time-major, PyTorch conventions.

One layer over a batch (``T`` steps, ``B`` sequences, ``H`` units)::

    h_t = tanh(Xp_t + W_hh h_{t-1} + b_hh),    Xp_t = W_ih x_t + b_ih  (precomputed, one GEMM)

and, where ``mask[t, b] == 0`` (padding), the state is held: ``h_t = h_{t-1}``.

The input projection ``Xp`` and the weight gradients ``dW_ih = dXpᵀ X``, ``dW_hh = dGᵀ
H_prev`` are whole-sequence GEMMs done by the caller (:mod:`fastrnn.models`); the kernels
here cover only the sequential part.  Their gradient output ``dG`` is the gradient of the
loss with respect to the pre-activation ``Xp_t + W_hh h_{t-1} + b_hh``, which is at once
``dL/dXp`` and the gradient of the recurrent term.

Layouts
-------
``Hs (T + 1, B, H)``: ``Hs[0] = h0`` and ``Hs[t + 1] = h_t``, so ``Hs[:T]`` are the
previous states of every step and ``Hs[1:]`` the outputs.

This module also provides the backend entries shared by every language model:
``rnn_softmax_xent`` and ``rnn_log_softmax`` (see :mod:`fastrnn.reference.layers`).
"""
import numpy as np

from .layers import log_softmax as rnn_log_softmax  # noqa: F401
from .layers import softmax_xent as rnn_softmax_xent  # noqa: F401


def rnn_layer_forward(Xp, W_hh, b_hh, h0, mask, Hs):
    """Forward recurrence of a tanh layer.

    Parameters
    ----------
    Xp : ndarray, shape (T, B, H)
        Input projections ``X W_ihᵀ + b_ih``.
    W_hh : ndarray, shape (H, H)
    b_hh : ndarray, shape (H,)
    h0 : ndarray, shape (B, H)
        Initial state.
    mask : ndarray, shape (T, B)
        1 where a step is real, 0 where it is padding (the state is held).
    Hs : ndarray, shape (T + 1, B, H)
        Output: ``Hs[0] = h0``, ``Hs[t + 1] = h_t``.
    """
    T = Xp.shape[0]
    Hs[0] = h0
    for t in range(T):
        h = np.tanh(Xp[t] + Hs[t] @ W_hh.T + b_hh)
        m = mask[t][:, None] != 0
        Hs[t + 1] = np.where(m, h, Hs[t])


def rnn_layer_backward(W_hh, mask, Hs, dHs, dG, dh0):
    """Backward recurrence of a tanh layer (full BPTT over the ``T`` steps).

    Parameters
    ----------
    W_hh : ndarray, shape (H, H)
    mask : ndarray, shape (T, B)
    Hs : ndarray, shape (T + 1, B, H)
        States from :func:`rnn_layer_forward`.
    dHs : ndarray, shape (T, B, H)
        ``dL/dh_t`` from above (the next layer or the decoder), not through the recurrence.
    dG : ndarray, shape (T, B, H)
        Output: ``dL/da_t`` for the pre-activation ``a_t``; zero at padded steps.
    dh0 : ndarray, shape (B, H)
        Output: ``dL/dh0``.
    """
    T = dHs.shape[0]
    dh = np.zeros_like(dh0)
    for t in range(T - 1, -1, -1):
        dh = dh + dHs[t]
        m = (mask[t] != 0)[:, None]
        dG[t] = np.where(m, dh * (1.0 - Hs[t + 1] ** 2), 0.0)
        dh = dG[t] @ W_hh + np.where(m, 0.0, dh)
    dh0[...] = dh

"""Vanilla (Elman) tanh RNN language model, NumPy reference.

Model (the tutorial's notation; one sentence of T tokens, vocabulary V, hidden size H)::

    s_t = tanh(U[:, x_t] + W s_{t-1})          U: (H, V)   W: (H, H)
    o_t = softmax(V s_t)                       V: (V, H)
    L   = -sum_t log o_t[y_t]

Hidden states live in ``s`` of shape ``(T + 1, H)``.  Row ``T`` holds the initial state
``s_{-1}`` (zero for a fresh sentence), so ``s[t - 1]`` is the previous state for every
``t`` including ``t = 0`` -- the same layout as the tutorial's ``forward_propagation``.
A stream trainer puts the last state of the previous chunk there.

Truncation modes (``mode``, ``k``) -- see :mod:`fastrnn._config`:

``MODE_WINDOW`` (the tutorial's ``RNNNumpy.bptt``)
    the error of output ``t`` flows back through steps ``t, t-1, ..., max(0, t-k)``,
    i.e. ``k + 1`` steps; every output contributes to ``dV``.
``MODE_LAST`` (Theano's ``scan(truncate_gradient=k)``, the tutorial's ``RNNTheano``)
    the backward pass covers only the last ``k`` steps ``T-k .. T-1``: outputs before them
    contribute no gradient at all, not even to ``V``.  ``k >= T`` is full BPTT.
``MODE_FULL``
    exact gradient of ``L``.

Every function writes into caller-allocated arrays, like the compiled kernels, so that all
backends share one function table (see :mod:`fastrnn.backends`).
"""
import numpy as np

from .._config import MODE_FULL, MODE_LAST, MODE_WINDOW


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _log_softmax_at(z, j):
    m = z.max()
    return z[j] - m - np.log(np.exp(z - m).sum())


def rnn_forward(U, V, W, x, s, o):
    """Forward pass.  Fills ``s[:T]`` (hidden states) and ``o`` ``(T, V)`` (probabilities).

    ``s[T]`` must hold the initial state on entry.
    """
    T = len(x)
    for t in range(T):
        s[t] = np.tanh(U[:, x[t]] + W @ s[t - 1])
        o[t] = _softmax(V @ s[t])


def rnn_loss(U, V, W, x, y, s, z):
    """Total cross-entropy ``-sum_t log softmax(V s_t)[y_t]``; fills ``s`` like :func:`rnn_forward`.

    ``z`` ``(T, V)`` receives the logits ``V s_t``.
    """
    T = len(x)
    loss = 0.0
    for t in range(T):
        s[t] = np.tanh(U[:, x[t]] + W @ s[t - 1])
        z[t] = V @ s[t]
        loss -= _log_softmax_at(z[t], y[t])
    return float(loss)


def rnn_grad(U, V, W, x, y, mode, k, s, z, g, dU, dV, dW):
    """Loss and its (truncated) gradient.  Overwrites ``dU``, ``dV``, ``dW``; returns the loss.

    ``z`` ``(T, V)`` and ``g`` ``(T, H)`` are workspaces (``g`` is unused here).
    """
    T = len(x)
    loss = rnn_loss(U, V, W, x, y, s, z)
    dU[...] = 0
    dV[...] = 0
    dW[...] = 0
    # delta_o[t] = dL/d(V s_t) = softmax(V s_t) - onehot(y_t)
    delta_o = np.empty_like(z)
    for t in range(T):
        delta_o[t] = _softmax(z[t])
        delta_o[t, y[t]] -= 1.0

    if mode == MODE_WINDOW:
        for t in range(T - 1, -1, -1):
            dV += np.outer(delta_o[t], s[t])
            delta = (V.T @ delta_o[t]) * (1.0 - s[t] ** 2)
            for step in range(t, max(0, t - k) - 1, -1):
                dW += np.outer(delta, s[step - 1])
                dU[:, x[step]] += delta
                delta = (W.T @ delta) * (1.0 - s[step - 1] ** 2)
        return loss

    first = 0 if mode == MODE_FULL else max(0, T - k)
    dh = np.zeros(U.shape[0], dtype=U.dtype)       # dL/ds_t arriving from step t+1
    for t in range(T - 1, first - 1, -1):
        dV += np.outer(delta_o[t], s[t])
        dh = dh + V.T @ delta_o[t]
        delta = dh * (1.0 - s[t] ** 2)             # dL/d(pre-activation at t)
        dW += np.outer(delta, s[t - 1])
        dU[:, x[t]] += delta
        dh = W.T @ delta
    return loss


def rnn_sgd(U, V, W, x, y, mode, k, lr, s, z, g, dW):
    """One SGD step in place: ``P -= lr * dL/dP`` for P in U, V, W.  Returns the loss before it.

    ``dW`` ``(H, H)`` is a workspace.
    """
    dU = np.empty_like(U)
    dV = np.empty_like(V)
    loss = rnn_grad(U, V, W, x, y, mode, k, s, z, g, dU, dV, dW)
    U -= lr * dU
    V -= lr * dV
    W -= lr * dW
    return loss

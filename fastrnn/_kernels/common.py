"""Shared Numba math for the layer kernels: gates and the fused softmax + NLL + gradient.

Gate activations
----------------
``sigmoid(x)``
    evaluated without overflow for either sign: ``1 / (1 + exp(-x))`` for ``x >= 0``,
    ``exp(x) / (1 + exp(x))`` otherwise.
``hard_sigmoid(x) = clip(0.2 x + 0.5, 0, 1)``
    Theano's / Keras 1's piecewise-linear gate.

The backward passes need the derivative of a gate with respect to its pre-activation; both
are functions of the gate's *output* ``y`` so nothing but ``y`` is cached:
``sigmoid' = y (1 - y)``; ``hard_sigmoid' = 0.2`` where ``0 < y < 1``, else ``0`` (the
kinks at ``x = +-2.5`` take the one-sided value 0, as Theano and Keras do).

Output layer
------------
:func:`softmax_xent` turns logits ``Z (N, V)`` (rows = flattened time x batch) into the
masked cross-entropy and, in place, its gradient ``dL/dZ``; one pass over each row reads
the logits three times and writes them once, and never stores probabilities apart.
"""
import math

from numba import njit

from .._config import NUMBA_OPTIONS


@njit(**NUMBA_OPTIONS)
def sigmoid(x):
    """Logistic function, stable for large ``|x|`` (scalar)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(**NUMBA_OPTIONS)
def hard_sigmoid(x):
    """``clip(0.2 x + 0.5, 0, 1)`` (scalar)."""
    y = 0.2 * x + 0.5
    if y < 0.0:
        return 0.0
    if y > 1.0:
        return 1.0
    return y


@njit(**NUMBA_OPTIONS)
def gate(x, hard):
    """Gate activation: hard sigmoid if ``hard`` else the logistic sigmoid (scalar)."""
    if hard:
        return hard_sigmoid(x)
    return sigmoid(x)


@njit(**NUMBA_OPTIONS)
def gate_grad(y, hard):
    """Derivative of the gate at the pre-activation whose output is ``y`` (scalar)."""
    if hard:
        if 0.0 < y < 1.0:
            return 0.2
        return 0.0
    return y * (1.0 - y)


@njit(**NUMBA_OPTIONS)
def softmax_xent(Z, y, mask, scale):
    """Masked softmax cross-entropy of the rows of ``Z``; overwrites ``Z`` with its gradient.

    Parameters
    ----------
    Z : ndarray, shape (N, V), float32 or float64
        Logits, one row per (time step, sequence).  On return, ``Z[n]`` holds
        ``scale * mask[n] * (softmax(Z[n]) - onehot(y[n]))``, i.e. ``d(scale * L)/dZ``.
    y : ndarray of intp, shape (N,)
        Target ids, validated in ``[0, V)`` by the caller.
    mask : ndarray, shape (N,), same float dtype as ``Z``
        1 for a token that counts, 0 for padding (its row of the gradient is zero).
    scale : float
        Factor applied to the gradient (``1 / count`` for a mean loss).

    Returns
    -------
    float
        ``L = -sum_n mask[n] * log softmax(Z[n])[y[n]]`` (unscaled), accumulated in float64.
    """
    N, V = Z.shape
    loss = 0.0
    for n in range(N):
        row = Z[n]
        if mask[n] == 0.0:
            for v in range(V):
                row[v] = 0.0
            continue
        m = row[0]
        for v in range(1, V):
            if row[v] > m:
                m = row[v]
        s = 0.0
        for v in range(V):
            e = math.exp(row[v] - m)
            row[v] = e
            s += e
        # log softmax at the target: z_y - m - log(s); row[y] holds exp(z_y - m).
        loss -= math.log(row[y[n]]) - math.log(s)
        w = scale * mask[n] / s
        for v in range(V):
            row[v] = row[v] * w
        row[y[n]] -= scale * mask[n]
    return loss


@njit(**NUMBA_OPTIONS)
def log_softmax(Z, out):
    """Row-wise ``log softmax`` of ``Z (N, V)`` into ``out (N, V)`` (may alias ``Z``)."""
    N, V = Z.shape
    for n in range(N):
        m = Z[n, 0]
        for v in range(1, V):
            if Z[n, v] > m:
                m = Z[n, v]
        s = 0.0
        for v in range(V):
            s += math.exp(Z[n, v] - m)
        lse = m + math.log(s)
        for v in range(V):
            out[n, v] = Z[n, v] - lse

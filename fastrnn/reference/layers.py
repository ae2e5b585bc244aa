"""NumPy reference of the shared layer math: gates and the masked softmax cross-entropy.

Mirrors :mod:`fastrnn._kernels.common` with whole-array NumPy expressions.  See that module
for the equations; the gate derivatives are written as functions of the gate *output*.
"""
import numpy as np


def sigmoid(x):
    """Logistic function of an array, without overflow for large ``|x|``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def hard_sigmoid(x):
    """``clip(0.2 x + 0.5, 0, 1)`` of an array."""
    return np.clip(0.2 * x + 0.5, 0.0, 1.0).astype(x.dtype, copy=False)


def gate(x, hard):
    """Gate activation: :func:`hard_sigmoid` if ``hard`` else :func:`sigmoid`."""
    return hard_sigmoid(x) if hard else sigmoid(x)


def gate_grad(y, hard):
    """Derivative of the gate at the pre-activation whose output is ``y``."""
    if hard:
        return np.where((y > 0.0) & (y < 1.0), 0.2, 0.0).astype(y.dtype, copy=False)
    return y * (1.0 - y)


def softmax_xent(Z, y, mask, scale):
    """Masked softmax cross-entropy of the rows of ``Z (N, V)``; ``Z`` becomes its gradient.

    On return ``Z[n] = scale * mask[n] * (softmax(Z[n]) - onehot(y[n]))``.  Returns the
    unscaled ``-sum_n mask[n] * log softmax(Z[n])[y[n]]`` as a float.
    """
    N = Z.shape[0]
    loss = 0.0
    for n in range(N):
        if mask[n] == 0:
            Z[n] = 0.0
            continue
        z = Z[n] - Z[n].max()
        e = np.exp(z)
        s = e.sum()
        loss -= float(mask[n]) * (float(z[y[n]]) - float(np.log(s)))
        Z[n] = e * (scale * mask[n] / s)
        Z[n, y[n]] -= scale * mask[n]
    return loss


def log_softmax(Z, out):
    """Row-wise ``log softmax`` of ``Z (N, V)`` into ``out``."""
    m = Z.max(axis=1, keepdims=True)
    out[...] = Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))

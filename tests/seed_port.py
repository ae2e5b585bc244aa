"""The tutorial's RNNNumpy algorithm, transcribed step for step into Python 3 (test oracle).

This is *not* fastrnn's reference (that is :mod:`fastrnn.reference`): it keeps the
tutorial's exact order of operations -- a full softmax per step in the forward pass,
``o[t] - onehot`` per output, one outer product per (output, step) pair -- so that
fidelity tests compare fastrnn with what the tutorial's code computes, and the benchmarks
time the tutorial's own loop as the baseline.  The tutorial's aliasing bug
(``delta_o = o`` then subtracting in place) is harmless here because ``o`` is local.
"""
import numpy as np


def softmax(v):
    e = np.exp(v - np.max(v))
    return e / np.sum(e)


def forward(U, V, W, x):
    T = len(x)
    H = U.shape[0]
    s = np.zeros((T + 1, H))
    o = np.zeros((T, V.shape[0]))
    for t in range(T):
        s[t] = np.tanh(U[:, x[t]] + W.dot(s[t - 1]))
        o[t] = softmax(V.dot(s[t]))
    return o, s


def total_loss(U, V, W, X, Y):
    L = 0.0
    for x, y in zip(X, Y):
        o, _ = forward(U, V, W, x)
        L += -np.sum(np.log(o[np.arange(len(y)), y]))
    return L


def bptt(U, V, W, x, y, truncate):
    T = len(y)
    o, s = forward(U, V, W, x)
    dU = np.zeros(U.shape)
    dV = np.zeros(V.shape)
    dW = np.zeros(W.shape)
    delta_o = o
    delta_o[np.arange(T), y] -= 1.0
    for t in range(T)[::-1]:
        dV += np.outer(delta_o[t], s[t].T)
        delta_t = V.T.dot(delta_o[t]) * (1 - s[t] ** 2)
        for step in range(max(0, t - truncate), t + 1)[::-1]:
            dW += np.outer(delta_t, s[step - 1])
            dU[:, x[step]] += delta_t
            delta_t = W.T.dot(delta_t) * (1 - s[step - 1] ** 2)
    return dU, dV, dW


def sgd_step(U, V, W, x, y, lr, truncate):
    dU, dV, dW = bptt(U, V, W, x, y, truncate)
    U -= lr * dU
    V -= lr * dV
    W -= lr * dW

"""Finite differences check the NumPy reference in float64 -- every truncation mode.

Full BPTT is the exact gradient of the loss.  The two truncated modes are exact gradients
of losses in which some hidden states are held constant, so they are checked the same
way, by re-computing the loss with those states frozen:

* ``last`` (Theano's truncate_gradient=k): the loss of the last k outputs with the state
  entering step T-k frozen;
* ``window`` (the tutorial's RNNNumpy.bptt): the sum over outputs t of the loss of output t
  with the state entering step max(0, t-k) frozen.
"""
import numpy as np
import pytest

from fastrnn import reference as R
from fastrnn._config import MODE_FULL, MODE_LAST, MODE_WINDOW
from rnn_cases import problem, workspaces


def _states(U, W, x, h0):
    s = [h0]
    for t in range(len(x)):
        s.append(np.tanh(U[:, x[t]] + W @ s[-1]))
    return s[1:]                     # s[t] for t = 0..T-1


def _nll_from(U, V, W, x, y, start, stop, h_start):
    """-sum_{t in [start, stop)} log softmax(V s_t)[y_t], running the RNN from h_start at `start`."""
    h = h_start
    L = 0.0
    for t in range(start, stop):
        h = np.tanh(U[:, x[t]] + W @ h)
        if t >= start:
            z = V @ h
            m = z.max()
            L -= z[y[t]] - m - np.log(np.exp(z - m).sum())
    return L


def _frozen_loss(mode, k, frozen_states, U, V, W, x, y, h0):
    """The loss whose exact gradient the truncation mode computes."""
    T = len(x)
    if mode == MODE_FULL:
        return _nll_from(U, V, W, x, y, 0, T, h0)
    if mode == MODE_LAST:
        first = max(0, T - k)
        h_in = h0 if first == 0 else frozen_states[first - 1]
        return _nll_from(U, V, W, x, y, first, T, h_in)
    total = 0.0                      # MODE_WINDOW
    for t in range(T):
        start = max(0, t - k)
        h_in = h0 if start == 0 else frozen_states[start - 1]
        h = h_in
        for step in range(start, t + 1):
            h = np.tanh(U[:, x[step]] + W @ h)
        z = V @ h
        m = z.max()
        total -= z[y[t]] - m - np.log(np.exp(z - m).sum())
    return total


@pytest.mark.parametrize("mode,k", [(MODE_FULL, 0), (MODE_LAST, 3), (MODE_LAST, 50),
                                    (MODE_WINDOW, 0), (MODE_WINDOW, 2), (MODE_WINDOW, 50)])
@pytest.mark.parametrize("H,V,T", [(4, 6, 7), (1, 2, 3), (3, 5, 1)])
def test_reference_gradient_by_central_differences(mode, k, H, V, T):
    U, Vm, W, x, y, h0 = problem(H, V, T, seed=11 * T + H)
    s, z, g = workspaces(H, V, T, np.float64, h0)
    dU, dV, dW = np.empty_like(U), np.empty_like(Vm), np.empty_like(W)
    R.rnn_grad(U, Vm, W, x, y, mode, k, s, z, g, dU, dV, dW)

    frozen = _states(U, W, x, h0)    # held at their unperturbed values
    eps = 1e-6
    for P, dP in ((U, dU), (Vm, dV), (W, dW)):
        numeric = np.zeros_like(P)
        for ix in np.ndindex(P.shape):
            orig = P[ix]
            P[ix] = orig + eps
            plus = _frozen_loss(mode, k, frozen, U, Vm, W, x, y, h0)
            P[ix] = orig - eps
            minus = _frozen_loss(mode, k, frozen, U, Vm, W, x, y, h0)
            P[ix] = orig
            numeric[ix] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(dP, numeric, rtol=1e-6, atol=1e-8)


def test_last_mode_ignores_early_outputs_entirely():
    """Theano semantics: outputs before the last k steps give no gradient, even to V."""
    H, V, T, k = 3, 5, 6, 2
    U, Vm, W, x, y, h0 = problem(H, V, T, seed=5, h0=np.zeros(3))
    s, z, g = workspaces(H, V, T, np.float64, h0)
    dU, dV, dW = np.empty_like(U), np.empty_like(Vm), np.empty_like(W)
    R.rnn_grad(U, Vm, W, x, y, MODE_LAST, k, s, z, g, dU, dV, dW)
    # dV is the sum of outer(delta_o[t], s[t]) over the last k steps only
    probs = np.empty((T, V))
    R.rnn_forward(U, Vm, W, x, s.copy(), probs)
    expected = np.zeros_like(Vm)
    states = _states(U, W, x, h0)
    for t in range(T - k, T):
        d = probs[t].copy()
        d[y[t]] -= 1
        expected += np.outer(d, states[t])
    np.testing.assert_allclose(dV, expected, rtol=1e-12)
    # columns of U for tokens that occur only before T-k get nothing
    early_only = set(x[:T - k]) - set(x[T - k:])
    for tok in early_only:
        assert np.all(dU[:, tok] == 0)


def test_modes_coincide_when_truncation_covers_the_sentence():
    H, V, T = 4, 6, 5
    U, Vm, W, x, y, h0 = problem(H, V, T, seed=9)
    grads = []
    for mode, k in ((MODE_FULL, 0), (MODE_WINDOW, T - 1), (MODE_WINDOW, 100), (MODE_LAST, T),
                    (MODE_LAST, 100)):
        s, z, g = workspaces(H, V, T, np.float64, h0)
        out = [np.empty_like(U), np.empty_like(Vm), np.empty_like(W)]
        R.rnn_grad(U, Vm, W, x, y, mode, k, s, z, g, *out)
        grads.append(out)
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)

"""The drop-in tutorial classes: same weights, numbers and API as the tutorial's code."""
import numpy as np
import pytest

import fastrnn
import seed_port
from fastrnn import RNNNumpy, RNNTheano
from rnn_cases import backend_params


def _corpus(V, n, seed, lo=1, hi=30):
    rng = np.random.default_rng(seed)
    X, Y = [], []
    for _ in range(n):
        T = int(rng.integers(lo, hi))
        seq = rng.integers(0, V, T + 1)
        X.append(list(seq[:-1]))
        Y.append(list(seq[1:]))
    return X, Y


def test_seed_10_gives_the_tutorials_initial_weights():
    np.random.seed(10)
    m = RNNNumpy(8000, 100, 4)
    np.random.seed(10)
    U = np.random.uniform(-np.sqrt(1 / 8000), np.sqrt(1 / 8000), (100, 8000))
    V = np.random.uniform(-np.sqrt(1 / 100), np.sqrt(1 / 100), (8000, 100))
    W = np.random.uniform(-np.sqrt(1 / 100), np.sqrt(1 / 100), (100, 100))
    assert np.array_equal(m.U, U) and np.array_equal(m.V, V) and np.array_equal(m.W, W)
    assert (m.word_dim, m.hidden_dim, m.bptt_truncate) == (8000, 100, 4)


def test_tutorial_expected_initial_loss():
    """The tutorial's sanity check: with random weights the loss per word is close to log(V)."""
    np.random.seed(10)
    V = 8000
    m = RNNNumpy(V)
    X, Y = _corpus(V, 10, seed=1)
    assert abs(m.calculate_loss(X, Y) - np.log(V)) < 0.01


@pytest.mark.parametrize("backend", backend_params())
def test_loss_and_gradients_equal_the_tutorials_code(backend):
    np.random.seed(3)
    m = RNNNumpy(50, 16, bptt_truncate=4, backend=backend)
    X, Y = _corpus(50, 6, seed=2)
    want = seed_port.total_loss(m.U, m.V, m.W, X, Y)
    np.testing.assert_allclose(m.calculate_total_loss(X, Y), want, rtol=1e-12)
    np.testing.assert_allclose(m.calculate_loss(X, Y), want / sum(map(len, Y)), rtol=1e-12)
    for x, y in zip(X, Y):
        got = m.bptt(x, y)
        ref = seed_port.bptt(m.U, m.V, m.W, np.array(x), np.array(y), 4)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
        o, s = m.forward_propagation(x)
        o_ref, s_ref = seed_port.forward(m.U, m.V, m.W, x)
        np.testing.assert_allclose(o, o_ref, rtol=1e-12)
        np.testing.assert_allclose(s, s_ref, rtol=1e-12, atol=1e-300)
        assert s.shape == (len(x) + 1, 16) and np.all(s[-1] == 0)
        assert np.array_equal(m.predict(x), np.argmax(o_ref, axis=1))


@pytest.mark.parametrize("backend", backend_params())
def test_hundred_sgd_steps_track_the_tutorials_code(backend):
    V, H = 40, 12
    np.random.seed(4)
    m = RNNNumpy(V, H, bptt_truncate=4, backend=backend)
    U, Vw, W = m.U.copy(), m.V.copy(), m.W.copy()
    X, Y = _corpus(V, 100, seed=5, hi=25)
    for x, y in zip(X, Y):
        m.sgd_step(x, y, 0.005)
        seed_port.sgd_step(U, Vw, W, np.array(x), np.array(y), 0.005, 4)
    for got, want in ((m.U, U), (m.V, Vw), (m.W, W)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-13)


def test_bptt_does_not_clobber_forward_outputs():
    np.random.seed(1)
    m = RNNNumpy(10, 4)
    x, y = [1, 2, 3], [2, 3, 4]
    o, _ = m.forward_propagation(x)
    keep = o.copy()
    m.bptt(x, y)
    assert np.array_equal(o, keep)
    o2, _ = m.forward_propagation(x)
    assert np.array_equal(o2, keep)


def test_gradient_check_passes_with_full_window_and_fails_on_a_bad_gradient(capsys):
    np.random.seed(10)
    m = RNNNumpy(20, 10, bptt_truncate=1000)
    x, y = [0, 1, 2, 3], [1, 2, 3, 4]
    assert m.gradient_check(x, y) is True
    assert "Gradient check for parameter W passed." in capsys.readouterr().out
    m.bptt = lambda x, y: [np.full_like(m.U, np.nan), np.zeros_like(m.V), np.zeros_like(m.W)]
    assert m.gradient_check(x, y, verbose=False) is False       # NaN no longer passes


def test_gradient_check_treats_two_exact_zeros_as_agreement():
    np.random.seed(10)
    m = RNNNumpy(6, 3, bptt_truncate=1000)
    # token 5 never occurs in x, so column 5 of U has an exactly zero gradient both ways
    assert m.gradient_check([0, 1], [1, 2], verbose=False) is True


def test_train_with_sgd_evaluates_halves_and_returns_losses(capsys):
    np.random.seed(10)
    m = RNNNumpy(30, 8)
    X, Y = _corpus(30, 20, seed=8)
    losses = m.train_with_sgd(X, Y, learning_rate=0.005, nepoch=6, evaluate_loss_after=2)
    assert [seen for seen, _ in losses] == [0, 40, 80]
    assert losses[-1][1] < losses[0][1]
    assert "Loss after num_examples_seen=40 epoch=2" in capsys.readouterr().out

    # a learning rate so large the loss rises: the tutorial's rule halves it
    rates = []
    m2 = RNNNumpy(30, 8)
    orig = m2._sgd
    m2._sgd = lambda x, y, lr: (rates.append(lr), orig(x, y, lr))[1]
    m2.train_with_sgd(X, Y, learning_rate=50.0, nepoch=4, evaluate_loss_after=1, verbose=False)
    assert min(rates) < 50.0


def test_parameters_are_assignable_like_the_tutorials_loaders():
    m = RNNNumpy(8, 3)
    rng = np.random.default_rng(0)
    U, V, W = rng.standard_normal((5, 9)), rng.standard_normal((9, 5)), rng.standard_normal((5, 5))
    m.hidden_dim, m.word_dim = 5, 9
    m.U, m.V, m.W = U, V, W
    o, s = m.forward_propagation([8, 0])
    assert o.shape == (2, 9) and s.shape == (3, 5)
    with pytest.raises(ValueError, match="non-finite"):
        m.W = np.full((5, 5), np.nan)
    m.V = rng.standard_normal((9, 4))
    with pytest.raises(ValueError, match=r"parameter V must have shape \(9, 5\)"):
        m.forward_propagation([1])


def test_numpy_backend_is_the_reference():
    np.random.seed(2)
    m = RNNNumpy(12, 5, backend="numpy")
    assert fastrnn.get_backend(m.backend).name == "numpy"
    o, _ = m.forward_propagation([1, 2])
    np.testing.assert_allclose(o, seed_port.forward(m.U, m.V, m.W, [1, 2])[0], rtol=1e-13)


# ---- RNNTheano ---------------------------------------------------------------------------

def _theano_bptt_by_hand(U, V, W, x, y, k):
    """Gradient of the last k outputs through the last k steps, the earlier state frozen."""
    T = len(x)
    o, s = seed_port.forward(U, V, W, x)
    first = 0 if k < 0 else max(0, T - k)
    dU, dV, dW = np.zeros_like(U), np.zeros_like(V), np.zeros_like(W)
    dh = np.zeros(U.shape[0])
    for t in range(T - 1, first - 1, -1):
        d = o[t].copy()
        d[y[t]] -= 1
        dV += np.outer(d, s[t])
        dh = dh + V.T @ d
        pre = dh * (1 - s[t] ** 2)
        dW += np.outer(pre, s[t - 1])
        dU[:, x[t]] += pre
        dh = W.T @ pre
    return dU, dV, dW


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("k", [4, -1, 1, 100])
def test_rnntheano_truncate_gradient_semantics(backend, k):
    np.random.seed(6)
    m = RNNTheano(25, 7, bptt_truncate=k, backend=backend)
    x = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    y = [1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    got = m.bptt(x, y)
    want = _theano_bptt_by_hand(m.U.get_value(), m.V.get_value(), m.W.get_value(), x, y, k)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
    o = m.forward_propagation(x)
    assert o.shape == (10, 25)
    np.testing.assert_allclose(m.ce_error(x, y), -np.log(o[np.arange(10), y]).sum(), rtol=1e-12)
    assert m.sgd_step(x, y, 0.01) == []


def test_rnntheano_shared_variable_api_and_float32():
    np.random.seed(10)
    m = RNNTheano(30, 6, dtype=np.float32)
    U = m.U.get_value()
    assert U.dtype == np.float32 and U.shape == (6, 30)
    U[0, 0] = 123.0                       # a copy: the model is unchanged
    assert m.U.get_value()[0, 0] != 123.0
    m.U.set_value(U)
    assert m.U.get_value()[0, 0] == np.float32(123.0)
    m.U.set_value(np.zeros((6, 30)))      # float64 in, stored as floatX
    assert m.U.get_value().dtype == np.float32
    x, y = [1, 2, 3], [2, 3, 4]
    m.sgd_step(x, y, 0.1)
    assert m.V.get_value().dtype == np.float32 and m.W.get_value().dtype == np.float32
    assert isinstance(m.ce_error(x, y), float)
    # same computation in float64 agrees to float32 precision
    m64 = RNNTheano(30, 6)
    for name in "UVW":
        getattr(m64, name).set_value(getattr(m, name).get_value().astype(np.float64))
    np.testing.assert_allclose(m.calculate_loss([x], [y]), m64.calculate_loss([x], [y]), rtol=1e-5)


def test_rnntheano_matches_rnnnumpy_with_full_truncation():
    np.random.seed(12)
    a = RNNTheano(20, 5, bptt_truncate=-1)
    b = RNNNumpy(20, 5, bptt_truncate=1000)
    b.U, b.V, b.W = a.U.get_value(), a.V.get_value(), a.W.get_value()
    x, y = [1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]
    for p, q in zip(a.bptt(x, y), b.bptt(x, y)):
        np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-15)

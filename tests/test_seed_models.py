"""GRUTheano and RNNKeras against hand-written NumPy loops of their equations."""
import numpy as np
import pytest

import fastrnn
from fastrnn.seed_models import GRUTheano, RNNKeras, char_windows, sample


def backends():
    out = ["numpy"]
    if fastrnn.available_backends()["numba"] is True:
        out.append("numba")
    return out


# ----------------------------------------------------------------------------- GRUTheano

def hsig(v):
    return np.clip(0.2 * v + 0.5, 0.0, 1.0)


def theano_states(E, U, W, b, x, s1=None, s2=None):
    """The tutorial's forward_prop_step, written out: returns the layer-2 states (T, H)."""
    H = E.shape[0]
    s1 = np.zeros(H) if s1 is None else s1
    s2 = np.zeros(H) if s2 is None else s2
    out = []
    for t in x:
        xe = E[:, t]
        z1 = hsig(U[0] @ xe + W[0] @ s1 + b[0])
        r1 = hsig(U[1] @ xe + W[1] @ s1 + b[1])
        c1 = np.tanh(U[2] @ xe + W[2] @ (s1 * r1) + b[2])
        s1 = (1 - z1) * c1 + z1 * s1
        z2 = hsig(U[3] @ s1 + W[3] @ s2 + b[3])
        r2 = hsig(U[4] @ s1 + W[4] @ s2 + b[4])
        c2 = np.tanh(U[5] @ s1 + W[5] @ (s2 * r2) + b[5])
        s2 = (1 - z2) * c2 + z2 * s2
        out.append((s1.copy(), s2.copy()))
    return out


def theano_probs(m, x, s1=None, s2=None, P=None):
    P = P or (m.E, m.U, m.W, m.b, m.V, m.c)
    E, U, W, b, V, c = P
    o = []
    for _, s2t in theano_states(E, U, W, b, x, s1, s2):
        z = V @ s2t + c
        e = np.exp(z - z.max())
        o.append(e / e.sum())
    return np.array(o)


def theano_ce(P, x, y, s1=None, s2=None):
    class M:
        pass
    m = M()
    m.E, m.U, m.W, m.b, m.V, m.c = P
    o = theano_probs(m, x, s1, s2)
    return -np.sum(np.log(o[np.arange(len(y)), y]))


def small_theano(backend, seed=0, V=6, H=3):
    np.random.seed(seed)
    m = GRUTheano(V, H, backend=backend)
    rng = np.random.default_rng(seed)
    m.b[...] = rng.uniform(-0.5, 0.5, m.b.shape)     # the tutorial starts at zero; test non-zero
    m.c[...] = rng.uniform(-0.5, 0.5, m.c.shape)
    m.U *= 3.0                                       # use the gates' non-linear range
    m.W *= 3.0
    m.E *= 3.0
    return m


def test_theano_init_draw_order():
    np.random.seed(10)
    m = GRUTheano(7, 4)
    np.random.seed(10)
    E = np.random.uniform(-np.sqrt(1 / 7), np.sqrt(1 / 7), (4, 7))
    U = np.random.uniform(-np.sqrt(1 / 4), np.sqrt(1 / 4), (6, 4, 4))
    W = np.random.uniform(-np.sqrt(1 / 4), np.sqrt(1 / 4), (6, 4, 4))
    V = np.random.uniform(-np.sqrt(1 / 4), np.sqrt(1 / 4), (7, 4))
    for a, b in ((m.E, E), (m.U, U), (m.W, W), (m.V, V)):
        np.testing.assert_array_equal(a, b)
    assert not m.b.any() and not m.c.any() and m.b.shape == (6, 4) and m.c.shape == (7,)
    assert m.mU.shape == (6, 4, 4) and not m.mU.any()


@pytest.mark.parametrize("backend", backends())
def test_theano_forward_and_loss(backend):
    m = small_theano(backend)
    x, y = [0, 3, 5, 1, 1], [3, 5, 1, 1, 2]
    o = m.predict(x)
    np.testing.assert_allclose(o, theano_probs(m, x), rtol=1e-12)
    np.testing.assert_array_equal(m.predict_class(x), np.argmax(o, axis=1))
    P = (m.E, m.U, m.W, m.b, m.V, m.c)
    assert m.ce_error(x, y) == pytest.approx(theano_ce(P, x, y), rel=1e-12)
    X, Y = [x, [2, 4]], [y, [4, 0]]
    total = theano_ce(P, x, y) + theano_ce(P, [2, 4], [4, 0])
    assert m.calculate_total_loss(X, Y) == pytest.approx(total, rel=1e-12)
    assert m.calculate_loss(X, Y) == pytest.approx(total / 7, rel=1e-12)


@pytest.mark.parametrize("backend", backends())
def test_theano_bptt_finite_differences(backend):
    m = small_theano(backend, seed=1)
    x, y = [2, 0, 4, 4], [0, 4, 4, 1]
    grads = m.bptt(x, y)
    P = [m.E, m.U, m.W, m.b, m.V, m.c]
    eps = 1e-6
    for name, g, a in zip("E U W b V c".split(), grads, P):
        assert g.shape == a.shape
        fd = np.empty_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            lp = theano_ce(P, x, y)
            a[idx] = old - eps
            lm = theano_ce(P, x, y)
            a[idx] = old
            fd[idx] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9, err_msg=name)


def test_theano_truncated_bptt_is_last_k_steps():
    """truncate_gradient=k: the gradient of the loss of the last k steps, their start state fixed."""
    m = small_theano("numpy", seed=2)
    m.bptt_truncate = 2
    x, y = [1, 2, 3, 4, 5], [2, 3, 4, 5, 0]
    grads = m.bptt(x, y)
    P = [m.E, m.U, m.W, m.b, m.V, m.c]
    s1, s2 = theano_states(m.E, m.U, m.W, m.b, x[:3])[-1]
    eps = 1e-6
    for name, g, a in zip("E U W b V c".split(), grads, P):
        fd = np.empty_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            lp = theano_ce(P, x[3:], y[3:], s1, s2)
            a[idx] = old - eps
            lm = theano_ce(P, x[3:], y[3:], s1, s2)
            a[idx] = old
            fd[idx] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9, err_msg=name)
    m.bptt_truncate = 10          # k >= T: full BPTT
    full = GRUTheano.bptt(m, x, y)
    m.bptt_truncate = -1
    for a, b in zip(full, m.bptt(x, y)):
        np.testing.assert_array_equal(a, b)


def test_theano_sgd_step_is_tutorial_rmsprop():
    m = small_theano("numpy", seed=3)
    x, y = [1, 2, 3], [2, 3, 4]
    names = "E U W b V c".split()
    for step in range(2):
        before = {n: getattr(m, n).copy() for n in names}
        cache = {n: getattr(m, "m" + n).copy() for n in names}
        grads = dict(zip(names, m.bptt(x, y)))
        loss = m.sgd_step(x, y, 0.01, decay=0.8)
        assert loss == pytest.approx(theano_ce([before[n] for n in names], x, y), rel=1e-12)
        for n in names:
            mm = 0.8 * cache[n] + 0.2 * grads[n] ** 2
            np.testing.assert_allclose(getattr(m, "m" + n), mm, rtol=1e-13, atol=1e-300)
            np.testing.assert_allclose(getattr(m, n), before[n] - 0.01 * grads[n] / np.sqrt(mm + 1e-6),
                                       rtol=1e-13, atol=1e-15)


def test_theano_backends_agree_float32():
    if "numba" not in backends():
        pytest.skip("numba unavailable")
    np.random.seed(4)
    a = GRUTheano(9, 5, backend="numba", dtype=np.float32)
    np.random.seed(4)
    b = GRUTheano(9, 5, backend="numpy", dtype=np.float64)
    for n in "EUWVbc":
        getattr(b, n)[...] = getattr(a, n)
    x, y = [1, 8, 3, 3, 0, 2], [8, 3, 3, 0, 2, 7]
    assert a.ce_error(x, y) == pytest.approx(b.ce_error(x, y), rel=1e-5)
    for ga, gb in zip(a.bptt(x, y), b.bptt(x, y)):
        assert ga.dtype == np.float32
        assert np.abs(ga - gb).max() <= 1e-4 * max(1e-3, np.abs(gb).max())


def test_theano_validation():
    m = GRUTheano(5, 2)
    with pytest.raises(ValueError, match="token id 5 out of range for vocabulary of 5"):
        m.predict([1, 5])
    with pytest.raises(ValueError, match="same length"):
        m.bptt([1, 2], [1])
    with pytest.raises(ValueError, match="bptt_truncate"):
        GRUTheano(5, 2, bptt_truncate=0)


# ----------------------------------------------------------------------------- RNNKeras

def keras_probs(weights, X, hard=False):
    """Keras LSTM (i, f, c, o; kernel (V, 4H)) + Dense + softmax, written out step by step."""
    K, Rk, bias, D, db = weights
    H = Rk.shape[0]
    act = hsig if hard else (lambda v: 1 / (1 + np.exp(-v)))
    X = np.asarray(X, dtype=np.float64)
    h = np.zeros((len(X), H))
    c = np.zeros((len(X), H))
    for t in range(X.shape[1]):
        a = X[:, t] @ K + h @ Rk + bias
        i, f = act(a[:, :H]), act(a[:, H:2 * H])
        g, o = np.tanh(a[:, 2 * H:3 * H]), act(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    z = h @ D + db
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def keras_loss(weights, X, Y, hard=False):
    p = keras_probs(weights, X, hard)
    return -np.sum(Y * np.log(p)) / len(X)


def keras_case(backend, hard=False, seed=0):
    text = "the cat sat on the mat; the bat ate the rat."
    X, y, chars = char_windows(text, maxlen=5, step=4)
    m = RNNKeras(5, len(chars), 4, gate_activation="hard_sigmoid" if hard else "sigmoid",
                 backend=backend, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed)
    w = m.get_weights()
    w[1] = w[1] * 2.0
    w[2] = w[2] + rng.uniform(-0.5, 0.5, w[2].shape)
    w[4] = rng.uniform(-0.3, 0.3, w[4].shape)
    m.set_weights(w)
    return m, X, y, chars


def test_char_windows_and_sample():
    X, y, chars = char_windows("abcabd", maxlen=3, step=2)
    assert chars == ["a", "b", "c", "d"]
    assert X.shape == (2, 3, 4) and y.shape == (2, 4) and X.dtype == bool
    np.testing.assert_array_equal(X[0].argmax(1), [0, 1, 2])      # "abc" -> next "a"
    np.testing.assert_array_equal(X[1].argmax(1), [2, 0, 1])      # "cab" -> next "d"
    np.testing.assert_array_equal(y.argmax(1), [0, 3])
    assert X.sum() == 6 and y.sum() == 2
    p = np.array([0.1, 0.6, 0.3])
    assert sample(p, 1e-3, rng=np.random.default_rng(0)) == 1
    draws = [sample(p, 1.0, rng=np.random.default_rng(s)) for s in range(300)]
    assert abs(np.mean(np.array(draws) == 1) - 0.6) < 0.1
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(p, 0.0)
    with pytest.raises(ValueError, match="longer than maxlen=40"):
        char_windows("short")


@pytest.mark.parametrize("hard", [False, True], ids=["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("backend", backends())
def test_keras_forward_and_gradients(backend, hard):
    m, X, y, _ = keras_case(backend, hard)
    w = m.get_weights()
    np.testing.assert_allclose(m.predict_proba(X), keras_probs(w, X, hard), rtol=1e-12)
    np.testing.assert_allclose(m.predict(X), keras_probs(w, X[:1], hard)[0], rtol=1e-12)
    np.testing.assert_allclose(m.predict(X[3]), keras_probs(w, X[3:4], hard)[0], rtol=1e-12)
    L, g = m.loss_and_grad(X, y)
    assert L == pytest.approx(keras_loss(w, X, y, hard), rel=1e-12)
    keras_grads = [g["weight_ih_l0"].T, g["weight_hh_l0"].T, g["bias_l0"], g["dense.weight"].T,
                   g["dense.bias"]]
    eps = 1e-6
    for k, (a, ga) in enumerate(zip(w, keras_grads)):
        fd = np.empty_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            lp = keras_loss(w, X, y, hard)
            a[idx] = old - eps
            lm = keras_loss(w, X, y, hard)
            a[idx] = old
            fd[idx] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(ga, fd, rtol=1e-6, atol=1e-9, err_msg=f"weight {k}")


def test_keras_training_is_keras_rmsprop():
    m, X, y, _ = keras_case("numpy", seed=1)
    w0 = m.get_weights()
    L, g = m.loss_and_grad(X, y)
    keras_grads = [g["weight_ih_l0"].T, g["weight_hh_l0"].T, g["bias_l0"], g["dense.weight"].T,
                   g["dense.bias"]]
    hist = m.fit(X, y, batch_size=len(X), epochs=1, shuffle=False)
    assert hist["loss"] == [pytest.approx(L, rel=1e-12)]
    for a, ga, b in zip(w0, keras_grads, m.get_weights()):
        ms = 0.1 * ga ** 2           # rho = 0.9, from zero
        np.testing.assert_allclose(b, a - 0.01 * ga / (np.sqrt(ms) + 1e-7), rtol=1e-12, atol=1e-14)
    # the seed's spelling, several epochs, mini-batches: the loss goes down
    h = m.train_model(X, y, batchSize=4, nepoch=15)["loss"]
    assert len(h) == 15 and h[-1] < h[0]


def test_keras_validation():
    m = RNNKeras(5, 4, 3)
    with pytest.raises(ValueError, match=r"\(N, 5, 4\), got \(2, 5, 3\)"):
        m.predict(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="gate_activation"):
        RNNKeras(5, 4, 3, gate_activation="relu")
    with pytest.raises(ValueError, match=r"weights\[1\] \(weight_hh_l0\) must have shape \(3, 12\)"):
        m.set_weights([w if k != 1 else w[:2] for k, w in enumerate(m.get_weights())])
    with pytest.raises(ValueError, match=r"y must have shape"):
        m.fit(np.zeros((2, 5, 4)), np.zeros((3, 4)))


# ----------------------------------------------------------------------------- assignable attributes


from isolated import run_isolated  # noqa: E402


@pytest.mark.parametrize("be", ["cython", "numba"])
def test_theano_reassigned_attributes_are_errors_not_crashes(be):
    """Regression: word_dim grown past the arrays; V and c shrunk."""
    ok = fastrnn.available_backends()[be]
    if ok is not True:
        pytest.skip(f"backend {be} unavailable: {ok}")
    out = run_isolated(f"""
        import numpy as np
        from fastrnn.seed_models import GRUTheano
        def attempt(f):
            try:
                f()
                print("NO ERROR")
            except (ValueError, TypeError) as exc:
                print(type(exc).__name__ + ":", exc)
        m = GRUTheano(50, 8, backend={be!r})
        m.word_dim = 100000
        attempt(lambda: m.ce_error([1, 2, 3], [2, 3, 99999]))
        m = GRUTheano(50, 8, backend={be!r})
        m.V = np.random.rand(3, 8)
        m.c = np.zeros(3)
        for f in (lambda: m.ce_error([1, 2, 3], [2, 3, 49]), lambda: m.predict([1, 2]),
                  lambda: m.bptt([1, 2], [2, 49]), lambda: m.sgd_step([1, 2], [2, 49], 0.1),
                  lambda: m.calculate_loss([[1, 2]], [[2, 49]])):
            attempt(f)
        """)
    assert "NO ERROR" not in out, out
    lines = out.strip().splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("ValueError: GRUTheano.E must have shape (hidden_dim, word_dim) "
                               "= (8, 100000)"), out
    for line in lines[1:]:
        assert line.startswith("ValueError: GRUTheano.V must have shape (word_dim, hidden_dim) "
                               "= (50, 8) (word_dim=50, hidden_dim=8), got (3, 8)"), out


def test_theano_attribute_checks():
    m = GRUTheano(5, 2, backend="numpy")
    x, y = [0, 1, 4], [1, 4, 2]
    cases = [
        ("U", lambda: m.U[:5].copy(), ValueError, r"GRUTheano.U must have shape .*\(6, 2, 2\)"),
        ("b", lambda: m.b[:, :1].copy(), ValueError, r"GRUTheano.b must have shape .*got \(6, 1\)"),
        ("c", lambda: np.zeros(1), ValueError, r"GRUTheano.c must have shape \(word_dim,\) = \(5,\)"),
        ("W", lambda: m.W.astype(np.float32), TypeError, "GRUTheano.W has dtype float32, expected "
                                                          "float64 like E"),
        ("E", lambda: m.E.astype(np.float16), TypeError, "GRUTheano.E must be float32 or float64"),
        ("V", lambda: m.V.tolist(), TypeError, "GRUTheano.V must be a numpy array, got list"),
        ("hidden_dim", lambda: 3, ValueError, r"GRUTheano.E must have shape .*= \(3, 5\)"),
        ("word_dim", lambda: 0, ValueError, "word_dim must be >= 1"),
        ("bptt_truncate", lambda: 0, ValueError, "bptt_truncate must be -1"),
    ]
    for name, value, exc, match in cases:
        old = getattr(m, name)
        setattr(m, name, value())
        for call in (lambda: m.ce_error(x, y), lambda: m.bptt(x, y), lambda: m.predict(x),
                     lambda: m.sgd_step(x, y, 0.01), lambda: m.calculate_total_loss([x], [y])):
            with pytest.raises(exc, match=match):
                call()
        setattr(m, name, old)
    # RMSprop caches no longer shaped like the parameters: sgd_step would broadcast silently
    m.mc = np.zeros(1)
    with pytest.raises(ValueError, match=r"GRUTheano.mc \(RMSprop cache\) must be a float64 array "
                                         r"of shape \(5,\)"):
        m.sgd_step(x, y, 0.01)
    m.mc = np.zeros(5)
    # the tutorial's loaders assign whole consistent arrays, even of another vocabulary: fine
    np.random.seed(3)
    other = GRUTheano(7, 2, backend="numpy")
    for n in ("E", "U", "W", "V", "b", "c"):
        setattr(m, n, getattr(other, n).copy())
        setattr(m, "m" + n, np.zeros_like(getattr(other, n)))
    with pytest.raises(ValueError, match=r"GRUTheano.E must have shape .*word_dim=5"):
        m.ce_error(x, y)                 # word_dim still says 5
    m.word_dim = 7
    assert m.ce_error([0, 6], [6, 5]) == pytest.approx(other.ce_error([0, 6], [6, 5]), rel=1e-12)
    m.sgd_step([0, 6], [6, 5], 0.01)
    with pytest.raises(ValueError, match="token id 7 out of range for vocabulary of 7"):
        m.ce_error([0, 7], [6, 5])


def test_keras_replaced_parameters_are_checked():
    m = RNNKeras(5, 4, 3, backend="numpy", seed=0)
    X = np.zeros((2, 5, 4))
    X[:, :, 0] = 1
    y = np.eye(4)[[1, 2]]
    good = m.get_weights()
    p = m.parameters()
    cases = [
        ("dense.weight", np.zeros((2, 3), np.float32), ValueError,
         r"parameter dense.weight must have shape \(4, 3\), got \(2, 3\)"),
        ("bias_l0", np.zeros(1, np.float32), ValueError,
         r"parameter bias_l0 must have shape \(12,\), got \(1,\)"),
        ("weight_hh_l0", np.zeros((12, 3), np.float64), TypeError,
         "parameter weight_hh_l0 must have dtype float32"),
        ("weight_ih_l0", np.zeros((4, 12), np.float32).T, ValueError,
         "parameter weight_ih_l0 must be C-contiguous"),
        ("dense.bias", [0.0] * 4, TypeError, "parameter dense.bias must be a numpy array"),
    ]
    for name, value, exc, match in cases:
        old = p[name]
        p[name] = value
        for call in (lambda: m.predict_proba(X), lambda: m.loss_and_grad(X, y),
                     lambda: m.fit(X, y, epochs=1)):
            with pytest.raises(exc, match=match):
                call()
        p[name] = old
    del p["dense.bias"]
    with pytest.raises(ValueError, match=r"missing \['dense.bias'\]"):
        m.predict(X)
    # set_weights repairs the entry; then fit notices the optimizer holds the old array
    m.set_weights(good)
    np.testing.assert_array_equal(m.get_weights()[4], good[4])
    m.predict(X)
    with pytest.raises(ValueError, match=r"entries \['dense.bias'\] were replaced .* optimizer"):
        m.fit(X, y)


@pytest.mark.parametrize("be", ["cython", "numba"])
def test_keras_replaced_parameters_subprocess(be):
    ok = fastrnn.available_backends()[be]
    if ok is not True:
        pytest.skip(f"backend {be} unavailable: {ok}")
    out = run_isolated(f"""
        import numpy as np
        from fastrnn.seed_models import RNNKeras
        m = RNNKeras(5, 4, 3, backend={be!r}, seed=0)
        m.parameters()["weight_hh_l0"] = np.zeros((12, 1), np.float32)
        m.parameters()["bias_l0"] = np.zeros(1, np.float32)
        try:
            m.loss_and_grad(np.ones((2, 5, 4)), np.eye(4)[:2])
            print("NO ERROR")
        except ValueError as exc:
            print("ValueError:", exc)
        """)
    assert "parameter weight_hh_l0 must have shape (12, 3), got (12, 1)" in out, out


def test_keras_set_weights_casts_before_the_finiteness_check():
    m = RNNKeras(5, 4, 3, seed=0)                     # float32
    before = m.get_weights()
    w = [a.astype(np.float64) for a in before]
    w[3][1, 2] = 1e300                                # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"weights\[3\] \(dense.weight\) must be finite numbers; "
                                         r"1 value\(s\) are NaN or inf in float32"):
        m.set_weights(w)
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    w[3][1, 2] = 0.5
    m.set_weights(w)
    assert m.get_weights()[3][1, 2] == np.float32(0.5)


# ------------------------------------------------------- GRUTheano's one-pass RMSprop update

def all_backends():
    return [n for n, ok in fastrnn.available_backends().items() if ok is True]


def _numpy_rule(p, m, g, lr, decay):
    """The tutorial's update as GRUTheano.sgd_step writes it in NumPy, on copies."""
    p, m = p.copy(), m.copy()
    m *= decay
    m += (1.0 - decay) * g * g
    p -= lr * g / np.sqrt(m + 1e-6)
    return p, m


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", all_backends())
def test_gru_rmsprop_kernels_equal_the_numpy_rule_bitwise(backend, dtype):
    be = fastrnn.get_backend(backend)
    rng = np.random.default_rng(7)
    lr, decay = 0.005, 0.9
    coef = np.array([decay, 1.0 - decay, lr, 1e-6], dtype)
    n = 1003
    p = rng.standard_normal(n).astype(dtype)
    m = (rng.random(n) * 1e-5).astype(dtype)
    m[:5] = 0.0                                   # a fresh cache
    g = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 2, n)).astype(dtype)
    g[5:9] = 0.0
    want_p, want_m = _numpy_rule(p, m, g, lr, decay)
    be.gru_rmsprop(p, m, g, coef)
    np.testing.assert_array_equal(p, want_p)
    np.testing.assert_array_equal(m, want_m)

    R, C = 6, 41
    for cols in ([], [0], [40, 3, 0, 17], list(range(C))):
        P = rng.standard_normal((R, C)).astype(dtype)
        M = (rng.random((R, C)) * 1e-5).astype(dtype)
        G = (rng.standard_normal((len(cols), R)) * 1e-3).astype(dtype)
        dense = np.zeros((R, C), dtype)
        dense[:, cols] = G.T
        want_p, want_m = _numpy_rule(P, M, dense, lr, decay)
        be.gru_rmsprop_columns(P, M, np.array(cols, np.intp), G, coef)
        np.testing.assert_array_equal(P, want_p, err_msg=f"cols={cols}")
        np.testing.assert_array_equal(M, want_m, err_msg=f"cols={cols}")


def _theano_step_case(backend, dtype, order="C"):
    np.random.seed(5)
    m = GRUTheano(40, 6, backend=backend, dtype=dtype)
    rng = np.random.default_rng(5)
    for n in "E U W V b c".split():
        a = getattr(m, n)
        a[...] = rng.uniform(-1.0, 1.0, a.shape)
        setattr(m, n, np.asarray(a, order=order))
        setattr(m, "m" + n, np.asarray(rng.random(a.shape) * 1e-3, dtype=dtype, order=order))
    x = [3, 7, 3, 0, 39, 7, 7, 12]                    # repeated words: their columns sum
    y = [7, 3, 0, 39, 7, 7, 12, 1]
    return m, x, y


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", all_backends())
def test_theano_sgd_step_equals_the_numpy_rule_on_the_dense_gradients(monkeypatch, backend,
                                                                       dtype, order):
    """Two steps: every parameter and cache equals the NumPy rule applied to ``bptt``'s
    dense gradients, bit for bit, on the kernels' path (C order; spied) and on the NumPy
    fallback for arrays a flat view cannot update in place (Fortran order)."""
    m, x, y = _theano_step_case(backend, dtype, order)
    names = "E U W b V c".split()
    be = m._be
    calls = []
    for k in ("gru_rmsprop", "gru_rmsprop_columns"):
        fn = getattr(be, k)
        monkeypatch.setattr(be, k, lambda *a, _fn=fn, _k=k: calls.append(_k) or _fn(*a))
    for _ in range(2):
        grads = dict(zip(names, m.bptt(x, y)))
        want = {n: _numpy_rule(getattr(m, n), getattr(m, "m" + n), grads[n], 0.01, 0.8)
                for n in names}
        m.sgd_step(x, y, 0.01, decay=0.8)
        for n in names:
            np.testing.assert_array_equal(getattr(m, n), want[n][0], err_msg=n)
            np.testing.assert_array_equal(getattr(m, "m" + n), want[n][1], err_msg="m" + n)
            assert getattr(m, n).dtype == dtype
    if order == "C":
        assert calls.count("gru_rmsprop_columns") == 2 and calls.count("gru_rmsprop") == 10
    else:                    # E, U, W, b, V are not C-contiguous; c (1-D) still is
        assert calls == ["gru_rmsprop"] * 2


def test_theano_sgd_step_with_a_cache_sharing_its_parameter_takes_the_numpy_rule():
    m, x, y = _theano_step_case("numba" if "numba" in all_backends() else "numpy",
                                np.float64)
    np.abs(m.c, out=m.c)
    m.mc = m.c                           # a user's aliasing: the NumPy rule's semantics
    c = m.c.copy()
    g = m.bptt(x, y)[5]
    m.sgd_step(x, y, 0.01)
    c *= 0.9                             # the rule with m and p one array
    c += (1.0 - 0.9) * g * g
    c -= 0.01 * g / np.sqrt(c + 1e-6)
    assert np.isfinite(c).all()
    np.testing.assert_array_equal(m.c, c)


# ------------------------------------------------- RNNKeras: one-hot windows as a gather

def test_one_hot_ids():
    from fastrnn.seed_models import _one_hot_ids
    X = np.zeros((2, 3, 4))
    X[0, :, 1] = 1
    X[1, :, 3] = 1
    X[1, 2, 3], X[1, 2, 0] = 0, 1
    np.testing.assert_array_equal(_one_hot_ids(X), [[1, 1, 1], [3, 3, 0]])
    assert _one_hot_ids(X.astype(bool)).dtype == np.intp
    for where, value in (((0, 0, 2), 1.0), ((0, 0, 1), 0.5), ((1, 1, 3), 2.0)):
        Y = X.copy()                           # a second 1; a 0.5 for the 1; a 2 for the 1
        Y[where] = value
        assert _one_hot_ids(Y) is None, (where, value)
    Y = X.copy()
    Y[0, 1] = 0                                                   # an all-zero vector
    assert _one_hot_ids(Y) is None
    assert _one_hot_ids(np.zeros((2, 3, 0))) is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", all_backends())
def test_keras_one_hot_gather_equals_the_input_product(monkeypatch, backend, dtype):
    """One-hot windows skip the first product: the loss and every gradient but
    ``weight_ih_l0``'s are bitwise those of the product path; that one is summed in
    another order."""
    from fastrnn import seed_models
    m, X, y, _ = keras_case(backend)
    if dtype == np.float32:
        w = m.get_weights()
        m = RNNKeras(5, X.shape[2], 4, backend=backend, dtype=np.float32, seed=0)
        m.set_weights(w)
    assert seed_models._one_hot_ids(m._inputs(X)) is not None
    L1, g1 = m.loss_and_grad(X, y)
    p1 = m.predict_proba(X)
    monkeypatch.setattr(seed_models, "_one_hot_ids", lambda X: None)
    L2, g2 = m.loss_and_grad(X, y)
    assert L1 == L2
    np.testing.assert_array_equal(p1, m.predict_proba(X))
    for k in g1:
        if k == "weight_ih_l0":
            tol = 1e-5 if dtype == np.float32 else 1e-13
            np.testing.assert_allclose(g1[k], g2[k], rtol=tol, atol=tol * np.abs(g2[k]).max())
            assert (g1[k] != 0).any()
        else:
            np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def test_keras_inputs_that_are_not_one_hot_take_the_product():
    m, X, y, _ = keras_case("numpy")
    Xs = X.astype(float) * 0.75
    Xs[:, :, 0] += 0.25                                # every vector now has two entries
    w = m.get_weights()
    L, _ = m.loss_and_grad(Xs, y)
    assert L == pytest.approx(keras_loss(w, Xs, y, False), rel=1e-12)


def test_stack_forward_checks_the_one_hot_ids():
    from fastrnn import models
    be = fastrnn.get_backend("numpy")
    rng = np.random.default_rng(0)
    T, B, I, H = 3, 2, 5, 4
    layers = [(rng.standard_normal((4 * H, I)), rng.standard_normal((4 * H, H)), None, None)]
    X0 = np.zeros((T, B, I))
    z = np.zeros((1, B, H))
    mask = np.ones((T, B))
    ids = np.zeros((T, B), np.intp)
    for bad, msg in ((ids.astype(np.int32), "intp array of shape"),
                     (ids[:2], r"shape \(3, 2\)"),
                     (ids + 5, r"must lie in \[0, 5\), got values in \[5, 5\]"),
                     (ids - 1, r"got values in \[-1, -1\]")):
        with pytest.raises(ValueError, match=msg):
            models.stack_forward(be, "lstm", {"hard_gates": False}, layers, X0, z, z.copy(),
                                 mask, X0_ids=bad)


@pytest.mark.parametrize("size, n", [(57, 5120), (1000, 700), (3, 0)])
def test_one_hot_weight_grad_is_the_product(size, n):
    """Groups of every length (one row, a few, more than ``_sum_groups``'s ``short``)
    against ``gxᵀ X`` with the one-hot ``X``."""
    from fastrnn.models import _one_hot_weight_grad
    rng = np.random.default_rng(size)
    ids = rng.integers(0, size, n).astype(np.intp)
    gx = rng.standard_normal((n, 9))
    X = np.zeros((n, size))
    X[np.arange(n), ids] = 1.0
    got = _one_hot_weight_grad(ids, gx, size)
    assert got.shape == (9, size) and got.flags.c_contiguous
    np.testing.assert_allclose(got, gx.T @ X, rtol=1e-12, atol=1e-12)
    if n:
        counts = np.bincount(ids, minlength=size)
        assert (counts > 16).any() == (size < 100) and (counts == 1).any() == (size > 100)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_groups_adds_rows_one_after_another(dtype):
    """Every group's sum is bit for bit ``r0 + r1 + ...`` in row order, whichever way it
    was summed: lengths 1 to 40 around the ``short`` limit, scales 1e-4 to 1e4 so the
    order shows in the last bits."""
    from fastrnn.models import _embedding_rows, _sum_groups
    rng = np.random.default_rng(7)
    lens = np.concatenate([np.arange(1, 41), rng.integers(1, 5, 200)])
    rng.shuffle(lens)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    rows = (rng.standard_normal((int(lens.sum()), 13))
            * 10.0 ** rng.integers(-4, 5, (int(lens.sum()), 1))).astype(dtype)
    want = []
    for a, m in zip(starts, lens):
        acc = rows[a].copy()
        for r in rows[a + 1:a + m]:
            acc += r
        want.append(acc)
    got = _sum_groups(rows, starts)
    assert got.dtype == dtype and np.array_equal(got, np.array(want))
    # the embedding gradient: ids in increasing order, each id's rows in order of position
    xa = rng.integers(0, 50, (30, 7))
    dX = rows[:210].reshape(30, 7, 13)
    ids, sums = _embedding_rows(xa, dX)
    assert np.array_equal(ids, np.unique(xa))
    flat = dX.reshape(210, 13)
    for i, v in enumerate(ids):
        at = flat[xa.reshape(-1) == v]
        acc = at[0].copy()
        for r in at[1:]:
            acc += r
        assert np.array_equal(sums[i], acc), v

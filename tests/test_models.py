"""fastrnn.RNN / GRU / LSTM language models: gradients, backends, padding, state, validation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn.models import GRU, LSTM, RNN

MODELS = [
    (RNN, {}),
    (GRU, {}),
    (GRU, {"reset_after": False}),
    (GRU, {"hard_gates": True}),
    (LSTM, {}),
    (LSTM, {"hard_gates": True}),
]
IDS = [c.__name__ + "".join(f"-{k}" for k in kw) for c, kw in MODELS]


def batch(T=4, B=3, V=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))


def rand_hidden(model, B, rng):
    shape = (model.num_layers, B, model.hidden_size)
    h = rng.uniform(-0.5, 0.5, shape)
    return (h, rng.uniform(-0.5, 0.5, shape)) if model.cell == "lstm" else h


@pytest.mark.parametrize("cls,kw", MODELS, ids=IDS)
def test_gradients_finite_differences(cls, kw):
    """Every parameter entry of a 2-layer float64 model, central differences, with padding."""
    V = 5
    m = cls(V, 3, num_layers=2, embedding_dim=2, dtype=np.float64, backend="numpy", seed=1, **kw)
    for a in m.parameters().values():     # larger weights than the default init: more signal
        a *= 4.0
    x, y = batch(T=3, B=2, V=V, seed=2)
    mask = np.array([[1, 1], [1, 1], [0, 1]])
    h = rand_hidden(m, 2, np.random.default_rng(3))
    L, g, _ = m.loss_and_grad(x, y, mask, hidden=h)
    assert L == pytest.approx(m.loss(x, y, mask, hidden=h)[0], rel=1e-14)
    eps = 1e-6
    for name, a in m.parameters().items():
        fd = np.empty_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            lp = m.loss(x, y, mask, hidden=h)[0]
            a[idx] = old - eps
            lm = m.loss(x, y, mask, hidden=h)[0]
            a[idx] = old
            fd[idx] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(g[name], fd, rtol=1e-6, atol=1e-9, err_msg=name)


def compiled_backends():
    """Every compiled backend (numba, cython ...), skipped with the reason when it cannot run."""
    out = []
    for name, ok in fastrnn.available_backends().items():
        if name == "numpy":
            continue
        reason = None
        if ok is not True:
            reason = f"backend {name} unavailable: {ok}"
        elif not hasattr(fastrnn.get_backend(name), "lstm_layer_forward"):
            reason = f"backend {name} has no GRU/LSTM layer kernels"
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("be", compiled_backends())
@pytest.mark.parametrize("cls,kw", MODELS, ids=IDS)
def test_backend_matches_numpy(cls, kw, be):
    x, y = batch(T=6, B=3, V=11, seed=4)
    mask = np.ones((6, 3))
    mask[4:, 1] = 0
    for dt, rtol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        ref = cls(11, 5, num_layers=2, embedding_dim=4, dtype=np.float64, backend="numpy", seed=5, **kw)
        fast = cls(11, 5, num_layers=2, embedding_dim=4, dtype=dt, backend=be, seed=5, **kw)
        ref.load_state_dict(fast.state_dict())      # the same (possibly float32-rounded) weights
        L0, g0, h0 = ref.loss_and_grad(x, y, mask)
        L1, g1, h1 = fast.loss_and_grad(x, y, mask)
        assert L1 == pytest.approx(L0, rel=rtol)
        for k in g0:
            assert g1[k].dtype == dt
            scale = max(1e-3, np.abs(g0[k]).max())
            assert np.abs(g1[k] - g0[k]).max() <= rtol * scale, k
        for a, b in zip(np.atleast_1d(h0) if cls is not LSTM else h0,
                        np.atleast_1d(h1) if cls is not LSTM else h1):
            np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol)
        o0 = ref.forward(x, output="probs")[0]
        o1 = fast.forward(x, output="probs")[0]
        np.testing.assert_allclose(o1, o0, rtol=rtol, atol=rtol * 1e-2)


def _one_at_a_time(m, seqs):
    """Sum of per-sequence losses and sum-weighted gradients, final states."""
    tot, grads, finals, n = 0.0, None, [], 0
    for xs, ys in seqs:
        L, g, h = m.loss_and_grad(np.asarray(xs)[:, None], np.asarray(ys)[:, None])
        k = len(xs)
        tot += L * k
        n += k
        grads = {a: k * v for a, v in g.items()} if grads is None else \
            {a: grads[a] + k * v for a, v in g.items()}
        finals.append(h)
    return tot / n, {a: v / n for a, v in grads.items()}, finals


def _pad(seqs, left):
    T = max(len(s[0]) for s in seqs)
    B = len(seqs)
    x = np.zeros((T, B), int)
    y = np.zeros((T, B), int)
    mask = np.zeros((T, B))
    for b, (xs, ys) in enumerate(seqs):
        k = len(xs)
        sl = slice(T - k, T) if left else slice(0, k)
        x[sl, b], y[sl, b], mask[sl, b] = xs, ys, 1
    return x, y, mask


def _check_batched(m, seqs, left, rtol):
    x, y, mask = _pad(seqs, left)
    L, g, h = m.loss_and_grad(x, y, mask)
    L1, g1, finals = _one_at_a_time(m, seqs)
    assert L == pytest.approx(L1, rel=rtol)
    for k in g:
        np.testing.assert_allclose(g[k], g1[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
    for b, hb in enumerate(finals):
        if m.cell == "lstm":
            np.testing.assert_allclose(h[0][:, b], hb[0][:, 0], rtol=rtol, atol=1e-13)
            np.testing.assert_allclose(h[1][:, b], hb[1][:, 0], rtol=rtol, atol=1e-13)
        else:
            np.testing.assert_allclose(h[:, b], hb[:, 0], rtol=rtol, atol=1e-13)


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("cls,kw", MODELS, ids=IDS)
def test_padded_batch_equals_one_at_a_time(cls, kw, left):
    m = cls(9, 4, num_layers=2, dtype=np.float64, seed=6, **kw)
    rng = np.random.default_rng(7)
    seqs = [(rng.integers(0, 9, k), rng.integers(0, 9, k)) for k in (5, 1, 3)]
    _check_batched(m, seqs, left, 1e-10)


_MODEL_CACHE = {}


@settings(deadline=None, max_examples=8, derandomize=True)
@given(cell=st.sampled_from(["rnn", "gru", "lstm"]),
       lengths=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       left=st.booleans(), seed=st.integers(0, 2**16))
def test_property_batched_equals_one_at_a_time(cell, lengths, left, seed):
    key = cell
    if key not in _MODEL_CACHE:
        cls = {"rnn": RNN, "gru": GRU, "lstm": LSTM}[cell]
        _MODEL_CACHE[key] = cls(6, 3, num_layers=2, embedding_dim=2, dtype=np.float64, seed=8)
    m = _MODEL_CACHE[key]
    rng = np.random.default_rng(seed)
    seqs = [(rng.integers(0, 6, k), rng.integers(0, 6, k)) for k in lengths]
    _check_batched(m, seqs, left, 1e-9)


@pytest.mark.parametrize("cls,kw", MODELS[:2] + MODELS[4:5], ids=["RNN", "GRU", "LSTM"])
def test_chunks_carry_hidden(cls, kw):
    """Forward over two chunks with the state carried equals one pass over the whole."""
    m = cls(8, 4, num_layers=2, dtype=np.float64, seed=9, **kw)
    x, _ = batch(T=7, B=2, V=8, seed=10)
    whole, hw = m.forward(x)
    a, ha = m.forward(x[:3])
    b, hb = m.forward(x[3:], hidden=ha)
    np.testing.assert_allclose(np.concatenate([a, b]), whole, rtol=1e-12, atol=1e-13)
    for u, v in zip(np.atleast_1d(hb) if cls is not LSTM else hb,
                    np.atleast_1d(hw) if cls is not LSTM else hw):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)


def test_outputs_and_loss_consistent():
    m = GRU(10, 6, dtype=np.float64, seed=11)
    x, y = batch(T=5, B=2, V=10, seed=12)
    logp, _ = m.forward(x)
    probs, _ = m.forward(x, output="probs")
    logits, _ = m.forward(x, output="logits")
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(logp), probs, rtol=1e-12)
    np.testing.assert_allclose(logits - logits.max(-1, keepdims=True),
                               logp - logp.max(-1, keepdims=True), atol=1e-12)
    nll = -np.take_along_axis(logp, y[..., None], -1).mean()
    assert m.loss(x, y)[0] == pytest.approx(nll, rel=1e-12)


def test_parameters_are_live_and_optimizer_trains():
    optim = pytest.importorskip("fastrnn.optim")
    m = LSTM(12, 8, seed=13)
    p = m.parameters()
    assert list(p) == ["embedding.weight", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                       "bias_hh_l0", "decoder.weight", "decoder.bias"]
    assert all(a.dtype == np.float32 for a in p.values())
    x, y = batch(T=8, B=4, V=12, seed=14)
    opt = optim.Adam(p, lr=0.05)
    first = m.loss(x, y)[0]
    for _ in range(40):
        L, g, _ = m.loss_and_grad(x, y)
        opt.step(g)
    assert m.loss(x, y)[0] < 0.5 * first
    assert m.parameters()["weight_hh_l0"] is p["weight_hh_l0"]


def test_state_dict_round_trip():
    a = GRU(7, 3, num_layers=2, embedding_dim=5, bias=False, seed=1)
    assert "bias_ih_l0" not in a.parameters()
    b = GRU(7, 3, num_layers=2, embedding_dim=5, bias=False, seed=2)
    live = b.parameters()["weight_ih_l1"]
    b.load_state_dict(a.state_dict())
    assert b.parameters()["weight_ih_l1"] is live
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[k], v)
    x, y = batch(T=3, B=2, V=7)
    assert a.loss(x, y)[0] == b.loss(x, y)[0]
    sd = a.state_dict()
    sd["weight_hh_l0"] = sd["weight_hh_l0"][:1]
    with pytest.raises(ValueError, match=r"weight_hh_l0.*expected \(9, 3\)"):
        b.load_state_dict(sd)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({})


def test_init_hidden_and_seed():
    m = LSTM(5, 3, num_layers=2, seed=0)
    h, c = m.init_hidden(4)
    assert h.shape == c.shape == (2, 4, 3) and not h.any()
    assert GRU(5, 3, seed=0).init_hidden(2).shape == (1, 2, 3)
    np.testing.assert_array_equal(RNN(5, 3, seed=3).parameters()["weight_hh_l0"],
                                  RNN(5, 3, seed=3).parameters()["weight_hh_l0"])


def test_validation_messages():
    m = GRU(8000, 4, seed=0)
    x = np.zeros((3, 2), int)
    x[1, 1] = 8000
    with pytest.raises(ValueError, match="token id 8000 out of range for vocabulary of 8000"):
        m.forward(x)
    with pytest.raises(ValueError, match=r"shape \(T, B\)"):
        m.forward([1, 2, 3])
    with pytest.raises(TypeError, match="integer token ids"):
        m.forward(np.zeros((2, 2)))
    x[1, 1] = 0
    with pytest.raises(ValueError, match=r"y must have the shape of x \(3, 2\)"):
        m.loss(x, np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="only 0 and 1"):
        m.loss(x, x, mask=np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="mask selects no tokens"):
        m.loss(x, x, mask=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(num_layers, B, H\) = \(1, 2, 4\), got \(1, 3, 4\)"):
        m.forward(x, hidden=np.zeros((1, 3, 4)))
    with pytest.raises(TypeError, match="pair"):
        LSTM(5, 4).forward(x[:, :1] % 5, hidden=np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        m.forward(x, hidden=np.full((1, 2, 4), np.nan))
    with pytest.raises(TypeError, match="float32 or float64"):
        GRU(5, 4, dtype=np.int32)
    with pytest.raises(ValueError, match="hidden_size must be >= 1, got 0"):
        LSTM(5, 0)
    with pytest.raises(TypeError, match="reset_after must be True or False"):
        GRU(5, 4, reset_after=1)
    with pytest.raises(ValueError, match="unknown backend"):
        RNN(5, 4, backend="fortran")

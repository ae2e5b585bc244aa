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


# ----------------------------------------------------------------------------- live-parameter checks


from fastrnn.models import stack_forward  # noqa: E402

from isolated import run_isolated  # noqa: E402


def _compiled_or_skip(name):
    ok = fastrnn.available_backends()[name]
    if ok is not True:
        pytest.skip(f"backend {name} unavailable: {ok}")


@pytest.mark.parametrize("be", ["cython", "numba"])
def test_replaced_decoder_is_an_error_not_a_crash(be):
    """Regression: a (3, H) decoder let ids < V index logits of width 3."""
    _compiled_or_skip(be)
    out = run_isolated(f"""
        import numpy as np
        from fastrnn.models import RNN, GRU, LSTM
        for cls in (RNN, GRU, LSTM):
            m = cls(50, 8, backend={be!r}, seed=0)
            p = m.parameters()
            p["decoder.weight"] = np.zeros((3, 8), np.float32)
            p["decoder.bias"] = np.zeros(3, np.float32)
            for call in (lambda: m.loss_and_grad([[1, 2], [3, 4], [5, 49]],
                                                 [[2, 3], [4, 5], [49, 1]]),
                         lambda: m.forward([[1, 2], [3, 4], [5, 49]])):
                try:
                    call()
                    print("NO ERROR")
                except ValueError as exc:
                    print("ValueError:", exc)
        m = RNN(50, 8, backend={be!r}, seed=0)
        m.parameters()["bias_hh_l0"] = np.zeros(1, np.float32)   # numba read past its end
        try:
            m.loss([[1, 2]], [[2, 3]])
            print("NO ERROR")
        except ValueError as exc:
            print("ValueError:", exc)
        """)
    assert "NO ERROR" not in out
    assert out.count("parameter decoder.weight must have shape (50, 8), got (3, 8)") == 6, out
    assert "parameter bias_hh_l0 must have shape (8,), got (1,)" in out


def _replace(name, value):
    def edit(p):
        p[name] = value(p[name]) if callable(value) else value
    return edit


_BAD_PARAMS = [
    ("decoder-short", _replace("decoder.weight", lambda a: a[:3].copy()), ValueError,
     r"parameter decoder.weight must have shape \(11, 4\), got \(3, 4\)"),
    ("decoder-bias-1", _replace("decoder.bias", lambda a: a[:1].copy()), ValueError,
     r"parameter decoder.bias must have shape \(11,\), got \(1,\)"),
    ("bias-hh-1", _replace("bias_hh_l0", lambda a: a[:1].copy()), ValueError,
     r"parameter bias_hh_l0 must have shape \(\d+,\), got \(1,\)"),
    ("embedding-narrow", _replace("embedding.weight", lambda a: a[:, :2].copy()), ValueError,
     r"parameter embedding.weight must have shape \(11, 5\), got \(11, 2\)"),
    ("weight-ih-l1-wide", _replace("weight_ih_l1", lambda a: np.zeros((a.shape[0], 9), a.dtype)),
     ValueError, r"parameter weight_ih_l1 must have shape \(\d+, 4\), got \(\d+, 9\)"),
    ("float64", _replace("weight_hh_l0", lambda a: a.astype(np.float64)), TypeError,
     "parameter weight_hh_l0 must have dtype float32 .*got float64"),
    ("float16", _replace("decoder.weight", lambda a: a.astype(np.float16)), TypeError,
     "parameter decoder.weight must have dtype float32 .*got float16"),
    ("fortran", _replace("weight_hh_l0", lambda a: np.asfortranarray(a)), ValueError,
     "parameter weight_hh_l0 must be C-contiguous"),
    ("strided", _replace("decoder.bias", lambda a: np.zeros(2 * a.size, a.dtype)[::2]), ValueError,
     "parameter decoder.bias must be C-contiguous"),
    ("list", _replace("bias_ih_l0", lambda a: a.tolist()), TypeError,
     "parameter bias_ih_l0 must be a numpy array, got list"),
    ("missing", lambda p: p.pop("weight_hh_l1"), ValueError, r"missing \['weight_hh_l1'\]"),
    ("extra", _replace("weight_hh_l2", np.zeros((4, 4), np.float32)), ValueError,
     r"unexpected \['weight_hh_l2'\]"),
]


@pytest.mark.parametrize("edit,exc,match", [c[1:] for c in _BAD_PARAMS],
                         ids=[c[0] for c in _BAD_PARAMS])
@pytest.mark.parametrize("cls,kw", MODELS[:2] + MODELS[4:5], ids=["RNN", "GRU", "LSTM"])
def test_replaced_parameter_entries_are_checked(cls, kw, edit, exc, match):
    """Every entry of the live dict is checked (presence, type, dtype, layout, exact shape)
    on every call, before any kernel runs; then a good entry makes the model usable again."""
    m = cls(11, 4, num_layers=2, embedding_dim=5, backend="numpy", seed=0, **kw)
    good = m.state_dict()
    x, y = batch(T=3, B=2, V=11)
    edit(m.parameters())
    for call in (lambda: m.loss_and_grad(x, y), lambda: m.loss(x, y), lambda: m.forward(x)):
        with pytest.raises(exc, match=match):
            call()
    m.load_state_dict(good)         # repairs an unusable entry, drops an unexpected one
    ref = cls(11, 4, num_layers=2, embedding_dim=5, backend="numpy", seed=0, **kw)
    assert m.loss(x, y)[0] == ref.loss(x, y)[0]


def test_stack_forward_checks_layer_shapes():
    """The backstop in stack_forward for any caller: inconsistent layers never reach a kernel."""
    rng = np.random.default_rng(0)
    T, B, I, H = 3, 2, 4, 5
    X = rng.standard_normal((T, B, I))
    h0 = np.zeros((1, B, H))
    mask = np.ones((T, B))
    good = [rng.standard_normal((3 * H, I)), rng.standard_normal((3 * H, H)),
            np.zeros(3 * H), np.zeros(3 * H)]
    flags = {"reset_after": True, "hard_gates": False}
    be = fastrnn.get_backend("numpy")
    stack_forward(be, "gru", flags, [tuple(good)], X, h0, None, mask)
    for k, bad, match in ((1, np.zeros((3 * H, H - 1)),        # H read from W_hh: 4
                           r"layer 0 W_ih must have shape \(12, 4\), got \(15, 4\)"),
                          (1, np.zeros((H, H)), r"layer 0 W_hh must have shape \(15, 5\)"),
                          (0, np.zeros((3 * H, I + 1)), r"layer 0 W_ih must have shape \(15, 4\)"),
                          (3, np.zeros(1), r"layer 0 b_hh must have shape \(15,\), got \(1,\)"),
                          (2, np.zeros(3 * H, np.float32), r"layer 0 b_ih must have dtype float64"),
                          (0, np.asfortranarray(good[0]), "layer 0 W_ih must be C-contiguous")):
        lay = list(good)
        lay[k] = bad
        with pytest.raises((ValueError, TypeError), match=match):
            stack_forward(be, "gru", flags, [tuple(lay)], X, h0, None, mask)
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 2, 5\)"):
        stack_forward(be, "gru", flags, [tuple(good)], X, np.zeros((1, 3, H)), None, mask)
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 2\)"):
        stack_forward(be, "gru", flags, [tuple(good)], X, h0, None, np.ones((2, 2)))


def test_values_cast_before_the_finiteness_check():
    """1e300 is finite in float64 but inf in float32: rejected, naming the key."""
    m = GRU(6, 3, seed=0)                                    # float32
    x = np.zeros((2, 1), int)
    with pytest.raises(ValueError, match=r"hidden holds 1 non-finite value\(s\) \(in float32\)"):
        h = np.zeros((1, 1, 3))
        h[0, 0, 1] = 1e300
        m.forward(x, hidden=h)
    lstm = LSTM(6, 3, seed=0)
    c = np.zeros((1, 1, 3))
    c[0, 0, 0] = -1e300
    with pytest.raises(ValueError, match="c0 holds 1 non-finite"):
        lstm.forward(x, hidden=(np.zeros((1, 1, 3)), c))
    before = m.state_dict()
    sd = {k: v.astype(np.float64) for k, v in before.items()}
    sd["weight_hh_l0"][0, 0] = 1e300
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] holds 1 non-finite "
                                         r"value\(s\) \(NaN or inf in float32\)"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():                      # nothing changed
        np.testing.assert_array_equal(v, before[k])
    tsd = {("rnn." + k if not k.startswith(("embedding.", "decoder.")) else k): v
           for k, v in sd.items()}
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] holds 1 non-finite"):
        GRU.from_torch_state_dict(tsd, dtype=np.float32)
    assert GRU.from_torch_state_dict(tsd).dtype == np.float64   # representable in float64


def test_from_torch_state_dict_checks_ndim():
    sd = GRU(6, 3, seed=0).to_torch_state_dict(tensors=False)
    for key in ("embedding.weight", "rnn.weight_hh_l0", "decoder.weight"):
        bad = dict(sd)
        bad[key] = sd[key].reshape(-1)
        with pytest.raises(ValueError, match=rf"state_dict\['{key}'\] must be 2-D .*got shape "
                                             rf"\({sd[key].size},\)"):
            GRU.from_torch_state_dict(bad)
    bad = dict(sd)
    bad["rnn.weight_hh_l0"] = np.float32(1.0)
    with pytest.raises(ValueError, match=r"rnn.weight_hh_l0'\] must be 2-D"):
        GRU.from_torch_state_dict(bad)


# ------------------------------------------------------------- reused gradient arrays

@pytest.mark.parametrize("be", ["numpy"] + compiled_backends())
@pytest.mark.parametrize("cls,kw", [MODELS[0], MODELS[1], MODELS[2], MODELS[4]],
                         ids=["RNN", "GRU", "GRU-reset_after", "LSTM"])
@pytest.mark.parametrize("bias", [True, False])
def test_grads_passed_back_are_overwritten_with_the_same_values(cls, kw, be, bias):
    """``loss_and_grad(..., grads=g)`` writes into ``g``'s own arrays exactly what a fresh
    call returns, whatever ``g`` held before (stale values, a different batch's gradient)."""
    m = cls(13, 5, num_layers=2, bias=bias, dtype=np.float64, backend=be, seed=2, **kw)
    x, y = batch(T=5, B=3, V=13, seed=6)
    x2, y2 = batch(T=5, B=3, V=13, seed=7)
    _, g, _ = m.loss_and_grad(x2, y2)          # another batch touches other embedding rows
    for a in g.values():
        a += 3.0                                # and stale garbage on top
    arrays = dict(g)
    L_fresh, fresh, h_fresh = m.loss_and_grad(x, y)
    L, same, h = m.loss_and_grad(x, y, grads=g)
    assert same is g and L == L_fresh
    assert all(g[n] is a for n, a in arrays.items())
    assert list(g) == list(fresh) == list(m.parameters())
    for n in fresh:
        np.testing.assert_array_equal(g[n], fresh[n], err_msg=n)
    np.testing.assert_array_equal(np.asarray(h), np.asarray(h_fresh))


def test_grads_passed_back_are_checked():
    m = LSTM(11, 4, dtype=np.float32, backend="numpy", seed=0)
    x, y = batch(T=3, B=2, V=11)
    _, g, _ = m.loss_and_grad(x, y)
    with pytest.raises(TypeError, match="grads must be a dict name -> array, got list"):
        m.loss_and_grad(x, y, grads=list(g.values()))
    bad = dict(g)
    del bad["decoder.bias"]
    with pytest.raises(ValueError, match=r"grads must hold exactly .*missing \['decoder.bias'\]"):
        m.loss_and_grad(x, y, grads=bad)
    bad = dict(g, **{"decoder.weight": np.zeros((11, 5), np.float32)})
    with pytest.raises(ValueError, match=r"grads entry decoder.weight must have shape \(11, 4\), "
                                         r"got \(11, 5\)"):
        m.loss_and_grad(x, y, grads=bad)
    bad = dict(g, **{"decoder.bias": np.zeros(11)})
    with pytest.raises(TypeError, match="grads entry decoder.bias must have dtype float32"):
        m.loss_and_grad(x, y, grads=bad)
    ro = g["weight_hh_l0"].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\['weight_hh_l0'\] is read-only"):
        m.loss_and_grad(x, y, grads=dict(g, weight_hh_l0=ro))
    with pytest.raises(ValueError, match=r"shares memory with the model's parameters"):
        m.loss_and_grad(x, y, grads=m.parameters())
    same = g["bias_ih_l0"]                      # the two biases have the same shape
    with pytest.raises(ValueError, match=r"grads\['bias_ih_l0'\] and grads\['bias_hh_l0'\] "
                                         r"share memory"):
        m.loss_and_grad(x, y, grads=dict(g, bias_hh_l0=same))
    big = np.zeros(2 * g["bias_ih_l0"].size, np.float32)   # overlapping views
    halves = dict(g, bias_ih_l0=big[:16], bias_hh_l0=big[8:24])
    with pytest.raises(ValueError, match="share memory"):
        m.loss_and_grad(x, y, grads=halves)
    before = {n: a.copy() for n, a in g.items()}
    with pytest.raises(ValueError, match="out of range"):
        m.loss_and_grad(np.full((3, 2), 11), y, grads=g)
    for n in g:                                 # a rejected call leaves grads untouched
        np.testing.assert_array_equal(g[n], before[n])


@pytest.mark.parametrize("be", ["numpy"] + compiled_backends())
def test_logits_workspace_is_per_thread(be):
    """Two threads computing losses of different batches on one model concurrently each get
    their own logits buffer: every result equals the single-threaded one."""
    import threading
    m = LSTM(300, 8, dtype=np.float64, backend=be, seed=1)
    batches = [batch(T=6, B=4, V=300, seed=s) for s in range(2)]
    want = [m.loss_and_grad(x, y)[0] for x, y in batches]
    got = [[], []]

    def work(i):
        x, y = batches[i]
        for _ in range(30):
            got[i].append(m.loss_and_grad(x, y)[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert got[i] == [want[i]] * 30


def test_model_with_a_used_workspace_copies_and_pickles():
    """The per-thread logits buffer is scratch: copies and pickles work after a loss."""
    import copy
    import pickle
    m = LSTM(20, 4, dtype=np.float64, backend="numpy", seed=0)
    x, y = batch(T=3, B=2, V=20)
    want = m.loss(x, y)[0]
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert other.loss(x, y)[0] == want


# ------------------------------------------------------------- sparse embedding gradient

@pytest.mark.parametrize("be", ["numpy"] + compiled_backends())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", MODELS, ids=IDS)
def test_sparse_embedding_gradient_is_the_dense_one(cls, kw, dtype, be):
    """``sparse_embedding=True``: the rows of the tokens that occur, bitwise the dense
    gradient's rows (repeated tokens summed, padded positions included as zero rows); every
    other gradient and the loss unchanged."""
    from fastrnn.optim import RowSparse
    V = 40
    m = cls(V, 6, num_layers=2, embedding_dim=5, dtype=dtype, backend=be, seed=3, **kw)
    x, y = batch(T=7, B=4, V=V, seed=8)
    x[2, :] = x[0, 0]                          # the same token many times
    mask = np.ones((7, 4))
    mask[5:, 1] = 0
    L, dense, h = m.loss_and_grad(x, y, mask=mask)
    Ls, sparse, hs = m.loss_and_grad(x, y, mask=mask, sparse_embedding=True)
    e = sparse["embedding.weight"]
    assert isinstance(e, RowSparse) and Ls == L
    np.testing.assert_array_equal(e.indices, np.unique(x))
    assert e.values.dtype == dtype and e.shape == (V, 5)
    np.testing.assert_array_equal(e.toarray(), dense["embedding.weight"])
    assert list(sparse) == list(dense)
    for n in dense:
        if n != "embedding.weight":
            np.testing.assert_array_equal(sparse[n], dense[n], err_msg=n)
    np.testing.assert_array_equal(np.asarray(hs), np.asarray(h))


def test_sparse_embedding_with_grads_passed_back():
    from fastrnn.optim import RowSparse
    m = LSTM(30, 4, dtype=np.float64, backend="numpy", seed=0)
    x, y = batch(T=4, B=3, V=30, seed=1)
    x2, y2 = batch(T=4, B=3, V=30, seed=2)
    _, g, _ = m.loss_and_grad(x2, y2, sparse_embedding=True)
    _, fresh, _ = m.loss_and_grad(x, y, sparse_embedding=True)
    _, same, _ = m.loss_and_grad(x, y, grads=g, sparse_embedding=True)
    assert same is g and isinstance(g["embedding.weight"], RowSparse)
    np.testing.assert_array_equal(g["embedding.weight"].indices, fresh["embedding.weight"].indices)
    for n in fresh:
        a, b = g[n], fresh[n]
        if isinstance(a, RowSparse):
            a, b = a.values, b.values
        np.testing.assert_array_equal(a, b, err_msg=n)
    _, dense, _ = m.loss_and_grad(x, y)        # a dense dict's embedding entry is replaced
    m.loss_and_grad(x, y, grads=dense, sparse_embedding=True)
    assert isinstance(dense["embedding.weight"], RowSparse)
    with pytest.raises(TypeError, match="grads entry embedding.weight must be a numpy array, "
                                        "got RowSparse"):
        m.loss_and_grad(x, y, grads=g)         # back to dense: the sparse entry is refused
    bad = dict(g)
    del bad["embedding.weight"]
    with pytest.raises(ValueError, match="grads must hold an 'embedding.weight' entry"):
        m.loss_and_grad(x, y, grads=bad, sparse_embedding=True)
    bad = dict(g, **{"decoder.bias": np.zeros(31)})
    with pytest.raises(ValueError, match=r"grads entry decoder.bias must have shape \(30,\)"):
        m.loss_and_grad(x, y, grads=bad, sparse_embedding=True)
    with pytest.raises(TypeError, match="sparse_embedding must be True or False, got str"):
        m.loss_and_grad(x, y, sparse_embedding="yes")


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("opt_name", ["SGD", "Momentum", "RMSprop", "Adam"])
def test_training_with_sparse_embedding_equals_dense(opt_name, clip):
    """Five steps of every optimizer give the same weights either way: bitwise without
    norm clipping (SGD touches only the rows, the others apply the dense rule); with it, to
    float32 rounding, as the norm is summed in another order (the zero rows skipped)."""
    from fastrnn import optim
    runs = []
    for sparse in (False, True):
        m = LSTM(25, 6, num_layers=2, dtype=np.float32, backend="numpy", seed=4)
        opt = getattr(optim, opt_name)(m.parameters(), lr=0.05)
        norms = []
        for s in range(5):
            x, y = batch(T=5, B=2, V=25, seed=10 + s)
            _, g, _ = m.loss_and_grad(x, y, sparse_embedding=sparse)
            if clip:
                norms.append(optim.clip_grad_norm(g, 0.3))
                optim.clip_grad_value(g, 0.02)
            opt.step(g)
        assert not clip or max(norms) > 0.3     # the norm clipping did act
        runs.append({n: a.copy() for n, a in m.parameters().items()})
    for n in runs[0]:
        if clip:
            np.testing.assert_allclose(runs[1][n], runs[0][n], rtol=1e-5, atol=1e-7, err_msg=n)
        else:
            np.testing.assert_array_equal(runs[1][n], runs[0][n], err_msg=n)


@pytest.mark.parametrize("cell, flags", [("lstm", {"hard_gates": False}),
                                         ("gru", {"reset_after": False, "hard_gates": False}),
                                         ("rnn", {})])
@pytest.mark.parametrize("one_hot", [False, True])
def test_stack_backward_writes_into_out(cell, flags, one_hot):
    """``stack_backward(out=...)``: the gradients land in the given arrays (one-hot first
    layer too), bit for bit what new arrays get; ``None`` entries get new arrays."""
    from fastrnn.models import stack_backward
    be = fastrnn.get_backend("numpy")
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    T, B, I, H = 4, 3, 6, 5
    rng = np.random.default_rng(9)
    layers = [tuple(rng.uniform(-0.5, 0.5, s) for s in [(G * H, i), (G * H, H), (G * H,), (G * H,)])
              for i in (I, H)]
    ids = rng.integers(0, I, (T, B)).astype(np.intp)
    X0 = np.eye(I)[ids] if one_hot else rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((2, B, H))
    c0 = rng.standard_normal((2, B, H)) if cell == "lstm" else None
    mask = np.ones((T, B))
    caches = stack_forward(be, cell, flags, layers, X0, h0, c0, mask,
                           X0_ids=ids if one_hot else None)
    dTop = rng.standard_normal((T, B, H))
    want, _, _, _ = stack_backward(be, cell, flags, layers, caches, mask, dTop)
    out = [tuple(np.full_like(p, np.nan) for p in lay) for lay in layers]
    out[1] = out[1][:2] + (None, None)
    got, _, _, _ = stack_backward(be, cell, flags, layers, caches, mask, dTop, out=out)
    for k in range(2):
        for i in range(4):
            if out[k][i] is not None:
                assert got[k][i] is out[k][i]
            np.testing.assert_array_equal(got[k][i], want[k][i])

"""The Cython layer kernels (``fastrnn._kernels._cells_cy``) against the NumPy reference.

Every kernel of the numba table beyond the tutorial RNN: ``rnn_layer_*``, ``gru_layer_*``,
``lstm_layer_*``, ``rnn_softmax_xent``, ``rnn_log_softmax``.  float64 must agree with the
float64 reference to rtol 1e-10; float32 with the float64 reference to rtol 1e-4 (atol
1e-5 * max|ref|).  Flags, padding masks, degenerate sizes (T=1, B=1, H=1), the hard-sigmoid
kinks at +-2.5, saturated sigmoids, and the language models with ``backend="cython"``.
"""
import importlib
import inspect
import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from fastrnn.models import GRU, LSTM, RNN

try:
    cy = importlib.import_module("fastrnn._kernels._cells_cy")
except ImportError as exc:  # not built (no compiler, or a pure-Python install)
    pytest.skip(f"fastrnn._kernels._cells_cy is not built ({exc}); build it with "
                "`FASTRNN_CYTHON_ONLY=_cells_cy python setup.py build_ext --inplace`",
                allow_module_level=True)

KERNELS = ["rnn_layer_forward", "rnn_layer_backward", "gru_layer_forward", "gru_layer_backward",
           "lstm_layer_forward", "lstm_layer_backward", "rnn_softmax_xent", "rnn_log_softmax"]

# (cell, flags passed after the mask): gru (reset_after, hard_gates), lstm (hard_gates,)
CASES = [("rnn", ())]
CASES += [("gru", (ra, hg)) for ra in (True, False) for hg in (False, True)]
CASES += [("lstm", (hg,)) for hg in (False, True)]
CASE_IDS = ["rnn"] + [f"gru-ra{int(ra)}-hard{int(hg)}" for ra in (True, False) for hg in (False, True)]
CASE_IDS += [f"lstm-hard{int(hg)}" for hg in (False, True)]

# (T, B, H)
SHAPES = [(7, 5, 9), (1, 3, 4), (6, 1, 5), (5, 4, 1), (1, 1, 1), (11, 3, 13)]
SHAPE_IDS = ["random", "T1", "B1", "H1", "all1", "odd"]

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _mask(kind, T, B):
    m = np.ones((T, B))
    if kind == "padded":
        for b in range(B):              # ragged ends, one sequence padded at the start
            if b % 3 == 1:
                m[T - 1 - (b % T):, b] = 0
            elif b % 3 == 2:
                m[:min(b, T - 1), b] = 0
        if T > 1:
            m[T - 1, 0] = 0             # the first sequence's last step is padding
    return m


def _inputs(cell, T, B, H, seed, scale=1.5):
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    return dict(
        Xp=rng.normal(0.0, scale, (T, B, G)),
        W_hh=rng.uniform(-1, 1, (G, H)) * (1.5 / np.sqrt(H)),
        b_hh=rng.uniform(-0.5, 0.5, G),
        h0=rng.uniform(-0.8, 0.8, (B, H)),
        c0=rng.uniform(-1.5, 1.5, (B, H)),
        dHs=rng.normal(0.0, 1.0, (T, B, H)),
    )


def _run(mod, cell, flags, inp, mask, dtype):
    """Forward then backward through ``mod``'s kernels; every output array by name."""
    a = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in inp.items()}
    m = np.ascontiguousarray(mask, dtype=dtype)
    T, B, G = a["Xp"].shape
    H = a["h0"].shape[1]
    out = {"Hs": np.full((T + 1, B, H), np.nan, dtype)}
    if cell == "rnn":
        mod.rnn_layer_forward(a["Xp"], a["W_hh"], a["b_hh"], a["h0"], m, out["Hs"])
        out["dG"] = np.full((T, B, G), np.nan, dtype)
        out["dh0"] = np.full((B, H), np.nan, dtype)
        mod.rnn_layer_backward(a["W_hh"], m, out["Hs"], a["dHs"], out["dG"], out["dh0"])
    elif cell == "gru":
        out["cache"] = np.full((T, B, 4 * H), np.nan, dtype)
        mod.gru_layer_forward(a["Xp"], a["W_hh"], a["b_hh"], a["h0"], m, *flags, out["Hs"],
                              out["cache"])
        for k in ("dGx", "dGh"):
            out[k] = np.full((T, B, G), np.nan, dtype)
        out["dh0"] = np.full((B, H), np.nan, dtype)
        mod.gru_layer_backward(a["W_hh"], m, *flags, out["Hs"], out["cache"], a["dHs"],
                               out["dGx"], out["dGh"], out["dh0"])
    else:
        out["Cs"] = np.full((T + 1, B, H), np.nan, dtype)
        out["cache"] = np.full((T, B, 4 * H), np.nan, dtype)
        mod.lstm_layer_forward(a["Xp"], a["W_hh"], a["b_hh"], a["h0"], a["c0"], m, *flags,
                               out["Hs"], out["Cs"], out["cache"])
        out["dG"] = np.full((T, B, G), np.nan, dtype)
        out["dh0"] = np.full((B, H), np.nan, dtype)
        out["dc0"] = np.full((B, H), np.nan, dtype)
        mod.lstm_layer_backward(a["W_hh"], m, *flags, out["Hs"], out["Cs"], out["cache"],
                                a["dHs"], out["dG"], out["dh0"], out["dc0"])
    return out


def _close(got, ref, dtype, what=""):
    assert got.dtype == dtype, what
    if dtype == np.float64:
        rtol, atol = 1e-10, 1e-13 * max(float(np.abs(ref).max(initial=0.0)), 1e-300)
    else:
        rtol, atol = 1e-4, 1e-5 * float(np.abs(ref).max(initial=0.0))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=what)


# ----------------------------------------------------------------------------- contract

def test_module_has_every_layer_kernel_of_the_reference_with_its_signature():
    for name in KERNELS:
        ref_params = list(inspect.signature(getattr(R, name)).parameters)
        fn = getattr(cy, name)
        # Cython binds fused def functions with their signature (binding=True default in 3.x)
        cy_params = list(inspect.signature(fn).parameters)
        assert cy_params == ref_params, name


def test_cython_backend_table_covers_the_numba_table():
    be = fastrnn.get_backend("cython")
    names = {k for k in vars(R) if k.startswith(("rnn_", "gru_", "lstm_")) and callable(getattr(R, k))}
    missing = sorted(n for n in names if not hasattr(be, n))
    assert not missing, f"cython backend lacks {missing}"
    for name in KERNELS:
        assert getattr(be, name) is getattr(cy, name)


# ----------------------------------------------------------------------------- layers

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mask_kind", ["full", "padded"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("cell,flags", CASES, ids=CASE_IDS)
def test_layer_matches_reference(cell, flags, shape, mask_kind, dtype):
    T, B, H = shape
    inp = _inputs(cell, T, B, H, seed=zlib.crc32(repr((cell, flags, shape)).encode()))
    mask = _mask(mask_kind, T, B)
    ref = _run(R, cell, flags, inp, mask, np.float64)
    got = _run(cy, cell, flags, inp, mask, dtype)
    assert set(got) == set(ref)
    for k in ref:
        _close(got[k], ref[k], dtype, f"{cell}{flags} {k}")
    # padding: the state is held exactly and no gradient reaches the gates there
    off = mask == 0
    if off.any():
        t, b = np.nonzero(off)
        np.testing.assert_array_equal(got["Hs"][t + 1, b], got["Hs"][t, b])
        for k in ("dG", "dGx", "dGh"):
            if k in got:
                assert np.all(got[k][t, b] == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,flags", CASES, ids=CASE_IDS)
def test_layer_fully_masked_sequence_passes_gradient_to_h0(cell, flags, dtype):
    T, B, H = 4, 2, 3
    inp = _inputs(cell, T, B, H, seed=5)
    mask = np.ones((T, B))
    mask[:, 1] = 0
    got = _run(cy, cell, flags, inp, mask, dtype)
    np.testing.assert_array_equal(got["Hs"][-1, 1], inp["h0"][1].astype(dtype))
    np.testing.assert_allclose(got["dh0"][1], inp["dHs"][:, 1].sum(axis=0).astype(dtype),
                               rtol=1e-6)
    if cell == "lstm":
        np.testing.assert_array_equal(got["Cs"][-1, 1], inp["c0"][1].astype(dtype))
        assert np.all(got["dc0"][1] == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,flags", CASES, ids=CASE_IDS)
def test_layer_saturated_gates_are_finite_and_match(cell, flags, dtype):
    """Pre-activations of +-1e4: no overflow in the sigmoid / tanh, same values as the reference."""
    T, B, H = 3, 4, 6
    inp = _inputs(cell, T, B, H, seed=11, scale=1.0)
    rng = np.random.default_rng(2)
    inp["Xp"] = rng.choice([-1e4, -100.0, -30.0, 30.0, 100.0, 1e4], size=inp["Xp"].shape)
    mask = np.ones((T, B))
    ref = _run(R, cell, flags, inp, mask, np.float64)
    with np.errstate(all="raise"):
        got = _run(cy, cell, flags, inp, mask, dtype)
    for k in ref:
        assert np.all(np.isfinite(got[k])), k
        if dtype == np.float32:
            # Saturated gates leave gradients of ~1e-13 that float32 cannot resolve (its
            # tanh is exactly +-1 beyond |x| ~ 9): compare on the scale of dHs (~1).
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-4,
                                       atol=1e-5 * max(float(np.abs(ref[k]).max()), 1.0),
                                       err_msg=f"{cell}{flags} {k}")
        else:
            _close(got[k], ref[k], dtype, f"{cell}{flags} {k}")


# Pre-activations around the kinks of the hard sigmoid at +-2.5 (and far away).
_KINK = [-1e4, -3.0, -2.5000002, -2.5, -2.4999998, -1.0, 0.0, 1.0, 2.4999998, 2.5, 2.5000002,
         3.0, 1e4]


def _inside(v, dtype):
    """Where the hard sigmoid of ``v`` (computed in ``dtype``) is strictly inside (0, 1)."""
    y = np.clip(dtype(0.2) * v.astype(dtype) + dtype(0.5), 0, 1)
    return (y > 0) & (y < 1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("gate", ["i", "f", "o"])
def test_lstm_hard_gate_gradient_at_the_kinks(gate, dtype):
    """One gate gets the kink values (others 0); its gradient is 0 exactly where the reference's is."""
    v = np.array(_KINK)
    H = v.size
    G = 4 * H
    blk = {"i": 0, "f": 1, "o": 3}[gate]
    Xp = np.zeros((1, 1, G))
    Xp[0, 0, 2 * H:3 * H] = 0.5                      # g = tanh(0.5)
    Xp[0, 0, blk * H:(blk + 1) * H] = v
    inp = dict(Xp=Xp, W_hh=np.zeros((G, H)), b_hh=np.zeros(G), h0=np.zeros((1, H)),
               c0=np.ones((1, H)), dHs=np.ones((1, 1, H)))
    mask = np.ones((1, 1))
    ref = _run(R, "lstm", (True,), inp, mask, dtype)       # the reference in the same dtype
    got = _run(cy, "lstm", (True,), inp, mask, dtype)
    for k in (0, 1, 3):                            # clip(0.2 x + 0.5, 0, 1) bit for bit
        np.testing.assert_array_equal(got["cache"][..., k * H:(k + 1) * H],
                                      ref["cache"][..., k * H:(k + 1) * H])
    dg = got["dG"][0, 0, blk * H:(blk + 1) * H]
    np.testing.assert_array_equal(dg != 0, _inside(v, dtype))
    np.testing.assert_array_equal(dg != 0, ref["dG"][0, 0, blk * H:(blk + 1) * H] != 0)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got["dG"], ref["dG"], rtol=rtol, atol=0)
    assert np.all(np.abs(v[dg != 0]) < 2.5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("gate,reset_after", [("r", True), ("z", True), ("z", False)])
def test_gru_hard_gate_gradient_at_the_kinks(gate, reset_after, dtype):
    v = np.array(_KINK)
    H = v.size
    G = 3 * H
    blk = {"r": 0, "z": 1}[gate]
    Xp = np.zeros((1, 1, G))
    Xp[0, 0, 2 * H:] = 0.5                           # n = tanh(0.5 + ...)
    Xp[0, 0, blk * H:(blk + 1) * H] = v
    b_hh = np.zeros(G)
    b_hh[2 * H:] = 0.3                               # a = b_hn != 0, so dr depends on r's slope
    inp = dict(Xp=Xp, W_hh=np.zeros((G, H)), b_hh=b_hh, h0=np.zeros((1, H)),
               c0=np.zeros((1, H)), dHs=np.ones((1, 1, H)))
    mask = np.ones((1, 1))
    ref = _run(R, "gru", (reset_after, True), inp, mask, dtype)
    got = _run(cy, "gru", (reset_after, True), inp, mask, dtype)
    np.testing.assert_array_equal(got["cache"][..., :2 * H], ref["cache"][..., :2 * H])
    dg = got["dGx"][0, 0, blk * H:(blk + 1) * H]
    np.testing.assert_array_equal(dg != 0, _inside(v, dtype))
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for k in ("dGx", "dGh", "dh0"):
        np.testing.assert_allclose(got[k], ref[k], rtol=rtol, atol=0, err_msg=k)


@pytest.mark.parametrize("cell,flags", CASES, ids=CASE_IDS)
def test_layer_zero_steps(cell, flags):
    """T = 0: the forward pass only copies the initial state, the backward pass gives dh0 = 0."""
    inp = _inputs(cell, 0, 3, 4, seed=1)
    ref = _run(R, cell, flags, inp, np.ones((0, 3)), np.float64)
    got = _run(cy, cell, flags, inp, np.ones((0, 3)), np.float64)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_layer_accepts_read_only_inputs():
    inp = _inputs("lstm", 3, 2, 4, seed=2)
    for v in inp.values():
        v.flags.writeable = False
    ref = _run(R, "lstm", (False,), inp, np.ones((3, 2)), np.float64)
    got = _run(cy, "lstm", (False,), inp, np.ones((3, 2)), np.float64)
    for k in ref:
        _close(got[k], ref[k], np.float64, k)


def test_layer_shape_errors_raise():
    inp = _inputs("gru", 3, 2, 4, seed=0)
    a = {k: np.ascontiguousarray(v) for k, v in inp.items()}
    Hs = np.empty((4, 2, 4))
    cache = np.empty((3, 2, 16))
    with pytest.raises(ValueError, match="cache"):
        cy.gru_layer_forward(a["Xp"], a["W_hh"], a["b_hh"], a["h0"], np.ones((3, 2)), True, False,
                             Hs, cache[:, :, :12].copy())
    with pytest.raises(ValueError, match="W_hh"):
        cy.gru_layer_forward(a["Xp"], a["W_hh"][:8].copy(), a["b_hh"], a["h0"], np.ones((3, 2)),
                             True, False, Hs, cache)
    Hs2, cache2 = np.empty((4, 2, 4)), np.empty((3, 2, 16))
    cy.gru_layer_forward(a["Xp"], a["W_hh"], a["b_hh"], a["h0"], np.ones((3, 2)), True, False,
                         Hs2, cache2)
    dG = np.empty((3, 2, 12))
    with pytest.raises(ValueError, match="distinct"):
        cy.gru_layer_backward(a["W_hh"], np.ones((3, 2)), True, False, Hs2, cache2, a["dHs"],
                              dG, dG, np.empty((2, 4)))
    with pytest.raises((TypeError, ValueError)):    # mixed float dtypes: no specialisation
        cy.gru_layer_forward(a["Xp"].astype(np.float32), a["W_hh"], a["b_hh"], a["h0"],
                             np.ones((3, 2)), True, False, Hs, cache)


# ----------------------------------------------------------------------------- output layer

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("N,V", [(1, 1), (7, 2), (13, 37), (9, 1300)])
def test_softmax_xent_matches_reference(N, V, dtype):
    rng = np.random.default_rng(N * 1000 + V)
    Z = rng.normal(0.0, 4.0, (N, V))
    Z[0, :] += 700.0                                # a row far from 0: needs the max shift
    y = rng.integers(0, V, N).astype(np.intp)
    mask = np.ones(N)
    mask[1::3] = 0
    scale = 1.0 / max(mask.sum(), 1)
    Zr = Z.copy()
    lr = R.rnn_softmax_xent(Zr, y, mask, scale)
    Zc = Z.astype(dtype)
    lc = cy.rnn_softmax_xent(Zc, y, mask.astype(dtype), scale)
    assert isinstance(lc, float)
    np.testing.assert_allclose(lc, lr, rtol=1e-10 if dtype == np.float64 else 1e-5,
                               atol=1e-12 if dtype == np.float64 else 1e-6)
    _close(Zc, Zr, dtype, "dZ")
    assert np.all(Zc[mask == 0] == 0)


def test_softmax_xent_nan_logit_gives_nan_loss():
    Z = np.zeros((3, 5))
    Z[1, 2] = np.nan
    loss = cy.rnn_softmax_xent(Z, np.zeros(3, np.intp), np.ones(3), 1.0)
    assert np.isnan(loss)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("N,V", [(1, 1), (5, 3), (4, 1300)])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_log_softmax_matches_reference(N, V, inplace, dtype):
    rng = np.random.default_rng(V)
    Z = rng.normal(0.0, 5.0, (N, V))
    Z[-1] -= 900.0
    ref = np.empty_like(Z)
    R.rnn_log_softmax(Z, ref)
    Zc = Z.astype(dtype)
    out = Zc if inplace else np.empty_like(Zc)
    cy.rnn_log_softmax(Zc, out)
    _close(out, ref, dtype, "log_softmax")


# ----------------------------------------------------------------------------- models

MODELS = [(RNN, {}),
          (GRU, {"reset_after": True, "hard_gates": False}),
          (GRU, {"reset_after": False, "hard_gates": True}),
          (LSTM, {"hard_gates": False}),
          (LSTM, {"hard_gates": True})]
MODEL_IDS = ["rnn", "gru-torch", "gru-theano-hard", "lstm", "lstm-hard"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cls,flags", MODELS, ids=MODEL_IDS)
def test_model_loss_and_grad_match_numpy_backend(cls, flags, dtype):
    V, H, T, B = 17, 6, 5, 3
    rng = np.random.default_rng(3)
    x = rng.integers(0, V, (T, B))
    y = rng.integers(0, V, (T, B))
    mask = np.ones((T, B))
    mask[3:, 1] = 0
    mask[:2, 2] = 0
    kw = dict(num_layers=2, embedding_dim=4, dtype=dtype, seed=7, **flags)
    m_np = cls(V, H, backend="numpy", **kw)
    m_cy = cls(V, H, backend="cython", **kw)
    L0, g0, h0 = m_np.loss_and_grad(x, y, mask=mask)
    L1, g1, h1 = m_cy.loss_and_grad(x, y, mask=mask)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(L1, L0, rtol=tol)
    assert set(g1) == set(g0)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=tol,
                                   atol=tol * 0.1 * float(np.abs(g0[k]).max(initial=0.0)),
                                   err_msg=k)
    for a, b in zip(h1 if isinstance(h1, tuple) else (h1,), h0 if isinstance(h0, tuple) else (h0,)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 0.1)
    lp1, _ = m_cy.forward(x, mask=mask)
    lp0, _ = m_np.forward(x, mask=mask)
    np.testing.assert_allclose(lp1, lp0, rtol=tol, atol=tol * 0.1)

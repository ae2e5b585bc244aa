"""The Cython RNN kernels against the NumPy reference (float64 to 1e-10, float32 to 1e-4)."""
import importlib

import numpy as np
import pytest

from fastrnn import reference
from fastrnn._config import MODE_FULL, MODE_LAST, MODE_WINDOW

try:
    cy = importlib.import_module("fastrnn._kernels._rnn_cy")
except ImportError as exc:  # not built (no compiler, or a pure-Python install)
    pytest.skip(f"fastrnn._kernels._rnn_cy is not built ({exc}); build it with "
                "`python setup.py build_ext --inplace`", allow_module_level=True)

MODES = [MODE_WINDOW, MODE_LAST, MODE_FULL]
MODE_IDS = ["window", "last", "full"]

# (H, V, T, k): random, T=1, T<k, T>>k, H=1, V=2
SHAPES = [
    (13, 37, 9, 3),
    (13, 37, 1, 4),
    (6, 11, 3, 5),
    (8, 17, 40, 4),
    (1, 7, 6, 2),
    (9, 2, 7, 2),
]
SHAPE_IDS = ["random", "T1", "T<k", "T>>k", "H1", "V2"]


def _problem(H, V, T, seed):
    rng = np.random.default_rng(seed)
    U = rng.uniform(-1, 1, (H, V)) / np.sqrt(V) * 3
    Vp = rng.uniform(-1, 1, (V, H)) / np.sqrt(H) * 3
    W = rng.uniform(-1, 1, (H, H)) / np.sqrt(H) * 1.5
    x = rng.integers(0, V, T).astype(np.intp)
    y = rng.integers(0, V, T).astype(np.intp)
    h0 = rng.uniform(-0.9, 0.9, H)          # a non-zero initial state in s[T]
    return U, Vp, W, x, y, h0


def _ws(H, V, T, h0, dtype, fill=np.nan):
    s = np.full((T + 1, H), fill, dtype)
    s[T] = h0
    return s, np.full((T, V), fill, dtype), np.full((T, H), fill, dtype)


def _cast(arrays, dtype):
    return [a.astype(dtype) for a in arrays]


def _check(got, ref, dtype):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-13 * max(1.0, np.abs(ref).max()))
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def _setup(shape, dtype, seed=0):
    H, V, T, k = shape
    U, Vp, W, x, y, h0 = _problem(H, V, T, seed)
    U, Vp, W, h0 = _cast((U, Vp, W, h0), dtype)
    # the reference runs in float64 on the (possibly float32-rounded) same values
    R = _cast((U, Vp, W, h0), np.float64)
    return H, V, T, k, (U, Vp, W, h0), R, x, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_forward_and_loss(shape, dtype):
    H, V, T, k, (U, Vp, W, h0), (rU, rV, rW, rh0), x, y = _setup(shape, dtype)
    s, z, _ = _ws(H, V, T, h0, dtype)
    o = np.full((T, V), np.nan, dtype)
    rs, rz, _ = _ws(H, V, T, rh0, np.float64)
    ro = np.empty((T, V))
    cy.rnn_forward(U, Vp, W, x, s, o)
    reference.rnn_forward(rU, rV, rW, x, rs, ro)
    _check(o, ro, dtype)
    _check(s, rs, dtype)
    assert np.array_equal(s[T], h0)

    s, z, _ = _ws(H, V, T, h0, dtype)
    L = cy.rnn_loss(U, Vp, W, x, y, s, z)
    rL = reference.rnn_loss(rU, rV, rW, x, y, rs, rz)
    assert isinstance(L, float)
    _check(L, rL, dtype)
    _check(s, rs, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_grad(shape, mode, dtype):
    H, V, T, k, (U, Vp, W, h0), (rU, rV, rW, rh0), x, y = _setup(shape, dtype, seed=1)
    s, z, g = _ws(H, V, T, h0, dtype)
    dU, dV, dW = (np.full(a.shape, np.nan, dtype) for a in (U, Vp, W))
    L = cy.rnn_grad(U, Vp, W, x, y, mode, k, s, z, g, dU, dV, dW)
    rs, rz, rg = _ws(H, V, T, rh0, np.float64)
    rdU, rdV, rdW = (np.empty(a.shape) for a in (rU, rV, rW))
    rL = reference.rnn_grad(rU, rV, rW, x, y, mode, k, rs, rz, rg, rdU, rdV, rdW)
    _check(L, rL, dtype)
    _check(dU, rdU, dtype)
    _check(dV, rdV, dtype)
    _check(dW, rdW, dtype)
    _check(s, rs, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_sgd(shape, mode, dtype):
    H, V, T, k, (U, Vp, W, h0), (rU, rV, rW, rh0), x, y = _setup(shape, dtype, seed=2)
    lr = 0.37
    for step in range(2):   # two steps: the second one starts from the updated parameters
        s, z, g = _ws(H, V, T, h0, dtype)
        dW = np.full((H, H), np.nan, dtype)
        L = cy.rnn_sgd(U, Vp, W, x, y, mode, k, lr, s, z, g, dW)
        rs, rz, rg = _ws(H, V, T, rh0, np.float64)
        rL = reference.rnn_sgd(rU, rV, rW, x, y, mode, k, lr, rs, rz, rg, np.empty((H, H)))
        _check(L, rL, dtype)
        _check(U, rU, dtype)
        _check(Vp, rV, dtype)
        _check(W, rW, dtype)
        if dtype == np.float32:   # keep comparing on identical values
            rU[...], rV[...], rW[...] = U, Vp, W


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_equals_grad_step(dtype):
    """sgd (no dense dU/dV) == P - lr * grad, and MODE_LAST with k >= T is full BPTT."""
    H, V, T, k, (U, Vp, W, h0), _, x, y = _setup((5, 23, 8, 3), dtype, seed=3)
    grads = []
    for mode, kk in ((MODE_LAST, T), (MODE_LAST, T + 5), (MODE_FULL, 0)):
        s, z, g = _ws(H, V, T, h0, dtype)
        out = [np.empty_like(a) for a in (U, Vp, W)]
        grads.append((cy.rnn_grad(U, Vp, W, x, y, mode, kk, s, z, g, *out), out))
    for L, out in grads[:2]:
        assert L == grads[2][0]
        for a, b in zip(out, grads[2][1]):
            np.testing.assert_array_equal(a, b)
    for mode in MODES:
        s, z, g = _ws(H, V, T, h0, dtype)
        dU, dV, dW = (np.empty_like(a) for a in (U, Vp, W))
        L = cy.rnn_grad(U, Vp, W, x, y, mode, k, s, z, g, dU, dV, dW)
        P = [a.copy() for a in (U, Vp, W)]
        s, z, g = _ws(H, V, T, h0, dtype)
        L2 = cy.rnn_sgd(*P, x, y, mode, k, 0.1, s, z, g, np.empty((H, H), dtype))
        assert L2 == L
        for p, a, d in zip(P, (U, Vp, W), (dU, dV, dW)):
            _check(p, a - dtype(0.1) * d, dtype)


def test_large_logits_and_nan():
    """Softmax far in the tails matches the reference; a NaN parameter gives a NaN loss."""
    H, V, T = 4, 9, 5
    U, Vp, W, x, y, h0 = _problem(H, V, T, 4)
    Vp *= 400.0                              # logits spread over ~1e3: exp underflows
    s, z, g = _ws(H, V, T, h0, np.float64)
    rs, rz, rg = _ws(H, V, T, h0, np.float64)
    _check(cy.rnn_loss(U, Vp, W, x, y, s, z), reference.rnn_loss(U, Vp, W, x, y, rs, rz),
           np.float64)
    o, ro = np.empty((T, V)), np.empty((T, V))
    cy.rnn_forward(U, Vp, W, x, s, o)
    reference.rnn_forward(U, Vp, W, x, rs, ro)
    np.testing.assert_allclose(o, ro, rtol=1e-10, atol=1e-300)
    Vp[3, 1] = np.nan
    for dtype in (np.float64, np.float32):
        args = _cast((U, Vp, W), dtype)
        s, z, g = _ws(H, V, T, h0, dtype)
        assert np.isnan(cy.rnn_loss(*args, x, y, s, z))
        s, z, g = _ws(H, V, T, h0, dtype)
        assert np.isnan(cy.rnn_sgd(*args, x, y, MODE_FULL, 0, 0.1, s, z, g,
                                   np.empty((H, H), dtype)))


def test_functional_api_backend():
    """The registry picks the module up and the validated API agrees with numpy."""
    from fastrnn import functional
    U, Vp, W, x, y, h0 = _problem(6, 19, 7, 5)
    a = functional.grad(U, Vp, W, x, y, "window", 2, h0=h0, backend="cython")
    b = functional.grad(U, Vp, W, x, y, "window", 2, h0=h0, backend="numpy")
    for u, v in zip(a, b):
        _check(u, v, np.float64)


@pytest.mark.parametrize("dtype,lo", [(np.float64, -740.0), (np.float32, -100.0)])
def test_softmax_over_the_whole_exp_range(dtype, lo):
    """Logits spread over the whole range of exp (the kernels use their own vectorised exp)."""
    V = 20001
    U = np.full((1, V), 20.0)                      # s_0 = tanh(20) == 1.0 exactly in f32 and f64
    W = np.zeros((1, 1))
    Vp = np.linspace(lo, 0.0, V)[:, None]          # logits z = Vp in [lo, 0], exact
    Vp[V // 3] = 3.0                               # max not at an end: shifts everything by -3
    x = np.array([0], dtype=np.intp)
    args = _cast((U, Vp, W), dtype)
    s, o = np.zeros((2, 1), dtype), np.empty((1, V), dtype)
    cy.rnn_forward(*args, x, s, o)
    R = _cast(args, np.float64)
    rs, ro = np.zeros((2, 1)), np.empty((1, V))
    reference.rnn_forward(*R, x, rs, ro)
    tiny = np.finfo(dtype).tiny
    if dtype == np.float64:
        np.testing.assert_allclose(o, ro, rtol=1e-13, atol=tiny)
    else:
        # float32 rounds the argument z - max z itself: relative error ~ |z - max z| eps
        tol = 2 * np.finfo(np.float32).eps * (np.abs(R[1][:, 0] - 3.0) + 4.0) * ro[0] + tiny
        assert np.all(np.abs(o[0] - ro[0]) <= tol)
    assert np.all(o >= 0)

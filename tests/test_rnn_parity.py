"""Every backend against the NumPy reference, kernel by kernel.

float64 within rtol 1e-10; float32 kernels against the float64 reference on the same
(float32-rounded) weights within rtol 1e-4.  Sizes include T=1, T<k, T>>k, H=1, V=2, and
a non-zero initial state (the stream trainer's case).
"""
import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from rnn_cases import MODES, SIZES, backend_params, problem, workspaces


def _run(be, U, V, W, x, y, mode, k, h0, lr=0.05):
    H, Vv = U.shape
    T = len(x)
    dt = U.dtype
    out = {}
    s, z, g = workspaces(H, Vv, T, dt, h0)
    o = np.empty((T, Vv), dt)
    be.rnn_forward(U, V, W, x, s, o)
    out["o"], out["s"] = o, s.copy()
    s, z, g = workspaces(H, Vv, T, dt, h0)
    out["loss"] = be.rnn_loss(U, V, W, x, y, s, z)
    s, z, g = workspaces(H, Vv, T, dt, h0)
    dU, dV, dW = np.empty_like(U), np.empty_like(V), np.empty_like(W)
    out["grad_loss"] = be.rnn_grad(U, V, W, x, y, mode, k, s, z, g, dU, dV, dW)
    out["dU"], out["dV"], out["dW"] = dU, dV, dW
    s, z, g = workspaces(H, Vv, T, dt, h0)
    U2, V2, W2 = U.copy(), V.copy(), W.copy()
    out["sgd_loss"] = be.rnn_sgd(U2, V2, W2, x, y, mode, k, lr, s, z, g, np.empty_like(W))
    out["U+"], out["V+"], out["W+"] = U2, V2, W2
    return out


def _assert_close(got, want, rtol, scale_atol):
    for key in want:
        w = np.asarray(want[key], dtype=np.float64)
        g = np.asarray(got[key], dtype=np.float64)
        atol = scale_atol * max(1.0, float(np.max(np.abs(w)))) if scale_atol else 0.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("H,V,T,k", SIZES)
def test_float64_matches_reference(backend, mode, H, V, T, k):
    if mode == "last" and k == 0:
        k = 1                                   # truncate_gradient=0 is rejected upstream
    U, Vm, W, x, y, h0 = problem(H, V, T, seed=H * 1000 + T)
    be = fastrnn.get_backend(backend)
    got = _run(be, U, Vm, W, x, y, MODES[mode], k, h0)
    want = _run(R, U, Vm, W, x, y, MODES[mode], k, h0)
    # Exact zeros (entries no gradient reaches) must stay exact: rtol alone, plus a
    # floor at the rounding level of the largest entry.
    _assert_close(got, want, rtol=1e-10, scale_atol=1e-14)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("H,V,T,k", [(1, 2, 1, 4), (5, 7, 3, 4), (13, 37, 9, 2), (8, 11, 40, 4)])
def test_float32_matches_reference(backend, mode, H, V, T, k):
    U, Vm, W, x, y, h0 = problem(H, V, T, seed=7 + T, dtype=np.float32)
    be = fastrnn.get_backend(backend)
    got = _run(be, U, Vm, W, x, y, MODES[mode], k, h0)
    for key in ("o", "s", "dU", "dV", "dW", "U+", "V+", "W+"):
        assert got[key].dtype == np.float32, f"{key} left float32"
    f64 = [a.astype(np.float64) for a in (U, Vm, W)]
    want = _run(R, *f64, x, y, MODES[mode], k, h0.astype(np.float64))
    _assert_close(got, want, rtol=1e-4, scale_atol=1e-5)


@pytest.mark.parametrize("backend", backend_params())
def test_tutorial_shape_float64(backend):
    """The tutorial's own shape (V=8000, H=100, k=4) at T=20: the GEMM path at full size."""
    U, Vm, W, x, y, h0 = problem(100, 8000, 20, seed=3, scale=0.05, h0=np.zeros(100))
    be = fastrnn.get_backend(backend)
    got = _run(be, U, Vm, W, x, y, MODES["window"], 4, h0, lr=0.005)
    want = _run(R, U, Vm, W, x, y, MODES["window"], 4, h0, lr=0.005)
    _assert_close(got, want, rtol=1e-10, scale_atol=1e-14)

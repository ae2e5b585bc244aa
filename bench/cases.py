"""One registry of benchmark cases x implementations for the vanilla RNN.

Each case is a tutorial-shaped problem; each implementation is a callable built for it.
The same table drives the benchmarks (``test_bench_rnn.py``) and the report
(``report.py``), so every backend is timed side by side in one run.
"""
import numpy as np

import fastrnn
import seed_port
from fastrnn import reference as R
from fastrnn._config import MODE_WINDOW

V_TUTORIAL, H_TUTORIAL, K_TUTORIAL = 8000, 100, 4

# The learning rate of every timed SGD step.  Not 0: OpenBLAS returns early from a GEMM
# whose alpha is 0, so a fused update ``V += (-lr) Δᵀ S`` at lr = 0 would skip one of the
# three big products and time less than a real step.  So small that the weights do not
# change in either dtype (checked after each timed run), so every round times the same
# computation.
TIMING_LR = 1e-26


def make_problem(T, dtype=np.float64, V=V_TUTORIAL, H=H_TUTORIAL, seed=0):
    np.random.seed(seed)
    m = fastrnn.RNNNumpy(V, H, K_TUTORIAL, backend="numpy")
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, V, T + 1)
    U, Vm, W = (a.astype(dtype) for a in (m.U, m.V, m.W))
    return dict(U=U, V=Vm, W=W, x=seq[:-1].astype(np.intp), y=seq[1:].astype(np.intp),
                T=T, H=H, Vocab=V, dtype=np.dtype(dtype))


def flops(op, T, V=V_TUTORIAL, H=H_TUTORIAL):
    """Multiply-add count x2 of the big products (the output layer): what BLAS must do."""
    if op == "forward":
        return 2 * T * V * H
    return 6 * T * V * H                    # S Vᵀ, Δ V, Δᵀ S


def _workspace(p):
    T, H, V, dt = p["T"], p["H"], p["Vocab"], p["dtype"]
    s = np.zeros((T + 1, H), dt)
    return s, np.empty((T, V), dt), np.empty((T, H), dt)


def kernel_impl(backend_name, op, p):
    """A zero-argument callable running ``op`` of backend ``backend_name`` on problem p."""
    be = R if backend_name == "numpy" else fastrnn.get_backend(backend_name)
    U, V, W, x, y = p["U"], p["V"], p["W"], p["x"], p["y"]
    s, z, g = _workspace(p)
    if op == "forward":
        o = np.empty_like(z)
        return lambda: be.rnn_forward(U, V, W, x, s, o)
    if op == "bptt":
        dU, dV, dW = np.empty_like(U), np.empty_like(V), np.empty_like(W)
        return lambda: be.rnn_grad(U, V, W, x, y, MODE_WINDOW, K_TUTORIAL, s, z, g, dU, dV, dW)
    if op == "sgd_step":
        dW = np.empty_like(W)
        return lambda: be.rnn_sgd(U, V, W, x, y, MODE_WINDOW, K_TUTORIAL, TIMING_LR, s, z, g, dW)
    raise ValueError(op)


def seed_impl(op, p):
    """The tutorial's own loop (tests/seed_port.py), float64 as in the tutorial."""
    U, V, W, x, y = p["U"], p["V"], p["W"], p["x"], p["y"]
    if op == "forward":
        return lambda: seed_port.forward(U, V, W, x)
    if op == "bptt":
        return lambda: seed_port.bptt(U, V, W, x, y, K_TUTORIAL)
    if op == "sgd_step":
        return lambda: seed_port.sgd_step(U, V, W, x, y, TIMING_LR, K_TUTORIAL)
    raise ValueError(op)


def blas_only_impl(op, p):
    """Just the big products with NumPy/BLAS at the same shapes: the roofline of the step."""
    V, T, H = p["V"], p["T"], p["H"]
    S = np.random.default_rng(1).uniform(-1, 1, (T, H)).astype(p["dtype"])
    Z = np.empty((T, p["Vocab"]), p["dtype"])
    dS = np.empty((T, H), p["dtype"])
    dV = np.empty_like(V)
    if op == "forward":
        return lambda: np.dot(S, V.T, out=Z)

    def three():
        np.dot(S, V.T, out=Z)
        np.dot(Z, V, out=dS)
        np.dot(Z.T, S, out=dV)
    return three


def implementations():
    """Names of every implementation that can run here, in report order."""
    names = ["seed-loop"]
    for name, ok in fastrnn.available_backends().items():
        if ok is True:
            names.append(name)
    names.append("blas-only")
    return names


def build(impl, op, p):
    if impl == "seed-loop":
        return seed_impl(op, p)
    if impl == "blas-only":
        return blas_only_impl(op, p)
    return kernel_impl(impl, op, p)


def weights_unchanged(p, before):
    """After a timed run at ``TIMING_LR``: the weights are bitwise what they were."""
    for k in ("U", "V", "W"):
        assert np.array_equal(p[k], before[k]), f"{k} changed at lr={TIMING_LR}"


def check(impl, op, p):
    """Result check, outside the timer: each backend's loss equals the reference's."""
    if impl in ("seed-loop", "blas-only"):
        return
    s, z, g = _workspace(p)
    want = R.rnn_loss(p["U"], p["V"], p["W"], p["x"], p["y"], s, z)
    be = fastrnn.get_backend(impl)
    s, z, g = _workspace(p)
    got = be.rnn_loss(p["U"], p["V"], p["W"], p["x"], p["y"], s, z)
    rtol = 1e-10 if p["dtype"] == np.float64 else 1e-4
    assert abs(got - want) <= rtol * abs(want), (impl, op, got, want)

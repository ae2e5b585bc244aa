"""Properties that must hold on every backend (hypothesis, few examples, no deadline)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastrnn
from fastrnn import functional as F
from rnn_cases import backend_params

AVAILABLE = [n for n, ok in fastrnn.available_backends().items() if ok is True]

sizes = st.tuples(st.integers(1, 6), st.integers(2, 9), st.integers(1, 14), st.integers(0, 10**6))


def _params(H, V, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.6, 0.6, shape).astype(dtype) for shape in ((H, V), (V, H), (H, H))]


@settings(max_examples=25, deadline=None)
@given(sizes, st.sampled_from(AVAILABLE), st.data())
def test_chunked_equals_one_shot(size, backend, data):
    """Carrying the state across chunks gives the one-shot loss and final state."""
    H, V, T, seed = size
    U, Vm, W = _params(H, V, seed)
    rng = np.random.default_rng(seed + 1)
    x, y = rng.integers(0, V, T), rng.integers(0, V, T)
    cut = data.draw(st.integers(1, T)) if T > 1 else 1
    whole, h_whole = F.loss(U, Vm, W, x, y, backend=backend, return_state=True)
    a, h = F.loss(U, Vm, W, x[:cut], y[:cut], backend=backend, return_state=True)
    if cut < T:
        b, h = F.loss(U, Vm, W, x[cut:], y[cut:], h0=h, backend=backend, return_state=True)
    else:
        b = 0.0
    np.testing.assert_allclose(a + b, whole, rtol=1e-12)
    np.testing.assert_allclose(h, h_whole, rtol=1e-12, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(sizes, st.sampled_from(AVAILABLE))
def test_truncations_covering_the_sentence_equal_full_bptt(size, backend):
    H, V, T, seed = size
    U, Vm, W = _params(H, V, seed)
    rng = np.random.default_rng(seed + 2)
    x, y = rng.integers(0, V, T), rng.integers(0, V, T)
    full = F.grad(U, Vm, W, x, y, "full", backend=backend)
    for mode, k in (("window", T - 1), ("window", T + 5), ("last", T), ("last", -1)):
        other = F.grad(U, Vm, W, x, y, mode, k, backend=backend)
        for p, q in zip(full, other):
            np.testing.assert_allclose(q, p, rtol=1e-10, atol=1e-14)


@settings(max_examples=20, deadline=None)
@given(sizes, st.sampled_from(AVAILABLE), st.sampled_from(["window", "last", "full"]))
def test_sgd_step_equals_gradient_update(size, backend, mode):
    H, V, T, seed = size
    U, Vm, W = _params(H, V, seed)
    rng = np.random.default_rng(seed + 3)
    x, y = rng.integers(0, V, T), rng.integers(0, V, T)
    k = 2 if mode != "full" else 0
    L, dU, dV, dW = F.grad(U, Vm, W, x, y, mode, k, backend=backend)
    P = [a.copy() for a in (U, Vm, W)]
    L2 = F.sgd_step(*P, x, y, 0.3, mode, k, backend=backend)
    assert L2 == pytest.approx(L, rel=1e-13)
    for p, p0, d in zip(P, (U, Vm, W), (dU, dV, dW)):
        np.testing.assert_allclose(p, p0 - 0.3 * d, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", backend_params())
def test_environment_variable_selects_the_backend(backend):
    code = "import fastrnn; print(fastrnn.get_backend().name); print(fastrnn.RNNNumpy(5, 2).predict([1]))"
    env = dict(os.environ, FASTRNN_BACKEND=backend)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == backend


def test_environment_variable_naming_a_missing_backend_raises():
    code = "import fastrnn; fastrnn.get_backend()"
    env = dict(os.environ, FASTRNN_BACKEND="quantum")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "unknown backend 'quantum'" in r.stderr

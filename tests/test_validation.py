"""Bad input gets a clear error in Python, before any kernel runs -- on every backend."""
import numpy as np
import pytest

import fastrnn
from fastrnn import RNNNumpy, RNNTheano
from fastrnn import functional as F
from rnn_cases import backend_params


@pytest.fixture(params=backend_params())
def model(request):
    np.random.seed(0)
    return RNNNumpy(10, 4, backend=request.param)


@pytest.mark.parametrize("x,err,match", [
    ([0, 10], ValueError, r"token id 10 out of range for vocabulary of 10"),
    ([0, 99999999999], ValueError, r"token id 99999999999 out of range"),
    ([-1, 2], ValueError, r"token id -1 is negative"),
    ([], ValueError, r"x is empty"),
    ([1.0, 2.0], TypeError, r"integer token ids, got dtype float64"),
    ([True, False], TypeError, r"dtype bool"),
    ("hello", TypeError, r"sequence of integer token ids, got str"),
    ([[1, 2], [3]], ValueError, r"ragged"),
    ([[1, 2], [3, 4]], ValueError, r"one-dimensional.*shape \(2, 2\)"),
    ([1, "a"], TypeError, r"integer token ids"),
    ([1, None], TypeError, r"integer token ids"),
])
def test_bad_token_ids(model, x, err, match):
    with pytest.raises(err, match=match):
        model.forward_propagation(x)
    with pytest.raises(err, match=match):
        model.bptt(x, [0] * max(len(x), 1) if isinstance(x, list) else [0])


def test_length_mismatch_and_bad_targets(model):
    with pytest.raises(ValueError, match=r"len\(x\)=3 and len\(y\)=2"):
        model.bptt([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"y: token id 10 out of range"):
        model.sgd_step([1, 2], [3, 10], 0.1)
    with pytest.raises(ValueError, match=r"same number of sentences, got 2 and 1"):
        model.calculate_loss([[1], [2]], [[1]])
    with pytest.raises(ValueError, match=r"sentence 1: x is empty"):
        model.calculate_total_loss([[1], []], [[1], []])
    with pytest.raises(ValueError, match=r"X and Y are empty"):
        model.calculate_loss([], [])


def test_bad_learning_rate_and_truncation(model):
    with pytest.raises(ValueError, match="learning_rate must be finite, got nan"):
        model.sgd_step([1], [2], float("nan"))
    with pytest.raises(TypeError, match="learning_rate must be a real number"):
        model.sgd_step([1], [2], "0.1")
    with pytest.raises(ValueError, match=r"bptt_truncate must be >= 0"):
        RNNNumpy(10, 4, bptt_truncate=-2)
    with pytest.raises(ValueError, match=r"truncate_gradient must be >= 1 or -1"):
        RNNTheano(10, 4, bptt_truncate=0)
    with pytest.raises(ValueError, match="truncation must be one of"):
        F.grad(model.U, model.V, model.W, [1], [2], truncation="sideways")


def test_bad_parameters(model):
    with pytest.raises(ValueError, match=r"parameter U holds 1 non-finite"):
        bad = model.U.copy()
        bad[0, 0] = np.inf
        model.U = bad
    with pytest.raises(TypeError, match=r"parameter W must be a float array, got dtype <U1"):
        model.W = np.array([["a"]])
    with pytest.raises(ValueError, match=r"parameter V must be 2-D, got shape \(3,\)"):
        model.V = np.zeros(3)
    model.W = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"parameter W must have shape \(4, 4\)"):
        model.predict([1])
    U = np.zeros((4, 10), np.float32)
    with pytest.raises(TypeError, match=r"parameter V has dtype float64, expected float32"):
        F.loss(U, np.zeros((10, 4)), np.zeros((4, 4), np.float32), [1], [2])
    with pytest.raises(ValueError, match="C-contiguous"):
        F.loss(np.zeros((10, 4)).T, np.zeros((10, 4)), np.zeros((4, 4)), [1], [2])


def test_bad_initial_state():
    U, V, W = np.zeros((4, 10)), np.zeros((10, 4)), np.zeros((4, 4))
    with pytest.raises(ValueError, match=r"h0 must have shape \(4,\), got \(3,\)"):
        F.loss(U, V, W, [1], [2], h0=np.zeros(3))
    with pytest.raises(ValueError, match="h0 holds non-finite"):
        F.loss(U, V, W, [1], [2], h0=np.full(4, np.nan))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="word_dim must be >= 1, got 0"):
        RNNNumpy(0)
    with pytest.raises(TypeError, match="hidden_dim must be an integer"):
        RNNNumpy(10, 2.5)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int64"):
        RNNTheano(10, 4, dtype=np.int64)


def test_unknown_and_unavailable_backends(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown backend 'fortran'"):
        fastrnn.get_backend("fortran")
    from fastrnn import backends
    monkeypatch.setitem(backends.BACKEND_MODULES, "cython", ("fastrnn._kernels._does_not_exist",))
    monkeypatch.setattr(backends, "_loaded", {})
    monkeypatch.setattr(backends, "_errors", {})
    with pytest.raises(backends.BackendUnavailableError, match=r"backend 'cython'.*not available"):
        fastrnn.get_backend("cython")
    info = fastrnn.backend_info()
    assert "cython" in info["unavailable"] and info["default"] in ("numba", "numpy")


def test_oversized_python_int_is_named_as_out_of_range():
    U, V, W = np.zeros((4, 10)), np.zeros((10, 4)), np.zeros((4, 4))
    with pytest.raises(ValueError, match=r"token id 1180591620717411303424 out of range"):
        F.loss(U, V, W, [1, 2**70, 3], [1, 2, 3])


def test_huge_truncation_is_clamped_not_overflowed():
    rng = np.random.default_rng(0)
    U, V, W = rng.standard_normal((3, 7)), rng.standard_normal((7, 3)), rng.standard_normal((3, 3))
    for be in [n for n, ok in fastrnn.available_backends().items() if ok is True]:
        big = F.grad(U, V, W, [1, 2, 3], [2, 3, 4], "last", 2**70, backend=be)
        full = F.grad(U, V, W, [1, 2, 3], [2, 3, 4], "full", backend=be)
        for a, b in zip(big, full):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_initial_state_is_checked_after_the_cast_to_the_model_dtype():
    U, V, W = (np.zeros(s, np.float32) for s in ((4, 10), (10, 4), (4, 4)))
    with pytest.raises(ValueError, match="h0 holds non-finite values \\(in float32\\)"):
        F.loss(U, V, W, [1, 2], [2, 3], h0=np.array([1e300, -1e300, 0, 0]))


def test_read_only_parameters_get_a_clear_error():
    U, V, W = np.zeros((4, 10)), np.zeros((10, 4)), np.zeros((4, 4))
    U.flags.writeable = False
    with pytest.raises(ValueError, match="parameter U is read-only"):
        F.loss(U, V, W, [1], [2])


def test_one_model_used_from_several_threads_gives_the_serial_results():
    import threading
    np.random.seed(3)
    m = RNNNumpy(300, 16)
    rng = np.random.default_rng(4)
    sents = [(list(rng.integers(0, 300, n)), list(rng.integers(0, 300, n))) for n in (5, 9, 13, 17)]
    want = [m.calculate_total_loss([x], [y]) for x, y in sents]
    bad = []

    def worker():
        for _ in range(60):
            for (x, y), w in zip(sents, want):
                if m.calculate_total_loss([x], [y]) != w:
                    bad.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad

"""The backend registry: what exists, what runs, and a loud failure when Cython is required."""
import os

import pytest

import fastrnn
from fastrnn import backends


def test_backend_info_reports_every_backend_and_the_default():
    info = fastrnn.backend_info()
    assert set(info["available"]) | set(info["unavailable"]) == set(backends.BACKEND_ORDER)
    assert "numpy" in info["available"]
    first_available = next(n for n in backends.BACKEND_ORDER if n in info["available"])
    expected = os.environ.get("FASTRNN_BACKEND") or first_available
    assert info["default"] == expected
    from fastrnn._kernels._blas_lib import library
    lib = library()
    assert info["blas"] == f"{lib.name} ({'64' if lib.ilp64 else '32'}-bit integers)"


def test_every_backend_exposes_the_same_rnn_function_table():
    tables = {}
    for name in fastrnn.backend_info()["available"]:
        be = fastrnn.get_backend(name)
        tables[name] = set(be.functions())
    assert all("rnn_sgd" in t and "rnn_grad" in t for t in tables.values())
    core = {"rnn_forward", "rnn_loss", "rnn_grad", "rnn_sgd"}
    for name, t in tables.items():
        assert core <= t, f"{name} lacks {core - t}"


@pytest.mark.skipif(os.environ.get("FASTRNN_BUILD_CYTHON", "") in ("", "0"),
                    reason="only enforced when FASTRNN_BUILD_CYTHON=1 (CI)")
def test_cython_backend_was_built_when_required():
    avail = fastrnn.available_backends()
    assert avail["cython"] is True, f"FASTRNN_BUILD_CYTHON=1 but cython backend unavailable: {avail['cython']}"


def test_every_backend_has_the_same_full_table():
    tables = {n: fastrnn.get_backend(n).functions() for n in fastrnn.backend_info()["available"]}
    first = next(iter(tables.values()))
    for name, t in tables.items():
        assert t == first, f"{name} differs: {set(t) ^ set(first)}"


def test_missing_kernel_is_an_attribute_error_naming_it():
    be = fastrnn.get_backend("numpy")
    with pytest.raises(AttributeError, match="has no kernel 'gru_layer_sideways'"):
        be.gru_layer_sideways


def test_cython_backend_does_not_import_numba():
    """The Cython backend's kernels are compiled ahead of time: with NumPy's BLAS (the usual
    case) using it must not pay for importing Numba (0.3-0.5 s of start-up)."""
    import sys
    from isolated import run_isolated
    if not fastrnn.available_backends().get("cython") is True:
        pytest.skip("cython backend not built")
    from fastrnn._kernels._blas_lib import library
    if library().name != "numpy":
        pytest.skip("with SciPy's BLAS the models' products go through Numba's gemm "
                    "(one BLAS library for every product)")
    out = run_isolated("""
        import sys
        import numpy as np
        import fastrnn
        np.random.seed(0)
        m = fastrnn.RNNNumpy(50, 8, backend="cython")
        m.sgd_step([1, 2, 3], [2, 3, 4], 0.01)
        g = fastrnn.LSTM(20, 4, backend="cython", seed=0)
        g.loss_and_grad(np.zeros((3, 2), int), np.ones((3, 2), int))
        print("numba" in sys.modules)
    """)
    assert out.strip() == "False"

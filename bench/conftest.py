"""Benchmark configuration: one BLAS thread, the tests' helpers importable.

The tutorial's NumPy loop is at its best with BLAS limited to one thread: its many small
products get slower with two OpenBLAS threads on a 2-core machine (measured: 32-34 ms per
step on one thread, 48-316 ms on two).  Every case here runs on one BLAS thread so that
the ratios compare like with like.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """One BLAS thread and one Numba thread (fastrnn's parallel variants) for every case;
    cases that measure two threads raise both limits themselves (see ``threads``)."""
    import numba
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a test/bench dependency
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    numba.set_num_threads(before)

"""The parallel softmax cross-entropy equals the serial one bitwise, on any thread count."""
import numpy as np
import pytest

from fastrnn._kernels import common


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parallel_softmax_xent_is_bitwise_the_serial_one(dtype):
    rng = np.random.default_rng(0)
    N, V = 37, 1001
    Z = (rng.standard_normal((N, V)) * 4).astype(dtype)
    y = rng.integers(0, V, N).astype(np.intp)
    mask = (rng.random(N) > 0.2).astype(dtype)
    Zs = Z.copy()
    ls = common._softmax_xent_serial(Zs, y, mask, 0.25)
    for chunks in (1, 2, 3, 8, 1000):      # any partition of the rows gives the same bits
        Zp = Z.copy()
        lp = common._softmax_xent_parallel(Zp, y, mask, 0.25, chunks)
        assert ls == lp
        assert np.array_equal(Zs, Zp)


class _Blas:
    def __init__(self, n):
        self.n = n

    def num_threads(self):
        return self.n


def _spy_paths(monkeypatch, numba_threads, blas_threads):
    """Route ``softmax_xent`` with the given thread counts; record which kernel ran."""
    calls = []
    par, ser = common._softmax_xent_parallel, common._softmax_xent_serial
    monkeypatch.setattr(common, "get_num_threads", lambda: numba_threads)
    monkeypatch.setattr(common, "library", lambda: _Blas(blas_threads))
    monkeypatch.setattr(common, "_softmax_xent_parallel",
                        lambda *a: calls.append("parallel") or par(*a))
    monkeypatch.setattr(common, "_softmax_xent_serial",
                        lambda *a: calls.append("serial") or ser(*a))
    return calls, ser


def _large():
    rng = np.random.default_rng(1)
    N, V = 64, 4096                      # 2**18 logits: at the threshold
    return rng.standard_normal((N, V)), rng.integers(0, V, N).astype(np.intp), np.ones(N)


def test_public_kernel_takes_the_parallel_path_on_large_inputs(monkeypatch):
    Z, y, mask = _large()
    N = Z.shape[0]
    calls, serial = _spy_paths(monkeypatch, numba_threads=2, blas_threads=1)
    A, B = Z.copy(), Z.copy()
    la = common.softmax_xent(A, y, mask, 1.0 / N)
    assert calls == ["parallel"]
    lb = serial(B, y, mask, 1.0 / N)
    assert la == lb and np.array_equal(A, B)
    common.softmax_xent(Z[:8].copy(), y[:8], mask[:8], 1.0 / 8)    # below the threshold
    assert calls == ["parallel", "serial"]


@pytest.mark.parametrize("blas_threads", [2, None])
def test_rows_stay_serial_while_blas_is_multithreaded(monkeypatch, blas_threads):
    # A multi-threaded (or unknown) BLAS: its spinning workers would slow a parallel region.
    Z, y, mask = _large()
    calls, _ = _spy_paths(monkeypatch, numba_threads=2, blas_threads=blas_threads)
    common.softmax_xent(Z, y, mask, 1.0 / Z.shape[0])
    assert calls == ["serial"]


def test_one_numba_thread_is_serial(monkeypatch):
    Z, y, mask = _large()
    calls, _ = _spy_paths(monkeypatch, numba_threads=1, blas_threads=1)
    common.softmax_xent(Z, y, mask, 1.0 / Z.shape[0])
    assert calls == ["serial"]

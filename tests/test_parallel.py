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


def test_public_kernel_takes_the_parallel_path_on_large_inputs(monkeypatch):
    rng = np.random.default_rng(1)
    N, V = 64, 4096                      # 2**18 logits: at the threshold
    Z = rng.standard_normal((N, V))
    y = rng.integers(0, V, N).astype(np.intp)
    mask = np.ones(N)
    A, B = Z.copy(), Z.copy()
    la = common.softmax_xent(A, y, mask, 1.0 / N)
    lb = common._softmax_xent_serial(B, y, mask, 1.0 / N)
    assert la == lb and np.array_equal(A, B)

"""pytest-benchmark: the machine's roof -- a square matrix product on one BLAS thread.

The other groups' GFLOP/s are divided by these in ``bench/report.py`` (its ``roof``
column): the fraction of what this core's BLAS reaches on the most favourable shape, in the
same run and dtype.
"""
import numpy as np
import pytest

N = 1024


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_square_gemm(benchmark, dtype):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((N, N)).astype(dtype)
    B = rng.standard_normal((N, N)).astype(dtype)
    C = np.empty((N, N), dtype)
    np.matmul(A, B, out=C)
    check = A[:3] @ B[:, :5]
    np.testing.assert_allclose(C[:3, :5], check, rtol=1e-4 if dtype == "float32" else 1e-12)
    benchmark.group = "peak-gemm"
    benchmark.extra_info.update(impl=f"gemm-{dtype}", dtype=dtype, flops=2 * N ** 3, tokens=0)
    benchmark(np.matmul, A, B, out=C)

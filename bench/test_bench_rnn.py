"""pytest-benchmark: the vanilla RNN at the tutorial's shape, every implementation side by side.

Run:  python -m pytest bench/test_bench_rnn.py --benchmark-only
Report with ratios:  python bench/report.py
Groups are ``<op>-T<T>-<dtype>``; within a group the rows are the tutorial's own NumPy loop
(``seed-loop``), each fastrnn backend, and ``blas-only`` (just the big products, the bound).
"""
import time

import numpy as np
import pytest

import cases

OPS = ["forward", "bptt", "sgd_step"]
LENGTHS = [20, 45]


@pytest.mark.parametrize("impl", cases.implementations())
@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("op", OPS)
def test_rnn_float64(benchmark, op, T, impl):
    _run(benchmark, op, T, impl, np.float64)


@pytest.mark.parametrize("impl", [i for i in cases.implementations() if i != "seed-loop"])
@pytest.mark.parametrize("op", ["sgd_step"])
def test_rnn_float32(benchmark, op, impl):
    _run(benchmark, op, 20, impl, np.float32)


def _run(benchmark, op, T, impl, dtype):
    p = cases.make_problem(T, dtype)
    cases.check(impl, op, p)
    fn = cases.build(impl, op, p)
    fn()                                   # warm-up: compiled code, page faults
    benchmark.group = f"{op}-T{T}-{np.dtype(dtype).name}"
    benchmark.extra_info.update(impl=impl, op=op, T=T, dtype=np.dtype(dtype).name,
                                flops=cases.flops(op, T), tokens=T)
    benchmark(fn)


def test_numba_compile_time(benchmark):
    """Cold JIT compile of the four RNN kernels (both dtypes), timed apart from the runs.

    Runs a fresh interpreter with an empty cache directory; also records the warm start
    (import with the on-disk cache filled).
    """
    import os
    import subprocess
    import sys
    import tempfile

    code = ("import time; t=time.perf_counter(); import fastrnn._kernels.rnn; "
            "print(time.perf_counter()-t)")

    def timed(env):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = timed(env)
        warm = timed(env)
    benchmark.group = "compile"
    benchmark.extra_info.update(cold_import_s=cold, warm_import_s=warm)
    benchmark.pedantic(lambda: time.sleep(0), rounds=1, iterations=1)

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
    before = {k: p[k].copy() for k in ("U", "V", "W")}
    fn()                                   # warm-up: compiled code, page faults
    benchmark.group = f"{op}-T{T}-{np.dtype(dtype).name}"
    benchmark.extra_info.update(impl=impl, op=op, T=T, dtype=np.dtype(dtype).name,
                                flops=cases.flops(op, T), tokens=T)
    benchmark(fn)
    cases.weights_unchanged(p, before)


STARTUP = r"""
import time
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
import numpy as np
import fastrnn
np.random.seed(0)
m = fastrnn.RNNNumpy(8000, 100)
t2 = time.perf_counter()
m.sgd_step(list(range(1, 24)), list(range(2, 25)), 0.005)
t3 = time.perf_counter()
import sys
print(t1 - t0, t2 - t1, t3 - t2, t3 - t0, int("scipy.linalg" in sys.modules))
"""


STARTUP_CYTHON = r"""
import time
t0 = time.perf_counter()
import sys
import numpy as np
import fastrnn
np.random.seed(0)
m = fastrnn.RNNNumpy(8000, 100, backend="cython")
m.sgd_step(list(range(1, 24)), list(range(2, 25)), 0.005)
print(time.perf_counter() - t0, int("numba" in sys.modules))
"""


# Numba's own floor: import Numba and call one trivial cached function (warm cache).
NUMBA_FLOOR = r"""
import time
t0 = time.perf_counter()
import numba
@numba.njit(cache=True)
def f(a):
    s = 0.0
    for v in a:
        s += v
    return s
import numpy as np
f(np.ones(3))
print(time.perf_counter() - t0)
"""


def test_numba_compile_time(benchmark):
    """Cold compile and warm start, each in a fresh interpreter, timed apart from the runs.

    Cold: an empty Numba cache directory, ``import fastrnn`` and the first tutorial
    ``sgd_step`` (compiles the RNN kernels).  Warm: the same with the cache filled (and
    Python's bytecode cache, written by the cold run if it was missing).  The
    warm time is split into importing Numba, fastrnn's own import and the first step
    (finding the BLAS library and loading the cached kernels).  ``scipy_linalg`` records
    whether SciPy's BLAS was imported (Numba's own start-up imports it).  The Cython backend's
    start-up (no compile cache, no Numba import) is recorded beside it when it is built, and
    Numba's own floor: importing it and calling one trivial cached function.
    """
    import os
    import subprocess
    import sys
    import tempfile

    def timed(env):
        out = subprocess.run([sys.executable, "-c", STARTUP], env=env, capture_output=True,
                             text=True, check=True)
        return [float(v) for v in out.stdout.split()]

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        # Warm means Python's bytecode cache too, as for an installed package (pip writes the
        # .pyc files; Numba's and SciPy's come with theirs).  With PYTHONDONTWRITEBYTECODE set
        # (as on the CI machines) a source checkout would recompile fastrnn's modules at
        # every start, 0.07-0.09 s of the warm time; the cold run writes them here.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cold = timed(env)
        warm = timed(env)
        try:
            cy = subprocess.run([sys.executable, "-c", STARTUP_CYTHON], env=env,
                                capture_output=True, text=True, check=True).stdout.split()
            benchmark.extra_info.update(cython_start_s=float(cy[0]), cython_numba=bool(int(cy[1])))
        except subprocess.CalledProcessError:
            pass                                   # no Cython backend built
        with tempfile.TemporaryDirectory() as mod:
            path = os.path.join(mod, "numba_floor.py")
            with open(path, "w") as f:
                f.write(NUMBA_FLOOR)
            for _ in range(2):                     # the first run fills the cache
                floor = subprocess.run([sys.executable, path], env=env, capture_output=True,
                                       text=True, check=True).stdout
        benchmark.extra_info.update(numba_floor_s=float(floor))
    benchmark.group = "compile"
    benchmark.extra_info.update(cold_import_s=cold[3], warm_import_s=warm[3],
                                warm_numba_s=warm[0], warm_fastrnn_s=warm[1],
                                warm_first_step_s=warm[2], scipy_linalg=bool(warm[4]))
    benchmark.pedantic(lambda: time.sleep(0), rounds=1, iterations=1)

"""The BLAS library the compiled kernels call (fastrnn._kernels._blas_lib).

Both compiled backends take their BLAS routines from one resolved library: NumPy's bundled
OpenBLAS when it is recognisable, SciPy's ``cython_blas`` otherwise.  These tests pin the
choice logic, the strided ``gemm`` wrapper the Numba kernels use, and that the forced SciPy
path (32-bit integers) computes the same model as the default one.
"""
import os
import sys

import numpy as np
import pytest

from fastrnn._kernels import _blas_lib
from isolated import run_isolated


def test_library_resolves_to_a_known_choice():
    lib = _blas_lib.library()
    assert lib.name in _blas_lib.CHOICES
    assert set(lib.addr) == set(_blas_lib.ROUTINES)
    assert all(isinstance(a, int) and a != 0 for a in lib.addr.values())
    if lib.name == "scipy":
        assert lib.ilp64 is False


def test_self_test_accepts_the_resolved_library():
    _blas_lib._self_test(_blas_lib.library())


def test_bad_env_value_is_an_error(monkeypatch):
    monkeypatch.setattr(_blas_lib, "_LIB", None)
    monkeypatch.setenv("FASTRNN_BLAS", "mkl")
    with pytest.raises(ValueError, match=r"FASTRNN_BLAS must be one of \('numpy', 'scipy'\), got 'mkl'"):
        _blas_lib.library()


def test_numpy_blas_that_is_not_openblas_is_refused(monkeypatch):
    """A NumPy linked to another BLAS (MKL, Accelerate) is not guessed at."""
    cfg = {"Build Dependencies": {"blas": {"name": "mkl-sdl", "openblas configuration": ""}}}
    monkeypatch.setattr(np.__config__, "CONFIG", cfg, raising=False)
    with pytest.raises(_blas_lib.BlasNotFound, match="'mkl-sdl', not an OpenBLAS"):
        _blas_lib._from_numpy()


def test_width_disagreement_is_refused(monkeypatch):
    """Symbol names and build configuration must agree on the integer width."""
    try:
        real = _blas_lib._from_numpy()
    except _blas_lib.BlasNotFound as exc:
        pytest.skip(f"NumPy's BLAS is not usable here: {exc}")
    blas = dict(np.__config__.CONFIG["Build Dependencies"]["blas"])
    conf = blas["openblas configuration"]
    blas["openblas configuration"] = (conf.replace("USE64BITINT", "") if real.ilp64
                                      else conf + " USE64BITINT")
    cfg = dict(np.__config__.CONFIG)
    cfg["Build Dependencies"] = dict(cfg["Build Dependencies"], blas=blas)
    monkeypatch.setattr(np.__config__, "CONFIG", cfg)
    with pytest.raises(_blas_lib.BlasNotFound, match="symbols say ilp64"):
        _blas_lib._from_numpy()


def test_scipy_fallback_resolves():
    lib = _blas_lib._from_scipy()
    assert lib.name == "scipy" and lib.ilp64 is False
    _blas_lib._self_test(lib)


@pytest.mark.parametrize("which", ["library", "scipy"])
def test_thread_count_follows_threadpoolctl(which):
    # softmax_xent splits rows over threads only when this says 1 (tests/test_parallel.py)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    lib = _blas_lib.library() if which == "library" else _blas_lib._from_scipy()
    n = lib.num_threads()
    if n is None:
        pytest.skip(f"{lib!r} does not report its thread count")
    assert n >= 1
    with threadpoolctl.threadpool_limits(1):
        assert lib.num_threads() == 1
    assert lib.num_threads() == n


def test_thread_count_can_be_set():
    # fastrnn.set_num_threads puts the kernels' BLAS on one thread through this
    threadpoolctl = pytest.importorskip("threadpoolctl")
    lib = _blas_lib.library()
    if lib.num_threads() is None or lib._set_threads is None:
        pytest.skip(f"{lib!r} cannot report or set its thread count")
    top = lib.num_threads()
    same = [i for i in threadpoolctl.threadpool_info()
            if os.path.realpath(i["filepath"]) == os.path.realpath(lib.path)]
    with threadpoolctl.threadpool_limits(limits=None):     # restores the count after
        for n in (1, top, 1):
            assert lib.set_num_threads(n) is True
            assert lib.num_threads() == n
            if same:                                       # threadpoolctl sees it too
                info = [i for i in threadpoolctl.threadpool_info()
                        if os.path.realpath(i["filepath"]) == os.path.realpath(lib.path)]
                assert info[0]["num_threads"] == n
    assert lib.num_threads() == top


def test_thread_count_unknown_without_a_query(tmp_path):
    assert _blas_lib._thread_query(None) is None
    assert _blas_lib._thread_query(str(tmp_path / "missing.so")) is None
    assert _blas_lib._thread_query(None, _blas_lib._THREAD_SET) is None
    lib = _blas_lib.BlasLibrary("numpy", True, None, {})
    assert lib.num_threads() is None
    assert lib.set_num_threads(1) is False


def test_cache_stamp_depends_on_the_library(monkeypatch):
    """A kernel compiled for 64-bit BLAS integers must not be loaded for a 32-bit library."""
    from fastrnn import _kernels
    lib = _blas_lib.library()
    before = _kernels._sources_digest()
    other = _blas_lib.BlasLibrary("scipy" if lib.name == "numpy" else "numpy",
                                  not lib.ilp64, lib.path, lib.addr)
    monkeypatch.setattr(_blas_lib, "_LIB", other)
    assert _kernels._sources_digest() != before


def test_cython_modules_use_the_same_library():
    from fastrnn.backends import get_backend
    try:
        get_backend("cython")
    except Exception as exc:  # noqa: BLE001 - an optional backend
        pytest.skip(f"cython backend not built: {exc}")
    from fastrnn._kernels import _cells_cy, _rnn_cy
    assert _rnn_cy.BLAS == _cells_cy.BLAS == repr(_blas_lib.library())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_on_column_blocks(dtype, ta, tb):
    """Leading dimensions come from the row strides: column blocks of wider arrays work."""
    from fastrnn._kernels.blas import gemm
    rng = np.random.default_rng(1)
    m, n, k = 5, 4, 3
    Abig = rng.standard_normal((k if ta else m, 9)).astype(dtype)
    Bbig = rng.standard_normal((n if tb else k, 11)).astype(dtype)
    A = Abig[:, 2:2 + (m if ta else k)]
    B = Bbig[:, 1:1 + (k if tb else n)]
    Cbig = rng.standard_normal((m, 10)).astype(dtype)
    want = Cbig.copy()
    C = Cbig[:, 3:3 + n]
    ref = 0.5 * (A.T if ta else A) @ (B.T if tb else B) + 2.0 * C
    gemm(ta, tb, 0.5, A, B, 2.0, C)
    want[:, 3:3 + n] = ref
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(Cbig, want, rtol=tol, atol=tol)   # and nothing outside C


FORCED_SCIPY = r"""
import numpy as np
import fastrnn
from fastrnn._kernels._blas_lib import library
assert library().name == "scipy", library()
x = np.random.default_rng(0).integers(0, 50, (7, 3))
y = np.random.default_rng(1).integers(0, 50, (7, 3))
out = {}
for be in ("numpy", "numba", "cython"):
    try:
        m = fastrnn.LSTM(50, 16, num_layers=2, dtype=np.float64, backend=be, seed=3)
    except Exception as exc:
        continue
    loss, g, _ = m.loss_and_grad(x, y)
    # the tutorial RNN's kernels (gemv, ger, axpy besides gemm in the Cython module)
    np.random.seed(4)
    r = fastrnn.RNNNumpy(50, 8, bptt_truncate=3, backend=be)
    for trunc in ("window", "full"):
        g[trunc] = np.concatenate([a.ravel() for a in fastrnn.functional.grad(
            r.U, r.V, r.W, x[:, 0], y[:, 0], truncation=trunc, k=3, backend=be)[1:]])
    r.sgd_step(x[:, 1], y[:, 1], 0.1)
    g["sgd"] = np.concatenate([r.U.ravel(), r.V.ravel(), r.W.ravel()])
    out[be] = (loss, g)
ref_loss, ref_g = out.pop("numpy")
assert out, "no compiled backend"
for be, (loss, g) in out.items():
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss), (be, loss, ref_loss)
    for k in ref_g:
        np.testing.assert_allclose(g[k], ref_g[k], rtol=1e-10, atol=1e-12, err_msg=f"{be} {k}")
print(sorted(out))
"""


def test_forced_scipy_blas_matches_the_reference(tmp_path, monkeypatch):
    """FASTRNN_BLAS=scipy (32-bit integers) gives the reference's loss and gradients.

    Run in a fresh interpreter with its own Numba cache: the choice is compiled in.
    """
    monkeypatch.setenv("FASTRNN_BLAS", "scipy")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    out = run_isolated(FORCED_SCIPY)
    assert "numba" in out


SWITCH = r"""
import numpy as np
from fastrnn._kernels._blas_lib import library
from fastrnn._kernels.blas import gemm
a = np.arange(6.0).reshape(2, 3)
c = np.zeros((2, 2))
gemm(False, True, 1.0, a, a, 0.0, c)
assert np.array_equal(c, a @ a.T), c
print(library().name)
"""


def test_switching_blas_with_a_shared_numba_cache_dir(tmp_path, monkeypatch):
    """Kernels cached for one library's integer width are cleared, not loaded, when the
    next process uses the other library with the same ``NUMBA_CACHE_DIR`` (loading them
    aborted the process: "LLVM ERROR: Symbol not found")."""
    try:
        _blas_lib._from_numpy()
    except _blas_lib.BlasNotFound as exc:
        pytest.skip(f"only SciPy's BLAS is usable here: {exc}")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    for choice in ("numpy", "scipy", "numpy"):
        monkeypatch.setenv("FASTRNN_BLAS", choice)
        assert run_isolated(SWITCH).strip() == choice
    stamps = list(tmp_path.glob("*/fastrnn-kernels.stamp"))
    assert len(stamps) == 1, stamps        # the stamp lives where Numba puts the kernels


def _stale_kernels_come_back(tmp_path, monkeypatch, script, first, second):
    """Fill a cache with ``FASTRNN_BLAS=first``, let a ``second`` process clear and restamp
    it, then copy the ``first`` kernels back (the race the stamp cannot see); returns the
    three processes' outputs (``script`` run each time)."""
    import shutil
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTRNN_BLAS", first)
    outs = [run_isolated(script)]
    (sub,) = (tmp_path / "cache").iterdir()
    saved = tmp_path / "saved"
    shutil.copytree(sub, saved)
    monkeypatch.setenv("FASTRNN_BLAS", second)
    outs.append(run_isolated(script))              # clears them and stamps for `second`
    for f in saved.iterdir():                      # the race: the first kernels come back
        if f.suffix in (".nbi", ".nbc"):
            shutil.copy(f, sub / f.name)
    outs.append(run_isolated(script))
    return outs


def test_kernel_cached_for_the_other_width_still_links(tmp_path, monkeypatch):
    """The stamp cannot exclude every stale kernel (two processes with different
    FASTRNN_BLAS filling one cache at once; a read-only install).  Simulated here: kernels
    compiled with NumPy's 64-bit BLAS are put back into a cache that a SciPy-BLAS process
    has stamped.  Loading them must work (they call NumPy's library), not abort."""
    try:
        _blas_lib._from_numpy()
    except _blas_lib.BlasNotFound as exc:
        pytest.skip(f"only SciPy's BLAS is usable here: {exc}")
    outs = _stale_kernels_come_back(tmp_path, monkeypatch, SWITCH, "numpy", "scipy")
    assert outs[2].strip() == "scipy"

STALE_I32 = r"""
import sys
import numpy as np
from fastrnn._kernels._blas_lib import library
from fastrnn._kernels.blas import gemm
before = "scipy.linalg" in sys.modules
for dt in (np.float64, np.float32):
    a = np.arange(6.0, dtype=dt).reshape(2, 3)
    c = np.zeros((2, 2), dt)
    gemm(False, True, 1.0, a, a, 0.0, c)
    assert np.array_equal(c, a @ a.T), (dt, c)
print(library().name, int(before), int("scipy.linalg" in sys.modules))
"""


def test_kernel_cached_for_scipy_blas_runs_in_a_numpy_blas_process(tmp_path, monkeypatch):
    """The mirror case: kernels compiled for SciPy's 32-bit BLAS come back into a cache
    stamped for NumPy's 64-bit one.  Their symbols are bound to stand-ins that find SciPy's
    routines at the first call (SciPy is not imported before: start-up does not need it),
    so both products are right and SciPy is imported only then."""
    try:
        _blas_lib._from_numpy()
        _blas_lib._from_scipy()
    except _blas_lib.BlasNotFound as exc:
        pytest.skip(f"needs both NumPy's and SciPy's BLAS: {exc}")
    outs = _stale_kernels_come_back(tmp_path, monkeypatch, STALE_I32, "scipy", "numpy")
    assert outs[0].split() == ["scipy", "1", "1"]
    assert outs[1].split() == ["numpy", "0", "0"]   # fresh 64-bit kernels
    assert outs[2].split() == ["numpy", "0", "1"]

NO_SCIPY_AT_START = r"""
import sys
import numpy as np
import fastrnn
m = fastrnn.RNNNumpy(50, 8, backend="numba")
m.sgd_step([1, 2, 3], [2, 3, 4], 0.005)
started = "scipy.linalg" in sys.modules
from numba.np import arraymath, linalg
import numba
@numba.njit
def dot(a, b):
    return np.dot(a, b)
a = np.arange(6.0).reshape(2, 3)
assert np.array_equal(dot(a, a.T), a @ a.T)
print(int(started), int(arraymath._HAVE_BLAS), linalg.ensure_blas.__module__,
      int("scipy.linalg" in sys.modules))
"""


def test_numba_start_up_does_not_import_scipy(monkeypatch):
    """A Numba-backend step loads no ``scipy.linalg`` (0.2-0.5 s of start-up); Numba's
    answer to "is SciPy's BLAS there" is the same as its own check's, its own check is back
    in place, and a user's ``np.dot`` in Numba still compiles (importing SciPy then)."""
    pytest.importorskip("scipy.linalg")
    monkeypatch.delenv("FASTRNN_BLAS", raising=False)
    if _blas_lib.library().name != "numpy":
        pytest.skip("with SciPy's BLAS in use, SciPy is imported by design")
    assert run_isolated(NO_SCIPY_AT_START).split() == ["0", "1", "numba.np.linalg", "1"]


def test_scipy_blas_presence_check_agrees_with_importing(monkeypatch):
    from fastrnn._kernels import _scipy_blas_present
    try:
        import scipy.linalg.cython_blas  # noqa: F401
        importable = True
    except ImportError:
        importable = False
    assert _scipy_blas_present() is importable
    monkeypatch.delitem(sys.modules, "scipy.linalg.cython_blas", raising=False)
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert _scipy_blas_present() is False

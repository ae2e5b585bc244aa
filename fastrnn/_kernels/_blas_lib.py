"""Which BLAS library the compiled kernels call, and where its routines are.

Both compiled backends call BLAS through raw function addresses found here, so that every
product of a step -- the kernels' own and :func:`fastrnn.models._mm`'s -- runs in **one**
library.  Two candidates are usually loaded in the process:

``numpy``
    NumPy's own OpenBLAS (the ``scipy-openblas64`` build that NumPy's wheels bundle: 64-bit
    integers, symbols ``scipy_sgemm_64_`` ...).  Preferred: NumPy is loaded anyway, it ships
    the newer OpenBLAS (measured on the 2-core Zen 3 machine: the tutorial's float32
    products take 0.74-0.86 ms with NumPy's 0.3.31 against 1.06-1.27 ms with SciPy's 0.3.30,
    the LSTM's 20x200x800 per-step product 0.10 ms against 0.16 ms), and no SciPy import is
    needed (0.25 s of start-up).
``scipy``
    SciPy's ``scipy.linalg.cython_blas`` (32-bit integers), the fallback when NumPy's BLAS
    is not a recognisable OpenBLAS (a NumPy built against MKL or Accelerate, a source build).

``FASTRNN_BLAS=numpy`` or ``FASTRNN_BLAS=scipy`` forces one (an error if it is not usable).
NumPy's library is used only when its integer width is known twice over -- from the symbol
names (``scipy_sgemm_64_`` is the 64-bit build, ``scipy_sgemm_`` the 32-bit one) and from
NumPy's build configuration (``USE64BITINT``) -- and agrees; then a small ``sgemm`` and
``dgemm`` through the found addresses must reproduce NumPy's own products.

The choice is part of the compiled code (the width of the integer arguments), so it is
part of the kernels' cache stamp (:mod:`fastrnn._kernels`).
"""
import ctypes
import glob
import os

import numpy as np

ROUTINES = ("sgemm", "dgemm", "sgemv", "dgemv", "sger", "dger", "saxpy", "daxpy")
CHOICES = ("numpy", "scipy")


# OpenBLAS's thread-count query, as each build names it (scipy-openblas64, the 32-bit build,
# a plain OpenBLAS).
_THREAD_QUERY = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                 "openblas_get_num_threads64_", "openblas_get_num_threads")
_THREAD_SET = tuple(q.replace("get_num", "set_num") for q in _THREAD_QUERY)


def _thread_query(path, names=_THREAD_QUERY):
    """OpenBLAS's ``get_num_threads`` (or, with ``names=_THREAD_SET``, ``set_num_threads``)
    in the library at ``path`` (or one it links to), or None."""
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for sym in names:
        fn = getattr(lib, sym, None)
        if fn is not None:
            if "set_num_threads" in sym:         # void f(int)
                fn.restype, fn.argtypes = None, [ctypes.c_int]
            else:                                # int f(void)
                fn.restype, fn.argtypes = ctypes.c_int, []
            return fn
    return None


class BlasLibrary:
    """A resolved BLAS: ``name`` (``"numpy"``/``"scipy"``), ``ilp64`` (64-bit integer
    arguments), ``path`` of the shared library, ``addr`` routine name -> address."""

    __slots__ = ("name", "ilp64", "path", "addr", "_threads", "_set_threads")

    def __init__(self, name, ilp64, path, addr):
        self.name, self.ilp64, self.path, self.addr = name, ilp64, path, addr
        self._threads = _thread_query(path)
        self._set_threads = _thread_query(path, _THREAD_SET)

    def num_threads(self):
        """The library's current thread count (it follows ``threadpoolctl`` and
        ``OPENBLAS_NUM_THREADS``), or None when the library does not say."""
        return None if self._threads is None else int(self._threads())

    def set_num_threads(self, n):
        """Set the library's thread count (process-wide, as ``threadpoolctl`` does); False
        when the library has no such call."""
        if self._set_threads is None:
            return False
        self._set_threads(int(n))
        return True

    def __repr__(self):
        return f"BlasLibrary(name={self.name!r}, ilp64={self.ilp64}, path={self.path!r})"


class BlasNotFound(RuntimeError):
    pass


def _numpy_blas_files():
    """Candidate files of the OpenBLAS bundled in NumPy's wheel (Linux, macOS, Windows)."""
    here = os.path.dirname(np.__file__)
    dirs = [os.path.join(here, os.pardir, "numpy.libs"), os.path.join(here, ".dylibs"),
            os.path.join(here, ".libs")]
    files = []
    for d in dirs:
        for pat in ("*openblas*.so*", "*openblas*.dylib", "*openblas*.dll"):
            files.extend(sorted(glob.glob(os.path.join(d, pat))))
    return files


# (symbol template, 64-bit integers): scipy-openblas64 first, then the 32-bit builds.
_SYMBOLS = (("scipy_{}_64_", True), ("{}_64_", True), ("scipy_{}_", False))


def _from_numpy():
    cfg = getattr(getattr(np, "__config__", None), "CONFIG", {}) or {}
    blas = (cfg.get("Build Dependencies") or {}).get("blas") or {}
    name = str(blas.get("name", ""))
    if "openblas" not in name.lower():
        raise BlasNotFound(f"NumPy's BLAS is {name or 'unknown'!r}, not an OpenBLAS build")
    conf = str(blas.get("openblas configuration", ""))
    if not conf:
        raise BlasNotFound("NumPy's build configuration does not describe its OpenBLAS")
    conf_ilp64 = "USE64BITINT" in conf
    files = _numpy_blas_files()
    if not files:
        raise BlasNotFound("NumPy's bundled OpenBLAS library file was not found")
    for path in files:
        try:
            lib = ctypes.CDLL(path)       # already loaded by NumPy: the same handle
        except OSError:
            continue
        for template, ilp64 in _SYMBOLS:
            try:
                addr = {r: ctypes.cast(getattr(lib, template.format(r)), ctypes.c_void_p).value
                        for r in ROUTINES}
            except AttributeError:
                continue
            if ilp64 != conf_ilp64:
                raise BlasNotFound(f"NumPy's OpenBLAS symbols say ilp64={ilp64}, its build "
                                   f"configuration says ilp64={conf_ilp64} ({conf!r})")
            found = BlasLibrary("numpy", ilp64, os.path.normpath(path), addr)
            _self_test(found)
            return found
    raise BlasNotFound(f"no known gemm symbol in NumPy's OpenBLAS ({', '.join(files)})")


def _from_scipy():
    try:
        from scipy.linalg import cython_blas
    except ImportError as exc:
        raise BlasNotFound(f"SciPy is not importable ({exc})") from None
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    capi = cython_blas.__pyx_capi__
    addr = {}
    for r in ROUTINES:
        cap = capi[r]
        addr[r] = get_ptr(cap, get_name(cap))
    return BlasLibrary("scipy", False, cython_blas.__file__, addr)


def _self_test(lib):
    """A 3x4 . 4x2 product through ``lib``'s sgemm and dgemm must equal NumPy's."""
    it = ctypes.c_int64 if lib.ilp64 else ctypes.c_int32
    rng = np.random.default_rng(0)
    for r, dt, ct in (("sgemm", np.float32, ctypes.c_float), ("dgemm", np.float64, ctypes.c_double)):
        a = np.asfortranarray(rng.standard_normal((3, 4)), dt)
        b = np.asfortranarray(rng.standard_normal((4, 2)), dt)
        c = np.asfortranarray(np.full((3, 2), 7.0), dt)
        fn = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))(lib.addr[r])
        n_ = ctypes.c_char(b"N")
        m, n, k = it(3), it(2), it(4)
        one, zero = ct(1.0), ct(0.0)
        fn(ctypes.addressof(n_), ctypes.addressof(n_), ctypes.addressof(m), ctypes.addressof(n),
           ctypes.addressof(k), ctypes.addressof(one), a.ctypes.data, ctypes.addressof(m),
           b.ctypes.data, ctypes.addressof(k), ctypes.addressof(zero), c.ctypes.data,
           ctypes.addressof(m))
        if not np.allclose(c, a @ b, rtol=1e-5, atol=1e-5):
            raise BlasNotFound(f"{r} of {lib.path} failed the self-test (integer width?)")


_LIB = None


def library():
    """The :class:`BlasLibrary` the kernels use (resolved once per process)."""
    global _LIB
    if _LIB is None:
        want = os.environ.get("FASTRNN_BLAS", "").strip().lower()
        if want and want not in CHOICES:
            raise ValueError(f"FASTRNN_BLAS must be one of {CHOICES}, got {want!r}")
        if want == "scipy":
            _LIB = _from_scipy()
        elif want == "numpy":
            _LIB = _from_numpy()
        else:
            try:
                _LIB = _from_numpy()
            except BlasNotFound:
                _LIB = _from_scipy()
    return _LIB

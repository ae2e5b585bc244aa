"""Compiled kernels.  One module per cell holding forward and backward together.

Kernels never validate their input and never raise: everything they receive was checked
at the Python boundary (:mod:`fastrnn._validate` and the model classes).

On-disk cache safety
--------------------
Numba's cache index checks only the source file of the function being loaded, not the
modules it calls into: after an edit to ``softmax.py`` or ``common.py`` (or an upgrade
that leaves old ``__pycache__`` files behind) a kernel in ``rnn.py`` could load stale
machine code.  So before any Numba kernel module is imported (each imports
:mod:`._numba_init` first), the cache of this package is
stamped with a hash of every kernel source file, of the Numba version and of the BLAS
library the kernels link to (:mod:`._blas_lib`: its integer width is compiled in), and
cleared when the stamp differs.  ``tests/test_cache.py`` checks this.  The stamp cannot
exclude a kernel written by a concurrent process with the other BLAS choice, or one in
Numba's per-user fallback cache of a read-only install; such a kernel still links to a
library of its own integer width (:func:`fastrnn._kernels.blas._register_other_width`).

SciPy at start-up
-----------------
The kernels call the BLAS of :mod:`._blas_lib` (NumPy's own, usually) and never SciPy's,
but Numba's array-math module, imported when Numba first compiles or loads a function,
asks whether SciPy's BLAS exists by importing ``scipy.linalg.cython_blas`` -- all of
``scipy.linalg``, 0.2-0.5 s of a warm start on the 2-core machine.
:func:`_defer_scipy_import` answers that question by finding the module's file instead;
``scipy.linalg`` is then imported only when something uses it (Numba's own ``np.dot``
on arrays does, at compile time, through Numba's unchanged check).
"""
import glob
import hashlib
import os
import sys


def _cache_dir():
    """Where Numba caches this package's kernels: ``__pycache__`` beside the sources, or
    with ``NUMBA_CACHE_DIR`` the directory Numba derives for them below it (None if this
    Numba does not say how)."""
    from numba.core.config import CACHE_DIR
    if CACHE_DIR:
        try:
            from numba.core.caching import _CacheLocator
            sub = _CacheLocator.get_suitable_cache_subpath(os.path.join(
                os.path.dirname(os.path.abspath(__file__)), "blas.py"))
        except (ImportError, AttributeError):
            return None
        return os.path.join(CACHE_DIR, sub)
    return os.path.join(os.path.dirname(__file__), "__pycache__")


def _sources_digest():
    import numba

    h = hashlib.sha256(numba.__version__.encode())
    here = os.path.dirname(__file__)
    for path in sorted(glob.glob(os.path.join(here, "*.py"))) + \
            [os.path.join(here, os.pardir, "_config.py")]:
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read())
    for key in ("FASTRNN_FASTMATH",):                       # options baked into the code
        h.update(f"{key}={os.environ.get(key, '')}".encode())
    from ._blas_lib import library                         # BLAS integer width, too
    lib = library()
    h.update(f"blas={lib.name}:ilp64={lib.ilp64}".encode())
    return h.hexdigest()


def _check_cache():
    directory = _cache_dir()
    if directory is None:
        return
    stamp = os.path.join(directory, "fastrnn-kernels.stamp")
    digest = _sources_digest()
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return
    except OSError:
        pass
    try:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.nbi")) + \
                glob.glob(os.path.join(directory, "*.nbc")):
            os.remove(path)
        tmp = f"{stamp}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(digest + "\n")
        os.replace(tmp, stamp)
    except OSError:
        pass  # a read-only install: Numba then falls back to its own cache locator


def _scipy_blas_present():
    """Whether ``scipy.linalg.cython_blas`` can be found, without importing ``scipy.linalg``."""
    if "scipy.linalg.cython_blas" in sys.modules:
        return True
    import importlib.machinery
    import importlib.util
    try:
        spec = importlib.util.find_spec("scipy")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    paths = [os.path.join(p, "linalg") for p in spec.submodule_search_locations]
    return importlib.machinery.PathFinder.find_spec("scipy.linalg.cython_blas",
                                                    paths) is not None


def _defer_scipy_import():
    """Import Numba's array-math module with its SciPy check answered by
    :func:`_scipy_blas_present` (same answer, no ``scipy.linalg`` import); Numba's own
    ``ensure_blas`` is put back straight after.  A no-op once either module is loaded or
    when this Numba is laid out differently (then the start-up is only slower)."""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return False
    try:
        from numba.np import linalg
        real = linalg.ensure_blas
    except (ImportError, AttributeError):
        return False

    def ensure_blas():
        if not _scipy_blas_present():
            raise ImportError("scipy 0.16+ is required for linear algebra")

    linalg.ensure_blas = ensure_blas
    try:
        from numba.np import arraymath
    finally:
        linalg.ensure_blas = real
    if getattr(arraymath, "ensure_blas", None) is ensure_blas:
        arraymath.ensure_blas = real
    return True

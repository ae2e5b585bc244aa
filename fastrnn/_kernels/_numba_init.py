"""Imported first by every Numba kernel module: the on-disk cache stamp is checked (and a
stale cache cleared) once, before any kernel is compiled or loaded.  The Cython modules do
not import it, so the Cython backend runs without importing Numba at all.  Numba's start-up
is then kept from importing ``scipy.linalg`` (:func:`._defer_scipy_import`), and Numba's
threads are started with a short OpenMP spin (:mod:`._threads`)."""
from . import _check_cache, _defer_scipy_import, _threads

_check_cache()
_defer_scipy_import()
_threads.start()

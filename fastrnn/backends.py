"""Backend registry.

A backend is a function table: the same kernel names (``rnn_forward``, ``rnn_loss``,
``rnn_grad``, ``rnn_sgd``, and the GRU/LSTM kernels) with the same signatures, taken from
the modules listed in :data:`BACKEND_MODULES`.

The tables hold the raw kernels, which validate nothing (they are compiled without bounds
checks): call them only with inputs checked as :mod:`fastrnn.functional` and the model
classes check them.  Public code should use those.

Selection: the ``backend=`` argument, else the ``FASTRNN_BACKEND`` environment variable,
else the first available of ``numba -> cython -> numpy``.  A backend asked for by name
that is unavailable raises :class:`BackendUnavailableError`; nothing falls back silently.
"""
import importlib

from . import _config

BACKEND_ORDER = ("numba", "cython", "numpy")

#: For each backend, the modules whose public kernel functions make up its table.
BACKEND_MODULES = {
    "numba": ("fastrnn._kernels.rnn", "fastrnn._kernels.elman", "fastrnn._kernels.gru",
              "fastrnn._kernels.lstm"),
    "cython": ("fastrnn._kernels._rnn_cy", "fastrnn._kernels._cells_cy"),
    "numpy": ("fastrnn.reference",),
}


class BackendUnavailableError(RuntimeError):
    """A backend was requested by name but cannot be loaded on this installation."""


_PREFIXES = ("rnn_", "gru_", "lstm_")


class Backend:
    """A backend's function table, loaded lazily module by module.

    Only the first module of a backend is imported to decide that the backend is
    available; the others (one per cell) are imported the first time one of their kernels
    is asked for, so a script that trains the tutorial's RNN never pays for loading the
    GRU and LSTM kernels (0.4 s measured here with a warm cache).
    """

    def __init__(self, name, modules):
        self.name = name
        self._modules = modules
        self._table = {}

    def __getattr__(self, attr):
        if attr.startswith("_") or not attr.startswith(_PREFIXES):
            raise AttributeError(attr)
        for modname in self._modules:
            mod = importlib.import_module(modname)
            fn = getattr(mod, attr, None)
            if callable(fn):
                self._table[attr] = fn
                setattr(self, attr, fn)          # later look-ups skip __getattr__
                return fn
        raise AttributeError(f"backend {self.name!r} has no kernel {attr!r}")

    def functions(self):
        """Names of every kernel in the table (imports all of the backend's modules)."""
        names = set()
        for modname in self._modules:
            mod = importlib.import_module(modname)
            names.update(n for n in dir(mod) if n.startswith(_PREFIXES) and callable(getattr(mod, n)))
        return sorted(names)

    def __repr__(self):
        return f"<fastrnn backend {self.name!r}>"


_loaded = {}
_errors = {}


def _load(name):
    if name in _loaded:
        return _loaded[name]
    if name in _errors:
        return None
    modules = BACKEND_MODULES[name]
    try:
        importlib.import_module(modules[0])
    except Exception as exc:  # ImportError, or a compile failure inside numba
        _errors[name] = f"{type(exc).__name__}: {exc}"
        return None
    backend = Backend(name, modules)
    _loaded[name] = backend
    return backend


def _check_name(name):
    if not isinstance(name, str) or name.lower() not in BACKEND_MODULES:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_ORDER)}")
    return name.lower()


def get_backend(name=None):
    """Return the backend table for ``name`` (see module docstring for the selection order)."""
    if name is None:
        name = _config.ENV_BACKEND
        source = "FASTRNN_BACKEND"
    else:
        source = "backend="
    if name is not None:
        name = _check_name(name)
        backend = _load(name)
        if backend is None:
            raise BackendUnavailableError(
                f"backend {name!r} (requested via {source}) is not available: {_errors[name]}")
        return backend
    for candidate in BACKEND_ORDER:
        backend = _load(candidate)
        if backend is not None:
            return backend
    raise BackendUnavailableError(f"no backend could be loaded: {_errors}")  # numpy always loads


def available_backends():
    """Dict ``name -> True`` or the reason it is unavailable, in preference order."""
    return {n: (True if _load(n) is not None else _errors[n]) for n in BACKEND_ORDER}


def backend_info():
    """Which backends exist, which is available, which one is used by default, and the
    BLAS library the compiled ones call (``"numpy"`` or ``"scipy"``, see
    :mod:`fastrnn._kernels._blas_lib`)."""
    avail = available_backends()
    try:
        default = get_backend().name
    except BackendUnavailableError as exc:
        default = f"<error: {exc}>"
    try:
        from ._kernels._blas_lib import library
        lib = library()
        blas = f"{lib.name} ({'64' if lib.ilp64 else '32'}-bit integers)"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        blas = f"<error: {exc}>"
    return {"available": [n for n, ok in avail.items() if ok is True],
            "unavailable": {n: why for n, why in avail.items() if why is not True},
            "default": default,
            "env": _config.ENV_BACKEND,
            "blas": blas}


def set_num_threads(n):
    """Run the Numba backend's steps on ``n`` of Numba's threads, with BLAS on one.

    Sets Numba's thread count to ``n`` (``numba.set_num_threads``, which applies to the
    calling thread) and the kernels' BLAS to one thread.  That BLAS is NumPy's own
    OpenBLAS (see :func:`backend_info`), so every NumPy product in the process then runs
    on one thread too, as after ``threadpoolctl.threadpool_limits(1)``.

    A Numba-backend step (``loss``, ``loss_and_grad``, training) then runs all its parallel
    parts on the one pool of Numba's threads: the whole-sequence products in blocks (each
    a single-threaded BLAS call), the softmax in chunks of rows, the LSTM recurrence in
    blocks of hidden units (or of sequences, for a large batch), the GRU and Elman
    recurrences in blocks of sequences from 8 (GRU) and 16 (Elman) sequences a thread.
    When the decoder's weight gradient is at least the recurrent stack's backward pass in
    work (a word-level vocabulary), it is computed in blocks on ``n - 1`` helper threads
    beside that pass, which then runs serially on the calling thread
    (:func:`fastrnn.models._overlap_decoder`; only with Numba's OpenMP workers started
    with a short spin, see :mod:`fastrnn._kernels._threads`).
    Left at their defaults (BLAS on every core), BLAS threads the products and the rest of
    the step runs serially, because OpenBLAS's workers keep spinning for a while after
    each product and slow any other threads started then.
    On the 2-core machine of the README, Numba's pool made the PTB-small LSTM step faster
    on two threads than BLAS's threads did (the README's speed section has the numbers).

    The Cython backend's kernels are serial: with it, keep BLAS multi-threaded instead.
    ``set_num_threads(1)`` makes everything serial.

    Raises
    ------
    ValueError
        ``n`` is not an integer from 1 to Numba's ``NUMBA_NUM_THREADS``.
    BackendUnavailableError
        The Numba backend cannot be loaded.
    RuntimeError
        The kernels' BLAS has no call to set its thread count.
    """
    import numbers
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"n must be an integer number of threads, got {n!r}")
    get_backend("numba")
    import numba
    top = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= top:
        raise ValueError(f"n must be between 1 and {top} (NUMBA_NUM_THREADS), got {n}")
    from ._kernels._blas_lib import library
    lib = library()
    if lib.num_threads() != 1 and not lib.set_num_threads(1):
        raise RuntimeError(f"cannot set the thread count of the kernels' BLAS ({lib.path})")
    numba.set_num_threads(int(n))

"""Validation at the Python boundary.

Every public entry point passes its inputs through these checks before any kernel runs.
Kernels are compiled without bounds checks, so an id out of range must never reach them.
Errors name what was expected and what came.
"""
import numbers

import numpy as np

from ._config import MODE_FULL, MODE_LAST, MODE_WINDOW, TRUNCATION_NAMES

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(dtype):
    """Normalise a float dtype argument; only float32 and float64 are supported."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def tokens(x, vocab_size, name="x", allow_empty=False):
    """Return ``x`` as a C-contiguous ``intp`` vector of ids in ``[0, vocab_size)``.

    Accepts a list/tuple/array of integers.  Rejects floats (even integral ones: a float
    array of ids is almost always a bug upstream), booleans, strings, nested sequences.
    """
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of integer token ids, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # ragged nested lists on NumPy >= 1.24
        raise ValueError(f"{name} must be a flat sequence of integer token ids; "
                         f"got a ragged nested sequence ({exc})") from None
    if arr.dtype == object:
        flat = list(np.ravel(arr))
        if flat and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in flat):
            # Python ints too large for int64: necessarily out of range
            big = max(flat, key=abs)
            raise ValueError(f"{name}: token id {big} out of range for vocabulary of {vocab_size} "
                             f"(expected ids in [0, {vocab_size}))")
        raise TypeError(f"{name} must be a sequence of integer token ids, got elements of "
                        f"type {sorted({type(v).__name__ for v in flat})}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (a sequence of token ids), "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.intp)
        raise ValueError(f"{name} is empty; expected at least one token id")
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    lo = int(arr.min())
    hi = int(arr.max())
    if lo < 0:
        raise ValueError(f"{name}: token id {lo} is negative; expected ids in [0, {vocab_size})")
    if hi >= vocab_size:
        raise ValueError(f"{name}: token id {hi} out of range for vocabulary of {vocab_size} "
                         f"(expected ids in [0, {vocab_size}))")
    return np.ascontiguousarray(arr, dtype=np.intp)


def pair(x, y, vocab_size):
    """Validate an input/target pair of equal length."""
    xa = tokens(x, vocab_size, "x")
    ya = tokens(y, vocab_size, "y")
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(f"x and y must have the same length, got len(x)={xa.shape[0]} "
                         f"and len(y)={ya.shape[0]}")
    return xa, ya


def corpus(X, Y, vocab_size):
    """Validate lists of sentences ``X``, ``Y`` of equal count; returns lists of arrays."""
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype != object:
        X = list(X)
    if isinstance(Y, np.ndarray) and Y.ndim == 2 and Y.dtype != object:
        Y = list(Y)
    try:
        nx, ny = len(X), len(Y)
    except TypeError:
        raise TypeError(f"X and Y must be sequences of sentences, got {type(X).__name__} "
                        f"and {type(Y).__name__}") from None
    if nx != ny:
        raise ValueError(f"X and Y must hold the same number of sentences, got {nx} and {ny}")
    if nx == 0:
        raise ValueError("X and Y are empty; expected at least one sentence")
    out = []
    for i, (x, y) in enumerate(zip(X, Y)):
        try:
            out.append(pair(x, y, vocab_size))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"sentence {i}: {exc}") from None
    return out


def param(a, name, shape, dtype=None):
    """Check one parameter array: ndarray of a float dtype, the given shape, all finite."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"parameter {name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"parameter {name} must be float32 or float64, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"parameter {name} has dtype {a.dtype}, expected {dtype} like the others")
    if a.shape != tuple(shape):
        raise ValueError(f"parameter {name} must have shape {tuple(shape)}, got {a.shape}")
    if not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"parameter {name} holds {bad} non-finite value(s) (NaN or inf)")
    return a


def truncation(mode, k):
    """Normalise a truncation spec to ``(mode_int, k_int)``."""
    if isinstance(mode, str):
        if mode not in TRUNCATION_NAMES:
            raise ValueError(f"truncation must be one of {sorted(TRUNCATION_NAMES)}, got {mode!r}")
        mode = TRUNCATION_NAMES[mode]
    if mode not in (MODE_WINDOW, MODE_LAST, MODE_FULL):
        raise ValueError(f"unknown truncation mode {mode!r}")
    if mode == MODE_FULL:
        return mode, 0
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"bptt_truncate must be an integer, got {type(k).__name__} {k!r}")
    k = int(k)
    if mode == MODE_WINDOW and k < 0:
        raise ValueError(f"bptt_truncate must be >= 0 for the tutorial's window truncation, got {k}")
    if mode == MODE_LAST:
        if k == -1:
            return MODE_FULL, 0
        if k < 1:
            raise ValueError(f"truncate_gradient must be >= 1 or -1 (full), got {k}")
    # any k >= T means the same thing; clamp so the kernels' int64 never overflows
    return mode, min(k, 1 << 62)


def positive_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def finite_scalar(v, name, positive=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def hidden_state(h, H, dtype, name="h0"):
    """Initial hidden state: None (zeros) or a finite vector of length H."""
    if h is None:
        return None
    arr = np.asarray(h)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a real-valued vector, got dtype {arr.dtype}")
    if arr.shape != (H,):
        raise ValueError(f"{name} must have shape ({H},), got {arr.shape}")
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=dtype)    # cast first: 1e300 is inf in float32
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds non-finite values (in {np.dtype(dtype).name})")
    return arr


def param_dict(p, want, dtype, name="parameters()"):
    """Check a model's live parameter dict against ``want`` (``name -> shape``), in place.

    Every expected name present and no other, each an ndarray of ``dtype``, of exactly its
    shape, C-contiguous.  Values are not scanned (too costly per call; loaders scan them).
    Used by every model before its kernels run, since ``parameters()`` is a live dict whose
    entries a user may replace; also for gradient dicts passed back in (``name="grads"``).
    """
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"model dtype must be float32 or float64, got {dtype}")
    if not isinstance(p, dict):
        raise TypeError(f"{name} must be a dict name -> array, got {type(p).__name__}")
    item = "parameter" if name == "parameters()" else f"{name} entry"
    if len(p) != len(want) or any(n not in p for n in want):
        raise ValueError(f"{name} must hold exactly {list(want)}; missing "
                         f"{[n for n in want if n not in p]}, unexpected "
                         f"{[n for n in p if n not in want]}")
    for n, shape in want.items():
        a = p[n]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{item} {n} must be a numpy array, got {type(a).__name__}")
        if a.dtype != dtype:
            raise TypeError(f"{item} {n} must have dtype {np.dtype(dtype).name} (the model's "
                            f"dtype), got {a.dtype}")
        if a.shape != shape:
            raise ValueError(f"{item} {n} must have shape {shape}, got {a.shape}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{item} {n} must be C-contiguous, got a non-contiguous or "
                             f"Fortran-ordered array (use np.ascontiguousarray, or assign in "
                             f"place: {name}[{n!r}][...] = values)")
    return p

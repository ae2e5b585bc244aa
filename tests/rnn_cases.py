"""Shared helpers for the vanilla-RNN tests: random problems and the backend list."""
import numpy as np
import pytest

import fastrnn
from fastrnn._config import MODE_FULL, MODE_LAST, MODE_WINDOW

MODES = {"window": MODE_WINDOW, "last": MODE_LAST, "full": MODE_FULL}

# (H, V, T, k): odd and tiny sizes on purpose -- T=1, T<k, T>>k, H=1, V=2.
SIZES = [(1, 2, 1, 4), (1, 2, 6, 1), (3, 2, 2, 4), (5, 7, 3, 4), (13, 37, 9, 2),
         (8, 11, 40, 4), (6, 5, 12, 0), (4, 9, 7, 7)]


def backend_params():
    """Every backend name, skipped with the reason when it is unavailable here."""
    out = []
    for name, ok in fastrnn.available_backends().items():
        marks = [] if ok is True else [pytest.mark.skip(reason=f"backend {name} unavailable: {ok}")]
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def problem(H, V, T, seed=0, dtype=np.float64, scale=0.5, h0=None):
    rng = np.random.default_rng(seed)
    U = rng.uniform(-scale, scale, (H, V))
    Vm = rng.uniform(-scale, scale, (V, H))
    W = rng.uniform(-scale, scale, (H, H))
    x = rng.integers(0, V, T)
    y = rng.integers(0, V, T)
    if h0 is None:
        h0 = rng.uniform(-0.5, 0.5, H)
    return (U.astype(dtype), Vm.astype(dtype), W.astype(dtype), x, y, h0.astype(dtype))


def workspaces(H, V, T, dtype, h0):
    s = np.zeros((T + 1, H), dtype)
    s[T] = h0
    return s, np.empty((T, V), dtype), np.empty((T, H), dtype)

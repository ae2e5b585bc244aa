"""Validated functional API of the vanilla RNN LM over any backend.

These functions are the Python boundary: they check every input (see
:mod:`fastrnn._validate`), allocate or reuse the workspaces and call the backend's kernel.
Parameters follow the tutorial: ``U (H, V)``, ``V (V, H)``, ``W (H, H)``, one dtype.

Parameter *values* are checked for NaN/inf where they enter (constructors, setters,
loaders; see :class:`fastrnn.tutorial.RNNNumpy`), not on every call: that scan would cost
about a tenth of a training step at the tutorial's size.  Shapes, dtypes and token ids are
checked on every call, because a wrong one could make a kernel read out of bounds.
"""
import threading

import numpy as np

from . import _validate
from .backends import get_backend


class Workspace:
    """Reusable scratch arrays for one parameter set, keyed by sentence length.

    Holding them avoids re-faulting a ``(T, V)`` buffer (1.5 MB at the tutorial's size)
    on every call.  The arrays are owned by the workspace: results handed to users are
    always fresh copies.
    """

    def __init__(self, H, V, dtype, max_cached=64):
        self.H, self.V, self.dtype = H, V, np.dtype(dtype)
        self._max = max_cached
        # The kernels release the GIL, so two threads using one model must not share
        # scratch arrays: each thread gets its own.
        self._local = threading.local()

    def _mine(self):
        loc = self._local
        if not hasattr(loc, "by_T"):
            loc.by_T = {}
            loc.dW = np.empty((self.H, self.H), dtype=self.dtype)
        return loc

    @property
    def dW(self):
        return self._mine().dW

    def get(self, T):
        by_T = self._mine().by_T
        ws = by_T.get(T)
        if ws is None:
            if len(by_T) >= self._max:
                by_T.clear()
            ws = (np.empty((T + 1, self.H), self.dtype),   # s
                  np.empty((T, self.V), self.dtype),       # z: logits / probabilities / deltas
                  np.empty((T, self.H), self.dtype))       # g: per-step pre-activation gradients
            by_T[T] = ws
        return ws


def check_params(U, V, W):
    """Check shapes, dtypes and layout of ``U, V, W`` (cheap; values are not scanned).

    Returns ``(H, vocab, dtype)``.
    """
    for name, a in (("U", U), ("V", V), ("W", W)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"parameter {name} must be a numpy array, got {type(a).__name__}")
        if a.dtype not in _validate.FLOAT_DTYPES:
            raise TypeError(f"parameter {name} must be float32 or float64, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"parameter {name} must be 2-D, got shape {a.shape}")
        if not a.flags.c_contiguous:
            raise ValueError(f"parameter {name} must be C-contiguous")
        if not a.flags.writeable:
            raise ValueError(f"parameter {name} is read-only; the kernels take writeable arrays "
                             f"(pass a copy, e.g. np.array({name}))")
    H, vocab = U.shape
    dtype = U.dtype
    if V.shape != (vocab, H):
        raise ValueError(f"parameter V must have shape {(vocab, H)} to match U {U.shape}, got {V.shape}")
    if W.shape != (H, H):
        raise ValueError(f"parameter W must have shape {(H, H)} to match U {U.shape}, got {W.shape}")
    for name, a in (("V", V), ("W", W)):
        if a.dtype != dtype:
            raise TypeError(f"parameter {name} has dtype {a.dtype}, expected {dtype} like U")
    return H, vocab, dtype


def _prep(U, V, W, x, y, h0, ws):
    H, vocab, dtype = check_params(U, V, W)
    if y is None:
        xa, ya = _validate.tokens(x, vocab, "x"), None
    else:
        xa, ya = _validate.pair(x, y, vocab)
    h0 = _validate.hidden_state(h0, H, dtype)
    if ws is None or ws.H != H or ws.V != vocab or ws.dtype != dtype:
        ws = Workspace(H, vocab, dtype)
    s, z, g = ws.get(len(xa))
    if h0 is None:
        s[-1] = 0.0
    else:
        s[-1] = h0
    return xa, ya, ws, s, z, g


def forward(U, V, W, x, h0=None, backend=None, ws=None):
    """Forward pass of one sequence.

    Returns ``(o, s)``: probabilities ``o`` of shape ``(T, V)`` and hidden states ``s`` of
    shape ``(T + 1, H)`` whose last row is the initial state (the tutorial's layout).
    """
    xa, _, ws, s, z, g = _prep(U, V, W, x, None, h0, ws)
    be = get_backend(backend)
    o = np.empty((len(xa), ws.V), ws.dtype)
    s_out = s.copy()
    be.rnn_forward(U, V, W, xa, s_out, o)
    return o, s_out


def loss(U, V, W, x, y, h0=None, backend=None, ws=None, return_state=False):
    """Total cross-entropy of one sequence, ``-sum_t log o_t[y_t]`` (a Python float).

    With ``return_state=True`` returns ``(loss, h_T)``, the last hidden state (a copy),
    for carrying state across chunks of a stream.
    """
    xa, ya, ws, s, z, g = _prep(U, V, W, x, y, h0, ws)
    be = get_backend(backend)
    L = float(be.rnn_loss(U, V, W, xa, ya, s, z))
    if return_state:
        return L, s[len(xa) - 1].copy()
    return L


def grad(U, V, W, x, y, truncation="full", k=0, h0=None, backend=None, ws=None,
         return_state=False):
    """Loss and gradients ``(loss, dU, dV, dW)`` of one sequence under a truncation mode.

    ``truncation`` is ``"window"`` (the tutorial's ``RNNNumpy.bptt``, ``k`` = bptt_truncate),
    ``"last"`` (Theano's ``truncate_gradient=k``; ``k=-1`` is full) or ``"full"``.
    """
    mode, k = _validate.truncation(truncation, k)
    xa, ya, ws, s, z, g = _prep(U, V, W, x, y, h0, ws)
    be = get_backend(backend)
    dU = np.empty_like(U)
    dV = np.empty_like(V)
    dW = np.empty_like(W)
    L = float(be.rnn_grad(U, V, W, xa, ya, mode, k, s, z, g, dU, dV, dW))
    if return_state:
        return L, dU, dV, dW, s[len(xa) - 1].copy()
    return L, dU, dV, dW


def sgd_step(U, V, W, x, y, learning_rate, truncation="window", k=4, h0=None, backend=None,
             ws=None, return_state=False):
    """One in-place SGD step on ``U, V, W``; returns the loss before the step.

    Dense gradients are not materialised by the compiled backends: ``V`` is updated by a
    GEMM and ``U`` column by column for the tokens that occur.
    """
    mode, k = _validate.truncation(truncation, k)
    lr = _validate.finite_scalar(learning_rate, "learning_rate")
    xa, ya, ws, s, z, g = _prep(U, V, W, x, y, h0, ws)
    be = get_backend(backend)
    L = float(be.rnn_sgd(U, V, W, xa, ya, mode, k, lr, s, z, g, ws.dW))
    if return_state:
        return L, s[len(xa) - 1].copy()
    return L

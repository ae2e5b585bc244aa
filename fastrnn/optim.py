"""Optimizers, gradient clipping and a learning-rate schedule for dicts of NumPy arrays.

Design note
-----------
Parameters are a dict ``name -> np.ndarray`` of *live* arrays (a model's ``U``, ``V``,
``W`` ...).  An optimizer keeps references to those arrays and updates them **in place**, so
the model sees the new values without any copying back.  Per-parameter state (velocity,
running averages) is allocated once, in the parameter's own dtype, and so is one scratch
array per parameter; :meth:`Optimizer.step` then runs with ufuncs writing into those
arrays (``out=``) and allocates no array the size of a parameter.

``step(grads)`` validates *all* gradients (keys, shapes, dtype, finiteness) before it
touches *any* parameter or state: a NaN in the last gradient must not leave the first
parameters already updated and the moment estimates half advanced.

Update rules (``g`` the gradient, ``t`` the 1-based step count):

=============  =====================================================================
``SGD``        ``p -= lr * g``
``Momentum``   ``v = mu*v + g``; ``p -= lr*v`` (nesterov: ``p -= lr*(g + mu*v)``),
               PyTorch's convention (``torch.optim.SGD``, ``dampening=0``).
``RMSprop``    ``m = rho*m + (1-rho)*g**2``; ``p -= lr*g/(sqrt(m) + eps)`` (Keras and
               ``torch.optim.RMSprop``), or with ``eps_inside_sqrt=True`` the WildML/Theano
               GRU tutorial's ``p -= lr*g/sqrt(m + eps)``.
``Adam``       ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g**2``;
               ``p -= lr/(1-b1**t) * m / (sqrt(v)/sqrt(1-b2**t) + eps)`` (Kingma & Ba,
               Algorithm 1, written as ``torch.optim.Adam`` computes it).
=============  =====================================================================

Checkpoints
-----------
``state_dict()`` returns a *flat* dict of scalars and arrays (copies), e.g. for Adam::

    {"optimizer": "Adam", "lr": 0.001, "step": 120, "beta1": 0.9, "beta2": 0.999,
     "eps": 1e-08, "m/W": array(...), "v/W": array(...), ...}

so ``np.savez(f, **opt.state_dict())`` stores it and ``opt.load_state_dict(np.load(f))``
restores it exactly (0-d arrays are accepted wherever a scalar is expected).  Loading
restores the hyperparameters too (``lr`` may have been lowered by a schedule), as PyTorch
does.  The parameters themselves are not in the optimizer's state; save them with the model.
"""
import math
from collections.abc import Mapping

import numpy as np

from . import _validate

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "RowSparse",
           "clip_grad_norm", "clip_grad_value", "HalveOnPlateau"]

# PyTorch's clip_grad_norm_ adds this to the norm before dividing, so a norm of zero
# gives a finite coefficient and a norm exactly at max_norm is (just) not scaled.
_CLIP_EPS = 1e-6


# --------------------------------------------------------------------------- sparse rows

class RowSparse:
    """A gradient that is zero outside a few rows of a 2-D parameter.

    The embedding matrix of a language model gets a gradient only in the rows of the tokens
    of the batch: 400 of 10,000 rows at the PTB-small shape.  ``loss_and_grad(...,
    sparse_embedding=True)`` returns it in this form, and :class:`SGD` updates only those
    rows; the other optimizers and :func:`clip_grad_value` give exactly the result of the
    dense gradient (:meth:`toarray`), and :func:`clip_grad_norm` the same but for rounding
    (the norm is summed over the rows only, in another order).

    Parameters
    ----------
    indices : array_like of int, shape (n,)
        The rows, strictly increasing, each in ``[0, shape[0])``.
    values : ndarray of float, shape (n, shape[1])
        The gradient's rows, in the order of ``indices``.  Kept, not copied.
    shape : tuple (rows, cols)
        The dense gradient's shape (the parameter's).
    """

    __slots__ = ("indices", "values", "shape")

    def __init__(self, indices, values, shape):
        shape = tuple(int(d) for d in shape)
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError(f"RowSparse shape must be (rows, cols), got {shape}")
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"RowSparse indices must be a 1-D integer array, got "
                            f"dtype {idx.dtype} and shape {idx.shape}")
        idx = idx.astype(np.intp, copy=False)
        if not isinstance(values, np.ndarray) or values.dtype.kind != "f":
            raise TypeError(f"RowSparse values must be a float numpy array, got "
                            f"{getattr(values, 'dtype', type(values).__name__)}")
        if values.shape != (idx.size, shape[1]):
            raise ValueError(f"RowSparse values must have shape (len(indices), {shape[1]}) = "
                             f"{(idx.size, shape[1])}, got {values.shape}")
        if idx.size > 1 and not (np.diff(idx) > 0).all():
            raise ValueError("RowSparse indices must be strictly increasing (each row once)")
        if idx.size and (idx[0] < 0 or idx[-1] >= shape[0]):
            raise ValueError(f"RowSparse indices must lie in [0, {shape[0]}), got "
                             f"{int(idx[0])}..{int(idx[-1])}")
        self.indices, self.values, self.shape = idx, values, shape

    @property
    def dtype(self):
        return self.values.dtype

    def toarray(self, dtype=None):
        """The dense gradient: zeros, with ``values`` in the rows ``indices``."""
        out = np.zeros(self.shape, self.dtype if dtype is None else dtype)
        out[self.indices] = self.values
        return out

    def __repr__(self):
        return (f"RowSparse({self.indices.size} of {self.shape[0]} rows, shape={self.shape}, "
                f"dtype={self.dtype.name})")


# --------------------------------------------------------------------------- helpers

# The compiled SGD update of :mod:`fastrnn._kernels.update` for arrays from this many
# elements (smaller ones are not worth a call, and a script that only ever updates small
# arrays never imports Numba here); False until first looked for, None if unusable.
_KERNEL_MIN = 1 << 14
_update_kernels = False


def _kernels(*arrays):
    """The update kernel's module, if these arrays can take it: big enough, one float
    dtype (float32 or float64), C-contiguous; else None (NumPy's way).  None as well when
    Numba cannot be imported or runs with ``NUMBA_DISABLE_JIT=1`` (where its loops would
    be interpreted)."""
    global _update_kernels
    a = arrays[0]
    if a.size < _KERNEL_MIN or a.dtype not in (np.float32, np.float64) or any(
            b.dtype != a.dtype or b.shape != a.shape or not b.flags.c_contiguous
            for b in arrays):
        return None
    if _update_kernels is False:
        try:
            from numba import config
            if config.DISABLE_JIT:
                raise ImportError("NUMBA_DISABLE_JIT")
            from ._kernels import update
        except ImportError:
            update = None
        _update_kernels = update
    return _update_kernels


def _nonfinite_count(a):
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _all_finite(a):
    """True when every element of the float array ``a`` is finite, without allocating.

    ``np.isfinite(a).all()`` builds a boolean array of ``a``'s size.  Arrays that can take
    the update kernel (:func:`_kernels`) are checked in one compiled pass
    (``count_nonfinite``); others by ``min`` and ``max``, two reductions that allocate
    nothing, NaN propagating through both.  Unlike ``np.dot(a, a)`` neither can overflow
    on large finite values.
    """
    if a.size == 0:
        return True
    k = _kernels(a)
    if k is not None:               # one pass (fastrnn._kernels.update.count_nonfinite)
        return k.count_nonfinite(a) == 0
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def _scalar(value, key):
    """A Python scalar from a scalar or 0-d array (what ``np.load`` gives back)."""
    arr = np.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"state_dict entry {key!r} must be a scalar, got an array of shape "
                         f"{arr.shape}")
    return arr.item()


def _real_in(v, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """A finite float within ``[lo, hi]`` (ends open when asked); errors name the range."""
    v = _validate.finite_scalar(v, name)
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ValueError(f"{name} must be in {rng}, got {v}")
    return v


def _loss_or_inf(v, name):
    """A finite loss, or ``+inf`` meaning "no evaluation yet"."""
    if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
            and float(v) == math.inf:
        return math.inf
    return _validate.finite_scalar(v, name)


def _boolean(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}")
    return bool(v)


def _check_params(params):
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict mapping names to numpy arrays, got "
                        f"{type(params).__name__}")
    if len(params) == 0:
        raise ValueError("params is empty; expected at least one parameter array")
    out = {}
    for name, p in params.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {type(name).__name__} {name!r}")
        if not isinstance(p, np.ndarray):
            raise TypeError(f"parameter {name!r} must be a numpy array (it is updated in place), "
                            f"got {type(p).__name__}")
        if p.dtype not in _validate.FLOAT_DTYPES:
            raise TypeError(f"parameter {name!r} must be float32 or float64, got dtype {p.dtype}")
        if not p.flags.writeable:
            raise ValueError(f"parameter {name!r} is read-only; the optimizer updates it in place")
        out[name] = p
    names = list(out)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            # may_share_memory is a cheap bounds test; shares_memory settles it exactly, so
            # disjoint views into one flat parameter buffer are accepted.
            if np.may_share_memory(out[a], out[b]) and np.shares_memory(out[a], out[b]):
                raise ValueError(f"parameters {a!r} and {b!r} share memory; each step would "
                                 f"update the shared elements twice")
    return out


def _grad_items(grads, where):
    """``[(label, array)]`` for a dict, a sequence of arrays or one array (clipping)."""
    if isinstance(grads, np.ndarray):
        items = [("grads", grads)]
    elif isinstance(grads, Mapping):
        items = [(f"gradient {k!r}", g) for k, g in grads.items()]
    elif isinstance(grads, (list, tuple)):
        items = [(f"grads[{i}]", g) for i, g in enumerate(grads)]
    else:
        raise TypeError(f"{where}: grads must be a dict of numpy arrays (or a list of them), "
                        f"got {type(grads).__name__}")
    # a RowSparse gradient is its rows: zeros elsewhere change neither norm nor clipping
    items = [(label, g.values if isinstance(g, RowSparse) else g) for label, g in items]
    for label, g in items:
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{where}: {label} must be a numpy array (it is modified in place), "
                            f"got {type(g).__name__}")
        if g.dtype.kind != "f":
            raise TypeError(f"{where}: {label} must be a float array, got dtype {g.dtype}")
        if not g.flags.writeable:
            raise ValueError(f"{where}: {label} is read-only; it is modified in place")
    return items


# --------------------------------------------------------------------------- optimizers


def _key_mismatch(expected, got):
    """'missing [...] and unexpected [...]' for a state dict's keys, or '' when they match."""
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in set(expected)]
    parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
    return " and ".join(parts)

class Optimizer:
    """Base class: parameter bookkeeping, gradient validation and checkpoints.

    Subclasses declare ``_slots`` (names of the per-parameter state arrays) and
    ``_hyper`` (names of hyperparameters saved with the state) and implement
    ``_check_hyper`` and ``_update``.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Live parameter arrays, float32 or float64, writeable; updated in place.
    lr : float
        Learning rate, finite and ``>= 0``.  Settable later as ``opt.lr``.

    Attributes
    ----------
    params : dict of str to numpy.ndarray
        The same arrays that were passed in (not copies).
    lr : float
    step_count : int
        Number of :meth:`step` calls made (Adam's ``t``).
    """

    _slots = ()
    _hyper = ()

    def __init__(self, params, lr):
        self.params = _check_params(params)
        self.lr = lr
        self.step_count = 0
        # State in each parameter's dtype and layout (zeros_like keeps both).
        self._state = {slot: {n: np.zeros_like(p) for n, p in self.params.items()}
                       for slot in self._slots}
        self._scratch = {n: np.empty_like(p) for n, p in self.params.items()}

    # -- learning rate --------------------------------------------------------------
    @property
    def lr(self):
        """Learning rate (float, finite, ``>= 0``); assigning validates it."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _real_in(value, "lr", lo=0.0)

    # -- hyperparameters ------------------------------------------------------------
    def _check_hyper(self, values):
        """Validate and normalise ``{name: value}`` for the names in ``_hyper``."""
        return {}

    def _set_hyper(self, values):
        for k, v in self._check_hyper(values).items():
            setattr(self, k, v)

    # -- stepping -------------------------------------------------------------------
    def _check_grads(self, grads):
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a dict with the parameter names as keys, got "
                            f"{type(grads).__name__}")
        missing = [k for k in self.params if k not in grads]
        extra = [k for k in grads if k not in self.params]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            raise ValueError(f"grads must have exactly the parameter keys {list(self.params)}; "
                             f"{' and '.join(parts)}")
        out = {}
        for name, p in self.params.items():
            g = grads[name]
            if isinstance(g, RowSparse):
                g = RowSparse(g.indices, g.values, g.shape)    # checked again: attributes
                if g.shape != p.shape:                         # may have been reassigned
                    raise ValueError(f"gradient {name!r} (RowSparse) has shape {g.shape}, "
                                     f"expected {p.shape} (the parameter's shape)")
                if not _all_finite(g.values):
                    raise ValueError(f"gradient {name!r} holds {_nonfinite_count(g.values)} "
                                     f"non-finite value(s) (NaN or inf); no parameter was updated")
                out[name] = g
                continue
            if not isinstance(g, np.ndarray):
                try:
                    g = np.asarray(g)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"gradient {name!r} must be an array, got "
                                    f"{type(grads[name]).__name__} ({exc})") from None
            if g.dtype.kind != "f":
                raise TypeError(f"gradient {name!r} must be a float array, got dtype {g.dtype}")
            if g.shape != p.shape:
                raise ValueError(f"gradient {name!r} has shape {g.shape}, expected {p.shape} "
                                 f"(the parameter's shape)")
            if not _all_finite(g):
                raise ValueError(f"gradient {name!r} holds {_nonfinite_count(g)} non-finite "
                                 f"value(s) (NaN or inf); no parameter was updated")
            out[name] = g
        return out

    def step(self, grads):
        """Apply one update to every parameter, in place.

        Parameters
        ----------
        grads : dict of str to array_like
            Gradient of the loss for each parameter: the same keys as ``params`` and the
            same shapes, float, finite; a 2-D parameter's may be a :class:`RowSparse`.
            Any float dtype is accepted; the arithmetic is done in (and the result stored
            as) the parameter's dtype.  Not modified.

        Raises
        ------
        ValueError
            Missing or unexpected keys, a shape mismatch, or a NaN/inf gradient, naming the
            key.  Everything is checked before anything is updated, so after an error the
            parameters, the state and ``step_count`` are as they were.
        TypeError
            ``grads`` is not a dict, or a gradient is not a float array.
        """
        gs = self._check_grads(grads)
        self.step_count += 1
        coef = self._coefficients()
        for name, p in self.params.items():
            state = [self._state[slot][name] for slot in self._slots]
            g = gs[name]
            if isinstance(g, RowSparse):
                if self._update_rows(p, g, coef):
                    continue
                g = g.toarray()                  # the dense update, exactly
            self._update(p, g, self._scratch[name], state, coef)

    def _update_rows(self, p, g, coef):
        """Apply a :class:`RowSparse` gradient touching only its rows; False if this rule
        cannot (its state changes in every row), and the dense update is applied instead."""
        return False

    def _coefficients(self):
        """Scalars shared by every parameter in this step (computed once per step)."""
        return None

    def _update(self, p, g, buf, state, coef):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------------
    def _state_keys(self):
        return [(slot, name, f"{slot}/{name}") for slot in self._slots for name in self.params]

    def state_dict(self):
        """Everything needed to resume exactly: a flat dict of scalars and array copies.

        Returns
        -------
        dict
            ``"optimizer"`` (the class name), ``"lr"``, ``"step"``, the hyperparameters
            by name, and one array per state slot and parameter under ``"<slot>/<name>"``
            (e.g. ``"m/W"``), each a copy in the parameter's dtype.  Suitable for
            ``np.savez(file, **d)``.
        """
        d = {"optimizer": type(self).__name__, "lr": self._lr, "step": self.step_count}
        for h in self._hyper:
            d[h] = getattr(self, h)
        for slot, name, key in self._state_keys():
            d[key] = self._state[slot][name].copy()
        return d

    def load_state_dict(self, state_dict):
        """Restore the state saved by :meth:`state_dict` (or read back by ``np.load``).

        The arrays are copied into this optimizer's own state arrays (cast to the
        parameter dtype), so the dict passed in is never aliased.  Everything is checked
        before anything is assigned.

        Parameters
        ----------
        state_dict : mapping
            As returned by :meth:`state_dict`; 0-d arrays are accepted for scalars, so an
            ``np.load`` result of an ``.npz`` works directly.

        Raises
        ------
        ValueError
            Saved from another optimizer class, missing or unexpected keys, an array of the
            wrong shape, a non-finite value, or an invalid hyperparameter.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        d = state_dict
        kind = type(self).__name__
        if "optimizer" not in d:
            raise ValueError(f"state_dict has no 'optimizer' entry; expected one saved by "
                             f"{kind}.state_dict()")
        saved = _scalar(d["optimizer"], "optimizer")
        if saved != kind:
            raise ValueError(f"state_dict was saved by {saved!r}, cannot load it into {kind}")
        skeys = self._state_keys()
        expected = ["optimizer", "lr", "step", *self._hyper, *(k for _, _, k in skeys)]
        mismatch = _key_mismatch(expected, d)
        if mismatch:
            raise ValueError(f"{kind} state_dict keys do not match its parameters "
                             f"{list(self.params)}: {mismatch}")
        lr = _real_in(_scalar(d["lr"], "lr"), "lr", lo=0.0)
        step = _validate.positive_int(_scalar(d["step"], "step"), "step", minimum=0)
        hyper = self._check_hyper({h: _scalar(d[h], h) for h in self._hyper})
        arrays = []
        for slot, name, key in skeys:
            a = np.asarray(d[key])
            p = self.params[name]
            if a.dtype.kind != "f":
                raise TypeError(f"state_dict entry {key!r} must be a float array, got dtype "
                                f"{a.dtype}")
            if a.shape != p.shape:
                raise ValueError(f"state_dict entry {key!r} has shape {a.shape}, expected "
                                 f"{p.shape} (parameter {name!r})")
            if a.dtype != p.dtype:
                # cast first, then check: a finite float64 1e300 is inf in float32
                with np.errstate(over="ignore", invalid="ignore"):
                    a = a.astype(p.dtype)
            if not _all_finite(a):
                raise ValueError(f"state_dict entry {key!r} holds {_nonfinite_count(a)} "
                                 f"non-finite value(s) (NaN or inf in {p.dtype})")
            arrays.append((self._state[slot][name], a))
        # All checked: assign.
        self._lr = lr
        self.step_count = step
        for k, v in hyper.items():
            setattr(self, k, v)
        for dst, src in arrays:
            np.copyto(dst, src, casting="same_kind")

    def __repr__(self):
        hyper = ", ".join(f"{h}={getattr(self, h)!r}" for h in self._hyper)
        return (f"{type(self).__name__}({len(self.params)} params, lr={self._lr!r}"
                f"{', ' + hyper if hyper else ''}, step_count={self.step_count})")


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Live float32/float64 arrays, updated in place.
    lr : float
        Learning rate, ``>= 0``.

    Examples
    --------
    >>> W = np.ones(3)
    >>> opt = SGD({"W": W}, lr=0.5)
    >>> opt.step({"W": np.array([1.0, 2.0, -2.0])})
    >>> W
    array([0.5, 0. , 2. ])
    """

    def __init__(self, params, lr):
        super().__init__(params, lr)

    def _update(self, p, g, buf, state, coef):
        k = _kernels(p, g)
        # the same two roundings in one pass, bit for bit; a gradient that overlaps its
        # parameter (all of it is read before any is written in NumPy's way) takes NumPy's
        if k is not None and not np.may_share_memory(p, g):
            k.sgd(p.reshape(-1), g.reshape(-1), self._lr)
            return
        np.multiply(g, self._lr, out=buf)
        np.subtract(p, buf, out=p)

    def _update_rows(self, p, g, coef):
        step = np.empty(g.values.shape, p.dtype)  # the dense rule's two roundings, per row
        np.multiply(g.values, self._lr, out=step)
        p[g.indices] -= step                      # indices are unique: no row twice
        return True


class Momentum(Optimizer):
    """SGD with heavy-ball or Nesterov momentum, PyTorch's convention.

    .. math::

        v \\leftarrow \\mu v + g, \\qquad
        p \\leftarrow p - \\mathrm{lr}\\, v
        \\quad\\text{or, Nesterov,}\\quad
        p \\leftarrow p - \\mathrm{lr}\\,(g + \\mu v)

    with ``v`` starting at zero (so the first step is ``v = g``, as ``torch.optim.SGD``
    with ``dampening=0``).  Note the learning rate multiplies the velocity, unlike the
    Sutskever form ``v = mu*v - lr*g``; the two differ when ``lr`` changes mid-run.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Live float32/float64 arrays, updated in place.
    lr : float
        Learning rate, ``>= 0``.
    momentum : float, default 0.9
        ``mu`` in ``[0, 1)``; ``mu >= 1`` would never forget a gradient.
    nesterov : bool, default False
        Use the Nesterov look-ahead form (needs ``momentum > 0``).

    Notes
    -----
    State: ``v`` (velocity), one array per parameter, in the parameter's dtype.
    """

    _slots = ("v",)
    _hyper = ("momentum", "nesterov")

    def __init__(self, params, lr, momentum=0.9, nesterov=False):
        super().__init__(params, lr)
        self._set_hyper({"momentum": momentum, "nesterov": nesterov})

    def _check_hyper(self, values):
        mu = _real_in(values["momentum"], "momentum", lo=0.0, hi=1.0, hi_open=True)
        nesterov = _boolean(values["nesterov"], "nesterov")
        if nesterov and mu == 0.0:
            raise ValueError("nesterov=True requires momentum > 0, got momentum=0.0")
        return {"momentum": mu, "nesterov": nesterov}

    def _update(self, p, g, buf, state, coef):
        (v,) = state
        mu = self.momentum
        np.multiply(v, mu, out=v)
        np.add(v, g, out=v)                       # v = mu*v + g
        if self.nesterov:
            np.multiply(v, mu, out=buf)
            np.add(buf, g, out=buf)               # g + mu*v
            np.multiply(buf, self._lr, out=buf)
        else:
            np.multiply(v, self._lr, out=buf)
        np.subtract(p, buf, out=p)


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of its recent values.

    .. math::

        m \\leftarrow \\rho m + (1-\\rho) g^2, \\qquad
        p \\leftarrow p - \\mathrm{lr}\\, \\frac{g}{\\sqrt{m} + \\epsilon}
        \\quad\\text{or}\\quad
        p \\leftarrow p - \\mathrm{lr}\\, \\frac{g}{\\sqrt{m + \\epsilon}}

    The first placement of ``eps`` is Keras's and ``torch.optim.RMSprop``'s (``alpha``
    there is ``rho`` here).  The second, ``eps_inside_sqrt=True``, is the WildML GRU
    tutorial's Theano code, which used ``decay=0.9`` and ``eps=1e-6``: to reproduce it,
    pass ``RMSprop(params, lr, rho=0.9, eps=1e-6, eps_inside_sqrt=True)``.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Live float32/float64 arrays, updated in place.
    lr : float, default 0.01
    rho : float, default 0.9
        Decay of the running average, in ``[0, 1)``.
    eps : float, default 1e-7
        ``> 0``; keeps the division finite where ``m`` is zero.
    eps_inside_sqrt : bool, default False

    Notes
    -----
    State: ``m`` (running mean of ``g**2``), starting at zero, in the parameter's dtype.
    """

    _slots = ("m",)
    _hyper = ("rho", "eps", "eps_inside_sqrt")

    def __init__(self, params, lr=0.01, rho=0.9, eps=1e-7, eps_inside_sqrt=False):
        super().__init__(params, lr)
        self._set_hyper({"rho": rho, "eps": eps, "eps_inside_sqrt": eps_inside_sqrt})

    def _check_hyper(self, values):
        return {"rho": _real_in(values["rho"], "rho", lo=0.0, hi=1.0, hi_open=True),
                "eps": _real_in(values["eps"], "eps", lo=0.0, lo_open=True),
                "eps_inside_sqrt": _boolean(values["eps_inside_sqrt"], "eps_inside_sqrt")}

    def _update(self, p, g, buf, state, coef):
        (m,) = state
        rho = self.rho
        np.multiply(g, g, out=buf)
        np.multiply(buf, 1.0 - rho, out=buf)
        np.multiply(m, rho, out=m)
        np.add(m, buf, out=m)                     # m = rho*m + (1-rho)*g**2
        if self.eps_inside_sqrt:
            np.add(m, self.eps, out=buf)
            np.sqrt(buf, out=buf)
        else:
            np.sqrt(m, out=buf)
            np.add(buf, self.eps, out=buf)
        np.divide(g, buf, out=buf)
        np.multiply(buf, self._lr, out=buf)
        np.subtract(p, buf, out=p)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba 2015, Algorithm 1; PyTorch's arithmetic).

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2, \\\\
        p &\\leftarrow p - \\frac{\\mathrm{lr}}{1-\\beta_1^t}\\,
            \\frac{m}{\\sqrt{v}/\\sqrt{1-\\beta_2^t} + \\epsilon}

    which is ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m/(1-b1**t)``,
    ``v_hat = v/(1-b2**t)`` and ``t`` the 1-based step count (``step_count``).

    Parameters
    ----------
    params : dict of str to numpy.ndarray
        Live float32/float64 arrays, updated in place.
    lr : float, default 1e-3
    betas : tuple of float, default (0.9, 0.999)
        Decays of the first and second moment estimates, each in ``[0, 1)``.
    eps : float, default 1e-8
        ``> 0``, added to ``sqrt(v_hat)``.

    Notes
    -----
    State: ``m`` and ``v`` per parameter, in the parameter's dtype, and ``step_count``.
    """

    _slots = ("m", "v")
    _hyper = ("beta1", "beta2", "eps")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self._set_hyper({"beta1": b1, "beta2": b2, "eps": eps})

    @property
    def betas(self):
        """``(beta1, beta2)``."""
        return (self.beta1, self.beta2)

    def _check_hyper(self, values):
        return {"beta1": _real_in(values["beta1"], "beta1", lo=0.0, hi=1.0, hi_open=True),
                "beta2": _real_in(values["beta2"], "beta2", lo=0.0, hi=1.0, hi_open=True),
                "eps": _real_in(values["eps"], "eps", lo=0.0, lo_open=True)}

    def _coefficients(self):
        t = self.step_count
        bc1 = 1.0 - self.beta1 ** t
        bc2 = 1.0 - self.beta2 ** t
        return self._lr / bc1, math.sqrt(bc2)

    def _update(self, p, g, buf, state, coef):
        m, v = state
        step_size, bc2_sqrt = coef
        b1, b2 = self.beta1, self.beta2
        np.multiply(m, b1, out=m)
        np.multiply(g, 1.0 - b1, out=buf)
        np.add(m, buf, out=m)                     # m = b1*m + (1-b1)*g
        np.multiply(g, g, out=buf)
        np.multiply(buf, 1.0 - b2, out=buf)
        np.multiply(v, b2, out=v)
        np.add(v, buf, out=v)                     # v = b2*v + (1-b2)*g**2
        np.sqrt(v, out=buf)
        np.divide(buf, bc2_sqrt, out=buf)
        np.add(buf, self.eps, out=buf)            # sqrt(v_hat) + eps
        np.divide(m, buf, out=buf)
        np.multiply(buf, step_size, out=buf)
        np.subtract(p, buf, out=p)


# --------------------------------------------------------------------------- clipping

def clip_grad_norm(grads, max_norm, error_if_nonfinite=True):
    """Scale gradients in place so their global L2 norm is at most ``max_norm``.

    The norm is taken over all arrays together,
    ``total_norm = sqrt(sum_k ||g_k||_2**2)``; then, as ``torch.nn.utils.clip_grad_norm_``,
    ``clip_coef = max_norm / (total_norm + 1e-6)`` and every array is multiplied by
    ``clip_coef`` only when ``clip_coef < 1``.

    Parameters
    ----------
    grads : dict of str to numpy.ndarray, or list of numpy.ndarray, or numpy.ndarray
        Float arrays (or :class:`RowSparse`), modified in place.
    max_norm : float
        ``> 0``.
    error_if_nonfinite : bool, default True
        If True, a NaN/inf gradient raises ``ValueError`` naming the keys.  If False, the
        non-finite norm is returned and the gradients are left untouched, so a training
        loop can skip the batch.  (PyTorch's default is False and then multiplies the
        gradients by a NaN coefficient; this library prefers the loud default.)

    Returns
    -------
    float
        The total norm *before* clipping.

    Notes
    -----
    Each array's squared norm is a BLAS dot product in the array's dtype (no temporary
    for C-contiguous arrays).  A float32 dot product overflows for norms above ~1.8e19;
    when that happens with all values finite, the norm of that array is recomputed in
    float64, so a huge-but-finite gradient is clipped rather than reported as non-finite.
    """
    items = _grad_items(grads, "clip_grad_norm")
    max_norm = _real_in(max_norm, "max_norm", lo=0.0, lo_open=True)
    error_if_nonfinite = _boolean(error_if_nonfinite, "error_if_nonfinite")
    total_sq = 0.0
    bad = []
    for label, g in items:
        if g.size == 0:
            continue
        flat = g.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):   # handled just below
            sq = float(np.dot(flat, flat))
        if not math.isfinite(sq):
            if _all_finite(g):
                f64 = flat.astype(np.float64)
                sq = float(np.dot(f64, f64))
            else:
                bad.append(label)
        total_sq += sq
    total_norm = math.sqrt(total_sq)
    if bad:
        if error_if_nonfinite:
            raise ValueError(f"clip_grad_norm: the total gradient norm is non-finite "
                             f"({total_norm}) because {', '.join(bad)} hold(s) NaN or inf")
        return total_norm
    clip_coef = max_norm / (total_norm + _CLIP_EPS)
    if clip_coef < 1.0:
        for _, g in items:
            np.multiply(g, clip_coef, out=g)
    return total_norm


def clip_grad_value(grads, clip_value):
    """Clip every gradient element to ``[-clip_value, clip_value]``, in place.

    Parameters
    ----------
    grads : dict of str to numpy.ndarray, or list of numpy.ndarray, or numpy.ndarray
        Float arrays (or :class:`RowSparse`), modified in place.
    clip_value : float
        ``> 0``.

    Notes
    -----
    As ``torch.nn.utils.clip_grad_value_``: ``±inf`` become ``±clip_value``; NaN stays
    NaN (and :meth:`Optimizer.step` will then refuse the gradient).
    """
    items = _grad_items(grads, "clip_grad_value")
    c = _real_in(clip_value, "clip_value", lo=0.0, lo_open=True)
    for _, g in items:
        np.clip(g, -c, c, out=g)


# --------------------------------------------------------------------------- schedule

class HalveOnPlateau:
    """Multiply the learning rate by ``factor`` when the validation loss stops improving.

    Two rules:

    ``mode="best"`` (default; ``torch.optim.lr_scheduler.ReduceLROnPlateau`` in ``min``
    mode with an absolute threshold and no cooldown)
        An evaluation is *bad* unless ``loss < best - threshold``.  After more than
        ``patience`` bad evaluations in a row the rate is lowered and the count restarts.
    ``mode="previous"`` (the WildML RNN tutorial)
        An evaluation is *bad* when the loss rose against the previous evaluation,
        ``loss > previous + threshold``.  With ``patience=0``, ``threshold=0`` and
        ``factor=0.5`` this is the tutorial's
        ``if losses[-1] > losses[-2]: learning_rate *= 0.5``.

    The two differ after a rise: for losses ``5, 6, 5.5`` both lower the rate at ``6``,
    but only ``"best"`` lowers it again at ``5.5`` (still worse than ``5``).

    Parameters
    ----------
    optimizer : object with a settable ``lr`` attribute
        Usually an :class:`Optimizer`.
    factor : float, default 0.5
        In ``(0, 1)``.
    patience : int, default 0
        Bad evaluations tolerated before lowering the rate (``>= 0``).
    threshold : float, default 0.0
        Absolute margin (``>= 0``), see the rules above.
    min_lr : float, default 0.0
        The rate is never lowered below this.
    mode : {"best", "previous"}, default "best"

    Attributes
    ----------
    best : float
        Lowest loss seen (``inf`` before the first evaluation).
    previous : float
        Last loss seen (``inf`` before the first evaluation).
    num_bad : int
        Bad evaluations since the last improvement or the last reduction.
    num_reductions : int
        Times the rate was lowered.
    """

    MODES = ("best", "previous")

    def __init__(self, optimizer, factor=0.5, patience=0, threshold=0.0, min_lr=0.0,
                 mode="best"):
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"optimizer must have a settable 'lr' attribute, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self._set_config(factor, patience, threshold, min_lr, mode)
        self.best = math.inf
        self.previous = math.inf
        self.num_bad = 0
        self.num_reductions = 0

    def _set_config(self, factor, patience, threshold, min_lr, mode):
        factor = _real_in(factor, "factor", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        patience = _validate.positive_int(patience, "patience", minimum=0)
        threshold = _real_in(threshold, "threshold", lo=0.0)
        min_lr = _real_in(min_lr, "min_lr", lo=0.0)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {list(self.MODES)}, got {mode!r}")
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.min_lr, self.mode = min_lr, mode

    def step(self, val_loss):
        """Record one evaluation's loss; lower the learning rate if the rule says so.

        Parameters
        ----------
        val_loss : float
            Finite validation loss.

        Returns
        -------
        bool
            True if the learning rate was lowered by this call.
        """
        loss = _validate.finite_scalar(val_loss, "val_loss")
        if self.mode == "best":
            bad = not loss < self.best - self.threshold
        else:
            bad = loss > self.previous + self.threshold
        self.best = min(self.best, loss)
        self.previous = loss
        if not bad:
            self.num_bad = 0
            return False
        self.num_bad += 1
        if self.num_bad <= self.patience:
            return False
        self.num_bad = 0
        old = float(self.optimizer.lr)
        new = max(old * self.factor, self.min_lr)
        if new < old:
            self.optimizer.lr = new
            self.num_reductions += 1
            return True
        return False

    def state_dict(self):
        """Flat dict of scalars (``np.savez``-friendly); the optimizer is saved separately."""
        return {"schedule": type(self).__name__, "mode": self.mode, "factor": self.factor,
                "patience": self.patience, "threshold": self.threshold,
                "min_lr": self.min_lr, "best": self.best, "previous": self.previous,
                "num_bad": self.num_bad, "num_reductions": self.num_reductions}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (0-d arrays accepted for scalars)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        expected = list(self.state_dict())
        mismatch = _key_mismatch(expected, state_dict)
        if mismatch:
            raise ValueError(f"HalveOnPlateau state_dict keys do not match: {mismatch}")
        d = {k: _scalar(state_dict[k], k) for k in expected}
        if d["schedule"] != type(self).__name__:
            raise ValueError(f"state_dict was saved by {d['schedule']!r}, cannot load it into "
                             f"{type(self).__name__}")
        best = _loss_or_inf(d["best"], "best")
        previous = _loss_or_inf(d["previous"], "previous")
        num_bad = _validate.positive_int(d["num_bad"], "num_bad", minimum=0)
        num_red = _validate.positive_int(d["num_reductions"], "num_reductions", minimum=0)
        self._set_config(d["factor"], d["patience"], d["threshold"], d["min_lr"], d["mode"])
        self.best, self.previous = best, previous
        self.num_bad, self.num_reductions = num_bad, num_red

    def __repr__(self):
        return (f"HalveOnPlateau(mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, threshold={self.threshold}, min_lr={self.min_lr}, "
                f"lr={self.optimizer.lr})")

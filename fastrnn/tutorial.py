"""Drop-in versions of the tutorial's classes: :class:`RNNNumpy` and :class:`RNNTheano`.

Same constructors, attributes, method names, return shapes and numbers as the tutorial's
code, running on the fastest available backend (``backend="numpy"`` gives the reference).

Deliberate differences from the tutorial's code, each a bug fix:

* ``RNNNumpy.bptt`` no longer overwrites the probabilities it computed: the tutorial took
  ``delta_o = o`` and subtracted 1 in place, so any caller holding ``o`` saw it change.
* ``calculate_loss`` counts words with ``sum`` over a list; the tutorial's
  ``np.sum(generator)`` is an error on NumPy 2.
* ``gradient_check`` treats a NaN relative error as a failure (the tutorial's ``>`` test
  let NaN pass) and treats two exactly-zero gradients as agreeing, explicitly.  It returns
  ``True``/``False`` as well as printing.
* ``sgd_step`` returns the loss before the step (the tutorial returned nothing).
"""
import operator
import sys
from datetime import datetime

import numpy as np

from . import _validate
from . import functional as F


def _init_uniform(word_dim, hidden_dim):
    # The tutorial's initialisation and draw order (U, then V, then W) from the global
    # NumPy generator, so np.random.seed(10) reproduces its weights.
    U = np.random.uniform(-np.sqrt(1.0 / word_dim), np.sqrt(1.0 / word_dim), (hidden_dim, word_dim))
    V = np.random.uniform(-np.sqrt(1.0 / hidden_dim), np.sqrt(1.0 / hidden_dim), (word_dim, hidden_dim))
    W = np.random.uniform(-np.sqrt(1.0 / hidden_dim), np.sqrt(1.0 / hidden_dim), (hidden_dim, hidden_dim))
    return U, V, W


def _as_param(value, name, dtype=None):
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception:
            raise TypeError(f"parameter {name} must be an array, got {type(value).__name__}") from None
    if value.dtype.kind not in "fiu" or value.dtype == np.bool_:
        raise TypeError(f"parameter {name} must be a float array, got dtype {value.dtype}")
    if value.ndim != 2:
        raise ValueError(f"parameter {name} must be 2-D, got shape {value.shape}")
    if dtype is None:
        dtype = value.dtype if value.dtype in _validate.FLOAT_DTYPES else np.float64
    value = np.ascontiguousarray(value, dtype=dtype)
    if not np.isfinite(value).all():
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        raise ValueError(f"parameter {name} holds {bad} non-finite value(s) (NaN or inf)")
    return value


class _TutorialLM:
    """Methods the two tutorial classes share; subclasses define ``_params()``."""

    _truncation = "window"

    def _params(self):
        raise NotImplementedError

    def _ws(self):
        U, V, W = self._params()
        ws = getattr(self, "_workspace", None)
        if ws is None or ws.H != U.shape[0] or ws.V != U.shape[1] or ws.dtype != U.dtype:
            ws = F.Workspace(U.shape[0], U.shape[1], U.dtype)
            self._workspace = ws
        return ws

    def calculate_total_loss(self, x, y):
        """Sum over sentences of ``-sum_t log o_t[y_t]``; ``x``, ``y`` are lists of sentences."""
        U, V, W = self._params()
        pairs = _validate.corpus(x, y, U.shape[1])
        ws = self._ws()
        return float(sum(F.loss(U, V, W, xi, yi, backend=self.backend, ws=ws) for xi, yi in pairs))

    def calculate_loss(self, x, y):
        """Mean cross-entropy per predicted word over lists of sentences."""
        U = self._params()[0]
        pairs = _validate.corpus(x, y, U.shape[1])
        n_words = sum(len(yi) for _, yi in pairs)
        return self.calculate_total_loss(x, y) / n_words

    def predict(self, x):
        """Index of the most probable next word at each step, shape ``(T,)``."""
        o = self._probabilities(x)
        return np.argmax(o, axis=1)

    def _probabilities(self, x):
        U, V, W = self._params()
        o, _ = F.forward(U, V, W, x, backend=self.backend, ws=self._ws())
        return o

    def _grads(self, x, y):
        U, V, W = self._params()
        _, dU, dV, dW = F.grad(U, V, W, x, y, self._truncation, self.bptt_truncate,
                               backend=self.backend, ws=self._ws())
        return [dU, dV, dW]

    def _sgd(self, x, y, learning_rate):
        U, V, W = self._params()
        return F.sgd_step(U, V, W, x, y, learning_rate, self._truncation, self.bptt_truncate,
                          backend=self.backend, ws=self._ws())

    def train_with_sgd(self, X_train, y_train, learning_rate=0.005, nepoch=100,
                       evaluate_loss_after=5, verbose=True, callback=None):
        """The tutorial's outer SGD loop: one ``sgd_step`` per sentence, in order.

        Every ``evaluate_loss_after`` epochs the mean loss over the training set is
        computed and recorded; when it is higher than the previous evaluation the learning
        rate is halved.  Returns the list of ``(num_examples_seen, loss)``.
        ``callback(model, num_examples_seen, loss)``, if given, is called after each
        evaluation (the tutorial saved the model there; see :mod:`fastrnn.io`).
        """
        U = self._params()[0]
        pairs = _validate.corpus(X_train, y_train, U.shape[1])
        learning_rate = _validate.finite_scalar(learning_rate, "learning_rate", positive=True)
        nepoch = _validate.positive_int(nepoch, "nepoch", minimum=0)
        evaluate_loss_after = _validate.positive_int(evaluate_loss_after, "evaluate_loss_after")
        losses = []
        seen = 0
        for epoch in range(nepoch):
            if epoch % evaluate_loss_after == 0:
                loss = self.calculate_loss([p[0] for p in pairs], [p[1] for p in pairs])
                losses.append((seen, loss))
                if verbose:
                    stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
                    print(f"{stamp}: Loss after num_examples_seen={seen} epoch={epoch}: {loss:f}")
                if len(losses) > 1 and losses[-1][1] > losses[-2][1]:
                    learning_rate *= 0.5
                    if verbose:
                        print(f"Setting learning rate to {learning_rate:f}")
                if verbose:
                    sys.stdout.flush()
                if callback is not None:
                    callback(self, seen, loss)
            for xi, yi in pairs:
                self._sgd(xi, yi, learning_rate)
                seen += 1
        return losses


class RNNNumpy(_TutorialLM):
    """The tutorial's NumPy RNN language model, on a fast backend.

    Parameters
    ----------
    word_dim : int
        Vocabulary size V.
    hidden_dim : int
        Hidden size H (default 100).
    bptt_truncate : int
        Window of the tutorial's truncated BPTT: each output's error flows back through
        ``bptt_truncate + 1`` steps.
    backend : str, optional
        ``"numba"``, ``"cython"`` or ``"numpy"`` (the reference); default: see
        :func:`fastrnn.backends.get_backend`.

    Attributes ``U (H, V)``, ``V (V, H)``, ``W (H, H)`` are float64 arrays and assignable
    (the tutorial's loaders set them one at a time, so shapes may disagree in between):
    an assigned value is checked for being a 2-D real array without NaN/inf, and the three
    shapes are checked against each other at every call, before any kernel runs.
    """

    _truncation = "window"

    def __init__(self, word_dim, hidden_dim=100, bptt_truncate=4, backend=None):
        self.word_dim = _validate.positive_int(word_dim, "word_dim", minimum=1)
        self.hidden_dim = _validate.positive_int(hidden_dim, "hidden_dim", minimum=1)
        _validate.truncation("window", bptt_truncate)
        self.bptt_truncate = bptt_truncate
        self.backend = backend
        self.U, self.V, self.W = _init_uniform(word_dim, hidden_dim)

    # Parameters are properties so that assignment is validated.
    U = property(lambda self: self._U, lambda self, v: setattr(self, "_U", _as_param(v, "U")))
    V = property(lambda self: self._V, lambda self, v: setattr(self, "_V", _as_param(v, "V")))
    W = property(lambda self: self._W, lambda self, v: setattr(self, "_W", _as_param(v, "W")))

    def _params(self):
        return self._U, self._V, self._W

    def forward_propagation(self, x):
        """Returns ``[o, s]``: probabilities ``(T, V)`` and hidden states ``(T + 1, H)``.

        ``s[T]`` (equivalently ``s[-1]``) is the zero initial state.
        """
        U, V, W = self._params()
        o, s = F.forward(U, V, W, x, backend=self.backend, ws=self._ws())
        return [o, s]

    def bptt(self, x, y):
        """``[dLdU, dLdV, dLdW]`` with the tutorial's window truncation."""
        return self._grads(x, y)

    def sgd_step(self, x, y, learning_rate):
        """One SGD step on one sentence; returns the loss before the step."""
        return self._sgd(x, y, learning_rate)

    def gradient_check(self, x, y, h=0.001, error_threshold=0.01, verbose=True):
        """Compare :meth:`bptt` with central differences of the total loss, entry by entry.

        Returns ``True`` when every entry's relative error ``|a-b| / (|a|+|b|)`` is at most
        ``error_threshold``; ``False`` (after printing the failing entry) otherwise.  A NaN
        in either gradient fails; two exact zeros agree.  Note the comparison is with the
        *truncated* gradient: for sentences longer than ``bptt_truncate + 1`` it can fail
        legitimately, as in the tutorial (which checked with ``bptt_truncate=1000``).
        """
        grads = self.bptt(x, y)
        for pidx, pname in enumerate(["U", "V", "W"]):
            parameter = operator.attrgetter(pname)(self)
            if verbose:
                print(f"Performing gradient check for parameter {pname} with size {parameter.size}.")
            for ix in np.ndindex(parameter.shape):
                original = parameter[ix]
                parameter[ix] = original + h
                plus = self.calculate_total_loss([x], [y])
                parameter[ix] = original - h
                minus = self.calculate_total_loss([x], [y])
                parameter[ix] = original
                estimated = (plus - minus) / (2 * h)
                backprop = grads[pidx][ix]
                denom = abs(backprop) + abs(estimated)
                if not (np.isfinite(backprop) and np.isfinite(estimated)):
                    rel = np.nan
                else:
                    rel = 0.0 if denom == 0 else abs(backprop - estimated) / denom
                if not rel <= error_threshold:        # NaN fails here
                    if verbose:
                        print(f"Gradient Check ERROR: parameter={pname} ix={ix}")
                        print(f"+h Loss: {plus:f}")
                        print(f"-h Loss: {minus:f}")
                        print(f"Estimated_gradient: {estimated:f}")
                        print(f"Backpropagation gradient: {backprop:f}")
                        print(f"Relative Error: {rel:f}")
                    return False
            if verbose:
                print(f"Gradient check for parameter {pname} passed.")
        return True


class SharedArray:
    """Stands in for a Theano shared variable: ``get_value()`` / ``set_value()``.

    ``get_value()`` returns a copy (Theano's default ``borrow=False``);
    ``get_value(borrow=True)`` returns the array the model computes with.
    """

    def __init__(self, name, value, dtype):
        self.name = name
        self._dtype = np.dtype(dtype)
        self.value = _as_param(value, name, self._dtype)

    def get_value(self, borrow=False):
        return self.value if borrow else self.value.copy()

    def set_value(self, value, borrow=False):
        self.value = _as_param(value, self.name, self._dtype)

    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    def __repr__(self):
        return f"SharedArray(name={self.name!r}, shape={self.value.shape}, dtype={self.value.dtype})"


class RNNTheano(_TutorialLM):
    """The tutorial's Theano RNN language model, without Theano.

    Same API as the tutorial's ``RNNTheano``: ``forward_propagation(x) -> o``, ``predict``,
    ``ce_error``, ``bptt -> [dU, dV, dW]``, ``sgd_step``, ``calculate_total_loss``,
    ``calculate_loss``, ``train_with_sgd``; ``U``, ``V``, ``W`` answer ``get_value()`` and
    ``set_value()``.  Gradients follow ``theano.scan(truncate_gradient=bptt_truncate)``:
    only the last ``bptt_truncate`` steps of a sentence are back-propagated, and outputs
    before them contribute nothing; ``bptt_truncate=-1`` is full BPTT.

    ``dtype`` is Theano's ``floatX``: float64 (default) or float32.
    """

    _truncation = "last"

    def __init__(self, word_dim, hidden_dim=100, bptt_truncate=4, dtype=np.float64, backend=None):
        self.word_dim = _validate.positive_int(word_dim, "word_dim", minimum=1)
        self.hidden_dim = _validate.positive_int(hidden_dim, "hidden_dim", minimum=1)
        _validate.truncation("last", bptt_truncate)
        self.bptt_truncate = bptt_truncate
        self.dtype = _validate.as_dtype(dtype)
        self.backend = backend
        U, V, W = _init_uniform(word_dim, hidden_dim)
        self.U = SharedArray("U", U, self.dtype)
        self.V = SharedArray("V", V, self.dtype)
        self.W = SharedArray("W", W, self.dtype)

    def _params(self):
        return self.U.value, self.V.value, self.W.value

    def forward_propagation(self, x):
        """Probabilities ``o`` of shape ``(T, V)``."""
        return self._probabilities(x)

    def ce_error(self, x, y):
        """Total cross-entropy of one sentence."""
        U, V, W = self._params()
        return F.loss(U, V, W, x, y, backend=self.backend, ws=self._ws())

    def bptt(self, x, y):
        """``[dU, dV, dW]`` truncated like ``scan(truncate_gradient=bptt_truncate)``."""
        return self._grads(x, y)

    def sgd_step(self, x, y, learning_rate):
        """One SGD step; returns ``[]`` like the compiled Theano function it replaces."""
        self._sgd(x, y, learning_rate)
        return []

    def calculate_total_loss(self, X, Y):
        return super().calculate_total_loss(X, Y)

    def train_with_sgd(self, X_train, y_train, learning_rate=0.005, nepoch=1,
                       evaluate_loss_after=5, verbose=True, callback=None):
        return super().train_with_sgd(X_train, y_train, learning_rate, nepoch,
                                      evaluate_loss_after, verbose, callback)

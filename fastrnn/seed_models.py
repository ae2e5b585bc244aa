"""Drop-in versions of the seed's GRU and LSTM models, on fastrnn's layer kernels.

:class:`GRUTheano`
    Denny Britz's ``rnn-tutorial-gru-lstm`` ``GRUTheano``: two stacked GRU layers with hard
    sigmoid gates and the reset applied *before* the recurrent product, trained with the
    tutorial's RMSprop (``eps`` inside the square root).  Same constructor, attributes
    (``E, U, W, V, b, c`` and the caches ``mE ... mc``), methods and numbers.
:class:`RNNKeras`
    The seed's Keras char-LSTM wrapper: ``LSTM(output_size) -> Dense(vector_size) ->
    softmax`` on one-hot windows, categorical cross-entropy, ``RMSprop(lr=0.01)``.
:func:`char_windows`, :func:`sample`
    The Keras ``lstm_text_generation`` example's data preparation and sampling.

Deliberate differences from the seed, each a fix or a stated extension:

* ``RNNKeras.predict`` uses the wrapper's own model (the seed's read a global ``model``).
* ``GRUTheano.sgd_step`` returns the sentence's loss before the step (the tutorial's
  Theano function returned nothing), like :meth:`fastrnn.tutorial.RNNNumpy.sgd_step`.
* ``RNNKeras.train_model`` returns ``{"loss": [mean loss of each epoch]}`` (Keras's
  ``History.history``); the categorical cross-entropy is exact (Keras clips
  probabilities to ``[1e-7, 1 - 1e-7]``, which matters only for saturated outputs).
* ``RNNKeras``'s ``hidden_dim`` is kept but, as in the seed, unused: the LSTM has
  ``output_size`` units.
"""
import numpy as np

from . import _validate
from .backends import get_backend
from .models import _kernel, stack_backward, stack_forward
from .reference import gru as _reference_gru

_THEANO_PARAMS = ("E", "U", "W", "V", "b", "c")

__all__ = ["GRUTheano", "RNNKeras", "char_windows", "sample"]


def _fusable(p, m):
    """Whether the backend's one-pass RMSprop kernel may update ``p`` and its cache ``m``
    in place: both C-contiguous (a flat view of each is the array itself) and apart in
    memory.  Otherwise the NumPy rule runs on the arrays as they are, with the same
    result bit for bit when they are apart."""
    return (p.flags.c_contiguous and m.flags.c_contiguous
            and not np.may_share_memory(p, m))


def _one_hot_ids(X):
    """The index of the 1 in every vector ``X[..., :]`` when each is one-hot (one entry
    exactly 1, the rest 0), as a C-contiguous intp array of ``X.shape[:-1]``; else None.

    The seed's character windows are one-hot: the first layer's input product is then a
    gather (:func:`fastrnn.models.stack_forward`'s ``X0_ids``).  One pass over ``X``.
    """
    nonzero = X != 0
    if X.shape[-1] == 0 or not (nonzero.sum(axis=-1) == 1).all():
        return None
    ids = np.ascontiguousarray(nonzero.argmax(axis=-1), dtype=np.intp)
    if not (np.take_along_axis(X, ids[..., None], axis=-1) == 1).all():
        return None
    return ids


def _softmax_rows(Z):
    Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def _logits(Z, n, V):
    """``Z`` as ``rnn_softmax_xent`` needs it: C-contiguous ``(n, V)`` (ids are < V)."""
    if Z.shape != (n, V) or not Z.flags.c_contiguous:
        raise ValueError(f"logits must have shape (T, vocabulary) = {(n, V)}, got {Z.shape}")
    return Z


# ----------------------------------------------------------------------------- GRUTheano

# The tutorial stores gates as z, r, c (index 0, 1, 2 in each layer's block of U, W, b);
# the kernels use PyTorch's r, z, n.  _ORDER[k] is the tutorial index of kernel block k.
_ORDER = (1, 0, 2)


class GRUTheano:
    """Two-layer GRU language model of the WildML tutorial (``gru_theano.py``).

    Equations (one sentence; ``x_e = E[:, x_t]``; layer 2 reads ``s1`` with indices 3..5)::

        z  = hard_sigmoid(U[0] x_e + W[0] s1 + b[0])
        r  = hard_sigmoid(U[1] x_e + W[1] s1 + b[1])
        c1 = tanh(U[2] x_e + W[2] (s1 * r) + b[2])
        s1 = (1 - z) * c1 + z * s1
        o  = softmax(V s2 + c)

    which is fastrnn's GRU with ``reset_after=False, hard_gates=True``, no recurrent bias,
    kernel blocks ``(r, z, n) = tutorial indices (1, 0, 2)`` (``+3`` for layer 2).

    Parameters
    ----------
    word_dim : int
        Vocabulary size ``V``.
    hidden_dim : int, default 128
        ``H`` (also the embedding size).
    bptt_truncate : int, default -1
        Theano's ``scan(truncate_gradient=k)``: the gradient covers only the last ``k``
        steps of the sentence (earlier outputs give no gradient at all); ``-1`` is full BPTT.
    backend : str, optional
        Kernel backend; ``"numpy"`` is the reference.
    dtype : float64 (default) or float32
        Theano's ``floatX``.

    Attributes
    ----------
    E : ndarray (H, V)
    U, W : ndarray (6, H, H)
    V : ndarray (V, H)
    b : ndarray (6, H)
    c : ndarray (V,)
    mE, mU, mW, mV, mb, mc : RMSprop caches, shaped like the parameters.

    Notes
    -----
    The weights are drawn from the global ``np.random`` in the tutorial's order ``E, U, W,
    V`` so that ``np.random.seed(...)`` reproduces the tutorial's model.
    """

    def __init__(self, word_dim, hidden_dim=128, bptt_truncate=-1, backend=None,
                 dtype=np.float64):
        self.word_dim = _validate.positive_int(word_dim, "word_dim", minimum=1)
        self.hidden_dim = H = _validate.positive_int(hidden_dim, "hidden_dim")
        if isinstance(bptt_truncate, bool) or not isinstance(bptt_truncate, (int, np.integer)):
            raise TypeError(f"bptt_truncate must be an integer, got {type(bptt_truncate).__name__}")
        if bptt_truncate != -1 and bptt_truncate < 1:
            raise ValueError(f"bptt_truncate must be -1 (full) or >= 1, got {bptt_truncate}")
        self.bptt_truncate = int(bptt_truncate)
        dt = _validate.as_dtype(dtype)
        Vd = self.word_dim
        self.backend = backend
        self._be = get_backend(backend)
        for name in ("gru_layer_forward", "gru_layer_backward", "rnn_softmax_xent"):
            _kernel(self._be, name)
        E = np.random.uniform(-np.sqrt(1.0 / Vd), np.sqrt(1.0 / Vd), (H, Vd))
        U = np.random.uniform(-np.sqrt(1.0 / H), np.sqrt(1.0 / H), (6, H, H))
        W = np.random.uniform(-np.sqrt(1.0 / H), np.sqrt(1.0 / H), (6, H, H))
        V = np.random.uniform(-np.sqrt(1.0 / H), np.sqrt(1.0 / H), (Vd, H))
        self.E, self.U, self.W, self.V = (a.astype(dt) for a in (E, U, W, V))
        self.b = np.zeros((6, H), dt)
        self.c = np.zeros(Vd, dt)
        for n in ("E", "U", "W", "V", "b", "c"):
            setattr(self, "m" + n, np.zeros_like(getattr(self, n)))

    _flags = {"reset_after": False, "hard_gates": True}

    def _check(self, caches=False):
        """Check the (assignable) attributes before any kernel runs; returns ``word_dim``.

        ``E, U, W, V, b, c``, ``word_dim`` and ``hidden_dim`` are plain attributes (the
        tutorial's loaders assign them), so they are checked here, on every call, in
        O(1): each parameter an ndarray of float32/float64, all of one dtype, with the
        shape ``word_dim`` and ``hidden_dim`` give.  Values are not scanned.  Token ids are
        then checked against ``word_dim``, which is then ``V.shape[0]``, the real
        vocabulary.  (The kernels receive contiguous copies made by :meth:`_layers` and
        :meth:`_forward`, so the attributes' memory layout does not matter.)
        """
        Vd = _validate.positive_int(self.word_dim, "word_dim")
        H = _validate.positive_int(self.hidden_dim, "hidden_dim")
        k = self.bptt_truncate
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or (k != -1 and k < 1):
            raise ValueError(f"bptt_truncate must be -1 (full) or an integer >= 1, got {k!r}")
        shapes = {"E": ((H, Vd), "(hidden_dim, word_dim)"),
                  "U": ((6, H, H), "(6, hidden_dim, hidden_dim)"),
                  "W": ((6, H, H), "(6, hidden_dim, hidden_dim)"),
                  "V": ((Vd, H), "(word_dim, hidden_dim)"),
                  "b": ((6, H), "(6, hidden_dim)"),
                  "c": ((Vd,), "(word_dim,)")}
        dt = None
        for name in _THEANO_PARAMS:
            a = getattr(self, name, None)
            if not isinstance(a, np.ndarray):
                raise TypeError(f"GRUTheano.{name} must be a numpy array, got {type(a).__name__}")
            if a.dtype not in _validate.FLOAT_DTYPES:
                raise TypeError(f"GRUTheano.{name} must be float32 or float64, got dtype {a.dtype}")
            if dt is None:
                dt = a.dtype
            elif a.dtype != dt:
                raise TypeError(f"GRUTheano.{name} has dtype {a.dtype}, expected {dt} like E")
            want, desc = shapes[name]
            if a.shape != want:
                raise ValueError(f"GRUTheano.{name} must have shape {desc} = {want} "
                                 f"(word_dim={Vd}, hidden_dim={H}), got {a.shape}; assign "
                                 f"E, U, W, V, b, c and word_dim, hidden_dim consistently")
        if caches:
            for name in _THEANO_PARAMS:
                p, m = getattr(self, name), getattr(self, "m" + name, None)
                if not isinstance(m, np.ndarray) or m.shape != p.shape or m.dtype != p.dtype:
                    got = (f"{m.dtype} {m.shape}" if isinstance(m, np.ndarray)
                           else type(m).__name__)
                    raise ValueError(f"GRUTheano.m{name} (RMSprop cache) must be a {p.dtype} "
                                     f"array of shape {p.shape} like {name}, got {got}")
                if not p.flags.writeable or not m.flags.writeable:
                    raise ValueError(f"GRUTheano.{name} and m{name} must be writeable "
                                     f"(sgd_step updates them in place)")
        return self.V.shape[0]

    def _tokens(self, x):
        return _validate.tokens(x, self._check(), "x")

    def _pair(self, x, y, caches=False):
        return _validate.pair(x, y, self._check(caches))

    def _layers(self):
        H = self.hidden_dim
        out = []
        for layer in range(2):
            idx = [3 * layer + k for k in _ORDER]
            out.append((self.U[idx].reshape(3 * H, H), self.W[idx].reshape(3 * H, H),
                        self.b[idx].reshape(3 * H), None))
        return out

    def _forward(self, xa, h0):
        T = len(xa)
        X0 = np.ascontiguousarray(self.E[:, xa].T).reshape(T, 1, self.hidden_dim)
        mask = np.ones((T, 1), self.E.dtype)
        layers = self._layers()
        caches = stack_forward(self._be, "gru", self._flags, layers, X0, h0, None, mask)
        top = caches[-1].Hs[1:].reshape(T, self.hidden_dim)
        Z = top @ self.V.T
        Z += self.c
        return layers, caches, mask, top, Z

    def _h0(self):
        return np.zeros((2, 1, self.hidden_dim), self.E.dtype)

    def forward_propagation(self, x):
        """Logits' softmax ``o (T, V)`` and the top-layer states ``s2 (T, H)``."""
        xa = self._tokens(x)
        _, _, _, top, Z = self._forward(xa, self._h0())
        return _softmax_rows(Z), top.copy()

    def predict(self, x):
        """Output probabilities ``o (T, V)`` of the sentence ``x``."""
        return self.forward_propagation(x)[0]

    def predict_class(self, x):
        """``argmax`` of :meth:`predict` at each step, shape ``(T,)``."""
        return np.argmax(self.predict(x), axis=1)

    def ce_error(self, x, y):
        """Total cross-entropy of the sentence, ``-sum_t log o_t[y_t]``."""
        xa, ya = self._pair(x, y)
        _, _, mask, _, Z = self._forward(xa, self._h0())
        return float(self._be.rnn_softmax_xent(_logits(Z, len(xa), self.V.shape[0]), ya,
                                               mask.reshape(-1), 1.0))

    def bptt(self, x, y):
        """Gradients of :meth:`ce_error`: ``[dE, dU, dW, db, dV, dc]`` (the tutorial's order).

        With ``bptt_truncate = k >= 1`` only the last ``k`` steps are differentiated (their
        initial state taken as a constant), as Theano's ``truncate_gradient`` does.
        """
        xa, ya = self._pair(x, y)
        return self._grads(xa, ya)[1]

    def _grads(self, xa, ya, dense_E=True):
        """Loss and gradients ``[dE, dU, dW, db, dV, dc]``; with ``dense_E=False`` the
        first is ``(cols, G)``: the distinct words ``cols`` of ``xa`` and ``G[i]``, the
        gradient of column ``cols[i]`` of ``E`` (every other column's is zero)."""
        T = len(xa)
        H = self.hidden_dim
        h0 = self._h0()
        k = self.bptt_truncate
        if k != -1 and k < T:
            # run the first T - k steps without gradient; their final state is a constant
            _, caches, _, _, _ = self._forward(xa[:T - k], h0)
            h0 = np.ascontiguousarray(np.stack([c.Hs[T - k] for c in caches]))
            xa, ya = xa[T - k:], ya[T - k:]
            T = k
        layers, caches, mask, top, dZ = self._forward(xa, h0)
        loss = float(self._be.rnn_softmax_xent(_logits(dZ, T, self.V.shape[0]), ya,
                                               mask.reshape(-1), 1.0))
        dV = dZ.T @ top
        dc = dZ.sum(axis=0)
        dTop = (dZ @ self.V).reshape(T, 1, H)
        lg, dX0, _, _ = stack_backward(self._be, "gru", self._flags, layers, caches, mask, dTop)
        if dense_E:
            dE = np.zeros_like(self.E)
            np.add.at(dE.T, xa, dX0.reshape(T, H))
        else:   # the same sums in the same order, over the distinct words only
            cols, inv = np.unique(xa, return_inverse=True)
            G = np.zeros((len(cols), H), self.E.dtype)
            np.add.at(G, inv.reshape(-1), dX0.reshape(T, H))
            dE = (cols.astype(np.intp, copy=False), G)
        dU = np.empty_like(self.U)
        dW = np.empty_like(self.W)
        db = np.empty_like(self.b)
        for layer, (dW_ih, dW_hh, db_ih, _) in enumerate(lg):
            for blk, k_tut in enumerate(_ORDER):
                i = 3 * layer + k_tut
                dU[i] = dW_ih[blk * H:(blk + 1) * H]
                dW[i] = dW_hh[blk * H:(blk + 1) * H]
                db[i] = db_ih[blk * H:(blk + 1) * H]
        return loss, [dE, dU, dW, db, dV, dc]

    def sgd_step(self, x, y, learning_rate, decay=0.9):
        """One RMSprop step on one sentence, in place; returns the loss it differentiated.

        ``m = decay * m + (1 - decay) * g**2;  P -= learning_rate * g / sqrt(m + 1e-6)``
        (the tutorial's rule, equal to ``fastrnn.optim.RMSprop(rho=decay, eps=1e-6,
        eps_inside_sqrt=True)``).  The compiled backends apply it in one pass over each
        array (``gru_rmsprop``), and to ``E`` only in the columns of the sentence's words,
        while every element of ``mE`` decays (``gru_rmsprop_columns``); the results equal
        the NumPy expression above, with the dense ``dE``, bit for bit.
        """
        lr = _validate.finite_scalar(learning_rate, "learning_rate")
        decay = _validate.finite_scalar(decay, "decay")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        xa, ya = self._pair(x, y, caches=True)
        loss, grads = self._grads(xa, ya, dense_E=False)
        coef = np.array([decay, 1.0 - decay, lr, 1e-6], self.E.dtype)
        for name, g in zip(("E", "U", "W", "b", "V", "c"), grads):
            p = getattr(self, name)
            m = getattr(self, "m" + name)
            if name == "E":
                cols, G = g
                if _fusable(p, m):
                    self._be.gru_rmsprop_columns(p, m, cols, G, coef)
                else:
                    _reference_gru.gru_rmsprop_columns(p, m, cols, G, coef)
            elif _fusable(p, m):
                self._be.gru_rmsprop(p.reshape(-1), m.reshape(-1),
                                     np.ascontiguousarray(g).reshape(-1), coef)
            else:
                _reference_gru.gru_rmsprop(p, m, g, coef)
        return loss

    def calculate_total_loss(self, X, Y):
        """Sum of :meth:`ce_error` over lists of sentences."""
        pairs = _validate.corpus(X, Y, self._check())
        return float(sum(self.ce_error(x, y) for x, y in pairs))

    def calculate_loss(self, X, Y):
        """Mean cross-entropy per word over lists of sentences."""
        pairs = _validate.corpus(X, Y, self._check())
        num_words = sum(len(y) for _, y in pairs)
        return float(sum(self.ce_error(x, y) for x, y in pairs)) / num_words


# ----------------------------------------------------------------------------- RNNKeras

def _glorot(rng, shape):
    a = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-a, a, shape)


def _orthogonal(rng, rows, cols):
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return q if rows >= cols else q.T


class RNNKeras:
    """The seed's Keras character LSTM: ``LSTM(output_size) -> Dense(vector_size) -> softmax``.

    Parameters
    ----------
    sentenceLen : int
        Window length ``L`` (time steps per sample).
    vector_size : int
        One-hot size ``V`` of the inputs and of the output distribution.
    output_size : int
        Number of LSTM units ``H`` (the seed's name for it).
    hidden_dim : int, default 100
        Kept for the seed's signature; unused there and here.
    gate_activation : {"sigmoid", "hard_sigmoid"}
        Keras's ``recurrent_activation`` (``hard_sigmoid`` was Keras 1's default).
    lr, rho, eps : float
        RMSprop's settings (Keras: ``lr=0.01`` as the seed compiled it, ``rho=0.9``,
        ``eps=1e-7``): ``m = rho m + (1-rho) g**2; P -= lr g / (sqrt(m) + eps)``.
    backend, dtype, seed
        Kernel backend, float dtype (default float32, Keras's), seed of the initial weights
        and of the shuffling.

    Notes
    -----
    Parameters live in :meth:`parameters` in PyTorch's layout (``weight_ih_l0 (4H, V)``,
    gate order ``i, f, g, o`` -- Keras's ``i, f, c, o``); :meth:`get_weights` /
    :meth:`set_weights` use Keras's list ``[kernel (V, 4H), recurrent_kernel (H, 4H),
    bias (4H,), dense kernel (H, V), dense bias (V,)]``.  Initialisation is Keras's:
    Glorot-uniform kernels, orthogonal recurrent kernel, zero biases except the forget
    gate's (1, ``unit_forget_bias``).
    """

    def __init__(self, sentenceLen, vector_size, output_size, hidden_dim=100,
                 gate_activation="sigmoid", lr=0.01, rho=0.9, eps=1e-7, backend=None,
                 dtype=np.float32, seed=None):
        self.sentenceLen = _validate.positive_int(sentenceLen, "sentenceLen")
        self.vector_size = Vs = _validate.positive_int(vector_size, "vector_size")
        self.output_size = H = _validate.positive_int(output_size, "output_size")
        self.hidden_dim = hidden_dim
        if gate_activation not in ("sigmoid", "hard_sigmoid"):
            raise ValueError(f"gate_activation must be 'sigmoid' or 'hard_sigmoid', "
                             f"got {gate_activation!r}")
        self.gate_activation = gate_activation
        self._flags = {"hard_gates": gate_activation == "hard_sigmoid"}
        self.dtype = dt = _validate.as_dtype(dtype)
        self.backend = backend
        self._be = get_backend(backend)
        for name in ("lstm_layer_forward", "lstm_layer_backward"):
            _kernel(self._be, name)
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        b = np.zeros(4 * H)
        b[H:2 * H] = 1.0
        self._params = {
            "weight_ih_l0": _glorot(rng, (Vs, 4 * H)).T.astype(dt),
            "weight_hh_l0": _orthogonal(rng, H, 4 * H).T.astype(dt),
            "bias_l0": b.astype(dt),
            "dense.weight": _glorot(rng, (H, Vs)).T.astype(dt),
            "dense.bias": np.zeros(Vs, dt),
        }
        self._params = {k: np.ascontiguousarray(v) for k, v in self._params.items()}
        from .optim import RMSprop
        self.optimizer = RMSprop(self._params, lr=lr, rho=rho, eps=eps)

    # -- parameters ---------------------------------------------------------------
    def parameters(self):
        """Live arrays: ``weight_ih_l0 (4H, V)``, ``weight_hh_l0 (4H, H)``, ``bias_l0 (4H,)``
        (Keras has one bias), ``dense.weight (V, H)``, ``dense.bias (V,)``."""
        return self._params

    def _expected_shapes(self):
        Vs = _validate.positive_int(self.vector_size, "vector_size")
        H = _validate.positive_int(self.output_size, "output_size")
        return {"weight_ih_l0": (4 * H, Vs), "weight_hh_l0": (4 * H, H), "bias_l0": (4 * H,),
                "dense.weight": (Vs, H), "dense.bias": (Vs,)}

    def _check_params(self):
        """Check the live parameters before any kernel runs; O(number of parameters).

        :meth:`parameters` is a live dict: each entry must still be present, an ndarray of
        the model's dtype, C-contiguous, of exactly the shape ``vector_size`` and
        ``output_size`` give.  Values are not scanned (:meth:`set_weights` checks them).
        """
        return _validate.param_dict(self._params, self._expected_shapes(), self.dtype)

    def get_weights(self):
        """Keras's ``model.get_weights()`` list (copies), see the class notes."""
        p = self._params
        return [p["weight_ih_l0"].T.copy(), p["weight_hh_l0"].T.copy(), p["bias_l0"].copy(),
                p["dense.weight"].T.copy(), p["dense.bias"].copy()]

    def set_weights(self, weights):
        """Load Keras's ``model.get_weights()`` list (in place)."""
        p = self._params
        shapes = self._expected_shapes()
        names = ("weight_ih_l0", "weight_hh_l0", "bias_l0", "dense.weight", "dense.bias")
        if len(weights) != 5:
            raise ValueError(f"expected 5 arrays (kernel, recurrent_kernel, bias, dense kernel, "
                             f"dense bias), got {len(weights)}")
        dt = self.dtype
        vals = []
        for k, (name, w) in enumerate(zip(names, weights)):
            w = np.asarray(w)
            want = shapes[name][::-1]                   # Keras stores the transposes
            if w.shape != want:
                raise ValueError(f"weights[{k}] ({name}) must have shape {want} in Keras's "
                                 f"layout, got {w.shape}")
            if w.dtype.kind not in "fiu":
                raise ValueError(f"weights[{k}] ({name}) must be finite numbers, got dtype "
                                 f"{w.dtype}")
            with np.errstate(over="ignore", invalid="ignore"):
                w = np.ascontiguousarray(w.T, dtype=dt)  # cast first: 1e300 is inf in float32
            if not np.isfinite(w).all():
                bad = int(w.size - np.count_nonzero(np.isfinite(w)))
                raise ValueError(f"weights[{k}] ({name}) must be finite numbers; {bad} value(s) "
                                 f"are NaN or inf in {dt.name}")
            vals.append(w)
        for name, w in zip(names, vals):
            a = p.get(name)
            if (isinstance(a, np.ndarray) and a.dtype == dt and a.shape == shapes[name]
                    and a.flags.c_contiguous and a.flags.writeable):
                a[...] = w
            else:                  # the live entry was replaced by an unusable array
                p[name] = w

    # -- passes -------------------------------------------------------------------
    def _inputs(self, X):
        X = np.asarray(X)
        if X.ndim == 2:
            X = X[None]
        if X.ndim != 3 or X.shape[1:] != (self.sentenceLen, self.vector_size):
            raise ValueError(f"X must have shape (N, sentenceLen, vector_size) = "
                             f"(N, {self.sentenceLen}, {self.vector_size}), got {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X holds no samples")
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X must be numeric or bool, got dtype {X.dtype}")
        X = X.astype(self.dtype)
        if not np.isfinite(X).all():
            raise ValueError("X holds non-finite values")
        return X

    def _forward(self, Xb):
        """``Xb (N, L, V)`` -> caches, top state ``h_L (N, H)`` and logits ``(N, V)``."""
        N, L, _ = Xb.shape
        p = self._check_params()
        H = self.output_size
        X0 = np.ascontiguousarray(Xb.transpose(1, 0, 2))           # time-major (L, N, V)
        zeros = np.zeros((1, N, H), self.dtype)
        mask = np.ones((L, N), self.dtype)
        layers = [(p["weight_ih_l0"], p["weight_hh_l0"], p["bias_l0"], None)]
        caches = stack_forward(self._be, "lstm", self._flags, layers, X0, zeros, zeros.copy(),
                               mask, X0_ids=_one_hot_ids(X0))
        hL = caches[0].Hs[L]
        Z = hL @ p["dense.weight"].T + p["dense.bias"]
        return layers, caches, mask, hL, Z

    def predict_proba(self, X):
        """Softmax outputs for every sample, ``(N, vector_size)``."""
        return _softmax_rows(self._forward(self._inputs(X))[4])

    def predict(self, x):
        """Probability vector ``(vector_size,)`` of the first sample of ``x``.

        ``x`` is ``(N, sentenceLen, vector_size)`` or one window ``(sentenceLen,
        vector_size)``.  (The seed's version read a global ``model``.)
        """
        X = self._inputs(x)
        return self.predict_proba(X[:1])[0]

    def loss_and_grad(self, X, y):
        """Mean categorical cross-entropy over the batch and its gradients.

        Parameters
        ----------
        X : array_like, shape (N, sentenceLen, vector_size)
        y : array_like, shape (N, vector_size)
            Target distributions (one-hot rows in the seed).

        Returns
        -------
        loss : float
        grads : dict, keyed like :meth:`parameters`
        """
        X = self._inputs(X)
        N, L, Vs = X.shape
        y = np.asarray(y)
        if y.shape != (N, Vs):
            raise ValueError(f"y must have shape (N, vector_size) = {(N, Vs)}, got {y.shape}")
        y = y.astype(self.dtype)
        layers, caches, mask, hL, Z = self._forward(X)
        Z = Z - Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        loss = float(-(y * logp).sum() / N)
        dZ = (np.exp(logp) * y.sum(axis=1, keepdims=True) - y) / N
        p = self._params
        dTop = np.zeros((L, N, self.output_size), self.dtype)
        dTop[L - 1] = dZ @ p["dense.weight"]
        lg, _, _, _ = stack_backward(self._be, "lstm", self._flags, layers, caches, mask, dTop,
                                     need_dX0=False)
        dW_ih, dW_hh, db_ih, db_hh = lg[0]
        grads = {"weight_ih_l0": dW_ih, "weight_hh_l0": dW_hh, "bias_l0": db_ih,
                 "dense.weight": (dZ.T @ hL).astype(self.dtype),
                 "dense.bias": dZ.sum(axis=0).astype(self.dtype)}
        return loss, grads

    def fit(self, X, y, batch_size=128, epochs=1, shuffle=True):
        """Keras-style training: RMSprop on mini-batches; returns ``{"loss": [per epoch]}``.

        Each epoch visits the samples once (shuffled with the model's seed unless
        ``shuffle=False``); an epoch's loss is the sample-weighted mean of its batch losses
        (what Keras reports).
        """
        X = self._inputs(X)
        N = X.shape[0]
        y = np.asarray(y)
        if y.shape != (N, self.vector_size):
            raise ValueError(f"y must have shape (N, vector_size) = {(N, self.vector_size)}, "
                             f"got {y.shape}")
        bs = _validate.positive_int(batch_size, "batch_size")
        ep = _validate.positive_int(epochs, "epochs")
        self._check_params()
        live = getattr(self.optimizer, "params", None)
        if live is not None:
            stale = [n for n in self._params if live.get(n) is not self._params[n]]
            if stale:
                raise ValueError(f"parameters() entries {stale} were replaced by new arrays, "
                                 f"but the optimizer still updates the old ones; assign in "
                                 f"place (parameters()[name][...] = values or set_weights) "
                                 f"or create a new optimizer on parameters()")
        history = []
        for _ in range(ep):
            order = self._rng.permutation(N) if shuffle else np.arange(N)
            total = 0.0
            for start in range(0, N, bs):
                idx = order[start:start + bs]
                loss, grads = self.loss_and_grad(X[idx], y[idx])
                self.optimizer.step(grads)
                total += loss * len(idx)
            history.append(total / N)
        return {"loss": history}

    def train_model(self, X, y, batchSize=128, nepoch=1):
        """The seed's name for :meth:`fit`."""
        return self.fit(X, y, batch_size=batchSize, epochs=nepoch)


# ----------------------------------------------------------------------------- helpers

def char_windows(text, maxlen=40, step=3, dtype=bool):
    """Cut ``text`` into one-hot character windows (the Keras ``lstm_text_generation`` recipe).

    Parameters
    ----------
    text : str
    maxlen : int
        Window length.
    step : int
        Stride between window starts.
    dtype : numpy dtype, default bool

    Returns
    -------
    X : ndarray, shape (N, maxlen, len(chars))
        ``X[i, t, k] = 1`` iff ``text[i*step + t] == chars[k]``.
    y : ndarray, shape (N, len(chars))
        One-hot next character after each window.
    chars : list of str
        Sorted distinct characters of ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    maxlen = _validate.positive_int(maxlen, "maxlen")
    step = _validate.positive_int(step, "step")
    if len(text) <= maxlen:
        raise ValueError(f"text must be longer than maxlen={maxlen}, got {len(text)} characters")
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    starts = range(0, len(text) - maxlen, step)
    ids = np.fromiter((index[ch] for ch in text), dtype=np.intp, count=len(text))
    N = len(starts)
    X = np.zeros((N, maxlen, len(chars)), dtype)
    y = np.zeros((N, len(chars)), dtype)
    for i, s in enumerate(starts):
        X[i, np.arange(maxlen), ids[s:s + maxlen]] = 1
        y[i, ids[s + maxlen]] = 1
    return X, y, chars


def sample(preds, temperature=1.0, rng=None):
    """Draw an index from ``preds`` reweighted by ``temperature`` (Keras example's ``sample``).

    ``p_i ∝ exp(log(preds_i) / temperature)``; lower temperatures sharpen the distribution.

    Parameters
    ----------
    preds : array_like, shape (V,)
        Probabilities (non-negative, not all zero).
    temperature : float > 0
    rng : numpy.random.Generator, optional
        Defaults to the global ``np.random`` (as the example).

    Returns
    -------
    int
    """
    t = _validate.finite_scalar(temperature, "temperature", positive=True)
    p = np.asarray(preds, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"preds must be a non-empty vector, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("preds must be finite, non-negative and not all zero")
    with np.errstate(divide="ignore"):
        logp = np.log(p) / t
    logp -= logp.max()
    w = np.exp(logp)
    w /= w.sum()
    if rng is None:
        return int(np.argmax(np.random.multinomial(1, w, 1)))
    return int(rng.choice(len(w), p=w))

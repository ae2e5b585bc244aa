"""JAX and PyTensor peers of the model cases in ``test_bench_models.py``.

Each builder takes the fastrnn model's weights (copies: the peer trains its own) and the
case's data, and returns ``(step, loss)`` like the PyTorch peers beside the cases:

``jax_gru(m)`` / ``pytensor_gru(m)``
    the GRU tutorial (``fastrnn.GRUTheano``): ``step(x, y, lr)`` is one RMSprop step on
    the sentence (the tutorial's rule, eps inside the sqrt) and returns its loss;
    ``loss(x, y)`` the sentence's total cross-entropy.
``jax_ptb(state_dict, x, y)``
    the PTB-small LSTM LM: ``step()`` is one SGD step with a row-sparse embedding update.
``jax_keras(params, X, y)``
    the Keras char-LSTM: ``step()`` is one RMSprop step (Keras's rule, eps outside).

JAX: the loss is a ``lax.scan`` over time, differentiated by ``value_and_grad``, and the
whole step (loss, gradient, update) is one jitted function.  Its parameters and optimizer
state are donated to it and replaced by the ones it returns, so the update happens in
place, as PyTorch's and fastrnn's do; ``step()`` waits for the result
(``block_until_ready``).  The learning rate is an argument of the jitted function, not a
constant, so at ``lr = 0`` nothing is folded away.  JAX's thread count is set by
``xla_threads.py`` (imported here) before JAX starts: one thread unless the environment
says otherwise.
"""
from functools import partial

import numpy as np

import xla_threads  # noqa: F401  -- XLA's thread count, set before jax is imported

GRU_PARAMS = ("E", "U", "W", "V", "b", "c")
RMSPROP_EPS_TUTORIAL = 1e-6


def _jax(dtype):
    import jax

    if np.dtype(dtype) == np.float64:
        jax.config.update("jax_enable_x64", True)
    return jax, jax.numpy


def _hard_sigmoid(np_like, a):
    """Theano's ``hard_sigmoid``: ``clip(0.2 a + 0.5, 0, 1)``."""
    return np_like.clip(0.2 * a + 0.5, 0.0, 1.0)


def _block(tree):
    import jax
    return jax.block_until_ready(tree)


# ---------------------------------------------------------------- gru-tutorial --------

def jax_gru(m, decay=0.9):
    """The tutorial's equations (``_gru_torch`` in ``test_bench_models.py``) in one scan over
    both layers.  The embedding columns ``E[:, x_t]`` are gathered before the scan (the
    same arithmetic): differentiating a lookup inside the scan adds a dense (H, V) gradient
    of ``E`` at every step, which cost PyTensor 2.5x its step time (440 against 175 ms)."""
    jax, jnp = _jax(m.E.dtype)
    params = tuple(jnp.asarray(getattr(m, n)) for n in GRU_PARAMS)
    caches = tuple(jnp.asarray(getattr(m, "m" + n)) for n in GRU_PARAMS)
    H = m.hidden_dim

    def total_loss(params, x, y):
        E, U, W, V, b, c = params

        def cell(carry, x_e):
            s1, s2 = carry
            z1 = _hard_sigmoid(jnp, U[0] @ x_e + W[0] @ s1 + b[0])
            r1 = _hard_sigmoid(jnp, U[1] @ x_e + W[1] @ s1 + b[1])
            c1 = jnp.tanh(U[2] @ x_e + W[2] @ (s1 * r1) + b[2])
            s1 = (1 - z1) * c1 + z1 * s1
            z2 = _hard_sigmoid(jnp, U[3] @ s1 + W[3] @ s2 + b[3])
            r2 = _hard_sigmoid(jnp, U[4] @ s1 + W[4] @ s2 + b[4])
            c2 = jnp.tanh(U[5] @ s1 + W[5] @ (s2 * r2) + b[5])
            s2 = (1 - z2) * c2 + z2 * s2
            return (s1, s2), s2

        zero = jnp.zeros(H, E.dtype)
        _, S2 = jax.lax.scan(cell, (zero, zero), E[:, x].T)
        logp = jax.nn.log_softmax(S2 @ V.T + c, axis=-1)
        return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1))

    @partial(jax.jit, donate_argnums=(0, 1))
    def rmsprop_step(params, caches, x, y, lr):
        loss, grads = jax.value_and_grad(total_loss)(params, x, y)
        caches = tuple(decay * M + (1 - decay) * g * g for M, g in zip(caches, grads))
        params = tuple(P - lr * g / jnp.sqrt(M + RMSPROP_EPS_TUTORIAL)
                       for P, g, M in zip(params, grads, caches))
        return params, caches, loss

    loss_jit = jax.jit(total_loss)
    state = {"params": params, "caches": caches}

    def step(x, y, lr):
        state["params"], state["caches"], loss = _block(
            rmsprop_step(state["params"], state["caches"], x, y, lr))
        return loss

    return step, lambda x, y: float(loss_jit(state["params"], x, y))


def _pytensor_scan(fn, **kwargs):
    import pytensor
    try:
        return pytensor.scan(fn, return_updates=False, **kwargs)
    except TypeError:                       # PyTensor before the return_updates switch
        return pytensor.scan(fn, **kwargs)[0]


def pytensor_gru(m, decay=0.9):
    """The tutorial's Theano graph in PyTensor: one ``scan`` over both GRU layers, the full
    gradient by ``pytensor.grad`` and RMSprop as the compiled function's ``updates``.  The
    embedding lookup is before the scan and the output layer one product after it, as in
    :func:`jax_gru` (the tutorial had both inside it: the same arithmetic, slower)."""
    import pytensor
    import pytensor.tensor as pt

    floatX = m.E.dtype.name
    P = {n: pytensor.shared(getattr(m, n).copy(), name=n) for n in GRU_PARAMS}
    M = {n: pytensor.shared(getattr(m, "m" + n).copy(), name="m" + n) for n in GRU_PARAMS}
    x = pt.ivector("x")
    y = pt.ivector("y")
    lr = pt.scalar("lr", dtype=floatX)

    def cell(x_e, s1, s2, U, W, b):
        z1 = _hard_sigmoid(pt, U[0].dot(x_e) + W[0].dot(s1) + b[0])
        r1 = _hard_sigmoid(pt, U[1].dot(x_e) + W[1].dot(s1) + b[1])
        c1 = pt.tanh(U[2].dot(x_e) + W[2].dot(s1 * r1) + b[2])
        s1 = (1 - z1) * c1 + z1 * s1
        z2 = _hard_sigmoid(pt, U[3].dot(s1) + W[3].dot(s2) + b[3])
        r2 = _hard_sigmoid(pt, U[4].dot(s1) + W[4].dot(s2) + b[4])
        c2 = pt.tanh(U[5].dot(s1) + W[5].dot(s2 * r2) + b[5])
        s2 = (1 - z2) * c2 + z2 * s2
        return s1, s2

    zero = pt.zeros(m.hidden_dim, dtype=floatX)
    _, S2 = _pytensor_scan(cell, sequences=P["E"][:, x].T, outputs_info=[zero, zero],
                           non_sequences=[P["U"], P["W"], P["b"]],
                           truncate_gradient=-1, strict=True)
    logp = pt.special.log_softmax(S2.dot(P["V"].T) + P["c"], axis=-1)
    cost = -pt.sum(logp[pt.arange(y.shape[0]), y])
    grads = pytensor.grad(cost, [P[n] for n in GRU_PARAMS])
    updates = []
    for n, g in zip(GRU_PARAMS, grads):
        m_new = decay * M[n] + (1 - decay) * g ** 2
        updates += [(M[n], m_new), (P[n], P[n] - lr * g / pt.sqrt(m_new + RMSPROP_EPS_TUTORIAL))]
    sgd = pytensor.function([x, y, lr], cost, updates=updates)
    ce = pytensor.function([x, y], cost)

    def ids(a):
        return np.asarray(a, dtype=np.int32)

    return (lambda x, y, lr: sgd(ids(x), ids(y), lr)), (lambda x, y: float(ce(ids(x), ids(y))))


# ---------------------------------------------------------------- LSTM (both cases) ---

def _lstm_layer(jax, jnp, gates_in, w_hh, h0):
    """One LSTM layer over time, PyTorch's gate order ``i, f, g, o``.

    ``gates_in`` (T, B, 4H) holds the input projections of every step with the biases,
    computed before the scan in one product (as PyTorch's CPU LSTM does); the scan adds
    the recurrent product.  Returns the hidden states (T, B, H).
    """
    def cell(carry, g_t):
        h, c = carry
        i, f, g, o = jnp.split(g_t + h @ w_hh.T, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    _, hs = jax.lax.scan(cell, (h0, h0), gates_in)
    return hs


def _mean_xent(jax, jnp, logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


# ---------------------------------------------------------------- ptb-lstm ------------

def jax_ptb(state_dict, x, y, rnn_prefix="rnn."):
    """``Embedding -> LSTM (L layers) -> Linear``, mean cross-entropy over the (T, B) batch,
    SGD.  The embedding's gradient is taken with respect to the rows looked up, and the
    update adds them into those rows only (``.at[x].add``, repeated ids summed): JAX's form
    of the row-sparse gradient of the other implementations."""
    dt = state_dict["embedding.weight"].dtype
    jax, jnp = _jax(dt)
    L = sum(k.startswith(rnn_prefix + "weight_ih_l") for k in state_dict)
    emb = jnp.asarray(state_dict["embedding.weight"])
    dense = {k: jnp.asarray(v) for k, v in state_dict.items() if k != "embedding.weight"}
    x = jnp.asarray(np.asarray(x, np.int32))
    y = jnp.asarray(np.asarray(y, np.int32)).reshape(-1)

    def loss_fn(dense, rows, y):
        h = rows                                            # (T, B, H)
        for k in range(L):
            p = {n: dense[f"{rnn_prefix}{n}_l{k}"]
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            gates_in = h @ p["weight_ih"].T + (p["bias_ih"] + p["bias_hh"])
            h0 = jnp.zeros((h.shape[1], p["weight_hh"].shape[1]), h.dtype)
            h = _lstm_layer(jax, jnp, gates_in, p["weight_hh"], h0)
        logits = h.reshape(-1, h.shape[-1]) @ dense["decoder.weight"].T + dense["decoder.bias"]
        return _mean_xent(jax, jnp, logits, y)

    @partial(jax.jit, donate_argnums=(0, 1))
    def sgd_step(emb, dense, x, y, lr):
        loss, (g_dense, g_rows) = jax.value_and_grad(loss_fn, argnums=(0, 1))(dense, emb[x], y)
        dense = {k: p - lr * g_dense[k] for k, p in dense.items()}
        return emb.at[x].add(-lr * g_rows), dense, loss

    loss_jit = jax.jit(lambda emb, dense, x, y: loss_fn(dense, emb[x], y))
    state = {"emb": emb, "dense": dense}

    def step():                             # lr 0, as the other implementations' step
        state["emb"], state["dense"], loss = _block(
            sgd_step(state["emb"], state["dense"], x, y, 0.0))
        return loss

    return step, lambda: float(loss_jit(state["emb"], state["dense"], x, y))


# ---------------------------------------------------------------- keras-char ----------

def jax_keras(params, X, y, rho=0.9, eps=1e-7):
    """``LSTM -> Dense -> softmax`` on the last step, mean cross-entropy, Keras's RMSprop
    (``m = rho m + (1-rho) g^2; p -= lr g / (sqrt(m) + eps)``).  ``params`` is
    ``fastrnn.RNNKeras.parameters()`` (PyTorch's layout, one bias); ``X`` (N, L, V) one-hot
    and ``y`` (N, V) one-hot, as the Keras model takes them."""
    jax, jnp = _jax(params["weight_ih_l0"].dtype)
    dt = params["weight_ih_l0"].dtype
    P = {k: jnp.asarray(v) for k, v in params.items()}
    M = {k: jnp.zeros_like(v) for k, v in P.items()}
    X = jnp.asarray(np.asarray(X, dt).transpose(1, 0, 2))   # time-major (L, N, V)
    labels = jnp.asarray(np.asarray(y).argmax(axis=1).astype(np.int32))

    def loss_fn(P, X, labels):
        gates_in = X @ P["weight_ih_l0"].T + P["bias_l0"]
        h0 = jnp.zeros((X.shape[1], P["weight_hh_l0"].shape[1]), X.dtype)
        hs = _lstm_layer(jax, jnp, gates_in, P["weight_hh_l0"], h0)
        logits = hs[-1] @ P["dense.weight"].T + P["dense.bias"]
        return _mean_xent(jax, jnp, logits, labels)

    @partial(jax.jit, donate_argnums=(0, 1))
    def rmsprop_step(P, M, X, labels, lr):
        loss, G = jax.value_and_grad(loss_fn)(P, X, labels)
        M = {k: rho * M[k] + (1 - rho) * G[k] * G[k] for k in P}
        P = {k: P[k] - lr * G[k] / (jnp.sqrt(M[k]) + eps) for k in P}
        return P, M, loss

    loss_jit = jax.jit(loss_fn)
    state = {"P": P, "M": M}

    def step():                             # lr 0, as the other implementations' step
        state["P"], state["M"], loss = _block(
            rmsprop_step(state["P"], state["M"], X, labels, 0.0))
        return loss

    return step, lambda: float(loss_jit(state["P"], X, labels))

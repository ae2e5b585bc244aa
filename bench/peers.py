"""Peers: the tutorial RNN LM written in PyTorch, JAX and PyTensor (Theano's successor).

Each builder takes a problem from :func:`cases.make_problem` and returns
``(step, loss)``: ``step()`` runs one full-BPTT SGD step (at ``cases.TIMING_LR``: nonzero,
so no product is skipped, and too small to change the weights, so every round times the
same work) and ``loss()`` returns the sentence's total
cross-entropy, which the suite compares with fastrnn's before timing anything.  All run
on one thread, like the rest of the suite.  A missing peer raises ImportError, and the
benchmark skips with that reason.
"""
import numpy as np

import xla_threads  # noqa: F401  -- one XLA thread for JAX, set before jax is imported
from cases import TIMING_LR


def torch_peer(p):
    import torch

    torch.set_num_threads(1)
    dt = torch.float64 if p["dtype"] == np.float64 else torch.float32
    U = torch.tensor(p["U"], dtype=dt, requires_grad=True)
    V = torch.tensor(p["V"], dtype=dt, requires_grad=True)
    W = torch.tensor(p["W"], dtype=dt, requires_grad=True)
    x = torch.tensor(p["x"], dtype=torch.long)
    y = torch.tensor(p["y"], dtype=torch.long)
    H, T = p["H"], p["T"]

    def forward_loss():
        inputs = U.t()[x]                       # (T, H): the columns U[:, x_t]
        h = torch.zeros(H, dtype=dt)
        states = []
        for t in range(T):
            h = torch.tanh(inputs[t] + W @ h)
            states.append(h)
        logits = torch.stack(states) @ V.t()
        return torch.nn.functional.cross_entropy(logits, y, reduction="sum")

    def step():
        loss = forward_loss()
        gU, gV, gW = torch.autograd.grad(loss, (U, V, W))
        with torch.no_grad():
            for P, G in ((U, gU), (V, gV), (W, gW)):
                P.sub_(G, alpha=TIMING_LR)
        return loss

    def loss():
        with torch.no_grad():
            return float(forward_loss())

    return step, loss


def jax_peer(p):
    import jax

    if p["dtype"] == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    H = p["H"]
    params = tuple(jnp.asarray(p[k]) for k in ("U", "V", "W"))
    x = jnp.asarray(p["x"].astype(np.int32))
    y = jnp.asarray(p["y"].astype(np.int32))

    def loss_fn(params, x, y):
        U, V, W = params

        def cell(h, xt):
            h = jnp.tanh(U[:, xt] + W @ h)
            return h, h

        _, S = jax.lax.scan(cell, jnp.zeros(H, U.dtype), x)
        logp = jax.nn.log_softmax(S @ V.T, axis=-1)
        return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def sgd(params, x, y, lr):
        L, g = jax.value_and_grad(loss_fn)(params, x, y)
        return tuple(P - lr * G for P, G in zip(params, g)), L

    loss_jit = jax.jit(loss_fn)
    lr = jnp.asarray(TIMING_LR, params[0].dtype)

    def step():
        new, L = sgd(params, x, y, lr)
        L.block_until_ready()
        return new                          # JAX arrays are immutable: ``params`` stay

    return step, lambda: float(loss_jit(params, x, y))


def pytensor_peer(p):
    import pytensor
    import pytensor.tensor as pt

    floatX = "float64" if p["dtype"] == np.float64 else "float32"
    U = pytensor.shared(p["U"].astype(floatX), name="U")
    V = pytensor.shared(p["V"].astype(floatX), name="V")
    W = pytensor.shared(p["W"].astype(floatX), name="W")
    x = pt.ivector("x")
    y = pt.ivector("y")

    def cell(x_t, s_prev, U, V, W):
        s_t = pt.tanh(U[:, x_t] + W.dot(s_prev))
        o_t = pt.special.softmax(V.dot(s_t))
        return o_t, s_t

    kwargs = dict(sequences=x, outputs_info=[None, dict(initial=pt.zeros(p["H"], dtype=floatX))],
                  non_sequences=[U, V, W], truncate_gradient=-1, strict=True)
    try:
        outputs = pytensor.scan(cell, return_updates=False, **kwargs)
    except TypeError:                       # PyTensor before the return_updates switch
        outputs, _ = pytensor.scan(cell, **kwargs)
    o = outputs[0]
    cost = pt.sum(pt.nnet.crossentropy_categorical_1hot(o, y)) if hasattr(pt, "nnet") else \
        -pt.sum(pt.log(o[pt.arange(y.shape[0]), y]))
    dU, dV, dW = pytensor.grad(cost, [U, V, W])
    lr = pt.scalar("lr", dtype=floatX)
    sgd = pytensor.function([x, y, lr], [], updates=[(U, U - lr * dU), (V, V - lr * dV),
                                                      (W, W - lr * dW)])
    ce = pytensor.function([x, y], cost)
    xi = p["x"].astype(np.int32)
    yi = p["y"].astype(np.int32)
    lr_t = np.asarray(TIMING_LR, dtype=floatX)
    return (lambda: sgd(xi, yi, lr_t)), (lambda: float(ce(xi, yi)))


PEERS = {"torch": torch_peer, "jax": jax_peer, "pytensor": pytensor_peer}

"""pytest-benchmark: RNN / GRU / LSTM cells, every backend side by side.

Run:  python -m pytest bench/test_bench_cells.py --benchmark-only   (report: bench/report.py)

Case: T=20 steps, B=20 sequences, H=200 units (embedding 200), V=10000 words, float32.
Groups are ``<cell>-<op>-T20B20H200V10000-float32`` with ops

``layer_forward`` / ``layer_fwd_bwd``
    the backend's recurrence kernels alone (``<cell>_layer_forward`` / ``_backward``) on a
    precomputed input projection: the sequential part, where the backends differ;
``lm_loss`` / ``lm_loss_and_grad``
    a whole language-model step (``Model.loss`` / ``Model.loss_and_grad``): embedding,
    input GEMMs, recurrence, decoder GEMM over ``V``, fused softmax + NLL.

Rows: each available backend that has the cell's kernels, and ``blas-only`` (just the
whole-sequence GEMMs of the step at the same shapes, the bound).  Results are checked
against the NumPy reference outside the timer.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from fastrnn.models import GRU, LSTM, RNN

T, B, H, V = 20, 20, 200, 10000
DT = np.float32
CELLS = {"rnn": (RNN, 1), "gru": (GRU, 3), "lstm": (LSTM, 4)}
OPS = ["layer_forward", "layer_fwd_bwd", "lm_loss", "lm_loss_and_grad"]


def _impls():
    out = []
    for name, ok in fastrnn.available_backends().items():
        if ok is True:
            out.append(name)
    return out + ["blas-only"]


def _flops(cell, op):
    G = CELLS[cell][1] * H
    rec = 2 * T * B * G * H                     # W_hh h for every step
    if op == "layer_forward":
        return rec
    if op == "layer_fwd_bwd":
        return 2 * rec                          # forward and dG W_hh (weight grads are not in the kernel)
    lm = rec + 2 * T * B * G * H + 2 * T * B * V * H      # + input projection + decoder
    return lm if op == "lm_loss" else 3 * lm


def _model(cell, backend):
    return CELLS[cell][0](V, H, dtype=DT, backend=backend, seed=0)


def _data():
    rng = np.random.default_rng(1)
    return rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))


def _layer_inputs(cell):
    rng = np.random.default_rng(2)
    G = CELLS[cell][1] * H
    d = dict(Xp=rng.standard_normal((T, B, G)).astype(DT),
             W=(rng.uniform(-1, 1, (G, H)) / np.sqrt(H)).astype(DT),
             b=np.zeros(G, DT), h0=np.zeros((B, H), DT), c0=np.zeros((B, H), DT),
             mask=np.ones((T, B), DT), Hs=np.empty((T + 1, B, H), DT),
             Cs=np.empty((T + 1, B, H), DT), cache=np.empty((T, B, 4 * H), DT),
             dHs=rng.standard_normal((T, B, H)).astype(DT), dGx=np.empty((T, B, G), DT),
             dGh=np.empty((T, B, G), DT), dh0=np.empty((B, H), DT), dc0=np.empty((B, H), DT))
    return d


def _layer_fn(be, cell, op, d):
    fl = (True, False)      # reset_after=True, hard_gates=False: PyTorch's cells

    def fwd():
        if cell == "rnn":
            be.rnn_layer_forward(d["Xp"], d["W"], d["b"], d["h0"], d["mask"], d["Hs"])
        elif cell == "gru":
            be.gru_layer_forward(d["Xp"], d["W"], d["b"], d["h0"], d["mask"], *fl, d["Hs"], d["cache"])
        else:
            be.lstm_layer_forward(d["Xp"], d["W"], d["b"], d["h0"], d["c0"], d["mask"], fl[1],
                                  d["Hs"], d["Cs"], d["cache"])

    def bwd():
        if cell == "rnn":
            be.rnn_layer_backward(d["W"], d["mask"], d["Hs"], d["dHs"], d["dGx"], d["dh0"])
        elif cell == "gru":
            be.gru_layer_backward(d["W"], d["mask"], *fl, d["Hs"], d["cache"], d["dHs"], d["dGx"],
                                  d["dGh"], d["dh0"])
        else:
            be.lstm_layer_backward(d["W"], d["mask"], fl[1], d["Hs"], d["Cs"], d["cache"], d["dHs"],
                                   d["dGx"], d["dh0"], d["dc0"])

    if op == "layer_forward":
        return fwd

    def both():
        fwd()
        bwd()
    return both


def _blas_only(cell, op):
    """The step's matrix products alone, on fixed operands (nothing feeds back)."""
    rng = np.random.default_rng(3)
    G = CELLS[cell][1] * H

    def r(*shape):
        return rng.uniform(-0.1, 0.1, shape).astype(DT)

    X, Wih, Whh, Wd = r(T * B, H), r(G, H), r(G, H), r(V, H)
    hs, gh, dhs = r(B, H), np.empty((B, G), DT), np.empty((B, H), DT)
    Xp, Z = np.empty((T * B, G), DT), np.empty((T * B, V), DT)
    dX, dW, dWih = np.empty((T * B, H), DT), np.empty((V, H), DT), np.empty((G, H), DT)

    def rec():
        for _ in range(T):
            np.dot(hs, Whh.T, out=gh)

    def rec_back():
        for _ in range(T):
            np.dot(gh, Whh, out=dhs)

    if op == "layer_forward":
        return rec
    if op == "layer_fwd_bwd":
        def both():
            rec()
            rec_back()
        return both

    def fwd():
        np.dot(X, Wih.T, out=Xp)
        rec()
        np.dot(X, Wd.T, out=Z)
    if op == "lm_loss":
        return fwd

    def full():
        fwd()
        np.dot(Z, Wd, out=dX)
        np.dot(Z.T, X, out=dW)
        rec_back()
        np.dot(Xp.T, X, out=dWih)
        np.dot(Xp, Wih, out=dX)
    return full


def _check(cell, op, impl):
    """Outside the timer: the backend's numbers equal the reference's (float32 rtol 1e-4)."""
    if impl in ("numpy", "blas-only"):
        return
    if op.startswith("layer"):
        ref, got = _layer_inputs(cell), _layer_inputs(cell)
        _layer_fn(R, cell, "layer_fwd_bwd", ref)()
        _layer_fn(fastrnn.get_backend(impl), cell, "layer_fwd_bwd", got)()
        for k in ("Hs", "dGx"):
            scale = max(1.0, float(np.abs(ref[k]).max()))
            assert np.abs(got[k] - ref[k]).max() <= 1e-4 * scale, (cell, impl, k)
        return
    x, y = _data()
    want = _model(cell, "numpy").loss(x, y)[0]
    got = _model(cell, impl).loss(x, y)[0]
    assert abs(got - want) <= 1e-4 * abs(want), (cell, impl, got, want)


def _build(cell, op, impl):
    if impl == "blas-only":
        return _blas_only(cell, op)
    be = fastrnn.get_backend(impl)
    if not hasattr(be, f"{cell}_layer_forward"):
        pytest.skip(f"backend {impl} has no {cell} kernels")
    if op.startswith("layer"):
        return _layer_fn(be, cell, op, _layer_inputs(cell))
    m = _model(cell, impl)
    x, y = _data()
    if op == "lm_loss":
        return lambda: m.loss(x, y)
    return lambda: m.loss_and_grad(x, y)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_cells_float32(benchmark, cell, op, impl):
    fn = _build(cell, op, impl)
    _check(cell, op, impl)
    fn()                                    # warm-up: compiled code, page faults
    benchmark.group = f"{cell}-{op}-T{T}B{B}H{H}V{V}-float32"
    benchmark.extra_info.update(impl=impl, op=op, cell=cell, T=T, B=B, H=H, V=V,
                                dtype="float32", flops=_flops(cell, op), tokens=T * B)
    benchmark(fn)

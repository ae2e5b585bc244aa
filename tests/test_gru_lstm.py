"""Layer kernels (tanh RNN, GRU, LSTM): the reference by finite differences, a naive per-gate
loop against gate-order mistakes, and every backend against the reference.

Tolerances: float64 backends ``rtol 1e-10``; float32 kernels against the float64 reference
run on the same float32-rounded inputs, ``1e-4`` relative to the array's scale.
"""
import math

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from fastrnn._kernels import common as KC
from fastrnn.models import stack_backward, stack_forward

# (cell, flags) for every variant the kernels implement
VARIANTS = [
    ("rnn", {}),
    ("gru", {"reset_after": True, "hard_gates": False}),
    ("gru", {"reset_after": False, "hard_gates": False}),
    ("gru", {"reset_after": True, "hard_gates": True}),
    ("gru", {"reset_after": False, "hard_gates": True}),
    ("lstm", {"hard_gates": False}),
    ("lstm", {"hard_gates": True}),
]
VARIANT_IDS = [c + "".join(f"-{k}={int(v)}" for k, v in f.items()) for c, f in VARIANTS]
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# (T, B, I, H): T=1, H=1, B=1, odd sizes
SIZES = [(1, 1, 1, 1), (1, 3, 2, 2), (4, 1, 3, 1), (5, 3, 4, 7), (9, 4, 5, 13)]


def numba_backend():
    try:
        return fastrnn.get_backend("numba")
    except fastrnn.backends.BackendUnavailableError as exc:  # pragma: no cover
        pytest.skip(str(exc))


def make_layer(cell, T, B, I, H, seed=0, dtype=np.float64, scale=0.8, masked=False):
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H
    W_ih = rng.uniform(-scale, scale, (G, I))
    W_hh = rng.uniform(-scale, scale, (G, H))
    b_ih = rng.uniform(-scale, scale, G)
    b_hh = rng.uniform(-scale, scale, G)
    X = rng.standard_normal((T, B, I))
    h0 = rng.uniform(-0.5, 0.5, (1, B, H))
    c0 = rng.uniform(-0.5, 0.5, (1, B, H)) if cell == "lstm" else None
    mask = np.ones((T, B))
    if masked and B > 1 and T > 1:
        mask[T // 2:, 0] = 0          # right padding
        mask[:1, B - 1] = 0           # left padding
    P = rng.standard_normal((T, B, H))    # random projection of all outputs: the loss
    cast = (lambda a: None if a is None else np.ascontiguousarray(a, dtype=dtype))
    return dict(layers=[tuple(cast(a) for a in (W_ih, W_hh, b_ih, b_hh))], X=cast(X),
                h0=cast(h0), c0=cast(c0), mask=cast(mask), P=cast(P))


def run(be, cell, flags, d):
    caches = stack_forward(be, cell, flags, d["layers"], d["X"], d["h0"], d["c0"], d["mask"])
    out = caches[0].Hs[1:]
    loss = float((d["P"] * out).sum())
    grads, dX, dh0, dc0 = stack_backward(be, cell, flags, d["layers"], caches, d["mask"],
                                         np.ascontiguousarray(d["P"]))
    res = {"loss": loss, "Hs": caches[0].Hs, "dW_ih": grads[0][0], "dW_hh": grads[0][1],
           "db_ih": grads[0][2], "db_hh": grads[0][3], "dX": dX, "dh0": dh0}
    if cell == "lstm":
        res["Cs"] = caches[0].Cs
        res["dc0"] = dc0
    return res


# ----------------------------------------------------------------------------- finite differences

@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("cell,flags", VARIANTS, ids=VARIANT_IDS)
def test_reference_finite_differences(cell, flags, masked):
    """Central differences of ``sum(P * h)`` w.r.t. every weight, input and initial state."""
    d = make_layer(cell, T=4, B=3, I=2, H=3, seed=1, masked=masked)
    an = run(R, cell, flags, d)
    W_ih, W_hh, b_ih, b_hh = d["layers"][0]
    targets = {"dW_ih": W_ih, "dW_hh": W_hh, "db_ih": b_ih, "db_hh": b_hh, "dX": d["X"],
               "dh0": d["h0"]}
    if cell == "lstm":
        targets["dc0"] = d["c0"]
    eps = 1e-6
    for name, arr in targets.items():
        fd = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            lp = run(R, cell, flags, d)["loss"]
            arr[idx] = old - eps
            lm = run(R, cell, flags, d)["loss"]
            arr[idx] = old
            fd[idx] = (lp - lm) / (2 * eps)
        g = an[name].reshape(arr.shape)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8, err_msg=f"{cell} {flags} {name}")


# ----------------------------------------------------------------------------- naive per-gate loop

def _sig(v, hard):
    return min(1.0, max(0.0, 0.2 * v + 0.5)) if hard else 1.0 / (1.0 + math.exp(-v))


def naive_layer(cell, flags, W_ih, W_hh, b_ih, b_hh, X, h0, c0):
    """Per-unit scalar loops written from the PyTorch docs' equations, unbatched, unmasked.

    Gate rows: RNN ``[h]``; GRU ``[r | z | n]``; LSTM ``[i | f | g | o]``.
    """
    T, B, I = X.shape
    H = h0.shape[-1]
    hard = flags.get("hard_gates", False)
    out = np.zeros((T, B, H))
    for b in range(B):
        h = [float(v) for v in h0[0, b]]
        c = [float(v) for v in c0[0, b]] if cell == "lstm" else None

        def pre(row, x, hv, use_ih=True):
            s = b_ih[row] + sum(W_ih[row, k] * x[k] for k in range(I)) if use_ih else 0.0
            return s, b_hh[row] + sum(W_hh[row, k] * hv[k] for k in range(H))

        for t in range(T):
            x = X[t, b]
            if cell == "rnn":
                new = []
                for j in range(H):
                    a, r = pre(j, x, h)
                    new.append(math.tanh(a + r))
                h = new
            elif cell == "gru":
                rr = []
                zz = []
                for j in range(H):
                    a, r = pre(j, x, h)
                    rr.append(_sig(a + r, hard))
                    a, r = pre(H + j, x, h)
                    zz.append(_sig(a + r, hard))
                rh = [rr[k] * h[k] for k in range(H)]
                new = []
                for j in range(H):
                    row = 2 * H + j
                    xin = b_ih[row] + sum(W_ih[row, k] * x[k] for k in range(I))
                    if flags["reset_after"]:
                        hn = b_hh[row] + sum(W_hh[row, k] * h[k] for k in range(H))
                        n = math.tanh(xin + rr[j] * hn)
                    else:
                        n = math.tanh(xin + b_hh[row] + sum(W_hh[row, k] * rh[k] for k in range(H)))
                    new.append((1 - zz[j]) * n + zz[j] * h[j])
                h = new
            else:
                newh, newc = [], []
                for j in range(H):
                    a, r = pre(j, x, h)
                    i = _sig(a + r, hard)
                    a, r = pre(H + j, x, h)
                    f = _sig(a + r, hard)
                    a, r = pre(2 * H + j, x, h)
                    g = math.tanh(a + r)
                    a, r = pre(3 * H + j, x, h)
                    o = _sig(a + r, hard)
                    cj = f * c[j] + i * g
                    newc.append(cj)
                    newh.append(o * math.tanh(cj))
                h, c = newh, newc
            out[t, b] = h
    return out


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("cell,flags", VARIANTS, ids=VARIANT_IDS)
def test_naive_gate_loop(cell, flags, backend):
    """Catches a swapped gate block, which finite differences cannot see."""
    be = R if backend == "numpy" else numba_backend()
    d = make_layer(cell, T=3, B=2, I=3, H=4, seed=2, scale=1.5)
    want = naive_layer(cell, flags, *d["layers"][0], d["X"], d["h0"], d["c0"])
    got = run(be, cell, flags, d)["Hs"][1:]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- backend parity

def _close(got, ref, rtol, name):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(got - ref))) / scale if ref.size else 0.0
    assert err <= rtol, f"{name}: max abs diff / scale = {err:.3g} > {rtol:g}"


@pytest.mark.parametrize("size", SIZES, ids=[f"T{t}B{b}I{i}H{h}" for t, b, i, h in SIZES])
@pytest.mark.parametrize("cell,flags", VARIANTS, ids=VARIANT_IDS)
def test_numba_matches_reference(cell, flags, size):
    be = numba_backend()
    T, B, I, H = size
    d64 = make_layer(cell, T, B, I, H, seed=3, masked=True)
    ref = run(R, cell, flags, d64)
    got = run(be, cell, flags, d64)
    for k in ref:
        if k == "loss":
            assert got[k] == pytest.approx(ref[k], rel=1e-10, abs=1e-12)
        else:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # float32 kernels vs the float64 reference on the same rounded inputs
    d32 = make_layer(cell, T, B, I, H, seed=3, dtype=np.float32, masked=True)
    d64r = {k: (None if v is None else
                [tuple(a.astype(np.float64) for a in v[0])] if k == "layers" else v.astype(np.float64))
            for k, v in d32.items()}
    ref = run(R, cell, flags, d64r)
    got = run(be, cell, flags, d32)
    for k in ref:
        if k != "loss":
            assert got[k].dtype == np.float32, k
            _close(got[k], ref[k], 1e-4, k)


def test_registry_tables():
    be = numba_backend()
    for name in ("rnn_layer_forward", "rnn_layer_backward", "gru_layer_forward",
                 "gru_layer_backward", "lstm_layer_forward", "lstm_layer_backward",
                 "rnn_softmax_xent", "rnn_log_softmax"):
        assert callable(getattr(be, name)), name
        assert callable(getattr(fastrnn.get_backend("numpy"), name)), name


# ----------------------------------------------------------------------------- shared math

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_xent_matches_reference(dtype):
    be = numba_backend()
    rng = np.random.default_rng(4)
    N, V = 7, 5
    Z = (rng.standard_normal((N, V)) * 3).astype(dtype)
    Z[2, 1] = 80.0       # large logits: no overflow
    Z[3, :] = -90.0
    Z[3, 4] = 40.0       # a target whose probability underflows: finite loss
    y = rng.integers(0, V, N).astype(np.intp)
    y[3] = 0
    mask = np.ones(N, dtype)
    mask[5] = 0
    Zr = Z.astype(np.float64)
    Lr = R.rnn_softmax_xent(Zr, y, mask.astype(np.float64), 0.25)
    Zk = Z.copy()
    Lk = be.rnn_softmax_xent(Zk, y, mask, 0.25)
    assert np.isfinite(Lk)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert Lk == pytest.approx(Lr, rel=rtol)
    _close(Zk, Zr, rtol, "dZ")
    assert not Zk[5].any()
    # the gradient is scale * (softmax - onehot)
    z = Z[0].astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    p[y[0]] -= 1
    _close(Zr[0], 0.25 * p, 1e-12, "dZ row 0")
    Ok = np.empty_like(Z)
    be.rnn_log_softmax(Z, Ok)
    Or = np.empty_like(Zr)
    R.rnn_log_softmax(Z.astype(np.float64), Or)
    _close(Ok, Or, rtol, "log_softmax")


def test_gates_scalar():
    assert KC.sigmoid(-800.0) == 0.0 and KC.sigmoid(800.0) == 1.0
    assert KC.sigmoid(0.3) == pytest.approx(1 / (1 + math.exp(-0.3)), rel=1e-15)
    assert KC.hard_sigmoid(-3.0) == 0.0 and KC.hard_sigmoid(3.0) == 1.0
    assert KC.hard_sigmoid(1.0) == pytest.approx(0.7)
    assert KC.gate_grad(0.7, True) == pytest.approx(0.2) and KC.gate_grad(1.0, True) == 0.0
    x = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    np.testing.assert_allclose(R.layers.sigmoid(x), [KC.sigmoid(v) for v in x], rtol=1e-15)


def test_float32_vector_activations():
    """The vectorised float32 exp/tanh/sigmoid stay within a few float32 ulps of libm."""
    x = np.concatenate([np.linspace(-20, 20, 40001), [0.0, 1e-30, -1e-8, 0.2499999, 0.25,
                                                      100.0, -100.0, 1e4, -1e4]]).astype(np.float32)
    ib = np.empty(2 * x.size, np.int32)     # the kernels' scratch: twice the row
    out = np.empty_like(x)
    x64 = x.astype(np.float64)
    KC.tanh_row(x, out, ib)
    ref = np.tanh(x64)
    assert np.all(np.abs(out - ref) <= 1e-6 * np.abs(ref) + 1e-38)
    KC.gate_row(x, out, False, ib)
    ref = 0.5 * (1.0 + np.tanh(0.5 * x64))       # sigmoid without overflow warnings
    assert np.all(np.isfinite(out))
    big = ref > 1e-30
    assert np.all(np.abs(out - ref)[big] <= 1e-6 * ref[big])
    assert np.all(out[~big] < 1e-30)
    e = np.empty_like(x)
    y = np.linspace(-80, 80, 1001).astype(np.float32)
    KC.exp_f32(y, e[:y.size], ib)
    np.testing.assert_allclose(e[:y.size], np.exp(y.astype(np.float64)), rtol=2e-7)
    # in place, and with too short a scratch (the scalar fallback): the same values
    e2 = y.copy()
    KC.exp_f32(e2, e2, ib)
    np.testing.assert_array_equal(e2, e[:y.size])
    e3 = np.empty_like(y)
    KC.exp_f32(y, e3, np.empty(y.size, np.int32))
    np.testing.assert_array_equal(e3, e[:y.size])
    # float64 rows use libm: identical to NumPy to rounding
    out64 = np.empty_like(x64)
    KC.tanh_row(x64, out64, ib)
    np.testing.assert_allclose(out64, np.tanh(x64), rtol=1e-15, atol=0)

"""Tests for fastrnn.optim: optimizers, clipping and the plateau schedule.

Oracles, from most to least independent:
* hand-computed 2-3 step trajectories (literals or scalar formulas written out);
* naive references below, one plain NumPy expression per line of the paper/PyTorch
  formula, allocating freely, compared over random 5-step runs in float64;
* torch.optim, when torch is importable (skipped otherwise; never installed for this).
"""
import io
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrnn.optim import (SGD, Adam, HalveOnPlateau, Momentum, RMSprop, clip_grad_norm,
                           clip_grad_value)

# name -> (class, keyword arguments); one table drives the parametrised tests.
CONFIGS = {
    "sgd": (SGD, dict(lr=0.1)),
    "momentum": (Momentum, dict(lr=0.05, momentum=0.9)),
    "nesterov": (Momentum, dict(lr=0.05, momentum=0.8, nesterov=True)),
    "rmsprop": (RMSprop, dict(lr=0.01, rho=0.9, eps=1e-7)),
    "rmsprop_theano": (RMSprop, dict(lr=0.01, rho=0.9, eps=1e-6, eps_inside_sqrt=True)),
    "adam": (Adam, dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)),
}
SHAPES = {"U": (4, 3), "b": (3,), "s": (), "e": (0,)}


# --------------------------------------------------------------------------- helpers

def make_params(rng, dtype=np.float64):
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def make_grads(rng, n_steps, dtype=np.float64):
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
            for _ in range(n_steps)]


def copy_params(params):
    return {k: v.copy() for k, v in params.items()}


def naive_trajectory(name, params, grads_seq):
    """Plain-NumPy reference: returns the list of parameter dicts after each step."""
    cls, kw = CONFIGS[name]
    p = copy_params(params)
    state = {k: {} for k in p}
    out = []
    for t, grads in enumerate(grads_seq, start=1):
        for k in p:
            g, s = grads[k], state[k]
            lr = kw["lr"]
            if cls is SGD:
                p[k] = p[k] - lr * g
            elif cls is Momentum:
                mu = kw["momentum"]
                s["v"] = mu * s.get("v", 0.0) + g
                step = g + mu * s["v"] if kw.get("nesterov") else s["v"]
                p[k] = p[k] - lr * step
            elif cls is RMSprop:
                rho, eps = kw["rho"], kw["eps"]
                s["m"] = rho * s.get("m", 0.0) + (1 - rho) * g ** 2
                denom = np.sqrt(s["m"] + eps) if kw.get("eps_inside_sqrt") else np.sqrt(s["m"]) + eps
                p[k] = p[k] - lr * (g / denom)
            elif cls is Adam:
                b1, b2 = kw["betas"]
                s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
                s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
                m_hat = s["m"] / (1 - b1 ** t)
                v_hat = s["v"] / (1 - b2 ** t)
                p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + kw["eps"])
        out.append(copy_params(p))
    return out


def run(opt, params, grads_seq):
    traj = []
    for g in grads_seq:
        opt.step(g)
        traj.append(copy_params(params))
    return traj


# --------------------------------------------------------------------------- hand-computed

def test_sgd_hand():
    p = np.array([1.0, -2.0])
    opt = SGD({"p": p}, lr=0.1)
    expected = [[0.95, -1.9], [0.925, -2.1], [1.025, -2.1]]
    for g, e in zip(([0.5, -1.0], [0.25, 2.0], [-1.0, 0.0]), expected):
        opt.step({"p": np.array(g)})
        np.testing.assert_allclose(p, e, rtol=1e-14)
    assert opt.step_count == 3


@pytest.mark.parametrize("nesterov, expected", [
    # lr=0.1, mu=0.9, g=[1, -2] every step; v = 1, 1.9, 2.71 (times -2 for the 2nd entry).
    (False, [[0.9, 0.2], [0.71, 0.58], [0.439, 1.122]]),
    # p -= 0.1*(g + 0.9*v): steps 0.19, 0.271, 0.3439.
    (True, [[0.81, 0.38], [0.539, 0.922], [0.1951, 1.6098]]),
])
def test_momentum_hand(nesterov, expected):
    p = np.array([1.0, 0.0])
    opt = Momentum({"p": p}, lr=0.1, momentum=0.9, nesterov=nesterov)
    for e in expected:
        opt.step({"p": np.array([1.0, -2.0])})
        np.testing.assert_allclose(p, e, rtol=1e-14)


@pytest.mark.parametrize("inside, expected", [
    # rho=0.75, g = 2, 1, 0 -> m = 1, 1, 0.75; eps=0.5 so its placement shows.
    (False, [1 - 0.2 / 1.5, 1 - 0.3 / 1.5, 0.8]),
    (True, [1 - 0.2 / math.sqrt(1.5), 1 - 0.3 / math.sqrt(1.5), 1 - 0.3 / math.sqrt(1.5)]),
])
def test_rmsprop_hand(inside, expected):
    p = np.array([1.0])
    opt = RMSprop({"p": p}, lr=0.1, rho=0.75, eps=0.5, eps_inside_sqrt=inside)
    for g, e in zip((2.0, 1.0, 0.0), expected):
        opt.step({"p": np.array([g])})
        np.testing.assert_allclose(p, [e], rtol=1e-14)
    np.testing.assert_allclose(opt.state_dict()["m/p"], [0.75], rtol=1e-15)


def test_adam_hand():
    # b1=0.5, b2=0.75, g = 1, -1, 2:
    # t=1: m=0.5,    v=0.25      -> m_hat=1,    v_hat=1
    # t=2: m=-0.25,  v=0.4375    -> m_hat=-1/3, v_hat=1
    # t=3: m=0.875,  v=1.328125  -> m_hat=1,    v_hat=(85/64)/(37/64)=85/37
    eps = 1e-8
    p = np.array([1.0])
    opt = Adam({"p": p}, lr=0.1, betas=(0.5, 0.75), eps=eps)
    e1 = 1 - 0.1 / (1 + eps)
    e2 = e1 + (0.1 / 3) / (1 + eps)
    e3 = e2 - 0.1 / (math.sqrt(85 / 37) + eps)
    for g, e in zip((1.0, -1.0, 2.0), (e1, e2, e3)):
        opt.step({"p": np.array([g])})
        np.testing.assert_allclose(p, [e], rtol=1e-14)
    sd = opt.state_dict()
    np.testing.assert_allclose(sd["m/p"], [0.875], rtol=1e-15)
    np.testing.assert_allclose(sd["v/p"], [1.328125], rtol=1e-15)
    assert sd["step"] == 3


# --------------------------------------------------------------------------- references

@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_naive_reference_float64(name):
    rng = np.random.default_rng(1)
    params = make_params(rng)
    grads = make_grads(rng, 5)
    expected = naive_trajectory(name, params, grads)
    cls, kw = CONFIGS[name]
    live = copy_params(params)
    got = run(cls(live, **kw), live, grads)
    for e, g in zip(expected, got):
        for k in SHAPES:
            np.testing.assert_allclose(g[k], e[k], rtol=1e-13, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_float32_stays_float32(name, grad_dtype):
    rng = np.random.default_rng(2)
    params = make_params(rng, np.float32)
    grads = make_grads(rng, 5, grad_dtype)
    expected = naive_trajectory(name, {k: v.astype(np.float64) for k, v in params.items()},
                                [{k: v.astype(np.float64) for k, v in g.items()} for g in grads])
    cls, kw = CONFIGS[name]
    live = copy_params(params)
    ids = {k: id(v) for k, v in live.items()}
    opt = cls(live, **kw)
    got = run(opt, live, grads)
    for k, v in live.items():
        assert v.dtype == np.float32 and id(v) == ids[k]  # same live arrays, same dtype
    for key, v in opt.state_dict().items():
        if isinstance(v, np.ndarray):
            assert v.dtype == np.float32, key
    for k in SHAPES:
        np.testing.assert_allclose(got[-1][k], expected[-1][k], rtol=2e-5, atol=2e-6)


def test_mixed_dtypes_keep_their_own_state_dtype():
    W = np.ones((2, 2), np.float32)
    b = np.ones(2, np.float64)
    opt = Adam({"W": W, "b": b})
    opt.step({"W": np.ones((2, 2)), "b": np.ones(2)})
    sd = opt.state_dict()
    assert sd["m/W"].dtype == np.float32 and sd["v/b"].dtype == np.float64
    assert W.dtype == np.float32 and b.dtype == np.float64


def test_step_does_not_modify_grads_and_accepts_lists():
    p = np.zeros(3)
    g = np.array([1.0, 2.0, 3.0])
    opt = Adam({"p": p}, lr=0.1)
    opt.step({"p": g})
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])
    opt.step({"p": [1.0, 2.0, 3.0]})  # array_like is fine for step (read only)
    assert opt.step_count == 2


def test_lr_is_settable_and_used_next_step():
    p = np.array([1.0])
    opt = SGD({"p": p}, lr=0.1)
    opt.step({"p": np.array([1.0])})
    opt.lr = 0.5
    opt.step({"p": np.array([1.0])})
    np.testing.assert_allclose(p, [1.0 - 0.1 - 0.5], rtol=1e-15)
    assert opt.lr == 0.5
    opt.lr = np.float32(0.25)
    assert type(opt.lr) is float
    for bad, exc in [(-0.1, ValueError), (float("nan"), ValueError), (True, TypeError),
                     ("0.1", TypeError)]:
        with pytest.raises(exc, match="lr"):
            opt.lr = bad
    assert opt.lr == 0.25


@pytest.mark.parametrize("name", ["momentum", "rmsprop", "adam"])
def test_step_allocates_no_parameter_sized_arrays(name):
    n = 200_000                                        # 1.6 MB per float64 array
    cls, kw = CONFIGS[name]
    params = {"a": np.zeros(n), "b": np.zeros((n // 100, 100))}
    grads = {"a": np.full(n, 0.5), "b": np.full((n // 100, 100), -0.5)}
    opt = cls(params, **kw)
    opt.step(grads)                                    # warm up
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            opt.step(grads)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * n * 8, f"step allocated {peak} bytes at peak"


# --------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("via_npz", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_roundtrip_continues_identically(name, via_npz):
    rng = np.random.default_rng(3)
    params = make_params(rng)
    grads = make_grads(rng, 6)
    cls, kw = CONFIGS[name]

    ref_params = copy_params(params)
    ref = cls(ref_params, **kw)
    ref_traj = run(ref, ref_params, grads)

    first = copy_params(params)
    opt = cls(first, **kw)
    run(opt, first, grads[:3])
    sd = opt.state_dict()
    if via_npz:
        buf = io.BytesIO()
        np.savez(buf, **sd)
        buf.seek(0)
        sd = np.load(buf)
    resumed_params = copy_params(first)
    resumed = cls(resumed_params, lr=123.0)           # lr comes from the checkpoint
    resumed.load_state_dict(sd)
    traj = run(resumed, resumed_params, grads[3:])
    for e, g in zip(ref_traj[3:], traj):
        for k in SHAPES:
            np.testing.assert_array_equal(g[k], e[k])  # bit-for-bit
    assert resumed.step_count == 6
    assert resumed.lr == kw["lr"]


def test_state_dict_holds_copies_and_loading_does_not_alias():
    p = np.zeros(2)
    opt = Momentum({"p": p}, lr=0.1)
    opt.step({"p": np.ones(2)})
    sd = opt.state_dict()
    opt.step({"p": np.ones(2)})
    np.testing.assert_array_equal(sd["v/p"], [1.0, 1.0])  # not advanced by later steps
    other = Momentum({"p": np.zeros(2)}, lr=0.1)
    other.load_state_dict(sd)
    other.step({"p": np.ones(2)})
    np.testing.assert_array_equal(sd["v/p"], [1.0, 1.0])  # not aliased by the loader


def test_load_state_dict_restores_hyperparameters():
    opt = RMSprop({"p": np.zeros(2)}, lr=0.5, rho=0.5, eps=0.1, eps_inside_sqrt=True)
    other = RMSprop({"p": np.zeros(2)})
    other.load_state_dict(opt.state_dict())
    assert (other.lr, other.rho, other.eps, other.eps_inside_sqrt) == (0.5, 0.5, 0.1, True)
    a = Adam({"p": np.zeros(2)}, betas=(0.5, 0.6))
    b = Adam({"p": np.zeros(2)})
    b.load_state_dict(a.state_dict())
    assert b.betas == (0.5, 0.6)


def test_load_state_dict_errors_leave_state_untouched():
    p = np.zeros((2, 3))
    opt = Adam({"p": p}, lr=0.1)
    opt.step({"p": np.ones((2, 3))})
    before = opt.state_dict()

    def check(sd, exc, match):
        with pytest.raises(exc, match=match):
            opt.load_state_dict(sd)
        after = opt.state_dict()
        assert after.keys() == before.keys()
        for k in before:
            np.testing.assert_array_equal(after[k], before[k])

    good = Adam({"p": np.zeros((2, 3))}, lr=0.7)
    good.step({"p": np.full((2, 3), 3.0)})
    sd = good.state_dict()
    check({**sd, "optimizer": "RMSprop"}, ValueError, "saved by 'RMSprop'.*Adam")
    check({k: v for k, v in sd.items() if k != "v/p"}, ValueError, r"missing \['v/p'\]")
    check({**sd, "m/q": np.zeros(3)}, ValueError, r"unexpected \['m/q'\]")
    check({**sd, "m/p": np.zeros((3, 2))}, ValueError, r"'m/p' has shape \(3, 2\), expected \(2, 3\)")
    check({**sd, "v/p": np.full((2, 3), np.nan)}, ValueError, "'v/p' holds 6 non-finite")
    check({**sd, "beta1": 1.0}, ValueError, r"beta1 must be in \[0.0, 1.0\), got 1.0")
    check({**sd, "lr": np.array([0.1, 0.2])}, ValueError, "'lr' must be a scalar")
    check({**sd, "step": -1}, ValueError, "step must be >= 0, got -1")
    check([1, 2], TypeError, "state_dict must be a dict")


# --------------------------------------------------------------------------- bad input

def test_step_rejects_bad_grads_before_updating_anything():
    params = {"W": np.ones((2, 3)), "b": np.ones(3)}
    opt = Adam(params, lr=0.1)
    opt.step({"W": np.ones((2, 3)), "b": np.ones(3)})
    snapshot = (copy_params(params), opt.state_dict())
    ok = {"W": np.ones((2, 3)), "b": np.ones(3)}
    cases = [
        ({"W": ok["W"]}, ValueError, r"missing \['b'\]"),
        ({**ok, "c": np.ones(1)}, ValueError, r"unexpected \['c'\]"),
        ({**ok, "b": np.ones(4)}, ValueError, r"gradient 'b' has shape \(4,\), expected \(3,\)"),
        ({**ok, "b": np.array([1.0, np.nan, 1.0])}, ValueError,
         "gradient 'b' holds 1 non-finite value.*no parameter was updated"),
        ({**ok, "b": np.array([np.inf, -np.inf, 1.0])}, ValueError, "'b' holds 2 non-finite"),
        ({**ok, "b": np.ones(3, dtype=int)}, TypeError, "gradient 'b' must be a float array, got dtype int"),
        ([ok["W"], ok["b"]], TypeError, "grads must be a dict"),
    ]
    for grads, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.step(grads)
        # 'W' comes first and is valid: it must not have been updated either.
        for k in params:
            np.testing.assert_array_equal(params[k], snapshot[0][k])
        sd = opt.state_dict()
        for k in sd:
            np.testing.assert_array_equal(sd[k], snapshot[1][k])
    assert opt.step_count == 1


def test_constructor_errors():
    a = np.zeros(3)
    with pytest.raises(TypeError, match="params must be a dict.*got list"):
        SGD([a], lr=0.1)
    with pytest.raises(ValueError, match="params is empty"):
        SGD({}, lr=0.1)
    with pytest.raises(TypeError, match="parameter 'a' must be a numpy array.*got list"):
        SGD({"a": [1.0]}, lr=0.1)
    with pytest.raises(TypeError, match="parameter 'a' must be float32 or float64, got dtype int64"):
        SGD({"a": np.zeros(3, np.int64)}, lr=0.1)
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="'a' is read-only"):
        SGD({"a": ro}, lr=0.1)
    with pytest.raises(ValueError, match="'a' and 'b' share memory"):
        SGD({"a": a, "b": a[1:]}, lr=0.1)
    flat = np.zeros(10)
    SGD({"a": flat[:4], "b": flat[4:]}, lr=0.1)        # disjoint views of one buffer are fine
    SGD({"a": flat[::2], "b": flat[1::2]}, lr=0.1)    # interleaved but disjoint, too
    with pytest.raises(ValueError, match=r"lr must be in \[0.0, inf\], got -1.0"):
        SGD({"a": a}, lr=-1)
    with pytest.raises(ValueError, match=r"momentum must be in \[0.0, 1.0\), got 1.0"):
        Momentum({"a": a}, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov=True requires momentum > 0"):
        Momentum({"a": a}, lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(TypeError, match="nesterov must be True or False, got int 1"):
        Momentum({"a": a}, lr=0.1, nesterov=1)
    with pytest.raises(ValueError, match=r"rho must be in \[0.0, 1.0\), got 1.5"):
        RMSprop({"a": a}, rho=1.5)
    with pytest.raises(ValueError, match=r"eps must be in \(0.0, inf\], got 0.0"):
        RMSprop({"a": a}, eps=0.0)
    with pytest.raises(ValueError, match="betas must be a pair"):
        Adam({"a": a}, betas=0.9)
    with pytest.raises(ValueError, match="beta2 must be in"):
        Adam({"a": a}, betas=(0.9, -0.1))


# --------------------------------------------------------------------------- clipping

def test_clip_grad_norm_hand():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0, 4.0]])}   # norm 5
    total = clip_grad_norm(grads, 1.0)
    assert total == 5.0
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(grads["a"], [3 * coef, 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads["b"], [[0.0, 4 * coef]], rtol=1e-15)

    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0, 4.0]])}
    assert clip_grad_norm(grads, 10.0) == 5.0                      # below max: untouched
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])

    grads = [np.array([3.0, 0.0]), np.array([4.0])]
    assert clip_grad_norm(grads, 5.0) == 5.0                       # at max: PyTorch's eps
    np.testing.assert_allclose(grads[0], [3 * 5 / (5 + 1e-6), 0.0], rtol=1e-15)  # still scales

    zero = {"a": np.zeros(3)}
    assert clip_grad_norm(zero, 1.0) == 0.0
    np.testing.assert_array_equal(zero["a"], 0.0)


def test_clip_grad_norm_float32_overflow_is_not_nonfinite():
    g = np.array([3e20, 4e20], np.float32)          # g.g overflows float32
    total = clip_grad_norm({"g": g}, 1.0)
    assert math.isclose(total, 5e20, rel_tol=1e-6)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [0.6, 0.8], rtol=1e-6)


def test_clip_grad_norm_nonfinite():
    grads = {"a": np.ones(2), "b": np.array([1.0, np.nan])}
    with pytest.raises(ValueError, match="non-finite.*gradient 'b'"):
        clip_grad_norm(grads, 1.0)
    np.testing.assert_array_equal(grads["a"], [1.0, 1.0])
    grads = {"a": np.ones(2), "b": np.array([np.inf, 1.0])}
    total = clip_grad_norm(grads, 1.0, error_if_nonfinite=False)
    assert total == math.inf
    np.testing.assert_array_equal(grads["a"], [1.0, 1.0])          # left for the caller


def test_clip_grad_value_hand():
    g = np.array([-3.0, 0.5, np.inf, -np.inf, 1.0, np.nan])
    h = np.array([[2.0, -0.25]], np.float32)
    clip_grad_value({"g": g, "h": h}, 1.0)
    np.testing.assert_array_equal(g, [-1.0, 0.5, 1.0, -1.0, 1.0, np.nan])
    np.testing.assert_array_equal(h, [[1.0, -0.25]])
    assert h.dtype == np.float32


def test_clipping_errors():
    with pytest.raises(ValueError, match=r"max_norm must be in \(0.0, inf\], got 0.0"):
        clip_grad_norm({"a": np.ones(2)}, 0.0)
    with pytest.raises(ValueError, match="clip_value must be in"):
        clip_grad_value({"a": np.ones(2)}, -1.0)
    with pytest.raises(TypeError, match="gradient 'a' must be a numpy array"):
        clip_grad_norm({"a": [1.0, 2.0]}, 1.0)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a float array, got dtype int"):
        clip_grad_value([np.ones(2, dtype=int)], 1.0)
    with pytest.raises(TypeError, match="grads must be a dict"):
        clip_grad_norm(3.0, 1.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8),
       st.floats(1e-3, 1e3))
def test_clip_grad_norm_properties(values, max_norm):
    g = np.array(values)
    orig = g.copy()
    total = clip_grad_norm([g], max_norm)
    assert math.isclose(total, float(np.linalg.norm(orig)), rel_tol=1e-12, abs_tol=1e-300)
    assert np.linalg.norm(g) <= max_norm * (1 + 1e-12) or total <= max_norm
    if total + 1e-6 > max_norm:                       # scaled: same direction
        np.testing.assert_allclose(g, orig * (max_norm / (total + 1e-6)), rtol=1e-14)
    else:
        np.testing.assert_array_equal(g, orig)


# --------------------------------------------------------------------------- schedule

def test_halve_previous_mode_is_the_wildml_rule():
    losses = [5.0, 4.0, 4.5, 4.2, 4.2, 4.3, 3.0]
    opt = SGD({"p": np.zeros(1)}, lr=0.008)
    sched = HalveOnPlateau(opt, mode="previous")
    lr, got = 0.008, []
    for i, loss in enumerate(losses):              # the tutorial's rule, written out
        if i > 0 and losses[i] > losses[i - 1]:
            lr *= 0.5
        got.append(sched.step(loss))
        assert opt.lr == lr
    assert got == [False, False, True, False, False, True, False]
    assert sched.num_reductions == 2


def test_halve_best_vs_previous_after_a_rise():
    a = SGD({"p": np.zeros(1)}, lr=1.0)
    b = SGD({"p": np.zeros(1)}, lr=1.0)
    best, prev = HalveOnPlateau(a), HalveOnPlateau(b, mode="previous")
    for loss in (5.0, 6.0, 5.5):
        best.step(loss)
        prev.step(loss)
    assert a.lr == 0.25 and b.lr == 0.5
    assert best.best == 5.0 and prev.previous == 5.5


def test_halve_patience_threshold_min_lr():
    opt = SGD({"p": np.zeros(1)}, lr=1.0)
    s = HalveOnPlateau(opt, factor=0.1, patience=2, threshold=0.5, min_lr=0.05)
    # 10 sets best; 9.6 is not better by more than 0.5 (bad 1); 9.8 bad 2; 9.7 bad 3 > 2.
    assert [s.step(x) for x in (10.0, 9.6, 9.8, 9.7)] == [False, False, False, True]
    assert opt.lr == pytest.approx(0.1) and s.num_bad == 0
    assert [s.step(x) for x in (9.0, 8.9, 8.9, 8.9)] == [False, False, False, True]
    assert opt.lr == 0.05                            # clamped to min_lr
    assert [s.step(x) for x in (9.9, 9.9, 9.9)] == [False, False, False]
    assert opt.lr == 0.05 and s.num_reductions == 2


def test_halve_state_dict_roundtrip():
    losses = [3.0, 2.0, 2.5, 2.4, 2.6, 1.0, 1.5, 1.7, 1.2]
    ref_opt = SGD({"p": np.zeros(1)}, lr=1.0)
    ref = HalveOnPlateau(ref_opt, patience=1)
    for x in losses:
        ref.step(x)
    opt = SGD({"p": np.zeros(1)}, lr=1.0)
    s = HalveOnPlateau(opt, patience=1)
    assert s.state_dict()["best"] == math.inf
    for x in losses[:4]:
        s.step(x)
    buf = io.BytesIO()
    np.savez(buf, **s.state_dict())
    buf.seek(0)
    opt2 = SGD({"p": np.zeros(1)}, lr=1.0)
    opt2.load_state_dict(opt.state_dict())
    s2 = HalveOnPlateau(opt2, factor=0.9)
    s2.load_state_dict(np.load(buf))
    for x in losses[4:]:
        s2.step(x)
    assert opt2.lr == ref_opt.lr and s2.state_dict() == ref.state_dict()
    fresh = HalveOnPlateau(SGD({"p": np.zeros(1)}, lr=1.0))
    fresh.load_state_dict(HalveOnPlateau(opt).state_dict())   # inf best/previous load back
    assert fresh.best == math.inf


def test_halve_errors():
    opt = SGD({"p": np.zeros(1)}, lr=1.0)
    with pytest.raises(ValueError, match="val_loss must be finite, got nan"):
        HalveOnPlateau(opt).step(float("nan"))
    with pytest.raises(ValueError, match=r"factor must be in \(0.0, 1.0\), got 1.0"):
        HalveOnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        HalveOnPlateau(opt, mode="min")
    with pytest.raises(ValueError, match="patience must be >= 0"):
        HalveOnPlateau(opt, patience=-1)
    with pytest.raises(TypeError, match="settable 'lr'"):
        HalveOnPlateau(object())
    with pytest.raises(ValueError, match="missing"):
        HalveOnPlateau(opt).load_state_dict({"best": 1.0})


# --------------------------------------------------------------------------- PyTorch

def test_matches_torch_optim_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    shapes = {"U": (4, 3), "b": (3,)}
    p0 = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(5)]
    cases = [
        (SGD, dict(lr=0.1), torch.optim.SGD, dict(lr=0.1)),
        (Momentum, dict(lr=0.1, momentum=0.9), torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
        (Momentum, dict(lr=0.1, momentum=0.9, nesterov=True), torch.optim.SGD,
         dict(lr=0.1, momentum=0.9, nesterov=True)),
        (RMSprop, dict(lr=0.01, rho=0.9, eps=1e-7), torch.optim.RMSprop,
         dict(lr=0.01, alpha=0.9, eps=1e-7)),
        (Adam, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8), torch.optim.Adam,
         dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
    ]
    for ours_cls, ours_kw, torch_cls, torch_kw in cases:
        live = copy_params(p0)
        ours = ours_cls(live, **ours_kw)
        tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p0.items()}
        theirs = torch_cls(list(tp.values()), **torch_kw)
        for g in grads:
            ours.step(g)
            for k, t in tp.items():
                t.grad = torch.tensor(g[k], dtype=torch.float64)
            theirs.step()
            for k in shapes:
                np.testing.assert_allclose(live[k], tp[k].detach().numpy(), rtol=1e-12,
                                           atol=1e-14, err_msg=f"{torch_cls.__name__} {k}")


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    ts = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True) for v in grads.values()]
    for t, v in zip(ts, grads.values()):
        t.grad = torch.tensor(v)
    want = float(torch.nn.utils.clip_grad_norm_(ts, 1.5))
    got = clip_grad_norm(grads, 1.5)
    assert math.isclose(got, want, rel_tol=1e-12)
    for t, v in zip(ts, grads.values()):
        np.testing.assert_allclose(v, t.grad.numpy(), rtol=1e-12)


def test_load_state_dict_casts_before_the_finiteness_check():
    """A float64 checkpoint value finite in float64 but inf in float32 is rejected by key."""
    p = np.zeros((2, 3), np.float32)
    opt = Adam({"p": p}, lr=0.1)
    opt.step({"p": np.ones((2, 3), np.float32)})
    before = opt.state_dict()
    sd = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in before.items()}
    sd["v/p"][1, 1] = 1e300
    with pytest.raises(ValueError, match=r"'v/p' holds 1 non-finite value\(s\) \(NaN or inf in "
                                         r"float32\)"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    sd["v/p"][1, 1] = 2.0
    opt.load_state_dict(sd)
    assert opt.state_dict()["v/p"].dtype == np.float32
    assert opt.state_dict()["v/p"][1, 1] == 2.0


# --------------------------------------------------------------------------- RowSparse

def _rows(rng, shape=(9, 4), idx=(1, 4, 5), dtype=np.float64):
    from fastrnn.optim import RowSparse
    return RowSparse(np.array(idx), rng.standard_normal((len(idx), shape[1])).astype(dtype), shape)


@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p_dtype", [np.float32, np.float64])
def test_sgd_row_update_equals_the_dense_one_and_touches_only_its_rows(p_dtype, grad_dtype):
    rng = np.random.default_rng(0)
    g = _rows(rng, dtype=grad_dtype)
    P = rng.standard_normal((9, 4)).astype(p_dtype)
    dense, sparse = P.copy(), P.copy()
    SGD({"E": dense}, lr=0.3).step({"E": g.toarray()})
    SGD({"E": sparse}, lr=0.3).step({"E": g})
    np.testing.assert_array_equal(sparse, dense)
    untouched = np.setdiff1d(np.arange(9), g.indices)
    np.testing.assert_array_equal(sparse[untouched], P[untouched])
    assert sparse.dtype == p_dtype


def test_row_sparse_is_refused_before_anything_is_updated():
    from fastrnn.optim import RowSparse
    rng = np.random.default_rng(1)
    E, W = np.ones((9, 4)), np.ones(3)
    opt = Adam({"W": W, "E": E}, lr=0.1)
    bad = RowSparse([0, 2], np.array([[1.0, np.nan, 0, 0], [0, 0, 0, 0]]), (9, 4))
    with pytest.raises(ValueError, match=r"gradient 'E' holds 1 non-finite value\(s\)"):
        opt.step({"W": np.ones(3), "E": bad})
    with pytest.raises(ValueError, match=r"gradient 'E' \(RowSparse\) has shape \(10, 4\), "
                                         r"expected \(9, 4\)"):
        opt.step({"W": np.ones(3), "E": _rows(rng, shape=(10, 4))})
    g = _rows(rng)
    g.indices = np.array([1, 1, 2])           # reassigned after construction: checked again
    with pytest.raises(ValueError, match="strictly increasing"):
        opt.step({"W": np.ones(3), "E": g})
    assert opt.step_count == 0 and (E == 1).all() and (W == 1).all()
    assert (opt._state["m"]["W"] == 0).all()


def test_row_sparse_checks_its_arguments():
    from fastrnn.optim import RowSparse
    v = np.zeros((2, 3))
    with pytest.raises(ValueError, match="strictly increasing"):
        RowSparse([3, 1], v, (5, 3))
    with pytest.raises(ValueError, match="strictly increasing"):
        RowSparse([2, 2], v, (5, 3))
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\), got 1\.\.5"):
        RowSparse([1, 5], v, (5, 3))
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\), got -1\.\.2"):
        RowSparse([-1, 2], v, (5, 3))
    with pytest.raises(ValueError, match="strictly increasing"):
        RowSparse([5, 1], v, (5, 3))
    with pytest.raises(ValueError, match=r"values must have shape \(len\(indices\), 3\) = "
                                         r"\(3, 3\), got \(2, 3\)"):
        RowSparse([0, 1, 2], v, (5, 3))
    with pytest.raises(TypeError, match="indices must be a 1-D integer array, got dtype float64"):
        RowSparse([0.0, 1.0], v, (5, 3))
    with pytest.raises(TypeError, match="values must be a float numpy array, got int64"):
        RowSparse([0, 1], np.zeros((2, 3), np.int64), (5, 3))
    with pytest.raises(ValueError, match=r"shape must be \(rows, cols\), got \(5,\)"):
        RowSparse([0, 1], v, (5,))
    empty = RowSparse([], np.zeros((0, 3)), (5, 3))
    np.testing.assert_array_equal(empty.toarray(), np.zeros((5, 3)))


def test_clipping_a_row_sparse_gradient_equals_clipping_the_dense_one():
    rng = np.random.default_rng(2)
    g = _rows(rng)
    W = rng.standard_normal(3)
    dense = {"E": g.toarray(), "W": W.copy()}
    sparse = {"E": g, "W": W.copy()}
    # the same norm but for the summation order (the zero rows are skipped)
    assert clip_grad_norm(sparse, 0.7) == pytest.approx(clip_grad_norm(dense, 0.7), rel=1e-15)
    np.testing.assert_allclose(sparse["E"].toarray(), dense["E"], rtol=1e-15, atol=0)
    np.testing.assert_allclose(sparse["W"], dense["W"], rtol=1e-15, atol=0)
    g2 = _rows(rng)
    dense, sparse = {"E": g2.toarray()}, {"E": g2}
    clip_grad_value(sparse, 0.1)
    clip_grad_value(dense, 0.1)
    assert (np.abs(dense["E"]) == 0.1).any()    # some values were clipped
    np.testing.assert_array_equal(sparse["E"].toarray(), dense["E"])


@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_optimizer_takes_row_sparse_as_its_dense_gradient(name, grad_dtype):
    """Three steps on a float32 parameter: a RowSparse gradient (float32 or float64 values)
    gives bitwise the weights and state of its dense array."""
    cls, kw = CONFIGS[name]
    rng = np.random.default_rng(3)
    P = rng.standard_normal((9, 4)).astype(np.float32)
    dense, sparse = P.copy(), P.copy()
    od, osp = cls({"E": dense}, **kw), cls({"E": sparse}, **kw)
    for _ in range(3):
        g = _rows(rng, idx=sorted(rng.choice(9, 4, replace=False)), dtype=grad_dtype)
        od.step({"E": g.toarray()})
        osp.step({"E": g})
    np.testing.assert_array_equal(sparse, dense)
    for k, v in od.state_dict().items():
        np.testing.assert_array_equal(osp.state_dict()[k], v, err_msg=k)


# --------------------------------------------------------------------- compiled SGD
# From optim._KERNEL_MIN elements, SGD's dense update runs as a Numba kernel
# (fastrnn._kernels.update), which must give NumPy's result bit for bit.

def _update_kernel_or_skip():
    from fastrnn import optim
    k = optim._kernels(np.zeros(optim._KERNEL_MIN))
    if k is None:
        pytest.skip("Numba's kernel is not in use here (NUMBA_DISABLE_JIT=1 or no Numba)")
    return k


def _numpy_sgd(p, g, lr):
    buf = np.empty_like(p)
    np.multiply(g, lr, out=buf)
    return np.subtract(p, buf, out=p.copy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_sgd_equals_numpys_bit_for_bit(monkeypatch, dtype):
    from fastrnn import optim
    k = _update_kernel_or_skip()
    calls = []
    monkeypatch.setattr(k, "sgd", lambda p, g, lr, _f=k.sgd: calls.append(p.size) or _f(p, g, lr))
    rng = np.random.default_rng(7)
    n = 3 * optim._KERNEL_MIN + 5
    small = optim._KERNEL_MIN - 1
    params = {"big": rng.standard_normal((n // 5, 5)).astype(dtype),
              "small": rng.standard_normal(small).astype(dtype)}
    grads = {"big": (rng.standard_normal((n // 5, 5)) * 1e3).astype(dtype),
             "small": rng.standard_normal(small).astype(dtype)}
    for lr in (0.1, 0.0137, 3.0):
        want = {name: _numpy_sgd(p, grads[name], lr) for name, p in params.items()}
        SGD(params, lr=lr).step(grads)
        for name in params:
            assert params[name].dtype == dtype
            np.testing.assert_array_equal(params[name], want[name], err_msg=name)
    assert calls == [n // 5 * 5] * 3           # the big array took the kernel, the small one not


def test_compiled_sgd_leaves_odd_layouts_to_numpy(monkeypatch):
    """A Fortran-ordered gradient, one of another dtype, and one that overlaps its
    parameter take NumPy's rule, with NumPy's result."""
    from fastrnn import optim
    k = _update_kernel_or_skip()
    monkeypatch.setattr(k, "sgd", lambda *a: pytest.fail("the kernel was called"))
    n = optim._KERNEL_MIN
    rng = np.random.default_rng(8)
    p = rng.standard_normal((n // 8, 8))
    for g in (np.asfortranarray(rng.standard_normal((n // 8, 8))),
              rng.standard_normal((n // 8, 8)).astype(np.float32)):
        want = _numpy_sgd(p, g.astype(p.dtype), 0.5)
        SGD({"p": p}, lr=0.5).step({"p": g})
        np.testing.assert_array_equal(p, want)
    buf = rng.standard_normal(n + 8)
    p, g = buf[:n], buf[8:]                    # g[i] is p[i + 8]: read before written
    want = _numpy_sgd(p, g.copy(), 0.5)
    SGD({"p": p}, lr=0.5).step({"p": g})
    np.testing.assert_array_equal(p, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_finiteness_count_equals_numpys(dtype):
    """Every kind of value the exponent test must tell apart -- zeros of both signs,
    subnormals, the largest finite, infinities, NaNs with other payloads and signs -- at
    the first, a middle and the last element."""
    k = _update_kernel_or_skip()
    from fastrnn import optim
    finfo = np.finfo(dtype)
    utype = np.uint32 if dtype == np.float32 else np.uint64
    odd_nans = np.array([np.nan, -np.nan], dtype)
    quiet = odd_nans.view(utype)
    exponent = np.array([np.inf], dtype).view(utype)
    odd_nans = np.concatenate([odd_nans, (quiet | utype(1)).view(dtype),    # a payload
                               (exponent | utype(1)).view(dtype)])          # signalling
    finite = np.array([0.0, -0.0, finfo.tiny, finfo.tiny / 4, -finfo.smallest_subnormal,
                       finfo.max, -finfo.max, 1.0], dtype)
    rng = np.random.default_rng(9)
    n = optim._KERNEL_MIN + 3
    base = rng.standard_normal(n).astype(dtype)
    assert k.count_nonfinite(base) == 0 and optim._all_finite(base)
    for v in np.concatenate([finite, np.array([np.inf, -np.inf], dtype), odd_nans]):
        for at in (0, n // 2, n - 1):
            a = base.copy()
            a[at] = v
            want = int((~np.isfinite(a)).sum())
            assert k.count_nonfinite(a) == want, (v, at)
            assert k.count_nonfinite(a.reshape(-1, 1)) == want
            assert optim._all_finite(a) == (want == 0)
    many = base.copy()
    many[::7] = np.inf
    assert k.count_nonfinite(many) == len(range(0, n, 7))


def test_sgd_step_takes_the_compiled_check(monkeypatch):
    """A big gradient is checked by the kernel, and a NaN in its last element stops the
    step before any parameter moves."""
    k = _update_kernel_or_skip()
    from fastrnn import optim
    seen = []
    monkeypatch.setattr(k, "count_nonfinite",
                        lambda a, _f=k.count_nonfinite: seen.append(a.size) or _f(a))
    n = optim._KERNEL_MIN
    params = {"W": np.ones((n // 4, 4), np.float32), "b": np.ones(3, np.float32)}
    g = {"W": np.full((n // 4, 4), 0.5, np.float32), "b": np.zeros(3, np.float32)}
    g["W"][-1, -1] = np.nan
    with pytest.raises(ValueError, match=r"gradient 'W' holds 1 non-finite"):
        SGD(params, lr=1.0).step(g)
    assert seen == [n] and (params["W"] == 1).all()
    g["W"][-1, -1] = 0.5
    SGD(params, lr=1.0).step(g)
    assert (params["W"] == 0.5).all()

"""Parallel kernels against their serial versions, and which way a step is threaded.

The parallel softmax cross-entropy equals the serial one bitwise, on any thread count; the
block products and the LSTM's unit-blocked recurrence equal theirs up to rounding.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn import models
from fastrnn._kernels import blas, common


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parallel_softmax_xent_is_bitwise_the_serial_one(dtype):
    rng = np.random.default_rng(0)
    N, V = 37, 1001
    Z = (rng.standard_normal((N, V)) * 4).astype(dtype)
    y = rng.integers(0, V, N).astype(np.intp)
    mask = (rng.random(N) > 0.2).astype(dtype)
    Zs = Z.copy()
    ls = common._softmax_xent_serial(Zs, y, mask, 0.25)
    for chunks in (1, 2, 3, 8, 1000):      # any partition of the rows gives the same bits
        Zp = Z.copy()
        lp = common._softmax_xent_parallel(Zp, y, mask, 0.25, chunks)
        assert ls == lp
        assert np.array_equal(Zs, Zp)


class _Blas:
    def __init__(self, n):
        self.n = n

    def num_threads(self):
        return self.n


def _spy_paths(monkeypatch, numba_threads, blas_threads):
    """Route ``softmax_xent`` with the given thread counts; record which kernel ran."""
    calls = []
    par, ser = common._softmax_xent_parallel, common._softmax_xent_serial
    monkeypatch.setattr(common, "get_num_threads", lambda: numba_threads)
    monkeypatch.setattr(common, "library", lambda: _Blas(blas_threads))
    monkeypatch.setattr(common, "_softmax_xent_parallel",
                        lambda *a: calls.append("parallel") or par(*a))
    monkeypatch.setattr(common, "_softmax_xent_serial",
                        lambda *a: calls.append("serial") or ser(*a))
    return calls, ser


def _large():
    rng = np.random.default_rng(1)
    N, V = 64, 4096                      # 2**18 logits: at the threshold
    return rng.standard_normal((N, V)), rng.integers(0, V, N).astype(np.intp), np.ones(N)


def test_public_kernel_takes_the_parallel_path_on_large_inputs(monkeypatch):
    Z, y, mask = _large()
    N = Z.shape[0]
    calls, serial = _spy_paths(monkeypatch, numba_threads=2, blas_threads=1)
    A, B = Z.copy(), Z.copy()
    la = common.softmax_xent(A, y, mask, 1.0 / N)
    assert calls == ["parallel"]
    lb = serial(B, y, mask, 1.0 / N)
    assert la == lb and np.array_equal(A, B)
    common.softmax_xent(Z[:8].copy(), y[:8], mask[:8], 1.0 / 8)    # below the threshold
    assert calls == ["parallel", "serial"]


@pytest.mark.parametrize("blas_threads", [2, None])
def test_rows_stay_serial_while_blas_is_multithreaded(monkeypatch, blas_threads):
    # A multi-threaded (or unknown) BLAS: its spinning workers would slow a parallel region.
    Z, y, mask = _large()
    calls, _ = _spy_paths(monkeypatch, numba_threads=2, blas_threads=blas_threads)
    common.softmax_xent(Z, y, mask, 1.0 / Z.shape[0])
    assert calls == ["serial"]


def test_one_numba_thread_is_serial(monkeypatch):
    Z, y, mask = _large()
    calls, _ = _spy_paths(monkeypatch, numba_threads=1, blas_threads=1)
    common.softmax_xent(Z, y, mask, 1.0 / Z.shape[0])
    assert calls == ["serial"]


# ------------------------------------------------------------ a step on Numba's threads
# With BLAS on one thread and Numba on several (fastrnn.set_num_threads), a Numba-backend
# step runs its products in blocks (blas.gemm_parallel) and the LSTM recurrence in blocks
# of hidden units or of sequences (lstm.parallel_lstm_layer_*).  Each must equal the serial
# computation up to the BLAS's rounding inside a product: float64 to 1e-12, float32 to 1e-5,
# relative to the array's scale.

DTYPES = [np.float64, np.float32]


def _close(got, want, dtype, what):
    tol = 1e-12 if dtype == np.float64 else 1e-5
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, k, n", [(5, 3, 17), (17, 3, 5), (1, 4, 1), (3, 0, 4), (2, 6, 2)])
def test_gemm_parallel_equals_the_product(dtype, trans_a, trans_b, m, k, n):
    rng = np.random.default_rng(m * 100 + n)
    A = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    want = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B).astype(np.float64)
    for blocks in (1, 2, 3, 40):         # more blocks than rows or columns: clamped
        C = np.full((m, n), np.nan, dtype)
        blas.gemm_parallel(trans_a, trans_b, A, B, bias[:0], C, blocks)
        _close(C, want, dtype, f"blocks={blocks}")
        C = np.full((m, n), np.nan, dtype)
        blas.gemm_parallel(trans_a, trans_b, A, B, bias, C, blocks)
        _close(C, want + bias, dtype, f"blocks={blocks}, bias")


def _lstm_case(dtype, T=6, B=5, H=7, seed=3):
    rng = np.random.default_rng(seed)
    G = 4 * H
    c = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    mask = np.ones((T, B))
    mask[T // 2:, 0] = 0            # right padding
    mask[:2, B - 1] = 0             # left padding
    return dict(Xp=c(rng.standard_normal((T, B, G))), W_hh=c(rng.uniform(-0.6, 0.6, (G, H))),
                b_hh=c(rng.uniform(-0.3, 0.3, G)), h0=c(rng.uniform(-0.5, 0.5, (B, H))),
                c0=c(rng.uniform(-0.5, 0.5, (B, H))), mask=c(mask),
                dHs=c(rng.standard_normal((T, B, H))))


def _lstm_run(d, hard, chunks, by_rows=False):
    from fastrnn._kernels import lstm
    T, B, G = d["Xp"].shape
    H = G // 4
    dt = d["Xp"].dtype
    nan = lambda *shape: np.full(shape, np.nan, dt)  # noqa: E731 - every element written
    Hs, Cs = nan(T + 1, B, H), nan(T + 1, B, H)
    cache, dG = nan(T, B, G), nan(T, B, G)
    dh0, dc0 = nan(B, H), nan(B, H)
    fa = (d["Xp"], d["W_hh"], d["b_hh"], d["h0"], d["c0"], d["mask"], hard, Hs, Cs, cache)
    ba = (d["W_hh"], d["mask"], hard, Hs, Cs, cache, d["dHs"], dG, dh0, dc0)
    if chunks is None:
        lstm.lstm_layer_forward(*fa)
        lstm.lstm_layer_backward(*ba)
    else:
        lstm.parallel_lstm_layer_forward(*fa, chunks, by_rows)
        lstm.parallel_lstm_layer_backward(*ba, chunks, by_rows)
    return dict(Hs=Hs, Cs=Cs, cache=cache, dG=dG, dh0=dh0, dc0=dc0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("by_rows", [False, True])
def test_lstm_parallel_kernels_equal_the_serial_ones(dtype, hard, by_rows):
    d = _lstm_case(dtype)
    want = {k: v.astype(np.float64) for k, v in _lstm_run(d, hard, None).items()}
    assert np.all(want["dG"][4:, 0] == 0) and np.all(want["dG"][:2, -1] == 0)   # masks bite
    for chunks in (1, 2, 3, 4, 7, 50):    # 7 > B = 5, 50 > H = 7: clamped to one per block
        got = _lstm_run(d, hard, chunks, by_rows)
        for name in want:
            _close(got[name], want[name], dtype, f"chunks={chunks}, by_rows={by_rows}: {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("by_rows", [False, True])
@pytest.mark.parametrize("T, B, H", [(0, 3, 4), (3, 1, 1), (4, 2, 9), (5, 9, 2)])
def test_lstm_parallel_kernels_on_edge_shapes(dtype, by_rows, T, B, H):
    """No steps, one unit, one sequence, fewer units or sequences than blocks; dirty
    output buffers (every element must be written)."""
    d = _lstm_case(dtype, T=T, B=B, H=H, seed=T + 10 * B + 100 * H)
    want = {k: v.astype(np.float64) for k, v in _lstm_run(d, False, None).items()}
    for chunks in (2, 3):
        got = _lstm_run(d, False, chunks, by_rows)
        for name in want:
            _close(got[name], want[name], dtype, f"chunks={chunks}, by_rows={by_rows}: {name}")


def _gru_run(d, reset_after, hard, chunks):
    from fastrnn._kernels import gru
    T, B, G = d["Xp"].shape
    H = G // 3
    dt = d["Xp"].dtype
    nan = lambda *shape: np.full(shape, np.nan, dt)  # noqa: E731 - every element written
    Hs, cache = nan(T + 1, B, H), nan(T, B, 4 * H)
    dGx, dGh, dh0 = nan(T, B, G), nan(T, B, G), nan(B, H)
    fa = (d["Xp"], d["W_hh"], d["b_hh"], d["h0"], d["mask"], reset_after, hard, Hs, cache)
    ba = (d["W_hh"], d["mask"], reset_after, hard, Hs, cache, d["dHs"], dGx, dGh, dh0)
    if chunks is None:
        gru.gru_layer_forward(*fa)
        gru.gru_layer_backward(*ba)
    else:
        gru.parallel_gru_layer_forward(*fa, chunks)
        gru.parallel_gru_layer_backward(*ba, chunks)
    return dict(Hs=Hs, cache=cache, dGx=dGx, dGh=dGh, dh0=dh0)


def _gru_case(dtype, T=6, B=5, H=7, seed=4):
    d = _lstm_case(dtype, T=T, B=B, H=H, seed=seed)
    rng = np.random.default_rng(seed + 1)
    c = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
    d["Xp"] = c(rng.standard_normal((T, B, 3 * H)))
    d["W_hh"] = c(rng.uniform(-0.6, 0.6, (3 * H, H)))
    d["b_hh"] = c(rng.uniform(-0.3, 0.3, 3 * H))
    return d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("hard", [False, True])
def test_gru_parallel_kernels_equal_the_serial_ones(dtype, reset_after, hard):
    d = _gru_case(dtype)
    want = {k: v.astype(np.float64) for k, v in _gru_run(d, reset_after, hard, None).items()}
    assert np.all(want["dGx"][4:, 0] == 0) and np.all(want["dGx"][:2, -1] == 0)  # masks bite
    for chunks in (1, 2, 3, 4, 7):        # 7 > B = 5: clamped to one sequence per block
        got = _gru_run(d, reset_after, hard, chunks)
        for name in want:
            _close(got[name], want[name], dtype, f"chunks={chunks}: {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("T, B, H", [(0, 3, 4), (3, 1, 1), (5, 9, 2)])
def test_gru_parallel_kernels_on_edge_shapes(dtype, reset_after, T, B, H):
    """No steps, one unit, one sequence, more blocks than sequences; dirty output buffers
    (every element must be written)."""
    d = _gru_case(dtype, T=T, B=B, H=H, seed=T + 10 * B + 100 * H)
    want = {k: v.astype(np.float64) for k, v in _gru_run(d, reset_after, False, None).items()}
    for chunks in (2, 3):
        got = _gru_run(d, reset_after, False, chunks)
        for name in want:
            _close(got[name], want[name], dtype, f"chunks={chunks}: {name}")


def _elman_run(d, chunks):
    from fastrnn._kernels import elman
    T, B, H = d["Xp"].shape
    dt = d["Xp"].dtype
    Hs, dG, dh0 = np.full((T + 1, B, H), np.nan, dt), np.full((T, B, H), np.nan, dt), \
        np.full((B, H), np.nan, dt)
    fa = (d["Xp"], d["W_hh"], d["b_hh"], d["h0"], d["mask"], Hs)
    ba = (d["W_hh"], d["mask"], Hs, d["dHs"], dG, dh0)
    if chunks is None:
        elman.rnn_layer_forward(*fa)
        elman.rnn_layer_backward(*ba)
    else:
        elman.parallel_rnn_layer_forward(*fa, chunks)
        elman.parallel_rnn_layer_backward(*ba, chunks)
    return dict(Hs=Hs, dG=dG, dh0=dh0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T, B, H", [(6, 5, 7), (0, 3, 4), (3, 1, 1), (5, 9, 2)])
def test_elman_parallel_kernels_equal_the_serial_ones(dtype, T, B, H):
    """Masked steps, no steps, one unit, one sequence, more blocks than sequences; dirty
    output buffers (every element must be written)."""
    d = _lstm_case(dtype, T=T, B=B, H=H, seed=5 + T + 10 * B)
    rng = np.random.default_rng(6)
    d["Xp"] = np.ascontiguousarray(rng.standard_normal((T, B, H)), dtype=dtype)
    d["W_hh"] = np.ascontiguousarray(rng.uniform(-0.6, 0.6, (H, H)), dtype=dtype)
    d["b_hh"] = np.ascontiguousarray(rng.uniform(-0.3, 0.3, H), dtype=dtype)
    want = {k: v.astype(np.float64) for k, v in _elman_run(d, None).items()}
    if (T, B) == (6, 5):
        assert np.all(want["dG"][3:, 0] == 0) and np.all(want["dG"][:2, -1] == 0)  # masks bite
    for chunks in (1, 2, 3, 7):
        got = _elman_run(d, chunks)
        for name in want:
            _close(got[name], want[name], dtype, f"chunks={chunks}: {name}")


def _numba_or_skip():
    try:
        return fastrnn.get_backend("numba")
    except fastrnn.backends.BackendUnavailableError as exc:  # pragma: no cover
        pytest.skip(str(exc))


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, by_rows", [("rnn", False), ("rnn", True), ("gru", False),
                                           ("gru", True), ("lstm", False), ("lstm", True)])
def test_model_step_on_numba_threads_equals_the_serial_step(monkeypatch, dtype, cell, by_rows,
                                                            overlap):
    """Whole models: the same loss and gradients whichever way the step is threaded
    (products big enough to be split: T*B*V*H >= blas.PARALLEL_MIN_MACS); the LSTM's
    recurrence in blocks of units and in blocks of sequences, the GRU's and the Elman
    layer's serial and in blocks of sequences; the backward pass with the decoder's
    gradient beside the (then serial) stack on helper threads, or after it."""
    _numba_or_skip()
    from fastrnn._kernels import _threads, elman, gru, lstm
    monkeypatch.setattr(_threads, "low_spin", overlap)
    besides = []
    monkeypatch.setattr(models, "_beside", lambda main, tasks, helpers, _f=models._beside:
                        besides.append((len(tasks), helpers)) or _f(main, tasks, helpers))
    assert not lstm.parallel_lstm_by_rows(13, 3)          # B = 13: units
    assert not gru.parallel_gru_by_rows(13, 3)            # and the serial GRU and Elman
    assert not elman.parallel_rnn_by_rows(13, 3)          # kernels
    ran = []
    if cell == "lstm":
        monkeypatch.setattr(lstm, "parallel_lstm_by_rows", lambda B, chunks: by_rows)
    else:
        mod, pre = (gru, "gru") if cell == "gru" else (elman, "rnn")
        monkeypatch.setattr(mod, f"parallel_{pre}_by_rows", lambda B, chunks: by_rows)
        for name in (f"parallel_{pre}_layer_forward", f"parallel_{pre}_layer_backward"):
            monkeypatch.setattr(mod, name, lambda *a, _f=getattr(mod, name), _n=name:
                                ran.append(_n) or _f(*a))
    cls = {"rnn": fastrnn.RNN, "gru": fastrnn.GRU, "lstm": fastrnn.LSTM}[cell]
    V, H, T, B = 1500, 24, 9, 13
    assert T * B * V * H >= blas.PARALLEL_MIN_MACS
    model = cls(V, H, num_layers=2, dtype=dtype, backend="numba", seed=1)
    rng = np.random.default_rng(2)
    for p in model.parameters().values():     # biases too (they start at 0)
        p[...] = rng.uniform(-0.3, 0.3, p.shape)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    mask = np.ones((T, B))
    mask[6:, 2] = 0
    seen = []
    monkeypatch.setattr(models, "_step_threads", lambda be: 1)
    L1, g1, h1 = model.loss_and_grad(x, y, mask=mask)
    monkeypatch.setattr(models, "_step_threads", lambda be: seen.append(be.name) or 3)
    L3, g3, h3 = model.loss_and_grad(x, y, mask=mask)
    assert seen == ["numba", "numba"]         # asked once forward, once backward
    # two layers, forward and (unless beside the decoder's products) backward
    assert len(ran) == ((2 if overlap else 4) if by_rows and cell != "lstm" else 0)
    assert besides == ([(1 + 16 * 3, 2)] if overlap else [])   # the bias and 48 blocks
    if overlap:                               # whichever thread takes a block: the same sums
        L3b, g3b, _ = model.loss_and_grad(x, y, mask=mask)
        assert L3b == L3
        for name in g3:
            assert np.array_equal(g3b[name], g3[name]), name
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(L1 - L3) <= tol * abs(L1)
    for name in g1:
        _close(g3[name], g1[name].astype(np.float64), dtype, name)
    for a, b in zip(h1 if cell == "lstm" else [h1], h3 if cell == "lstm" else [h3]):
        _close(b, a.astype(np.float64), dtype, "hidden state")


def test_step_threads_needs_numba_threads_and_single_threaded_blas(monkeypatch):
    import numba
    from fastrnn._kernels import _blas_lib
    be = _numba_or_skip()
    cy = type("B", (), {"name": "cython"})()
    for numba_n, blas_n, backend, want in [(2, 1, be, 2), (3, 1, be, 3), (2, 2, be, 1),
                                           (2, None, be, 1), (1, 1, be, 1), (2, 1, cy, 1)]:
        monkeypatch.setattr(numba, "get_num_threads", lambda n=numba_n: n)
        monkeypatch.setattr(_blas_lib, "library", lambda n=blas_n: _Blas(n))
        assert models._step_threads(backend) == want, (numba_n, blas_n, backend)


@pytest.mark.parametrize("overlap", [False, True])
def test_set_num_threads_gives_the_step_numba_threads(monkeypatch, overlap):
    """``fastrnn.set_num_threads(2)`` puts BLAS on one thread and a step on Numba's
    two: the LSTM's parallel kernels and the block products run (the backward kernel
    unless the decoder's gradient is computed beside the stack, on a helper thread)."""
    import numba
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastrnn._kernels import _blas_lib, _threads, lstm
    monkeypatch.setattr(_threads, "low_spin", overlap)
    be = _numba_or_skip()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here (NUMBA_NUM_THREADS=1)")
    calls = []
    for mod, name in [(lstm, "parallel_lstm_layer_forward"),
                      (lstm, "parallel_lstm_layer_backward"), (blas, "gemm_parallel"),
                      (models, "_beside")]:
        fn = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _f=fn, _n=name: calls.append(_n) or _f(*a))
    model = fastrnn.LSTM(2000, 16, dtype=np.float64, backend="numba", seed=0)
    x = np.arange(12 * 11).reshape(12, 11) % 2000
    before = numba.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=None):     # restores BLAS's count after
        try:
            fastrnn.set_num_threads(2)
            assert _blas_lib.library().num_threads() == 1 and numba.get_num_threads() == 2
            assert models._step_threads(be) == 2
            L2, g2, _ = model.loss_and_grad(x, x)
            fastrnn.set_num_threads(1)
            assert models._step_threads(be) == 1
        finally:
            numba.set_num_threads(before)
    want = {"parallel_lstm_layer_forward", "gemm_parallel"}
    want |= {"_beside"} if overlap else {"parallel_lstm_layer_backward"}
    assert set(calls) == want
    L1, g1, _ = model.loss_and_grad(x, x)
    assert abs(L1 - L2) <= 1e-12 * L1


@pytest.mark.parametrize("bad", [0, -1, 10 ** 6, 1.5, "2", True, None])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="n must be"):
        fastrnn.set_num_threads(bad)


def test_blocks_of_sequences_thresholds():
    """Where each cell's parallel recurrence splits the batch (measured, see the functions):
    the LSTM and the Elman layer from 16 sequences a thread, the GRU from 8."""
    from fastrnn._kernels import elman, gru, lstm
    for fn, per in [(lstm.parallel_lstm_by_rows, 16), (elman.parallel_rnn_by_rows, 16),
                    (gru.parallel_gru_by_rows, 8)]:
        for chunks in (2, 3):
            assert fn(per * chunks, chunks) and not fn(per * chunks - 1, chunks), (fn, chunks)

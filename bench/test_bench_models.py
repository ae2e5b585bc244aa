"""Training steps of the GRU and LSTM models, fastrnn backends against peers on CPU, one run.

Cases (issue "speed"):

``gru-tutorial``  the GRU tutorial's step: GRUTheano, 2 layers, H=128, V=8000, one
                  sentence of 23 words, RMSprop (float64, the tutorial's floatX).
``ptb-lstm``      a minibatched LSTM LM step at the PTB-small shape: 2 layers x 200,
                  V=10000, batch 20, unroll 20, float32, SGD; on 1 and on 2 threads.
                  The embedding's gradient is row-sparse on both sides (fastrnn's
                  ``sparse_embedding=True``, PyTorch's ``nn.Embedding(sparse=True)``, each
                  framework's faster choice here; SGD updates only those rows).
``keras-char``    the Keras char-LSTM step: LSTM 128, 57 symbols, windows of 40, batch 128,
                  RMSprop, float32.

Peers: PyTorch (eager) in every case, JAX (jit + ``lax.scan``, ``peers_models.py``) in
every case, PyTensor (Theano's successor, the tutorial's original framework) in
``gru-tutorial``.  Each is optional; without it its rows are skipped with the reason.
Before timing, each peer's model (same weights, same data) must give the same loss as
fastrnn (relative 1e-10 in float64, 1e-4 in float32), and its timed step includes its
optimizer's update, at the learning rate fastrnn's step uses (0).  JAX runs on the thread
count its process started with (one, set by ``xla_threads.py``): its ``ptb-lstm`` row at any
other count is skipped here and timed by ``bench/ptb_processes.py`` instead.
"""
import re

import numpy as np
import pytest

import fastrnn
import peers_models
import xla_threads
from fastrnn import optim

BACKENDS = [n for n, ok in fastrnn.available_backends().items() if ok is True]


def _torch():
    return pytest.importorskip("torch", reason="PyTorch not installed (pip install torch==2.13.0)")


def _jax():
    return pytest.importorskip("jax", reason="JAX not installed (pip install jax jaxlib)")


def _pytensor():
    return pytest.importorskip("pytensor", reason="PyTensor not installed (pip install pytensor)")


class _threads:
    """Numba limited to ``n`` threads inside the block, and BLAS to ``blas`` (default
    ``n``).  ``blas=1`` with ``n > 1`` is what ``fastrnn.set_num_threads(n)`` sets: the
    Numba backend's step then runs on Numba's threads (``fastrnn.models._step_threads``)."""

    def __init__(self, n, blas=None):
        self.n = n
        self.blas = n if blas is None else blas

    def __enter__(self):
        import numba
        from threadpoolctl import threadpool_limits
        self._numba = numba.get_num_threads()
        numba.set_num_threads(min(self.n, numba.config.NUMBA_NUM_THREADS))
        self._blas = threadpool_limits(limits=self.blas)
        self._blas.__enter__()
        return self

    def __exit__(self, *exc):
        import numba
        self._blas.__exit__(*exc)
        numba.set_num_threads(self._numba)


# ---------------------------------------------------------------- ptb-lstm ------------

PTB = dict(V=10000, H=200, L=2, B=20, T=20)


def _ptb_batch():
    rng = np.random.default_rng(0)
    seq = rng.integers(0, PTB["V"], (PTB["T"] + 1, PTB["B"]))
    return seq[:-1], seq[1:]


def _ptb_fastrnn(backend):
    model = fastrnn.LSTM(PTB["V"], PTB["H"], num_layers=PTB["L"], dtype=np.float32,
                         backend=backend, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.0)
    x, y = _ptb_batch()
    buf = {}

    def step():
        loss, buf["g"], _ = model.loss_and_grad(x, y, grads=buf.get("g"), sparse_embedding=True)
        opt.step(buf["g"])
        return loss
    return model, step, lambda: model.loss(x, y)[0]


def _ptb_torch(model, threads):
    torch = _torch()
    torch.set_num_threads(threads)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(PTB["V"], PTB["H"], sparse=True)
            self.rnn = torch.nn.LSTM(PTB["H"], PTB["H"], PTB["L"])
            self.decoder = torch.nn.Linear(PTB["H"], PTB["V"])

        def forward(self, x):
            out, _ = self.rnn(self.embedding(x))
            return self.decoder(out)

    lm = LM()
    lm.load_state_dict(model.to_torch_state_dict())
    x, y = (torch.tensor(a, dtype=torch.long) for a in _ptb_batch())
    opt = torch.optim.SGD(lm.parameters(), lr=0.0)
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(lm(x).reshape(-1, PTB["V"]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss

    def loss():
        with torch.no_grad():
            return float(lossf(lm(x).reshape(-1, PTB["V"]), y.reshape(-1)))
    return step, loss


# "numba-pool": the Numba backend after fastrnn.set_num_threads(n) -- BLAS on one thread,
# the whole step on Numba's n threads (products in blocks, softmax rows, LSTM units); plain
# "numba" and "cython" with n threads leave BLAS on n threads and the rest serial.
POOL = ["numba-pool"] if "numba" in BACKENDS else []


def _ptb_jax(model, threads):
    _jax()
    if threads != xla_threads.jax_threads():
        pytest.skip(f"JAX's thread count is fixed when it starts in a process (here "
                    f"{xla_threads.jax_threads()}); bench/ptb_processes.py times it on {threads}")
    return peers_models.jax_ptb(model.to_torch_state_dict(tensors=False), *_ptb_batch())


PTB_PEERS = {"torch": _ptb_torch, "jax": _ptb_jax}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("impl", BACKENDS + POOL + list(PTB_PEERS))
def test_ptb_lstm_step(benchmark, impl, threads):
    if impl == "numpy" and threads == 2:
        pytest.skip("the NumPy reference is timed on one thread only")
    if impl == "numba-pool" and threads == 1:
        pytest.skip("on one thread numba-pool is numba")
    model, step, loss = _ptb_fastrnn("numba" if impl in PTB_PEERS or impl == "numba-pool"
                                     else impl)
    want = loss()
    if impl in PTB_PEERS:
        step, loss = PTB_PEERS[impl](model, threads)
        assert abs(loss() - want) <= 1e-4 * abs(want), (impl, loss(), want)
    tokens = PTB["T"] * PTB["B"]
    with _threads(threads, blas=1 if impl == "numba-pool" else None):
        step()
        benchmark.group = f"ptb-lstm-step-float32-{threads}thread"
        benchmark.extra_info.update(impl=impl, tokens=tokens, threads=threads,
                                    flops=_lstm_flops(**PTB))
        benchmark(step)


def _gru_tutorial_flops(V, H, T):
    """2 x multiply-adds of the tutorial GRU's products, forward and backward (3 passes;
    the embedding is a lookup): two layers of three (H, H) input and recurrent blocks per
    step, and the output layer."""
    return 3 * (2 * 2 * T * (3 * H) * (2 * H) + 2 * T * H * V)


def _keras_flops(L, V, H, N):
    """2 x multiply-adds of the Keras char-LSTM's products as a dense implementation runs
    them: the recurrent product in 3 passes, the one-hot input product in 2 (forward and
    ``dW_ih``; no input gradient) and the output layer of the last step in 3.  fastrnn
    gathers the one-hot product instead (``X0_ids``), so its GFLOP/s here is the rate of a
    dense implementation that took its time."""
    return 3 * 2 * (N * L) * (4 * H) * H + 2 * 2 * (N * L) * (4 * H) * V + 3 * 2 * N * H * V


def _lstm_flops(V, H, L, B, T):
    """2 x multiply-adds of the forward and backward matrix products (3 passes)."""
    rec = L * 2 * (T * B) * (4 * H) * (2 * H)       # input + recurrent projections
    dec = 2 * (T * B) * H * V
    return 3 * (rec + dec)


# ---------------------------------------------------------------- gru-tutorial --------

def _gru_torch(m):
    torch = _torch()
    torch.set_num_threads(1)
    P = {n: torch.tensor(getattr(m, n), requires_grad=True) for n in ("E", "U", "W", "V", "b", "c")}
    M = {n: torch.zeros_like(P[n]) for n in P}

    def hard_sigmoid(a):
        return torch.clamp(0.2 * a + 0.5, 0.0, 1.0)

    def total_loss(x, y):
        E, U, W, V, b, c = (P[n] for n in ("E", "U", "W", "V", "b", "c"))
        H = E.shape[0]
        s1 = torch.zeros(H, dtype=E.dtype)
        s2 = torch.zeros(H, dtype=E.dtype)
        outs = []
        for t in range(len(x)):
            xe = E[:, x[t]]
            z1 = hard_sigmoid(U[0] @ xe + W[0] @ s1 + b[0])
            r1 = hard_sigmoid(U[1] @ xe + W[1] @ s1 + b[1])
            c1 = torch.tanh(U[2] @ xe + W[2] @ (s1 * r1) + b[2])
            s1 = (1 - z1) * c1 + z1 * s1
            z2 = hard_sigmoid(U[3] @ s1 + W[3] @ s2 + b[3])
            r2 = hard_sigmoid(U[4] @ s1 + W[4] @ s2 + b[4])
            c2 = torch.tanh(U[5] @ s1 + W[5] @ (s2 * r2) + b[5])
            s2 = (1 - z2) * c2 + z2 * s2
            outs.append(s2)
        logits = torch.stack(outs) @ V.t() + c
        return torch.nn.functional.cross_entropy(logits, torch.tensor(y), reduction="sum")

    def step(x, y, lr, decay=0.9):
        loss = total_loss(x, y)
        grads = torch.autograd.grad(loss, list(P.values()))
        with torch.no_grad():
            for (n, p), g in zip(P.items(), grads):
                M[n].mul_(decay).addcmul_(g, g, value=1 - decay)
                p.sub_(lr * g / torch.sqrt(M[n] + 1e-6))
        return loss

    return step, lambda x, y: float(total_loss(x, y).detach())


def _gru_jax(m):
    _jax()
    return peers_models.jax_gru(m)


def _gru_pytensor(m):
    _pytensor()
    return peers_models.pytensor_gru(m)


GRU_PEERS = {"torch": _gru_torch, "jax": _gru_jax, "pytensor": _gru_pytensor}


@pytest.mark.parametrize("impl", BACKENDS + list(GRU_PEERS))
def test_gru_tutorial_step(benchmark, impl):
    np.random.seed(10)
    m = fastrnn.GRUTheano(8000, 128, backend="numba" if impl in GRU_PEERS else impl)
    rng = np.random.default_rng(1)
    seq = rng.integers(0, 8000, 24)
    x, y = seq[:-1], seq[1:]
    want = m.ce_error(x, y)
    if impl in GRU_PEERS:
        step, loss = GRU_PEERS[impl](m)
        assert abs(loss(x, y) - want) <= 1e-10 * abs(want), (impl, loss(x, y), want)
    else:
        step = m.sgd_step
    step(x, y, 0.0)
    benchmark.group = "gru-tutorial-step-float64"
    benchmark.extra_info.update(impl=impl, tokens=len(x), dtype="float64",
                                flops=_gru_tutorial_flops(V=8000, H=128, T=len(x)))
    benchmark(step, x, y, 0.0)


# ---------------------------------------------------------------- keras-char ----------

KC = dict(L=40, V=57, H=128, N=128)


def _keras_batch():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, KC["V"], (KC["N"], KC["L"] + 1))
    X = np.zeros((KC["N"], KC["L"], KC["V"]), bool)
    X[np.arange(KC["N"])[:, None], np.arange(KC["L"]), ids[:, :-1]] = True
    y = np.zeros((KC["N"], KC["V"]), bool)
    y[np.arange(KC["N"]), ids[:, -1]] = True
    return X, y


def _keras_torch(m):
    torch = _torch()
    torch.set_num_threads(1)
    lstm = torch.nn.LSTM(KC["V"], KC["H"], batch_first=True)
    dense = torch.nn.Linear(KC["H"], KC["V"])
    p = m.parameters()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor(p["weight_ih_l0"]))
        lstm.weight_hh_l0.copy_(torch.tensor(p["weight_hh_l0"]))
        lstm.bias_ih_l0.copy_(torch.tensor(p["bias_l0"]))
        lstm.bias_hh_l0.zero_()
        dense.weight.copy_(torch.tensor(p["dense.weight"]))
        dense.bias.copy_(torch.tensor(p["dense.bias"]))
    params = list(lstm.parameters()) + list(dense.parameters())
    opt = torch.optim.RMSprop(params, lr=0.0, alpha=0.9, eps=1e-7)
    Xb, yb = _keras_batch()
    X = torch.tensor(Xb, dtype=torch.float32)
    y = torch.tensor(yb.argmax(axis=1))

    def loss_t():
        out, _ = lstm(X)
        return torch.nn.functional.cross_entropy(dense(out[:, -1]), y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_t()
        loss.backward()
        opt.step()
        return loss

    def loss():
        with torch.no_grad():
            return float(loss_t())
    return step, loss


def _keras_jax(m):
    _jax()
    return peers_models.jax_keras(m.parameters(), *_keras_batch())


KERAS_PEERS = {"torch": _keras_torch, "jax": _keras_jax}


@pytest.mark.parametrize("impl", BACKENDS + list(KERAS_PEERS))
def test_keras_char_lstm_step(benchmark, impl):
    m = fastrnn.RNNKeras(KC["L"], KC["V"], KC["H"], lr=0.0,
                         backend="numba" if impl in KERAS_PEERS else impl, seed=0)
    X, y = _keras_batch()
    want = m.loss_and_grad(X, y)[0]
    if impl in KERAS_PEERS:
        step, loss = KERAS_PEERS[impl](m)
        assert abs(loss() - want) <= 1e-4 * abs(want), (impl, loss(), want)
    else:
        def step():
            loss, grads = m.loss_and_grad(X, y)
            m.optimizer.step(grads)
            return loss
    step()
    benchmark.group = "keras-char-lstm-step-float32"
    benchmark.extra_info.update(impl=impl, tokens=KC["N"] * KC["L"], dtype="float32",
                                flops=_keras_flops(**KC))
    benchmark(step)


def test_ptb_processes_script_runs():
    """``bench/ptb_processes.py`` (the PTB step, one process per implementation) runs and
    summarises; one round of one step here, so that the script cannot rot unnoticed."""
    import os
    import subprocess
    import sys
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ptb_processes.py")
    out = subprocess.run([sys.executable, path, "--rounds", "1", "--steps", "1",
                          "--threads", "1", "2"],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    import importlib.util
    installed = [peer for peer in PTB_PEERS if importlib.util.find_spec(peer) is not None]
    for impl in BACKENDS + POOL + installed:
        for threads in (1, 2):
            if impl == "numpy" or (impl == "numba-pool" and threads == 1):
                continue
            assert f"{impl:10s} {threads} thread(s): median of medians" in out, out
    if POOL:
        assert "numba-pool 2 thread(s)" in out and "2 threads vs 1:" in out, out
    steals = re.findall(r"steal +(\S+) %", out)
    assert steals and all(s == "nan" or 0.0 <= float(s) <= 100.0 for s in steals), out
    if "numba" in BACKENDS:
        for peer in installed:
            assert f"; x {peer} " in out, out


@pytest.mark.parametrize("args", [["numba", "--sparse-embedding"],
                                  ["numba", "--sparse-embedding", "--threads", "2"]])
def test_memory_script_runs(args):
    """``bench/memory_ptb.py`` (peak memory of the PTB step) runs and reports its ratio."""
    import os
    import subprocess
    import sys
    if "numba" not in BACKENDS:
        pytest.skip("the Numba backend is not available")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "memory_ptb.py")
    out = subprocess.run([sys.executable, path] + args, capture_output=True, text=True,
                         check=True, timeout=600).stdout
    fields = dict(kv.split("=", 1) for kv in out.split())
    assert fields["backend"] == "numba" and fields["sparse_embedding"] == "True"
    assert fields["threads"] == (args[-1] if "--threads" in args else "None")
    assert float(fields["must_hold_mb"]) > 0 and float(fields["ratio"]) > 1.0, out

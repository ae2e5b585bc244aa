"""The tutorial's per-sentence SGD step (full BPTT), fastrnn against the peers, one run.

Peers (optional, ``pip install .[peers]``): PyTorch eager, JAX (jit + lax.scan) and
PyTensor running the tutorial's RNNTheano graph with ``scan``.  A peer that is not
installed is skipped with the reason.  Before timing, each peer's loss on the sentence
must equal fastrnn's reference loss.  Group: ``peers-sgd-T23-<dtype>``.
"""
import numpy as np
import pytest

import cases
import fastrnn
import peers
from fastrnn import reference as R
from fastrnn._config import MODE_FULL

T = 23


def _fastrnn_full_step(name, p):
    be = fastrnn.get_backend(name)
    s, z, g = cases._workspace(p)
    dW = np.empty_like(p["W"])
    return lambda: be.rnn_sgd(p["U"], p["V"], p["W"], p["x"], p["y"], MODE_FULL, 0,
                              cases.TIMING_LR, s, z, g, dW)


def _impls():
    names = [n for n, ok in fastrnn.available_backends().items() if ok is True]
    return names + list(peers.PEERS) + ["blas-only"]


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_peer_sgd_step(benchmark, impl, dtype):
    p = cases.make_problem(T, np.dtype(dtype))
    s, z, g = cases._workspace(p)
    want = R.rnn_loss(p["U"], p["V"], p["W"], p["x"], p["y"], s, z)
    rtol = 1e-10 if dtype == "float64" else 1e-4
    if impl in peers.PEERS:
        try:
            step, loss = peers.PEERS[impl](p)
        except ImportError as exc:
            pytest.skip(f"peer {impl} not installed: {exc}")
        got = loss()
        assert abs(got - want) <= rtol * abs(want), (impl, got, want)
    elif impl == "blas-only":
        step = cases.blas_only_impl("sgd_step", p)
    else:
        step = _fastrnn_full_step(impl, p)
        s, z, g = cases._workspace(p)
        got = fastrnn.get_backend(impl).rnn_loss(p["U"], p["V"], p["W"], p["x"], p["y"], s, z)
        assert abs(got - want) <= rtol * abs(want)
    before = {k: p[k].copy() for k in ("U", "V", "W")}
    step()                                  # warm-up / JIT
    benchmark.group = f"peers-sgd-T{T}-{dtype}"
    benchmark.extra_info.update(impl=impl, flops=cases.flops("sgd_step", T), tokens=T, dtype=dtype)
    benchmark(step)
    cases.weights_unchanged(p, before)
    if impl in peers.PEERS:                 # the peer's own copy of the weights, too
        assert loss() == got, (impl, loss(), got)

"""pytest-benchmark: training and generation throughput at the tutorial's size (V=8000, H=100).

Run:  python -m pytest bench/test_bench_text.py --benchmark-only
Training reads the first sentences of ``../shared/data/reddit-comments-2015-08`` (skipped
when absent) through the tutorial's text pipeline and times one pass of
:class:`fastrnn.train.Trainer` over them, per backend and mode; generation times the
incremental sampler against the tutorial's way (a full forward pass over the prefix for
every new word).  Tokens per second go to ``benchmark.extra_info["tokens_per_s"]``.
Everything also runs (once, untimed) under ``--benchmark-disable``.
"""
import os
import time

import numpy as np
import pytest

import fastrnn
from fastrnn import RNNNumpy, text
from fastrnn.generate import Sampler
from fastrnn.train import Trainer

V_TUTORIAL, H_TUTORIAL = 8000, 100
N_SENTENCES = 12

_HERE = os.path.dirname(os.path.abspath(__file__))
_REDDIT = os.path.join(_HERE, os.pardir, os.pardir, "shared", "data", "reddit-comments-2015-08",
                       "reddit-comments-2015-08.head1000.csv")


def _backends():
    out = []
    for name, ok in fastrnn.available_backends().items():
        marks = [] if ok is True else [pytest.mark.skip(reason=f"backend {name}: {ok}")]
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture(scope="module")
def reddit_prefix():
    if not os.path.exists(_REDDIT):
        pytest.skip(f"reddit data not found at {os.path.abspath(_REDDIT)}")
    c = text.load_comments(_REDDIT, vocabulary_size=V_TUTORIAL)
    # The first sentences longer than 3 words, as the tutorial's training set would hold them.
    sents = [s for s in c.sentences if len(s) > 5][:N_SENTENCES]
    return [s[:-1] for s in sents], [s[1:] for s in sents]


def _tokens_per_s(benchmark, fn, tokens):
    stats = getattr(benchmark, "stats", None)
    mean = None
    if stats is not None:
        try:
            mean = stats.stats.mean
        except AttributeError:
            mean = None
    if not mean:                                # --benchmark-disable: time one more call
        t = time.perf_counter()
        fn()
        mean = time.perf_counter() - t
    return tokens / mean


@pytest.mark.parametrize("mode", ["sentence", "stream"])
@pytest.mark.parametrize("backend", _backends())
def test_train_tokens_per_second(benchmark, reddit_prefix, backend, mode):
    X, Y = reddit_prefix
    np.random.seed(10)
    model = RNNNumpy(V_TUTORIAL, H_TUTORIAL, bptt_truncate=4, backend=backend)

    def one_epoch():
        tr = Trainer(model, X, Y, learning_rate=0.005, nepoch=1, mode=mode, bptt=35,
                     shuffle=False, eval_train=False, verbose=False, progress=False)
        tr.train()
        return tr

    tr = one_epoch()                            # warm-up (compiled code, workspaces)
    tokens = tr.tokens_seen
    benchmark.group = f"train-reddit-{mode}"
    rounds = 1 if backend == "numpy" else 3
    benchmark.pedantic(one_epoch, rounds=rounds, iterations=1)
    U, V, W = model.U, model.V, model.W
    assert np.isfinite(U).all() and np.isfinite(V).all() and np.isfinite(W).all()
    benchmark.extra_info.update(backend=backend, mode=mode, V=V_TUTORIAL, H=H_TUTORIAL,
                                sentences=len(X), tokens=tokens,
                                tokens_per_s=_tokens_per_s(benchmark, one_epoch, tokens))


N_GEN = 100


@pytest.mark.parametrize("impl", ["incremental", "recompute-prefix"])
def test_generation_tokens_per_second(benchmark, impl):
    np.random.seed(10)
    model = RNNNumpy(V_TUTORIAL, H_TUTORIAL)
    n = N_GEN if impl == "incremental" else N_GEN // 4

    if impl == "incremental":
        def gen():
            sp = Sampler(model, rng=np.random.default_rng(0))
            return sp.generate([0], n)
    else:
        def gen():
            # the tutorial's generate_sentence: forward_propagation over the whole prefix
            rng = np.random.default_rng(0)
            seq = [0]
            for _ in range(n):
                o, _ = model.forward_propagation(seq)
                p = o[-1]
                seq.append(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum())))
            return seq[1:]

    out = gen()
    assert len(out) == n and all(0 <= t < V_TUTORIAL for t in out)
    benchmark.group = "generate"
    benchmark.pedantic(gen, rounds=3, iterations=1)
    benchmark.extra_info.update(impl=impl, V=V_TUTORIAL, H=H_TUTORIAL, tokens=n,
                                tokens_per_s=_tokens_per_s(benchmark, gen, n))

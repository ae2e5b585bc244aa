"""Training loops, evaluation, checkpoints, resume (including after a real SIGKILL)."""
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastrnn
from fastrnn import RNNNumpy, RNNTheano, io
from fastrnn import functional as F
from fastrnn.text import Vocabulary
from fastrnn.train import Trainer, TrainingDivergedError, evaluate, plot_history

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))


def _corpus(V=30, n=60, seed=0, lo=3, hi=12):
    """Sentences from a tiny Markov chain, so that there is something to learn."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(V, 0.1), size=V)
    X, Y = [], []
    for _ in range(n):
        T = int(rng.integers(lo, hi))
        s = [0]
        for _ in range(T):
            s.append(int(rng.choice(V, p=trans[s[-1]])))
        X.append(np.array(s[:-1]))
        Y.append(np.array(s[1:]))
    return X, Y


def _model(V=30, H=8, cls=RNNNumpy, seed=10, **kw):
    np.random.seed(seed)
    return cls(V, H, **kw)


def _params(m):
    return [np.array(a) for a in io.model_parameters(m)]


def test_sentence_mode_matches_the_tutorial_loop():
    """No shuffle, no validation, the model's own truncation: tutorial's train_with_sgd."""
    X, Y = _corpus()
    a, b = _model(), _model()
    hist_a = a.train_with_sgd(X, Y, learning_rate=0.05, nepoch=4, evaluate_loss_after=2,
                              verbose=False)
    tr = Trainer(b, X, Y, learning_rate=0.05, nepoch=4, evaluate_loss_after=2, shuffle=False,
                 verbose=False, progress=False)
    hist_b = tr.train()
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_array_equal(p, q)
    assert [h[1] for h in hist_a] == [h["train_loss"] for h in hist_b[:len(hist_a)]]
    assert hist_b[-1]["train_loss"] < hist_b[0]["train_loss"]


@pytest.mark.parametrize("cls", [RNNNumpy, RNNTheano])
def test_loss_falls_with_validation(cls):
    X, Y = _corpus(n=80)
    m = _model(cls=cls)
    tr = Trainer(m, X[:70], Y[:70], X[70:], Y[70:], learning_rate=0.1, nepoch=5,
                 verbose=False, progress=False)
    h = tr.train()
    assert h[-1]["valid_loss"] < h[0]["valid_loss"] - 0.3
    assert math.isclose(h[-1]["valid_ppl"], math.exp(h[-1]["valid_loss"]))
    assert tr.tokens_seen == 5 * sum(len(y) for y in Y[:70])


def test_stream_mode_is_chunked_tbptt_with_carried_state():
    X, Y = _corpus(n=20)
    m, ref = _model(), _model()
    tr = Trainer(m, X, Y, learning_rate=0.05, nepoch=1, mode="stream", bptt=7,
                 verbose=False, progress=False)
    tr.train()
    stream = tr.stream
    from fastrnn.text import sentences_to_stream
    expect = sentences_to_stream([np.append(x, y[-1]) for x, y in zip(X, Y)])
    np.testing.assert_array_equal(stream, expect)
    U, V, W = ref.U, ref.V, ref.W
    h = None
    for i in range(0, len(stream) - 1, 7):
        x = stream[i:min(i + 7, len(stream) - 1)]
        y = stream[i + 1:i + 1 + len(x)]
        _, h = F.sgd_step(U, V, W, x, y, 0.05, "full", h0=h, return_state=True)
    for p, q in zip(_params(m), (U, V, W)):
        np.testing.assert_array_equal(p, q)


def test_shuffle_is_seeded():
    X, Y = _corpus()
    runs = []
    for seed in (1, 1, 2):
        m = _model()
        Trainer(m, X, Y, learning_rate=0.05, nepoch=2, seed=seed, verbose=False,
                progress=False).train()
        runs.append(_params(m))
    assert all(np.array_equal(p, q) for p, q in zip(runs[0], runs[1]))
    assert not np.array_equal(runs[0][2], runs[2][2])


def test_learning_rate_halves_when_the_loss_rises():
    X, Y = _corpus(n=40)
    m = _model(H=16)
    tr = Trainer(m, X, Y, learning_rate=3.0, nepoch=8, verbose=False, progress=False)
    h = tr.train()
    halvings = 0
    for i in range(1, len(h)):
        rose = h[i]["loss"] > h[i - 1]["loss"]
        after = h[i + 1]["learning_rate"] if i + 1 < len(h) else tr.learning_rate
        assert after == (h[i]["learning_rate"] * 0.5 if rose else h[i]["learning_rate"])
        halvings += rose
    assert halvings >= 1


def test_evaluate_matches_calculate_loss():
    X, Y = _corpus()
    m = _model()
    r = evaluate(m, X, Y)
    assert r["loss"] == pytest.approx(m.calculate_loss(X, Y), rel=1e-12)
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    assert r["tokens"] == sum(len(y) for y in Y)
    s = evaluate(m, X, Y, mode="stream", bptt=5)
    from fastrnn.text import sentences_to_stream
    n_stream = len(sentences_to_stream([np.append(x, y[-1]) for x, y in zip(X, Y)]))
    assert s["tokens"] == n_stream - 1 and s["loss"] != r["loss"]


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("mode", ["sentence", "stream"])
@pytest.mark.parametrize("stop", [0, 1, 37, 60, 61, 150])
def test_resume_in_process_equals_uninterrupted(tmp_path, mode, stop):
    X, Y = _corpus(n=70)
    kw = dict(learning_rate=0.2, nepoch=3, mode=mode, bptt=6, seed=5, verbose=False,
              progress=False, checkpoint_every=0)
    full = _model()
    t_full = Trainer(full, X[:60], Y[:60], X[60:], Y[60:], **kw)
    t_full.train()
    part = _model()
    ck = str(tmp_path / "ck.npz")
    t1 = Trainer(part, X[:60], Y[:60], X[60:], Y[60:], checkpoint_path=ck, **kw)
    t1.train(max_steps=stop)
    t1.save_checkpoint()
    t2 = Trainer.resume(ck, X[:60], Y[:60], X[60:], Y[60:], verbose=False, progress=False)
    t2.train()
    for p, q in zip(_params(full), _params(t2.model)):
        np.testing.assert_array_equal(p, q)
    strip = [{k: v for k, v in h.items()} for h in t2.history]
    assert [h["loss"] for h in strip] == [h["loss"] for h in t_full.history]
    assert t2.learning_rate == t_full.learning_rate and t2.steps == t_full.steps


def test_checkpoint_is_a_model_file(tmp_path):
    X, Y = _corpus()
    vocab = Vocabulary([f"w{i}" for i in range(29)] + ["UNKNOWN_TOKEN"])
    m = _model(cls=RNNTheano, bptt_truncate=3)
    ck = str(tmp_path / "ck.npz")
    Trainer(m, X, Y, nepoch=1, checkpoint_path=ck, vocab=vocab, config={"corpus": "c"},
            verbose=False, progress=False).train()
    model, v, cfg = io.load_model(ck)
    assert v == vocab and cfg == {"corpus": "c"} and isinstance(model, RNNTheano)
    np.testing.assert_array_equal(model.U.get_value(), m.U.get_value())
    t = RNNTheano(3, 2)
    io.load_model_parameters_theano(ck, t)            # the tutorial's loader reads it too
    with pytest.raises(ValueError, match="differ"):
        Trainer.resume(ck, X[:-1], Y[:-1])
    plain = str(tmp_path / "plain.npz")
    io.save_model(plain, m)
    with pytest.raises(ValueError, match="not a fastrnn checkpoint"):
        Trainer.resume(plain, X, Y)


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    X, Y = _corpus()
    m = _model()
    ck = str(tmp_path / "ck.npz")
    calls = [0]
    orig = F.sgd_step

    def overflowing_step(U, V, W, *a, **k):
        calls[0] += 1
        if calls[0] == 95:                    # as if this update had overflowed
            V[3, 2] = np.nan
        return orig(U, V, W, *a, **k)

    monkeypatch.setattr(F, "sgd_step", overflowing_step)
    tr = Trainer(m, X, Y, nepoch=4, checkpoint_path=ck, checkpoint_every=10,
                 verbose=False, progress=False)
    with pytest.raises(TrainingDivergedError, match="loss is nan.*last good checkpoint"):
        tr.train()
    before = open(ck, "rb").read()
    with pytest.raises(TrainingDivergedError, match="non-finite"):
        tr.save_checkpoint()                # never overwrites a good checkpoint with NaN
    assert open(ck, "rb").read() == before
    model, _, _ = io.load_model(ck)         # finite, loadable, resumable
    assert np.isfinite(model.V).all()
    t2 = Trainer.resume(ck, X, Y, verbose=False, progress=False)
    assert t2.steps == 90


def test_nan_at_an_evaluation_is_caught_before_the_checkpoint(tmp_path):
    X, Y = _corpus()
    ck = str(tmp_path / "ck.npz")

    def poison(model, seen, loss):
        if seen > 0:
            model.V[3, 2] = np.inf

    tr = Trainer(_model(), X, Y, nepoch=3, checkpoint_path=ck, checkpoint_every=0,
                 callback=poison, verbose=False, progress=False)
    with pytest.raises(TrainingDivergedError, match="non-finite.*last good one is kept"):
        tr.train()
    assert np.isfinite(io.load_model(ck).model.V).all()


def test_divergence_from_a_huge_learning_rate(tmp_path):
    X, Y = _corpus()
    m = _model()
    tr = Trainer(m, X, Y, learning_rate=1e306, nepoch=2, verbose=False, progress=False)
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError):
        tr.train()


def test_plot_history(tmp_path):
    X, Y = _corpus()
    tr = Trainer(_model(), X[:50], Y[:50], X[50:], Y[50:], nepoch=2, verbose=False,
                 progress=False)
    tr.train()
    p = plot_history(tr.history, str(tmp_path / "loss.png"))
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- real kill

_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import fastrnn.functional as F
    from fastrnn import RNNNumpy, io
    from fastrnn.train import Trainer
    sys.path.insert(0, {testdir!r})
    from test_train import _corpus

    action, mode, ckpt, out, slow = sys.argv[1:6]
    if slow == "1":                      # make the run long enough to be killed mid-way
        _orig = F.sgd_step
        def _slow(*a, **k):
            time.sleep(0.002)
            return _orig(*a, **k)
        F.sgd_step = _slow
    X, Y = _corpus(V=40, n=170, seed=3)
    kw = dict(verbose=False, progress=False)
    if action == "start":
        np.random.seed(10)
        m = RNNNumpy(40, 12, bptt_truncate=3)
        tr = Trainer(m, X[:150], Y[:150], X[150:], Y[150:], learning_rate=0.1, nepoch=5,
                     mode=mode, bptt=9, seed=7, checkpoint_path=ckpt, checkpoint_every=25, **kw)
    else:
        tr = Trainer.resume(ckpt, X[:150], Y[:150], X[150:], Y[150:], **kw)
    tr.train()
    io.save_model(out, tr.model)
""")


@pytest.mark.parametrize("mode", ["sentence", "stream"])
def test_sigkill_and_resume_gives_the_same_weights(tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(testdir=os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")

    def run(*args):
        subprocess.run([sys.executable, str(script), *args], env=env, check=True,
                       timeout=120, capture_output=True)

    ref_ck, ref_out = str(tmp_path / "ref.npz"), str(tmp_path / "ref_model.npz")
    run("start", mode, ref_ck, ref_out, "0")

    ck, out = str(tmp_path / "ck.npz"), str(tmp_path / "model.npz")
    proc = subprocess.Popen([sys.executable, str(script), "start", mode, ck, out, "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ck):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint written in 60 s"
            time.sleep(0.01)
        delay = random.uniform(0.0, 1.0)
        time.sleep(delay)
        assert proc.poll() is None, f"run finished before the kill (delay {delay:.3f} s)"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(out)
    _, _, _ = io.load_model(ck)                     # the checkpoint on disk is whole
    run("resume", mode, ck, out, "0")
    a, _, _ = io.load_model(ref_out)
    b, _, _ = io.load_model(out)
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_array_equal(p, q, err_msg=f"killed after {delay:.3f} s")


def test_finished_run_can_be_extended(tmp_path):
    X, Y = _corpus()
    ck = str(tmp_path / "ck.npz")
    t1 = Trainer(_model(), X, Y, nepoch=2, checkpoint_path=ck, verbose=False, progress=False)
    t1.train()
    n_hist = len(t1.history)
    t2 = Trainer.resume(ck, X, Y, nepoch=3, verbose=False, progress=False)
    assert t2.train() and t2.epoch == 3 and t2.finished
    assert len(t2.history) == n_hist + 1           # no duplicate evaluation at epoch 2
    assert io.load_model(ck).model.U.shape == (8, 30)


def test_evaluate_file(tmp_path):
    from fastrnn.text import load_text
    from fastrnn.train import evaluate_file

    p = tmp_path / "t.txt"
    p.write_text("The cat sat. The dog ran home.\n\nA cat ran.\n")
    c = load_text(str(p), 20)
    np.random.seed(0)
    m = RNNNumpy(len(c.vocab), 5)
    r = evaluate_file(m, c.vocab, str(p))
    assert r["loss"] == pytest.approx(m.calculate_loss(c.X, c.y))
    assert r["tokens"] == c.n_tokens


# ----------------------------------------------------------------------------- review fixes

def _checkpoint(tmp_path, mode="sentence", steps=5, n=10):
    X, Y = _corpus(n=n)
    ck = str(tmp_path / f"ck-{mode}.npz")
    tr = Trainer(_model(), X, Y, nepoch=3, mode=mode, bptt=6, checkpoint_path=ck,
                 checkpoint_every=0, verbose=False, progress=False)
    tr.train(max_steps=steps)
    tr.save_checkpoint()
    return ck, X, Y, tr


def _rewrite(src, dst, train=None, arrays=None, drop=()):
    arr, meta = io.read_npz(src)
    meta["train"].update(train or {})
    arr.update(arrays or {})
    for k in drop:
        arr.pop(k)
    return io.write_npz(dst, arr, meta)


def test_resume_rejects_a_corrupt_training_state(tmp_path):
    """Regression: order/position/phase/counters/history are checked, naming file and field."""
    ck, X, Y, tr = _checkpoint(tmp_path)
    assert tr.phase == "train" and tr.position == 5 and len(tr.order) == 10
    order = tr.order
    t_ok = Trainer.resume(ck, X, Y, verbose=False, progress=False)   # the good one resumes
    assert t_ok.position == 5 and np.array_equal(t_ok.order, order)
    cases = [
        ("zeros", {}, {"order": np.zeros(10, np.int64)}, (), "order"),
        ("negative", {}, {"order": -np.arange(1, 11)}, (), "order"),
        ("shifted", {}, {"order": order + 5}, (), "order"),
        ("float", {}, {"order": order.astype(float)}, (), "order"),
        ("twod", {}, {"order": order.reshape(2, 5)}, (), "order"),
        ("short", {}, {"order": order[:9]}, (), "order"),
        ("noorder", {"has_order": False}, {}, ("order",), "order"),
        ("posneg", {"position": -3}, {}, (), "position"),
        ("posbig", {"position": 11}, {}, (), "position"),
        ("posstr", {"position": "3"}, {}, (), "position"),
        ("posbool", {"position": True}, {}, (), "position"),
        ("phase", {"phase": "zzz"}, {}, (), "phase"),
        ("evalpos", {"phase": "eval"}, {}, (), "position"),
        ("epoch", {"epoch": "1"}, {}, (), "epoch"),
        ("steps", {"steps": -1}, {}, (), "steps"),
        ("examples", {"examples_seen": 1.5}, {}, (), "examples_seen"),
        ("tokens", {"tokens_seen": None}, {}, (), "tokens_seen"),
        ("runtok", {"run_tokens": -2}, {}, (), "run_tokens"),
        ("runloss", {"run_loss": "x"}, {}, (), "run_loss"),
        ("runlossnan", {"run_loss": float("nan")}, {}, (), "run_loss"),
        ("elapsed", {"elapsed": -1.0}, {}, (), "elapsed"),
        ("finished", {"finished": "yes"}, {}, (), "finished"),
        ("hist5", {"history": [5]}, {}, (), "history"),
        ("histdict", {"history": {"a": 1}}, {}, (), "history"),
        ("histsteps", {"history": [{"steps": "x", "examples_seen": 0, "loss": 1.0}]}, {}, (),
         "history"),
        ("histloss", {"history": [{"steps": 0, "examples_seen": 0, "loss": "x"}]}, {}, (),
         "history"),
        ("hasorder", {"has_order": "yes"}, {}, (), "has_order"),
    ]
    for name, train, arrays, drop, field in cases:
        bad = _rewrite(ck, str(tmp_path / f"{name}.npz"), train, arrays, drop)
        with pytest.raises(io.ModelFileError, match=f"{name}.npz.*{field}"):
            Trainer.resume(bad, X, Y, verbose=False, progress=False)
    arr, meta = io.read_npz(ck)
    meta["train"] = [1, 2]
    notdict = io.write_npz(str(tmp_path / "notdict.npz"), arr, meta)
    with pytest.raises(io.ModelFileError, match="notdict.npz.*train"):
        Trainer.resume(notdict, X, Y, verbose=False, progress=False)


def test_resume_rejects_a_corrupt_hidden_state(tmp_path):
    """Regression: the carried state of stream mode must be a finite (H,) vector."""
    ck, X, Y, tr = _checkpoint(tmp_path, mode="stream", steps=3)
    assert tr.h is not None and tr.h.shape == (8,)
    t_ok = Trainer.resume(ck, X, Y, verbose=False, progress=False)
    np.testing.assert_array_equal(t_ok.h, tr.h)
    nan_h = tr.h.copy()
    nan_h[2] = np.nan
    for name, arrays, drop, train in [("hshape", {"h": np.zeros(9)}, (), {}),
                                      ("h2d", {"h": np.zeros((1, 8))}, (), {}),
                                      ("hnan", {"h": nan_h}, (), {}),
                                      ("hint", {"h": np.zeros(8, np.int64)}, (), {}),
                                      ("hmissing", {}, ("h",), {})]:
        bad = _rewrite(ck, str(tmp_path / f"{name}.npz"), train, arrays, drop)
        with pytest.raises(io.ModelFileError, match=f"{name}.npz.*'h'"):
            Trainer.resume(bad, X, Y, verbose=False, progress=False)
    # position counts chunks in stream mode
    bad = _rewrite(ck, str(tmp_path / "spos.npz"), {"position": tr.n_steps + 1})
    with pytest.raises(io.ModelFileError, match="spos.npz.*position"):
        Trainer.resume(bad, X, Y, verbose=False, progress=False)


def test_resume_with_a_non_npy_order_member(tmp_path):
    """Regression: an ``order`` member that np.load returns as bytes."""
    import zipfile

    ck, X, Y, _ = _checkpoint(tmp_path)
    bad = str(tmp_path / "raworder.npz")
    with zipfile.ZipFile(ck) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, b"garbage" if name == "order.npy" else zin.read(name))
    with pytest.raises(io.ModelFileError, match=r"raworder.npz.*member 'order.npy'"):
        Trainer.resume(bad, X, Y, verbose=False, progress=False)


def test_evaluate_and_stream_loss_validate_bptt():
    """Regression: bptt <= 0 divided by zero or broke range()."""
    from fastrnn.train import stream_loss

    X, Y = _corpus(n=5)
    m = _model()
    for bad, exc in ((-1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="bptt"):
            evaluate(m, X, Y, mode="stream", bptt=bad)
        with pytest.raises(exc, match="bptt"):
            stream_loss(m, np.arange(20) % 30, bptt=bad)
    assert evaluate(m, X, Y, mode="stream", bptt=3)["tokens"] > 0


def test_evaluate_reports_the_unknown_rate(tmp_path):
    """Regression: the out-of-vocabulary rate is part of evaluate's result."""
    from fastrnn.text import load_text
    from fastrnn.train import evaluate_file

    p = tmp_path / "t.txt"
    p.write_text("The cat sat. The dog ran home.\n\nA cat ran.\n")
    c = load_text(str(p), 6)
    np.random.seed(0)
    m = RNNNumpy(len(c.vocab), 5)
    unk = c.vocab.unknown_index
    ys = np.concatenate(c.y)
    r = evaluate_file(m, c.vocab, str(p))
    assert r["oov_tokens"] == int((ys == unk).sum()) > 0
    assert r["oov_rate"] == pytest.approx(r["oov_tokens"] / len(ys))
    r2 = evaluate(m, c, unknown_index=unk, mode="stream", bptt=4)
    assert r2["oov_rate"] == r["oov_rate"]
    assert "oov_rate" not in evaluate(m, c)
    with pytest.raises(ValueError, match="chars.*words"):
        evaluate_file(m, c.vocab, str(p), fmt="chars")


def test_stale_checkpoint_temp_files_are_removed_at_start(tmp_path):
    """Regression: temp files of a killed checkpoint write are cleaned, and only those."""
    X, Y = _corpus(n=10)
    stale = [".ck.npz.abcd1234.tmp", ".ck.npz.q_w_e_r_.tmp"]
    foreign = [".other.npz.abcd1234.tmp", "ck.npz.abcd1234.tmp", ".ck.npz.abcd1234.tmp.keep",
               "notes.txt"]
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / ".ck.npz.abcd1234.tmp").write_bytes(b"elsewhere")       # another directory
    for n in stale + foreign:
        (tmp_path / n).write_bytes(b"partial")
    Trainer(_model(), X, Y, checkpoint_path=str(tmp_path / "ck"), verbose=False,
            progress=False)                                       # "ck" means ck.npz
    assert sorted(os.listdir(tmp_path)) == sorted(foreign + ["sub"])
    assert os.listdir(sub) == [".ck.npz.abcd1234.tmp"]
    Trainer(_model(), X, Y, verbose=False, progress=False)        # no checkpoint: no-op


def test_stale_temp_files_after_real_kills_are_cleaned(tmp_path):
    """Regression: SIGKILL during checkpoint writes, then a resumed Trainer cleans up."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import sys, os, time
        import numpy as np
        from fastrnn import RNNNumpy, io
        from fastrnn.train import Trainer
        sys.path.insert(0, {testdir!r})
        from test_train import _corpus
        _orig = np.savez
        def _slow(f, **kw):          # a write that is always in flight
            _orig(f, **kw)
            f.flush()
            time.sleep(0.05)
        np.savez = _slow
        X, Y = _corpus(n=20)
        np.random.seed(1)
        tr = Trainer(RNNNumpy(30, 8), X, Y, nepoch=1000, checkpoint_path=sys.argv[1],
                     checkpoint_every=1, verbose=False, progress=False)
        tr.train()
    """).format(testdir=os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    ck = str(tmp_path / "ck.npz")
    proc = subprocess.Popen([sys.executable, str(script), ck], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)) or \
                not os.path.exists(ck):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any(n.startswith(".ck.npz.") for n in os.listdir(tmp_path))   # left behind
    X, Y = _corpus(n=20)
    Trainer.resume(ck, X, Y, verbose=False, progress=False)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_checkpoint_path_without_suffix_is_normalised(tmp_path, monkeypatch):
    """Regression: ``checkpoint_path="ck"`` writes ck.npz, and messages name ck.npz."""
    X, Y = _corpus()
    ck = str(tmp_path / "ck")
    calls = [0]
    orig = F.sgd_step

    def overflowing_step(U, V, W, *a, **k):
        calls[0] += 1
        if calls[0] == 25:
            V[3, 2] = np.nan
        return orig(U, V, W, *a, **k)

    monkeypatch.setattr(F, "sgd_step", overflowing_step)
    tr = Trainer(_model(), X, Y, nepoch=2, checkpoint_path=ck, checkpoint_every=10,
                 verbose=False, progress=False)
    assert tr.checkpoint_path == ck + ".npz"
    with pytest.raises(TrainingDivergedError,
                       match=r"last good checkpoint is kept at .*ck\.npz"):
        tr.train()
    assert not os.path.exists(ck) and os.path.exists(ck + ".npz")
    with pytest.raises(TrainingDivergedError, match=r"kept at .*ck\.npz"):
        tr.save_checkpoint()
    with pytest.raises(TrainingDivergedError, match=r"kept at .*other\.npz"):
        tr.save_checkpoint(str(tmp_path / "other"))
    assert Trainer.resume(ck + ".npz", X, Y, verbose=False, progress=False).steps == 20


# ----------------------------------------------------------------------------- clipping

def _step_delta(mode, clip, lr=0.3, cls=RNNNumpy, truncation=None):
    """Parameters before and after one trainer step (first sentence/chunk, no shuffle)."""
    X, Y = _corpus()
    m = _model(cls=cls)
    before = _params(m)
    tr = Trainer(m, X, Y, learning_rate=lr, nepoch=1, mode=mode, bptt=7, shuffle=False,
                 verbose=False, progress=False, eval_train=False, clip=clip,
                 truncation=truncation)
    tr.train(max_steps=1)
    return m, before, _params(m), X, Y


@pytest.mark.parametrize("mode", ["sentence", "stream"])
@pytest.mark.parametrize("cls", [RNNNumpy, RNNTheano])
def test_clip_above_the_norm_is_the_plain_step(mode, cls):
    """A clip the gradient never reaches gives the unclipped SGD step (to rounding: the fused
    step folds the update into its products)."""
    _, b0, plain, _, _ = _step_delta(mode, None, cls=cls)
    _, c0, clipped, _, _ = _step_delta(mode, 1e9, cls=cls)
    for p0, q0, p, q in zip(b0, c0, plain, clipped):
        np.testing.assert_array_equal(p0, q0)
        np.testing.assert_allclose(q - q0, p - p0, rtol=1e-9, atol=1e-14)
        assert np.any(p != p0)


@pytest.mark.parametrize("mode,trunc", [("sentence", "window"), ("sentence", "full"),
                                        ("stream", None)])
def test_clip_bounds_the_step(mode, trunc):
    """With a clip well below the gradient's norm, the update is lr * clip long (global
    norm over U, V, W) and points along the gradient."""
    lr, clip = 0.3, 1e-3
    m, before, after, X, Y = _step_delta(mode, clip, lr=lr, truncation=trunc)
    step = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before)))
    assert step == pytest.approx(lr * clip, rel=1e-3)     # coef = clip / (norm + 1e-6)
    if mode == "sentence":
        U, V, W = before
        x, y = X[0], Y[0]
        _, dU, dV, dW = F.grad(U, V, W, x, y, trunc, 4, backend="numpy")
        g = np.concatenate([dU.ravel(), dV.ravel(), dW.ravel()])
        d = np.concatenate([(b - a).ravel() for a, b in zip(after, before)])
        cos = g @ d / (np.linalg.norm(g) * np.linalg.norm(d))
        assert cos == pytest.approx(1.0, abs=1e-9)
        assert np.linalg.norm(g) > 100 * clip            # the clip was active


def test_clip_is_validated_and_checkpointed(tmp_path):
    X, Y = _corpus()
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="clip"):
            Trainer(_model(), X, Y, clip=bad, verbose=False, progress=False)
    ck = str(tmp_path / "ck.npz")
    kw = dict(learning_rate=0.2, nepoch=2, seed=3, verbose=False, progress=False,
              checkpoint_every=0, clip=0.05)
    full = _model()
    Trainer(full, X, Y, **kw).train()
    part = _model()
    t1 = Trainer(part, X, Y, checkpoint_path=ck, **kw)
    t1.train(max_steps=25)
    t1.save_checkpoint()
    t2 = Trainer.resume(ck, X, Y, verbose=False, progress=False)
    assert t2.clip == 0.05
    t2.train()
    for p, q in zip(_params(full), _params(t2.model)):
        np.testing.assert_array_equal(p, q)


def test_clipped_step_with_a_nonfinite_gradient_updates_nothing(monkeypatch):
    X, Y = _corpus()
    m = _model()
    before = _params(m)
    tr = Trainer(m, X, Y, learning_rate=0.1, nepoch=1, shuffle=False, verbose=False,
                 progress=False, eval_train=False, clip=1.0)
    real = F.grad

    def poisoned(*a, **k):
        out = list(real(*a, **k))
        out[2][0, 0] = np.nan                             # dV
        return tuple(out)

    monkeypatch.setattr(F, "grad", poisoned)
    with pytest.raises(TrainingDivergedError):
        tr.train(max_steps=1)
    for p, q in zip(before, _params(m)):
        np.testing.assert_array_equal(p, q)

"""The step's helper threads (``models._beside``), when the step uses them
(``models._overlap_decoder``), and how Numba's threads are started (``_kernels._threads``)."""
import json
import os
import threading
import time

import numpy as np
import pytest

from fastrnn import models
from isolated import run_isolated


def _tasks(n, log):
    return [lambda i=i: log.append((i, threading.get_ident())) for i in range(n)]


@pytest.mark.parametrize("helpers", [1, 3])
@pytest.mark.parametrize("n", [0, 1, 40])
def test_beside_runs_every_task_once_and_returns_mains_value(helpers, n):
    log = []
    assert models._beside(lambda: "done", _tasks(n, log), helpers) == "done"
    assert sorted(i for i, _ in log) == list(range(n))


def test_beside_runs_tasks_on_another_thread_while_main_runs():
    """``main`` waits for a task that must run elsewhere meanwhile (a serial run would
    wait out the timeout and fail)."""
    started = threading.Event()
    log = []

    def first():
        log.append(threading.get_ident())
        started.set()

    def main():
        assert started.wait(timeout=60), "no helper thread took a task while main ran"
        return threading.get_ident()

    me = models._beside(main, [first], 1)
    assert me == threading.get_ident() and log and log[0] != me


def test_beside_main_takes_the_tasks_left_when_no_helper_is_free():
    """A helper busy elsewhere (the pool's one thread blocked): the calling thread does
    every task after ``main`` and does not wait for the helper."""
    release = threading.Event()
    pool = models._helper_pool(1)
    blocker = pool.submit(release.wait, 60)
    try:
        if pool._max_workers != 1:        # another test grew the pool: block every thread
            blockers = [pool.submit(release.wait, 60) for _ in range(pool._max_workers - 1)]
        else:
            blockers = []
        log = []
        t0 = time.perf_counter()
        assert models._beside(lambda: 7, _tasks(5, log), 1) == 7
        assert time.perf_counter() - t0 < 30
        assert [t for _, t in log] == [threading.get_ident()] * 5
    finally:
        release.set()
    blocker.result()
    for b in blockers:
        b.result()


def test_beside_waits_for_running_tasks_when_main_raises():
    running = []
    done = []
    gate = threading.Event()

    def task():
        running.append(1)
        gate.set()
        time.sleep(0.05)
        done.append(1)

    def main():
        gate.wait(timeout=60)
        raise ValueError("main failed")

    with pytest.raises(ValueError, match="main failed"):
        models._beside(main, [task] * 20, 1)
    assert len(done) == len(running) >= 1        # nothing still running after the raise
    assert len(done) < 20                        # and the tasks not started were dropped
    time.sleep(0.2)
    assert len(running) < 20


def test_beside_raises_a_tasks_error():
    def bad():
        raise RuntimeError("task failed")
    with pytest.raises(RuntimeError, match="task failed"):
        models._beside(lambda: None, [bad], 1)


def test_beside_raises_mains_error_over_a_helpers():
    """Both fail: the caller's error is the one raised (the helper's was a consequence,
    or at least not the caller's business to report first)."""
    failed = threading.Event()

    def bad():
        failed.set()
        raise RuntimeError("task failed")

    def main():
        assert failed.wait(timeout=60)
        raise ValueError("main failed")

    with pytest.raises(ValueError, match="main failed"):
        models._beside(main, [bad], 1)


def _lstm_layers(H, E, L):
    rng = np.random.default_rng(0)
    return [(rng.random((4 * H, E if k == 0 else H)), rng.random((4 * H, H)), None, None)
            for k in range(L)]


def test_overlap_decoder_when_the_decoder_outweighs_the_stack(monkeypatch):
    from fastrnn._kernels import _threads
    ptb = _lstm_layers(200, 200, 2)
    monkeypatch.setattr(_threads, "low_spin", True)
    assert models._overlap_decoder(ptb, 10000, 2)
    assert not models._overlap_decoder(ptb, 10000, 1)          # one thread: nothing beside
    # a character model: 65 symbols under 2 x 512 units; the stack is the step
    assert not models._overlap_decoder(_lstm_layers(512, 64, 2), 65, 2)
    monkeypatch.setattr(models, "_OVERLAP", False)
    assert not models._overlap_decoder(ptb, 10000, 2)
    monkeypatch.setattr(models, "_OVERLAP", True)
    monkeypatch.setattr(_threads, "low_spin", False)             # long-spinning workers
    assert not models._overlap_decoder(ptb, 10000, 2)


_START = """
import json, os, sys
if {preload!r}:
    import ctypes
    try:
        ctypes.CDLL("libgomp.so.1")
    except OSError:
        print("no-libgomp")
        sys.exit()
import fastrnn._kernels.common
import numba
from fastrnn._kernels import _threads
print(json.dumps([_threads.low_spin, numba.threading_layer(), os.environ.get("GOMP_SPINCOUNT"),
                  os.environ.get("OMP_WAIT_POLICY")]))
"""


@pytest.mark.parametrize("env, preload, want", [
    ({}, False, True),                                # fastrnn starts libgomp, briefly set
    ({"GOMP_SPINCOUNT": "300000"}, False, False),     # the user's long spin, kept
    ({"GOMP_SPINCOUNT": "2000"}, False, True),        # the user's short spin, kept
    ({"GOMP_SPINCOUNT": "infinite"}, False, False),
    ({"OMP_WAIT_POLICY": "passive"}, False, True),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, False, False),
    ({}, True, False),                                # libgomp already loaded: unknown spin
])
def test_numba_threads_start_with_a_short_spin_unless_the_user_decides(monkeypatch, env,
                                                                        preload, want):
    if preload and getattr(os, "RTLD_NOLOAD", None) is None:
        pytest.skip("RTLD_NOLOAD is not available here")
    for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_DISABLE_JIT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = run_isolated(_START.format(preload=preload)).strip().splitlines()[-1]
    if out == "no-libgomp":
        pytest.skip("no libgomp.so.1 to load")
    low, layer, spin, policy = json.loads(out)
    assert low is (want and layer == "omp")
    assert spin == env.get("GOMP_SPINCOUNT")          # the environment is as it was
    assert policy == env.get("OMP_WAIT_POLICY")

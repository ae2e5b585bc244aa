"""The PTB-small LSTM step, each implementation in a process of its own, run in turn.

    python bench/ptb_processes.py [--rounds 3] [--steps 25] [--threads 1 2]

In the pytest-benchmark run (``bench/test_bench_models.py``) every implementation shares one
process, so PyTorch's OpenMP workers, Numba's and OpenBLAS's are all alive at once and a
framework's idle-but-spinning threads can slow the next one's step on a 2-core machine.
Here each (implementation, threads) pair runs in a fresh interpreter: two warm-up steps,
then ``--steps`` timed steps; the pairs are run in turn ``--rounds`` times, so a burst of
load on the shared machine falls on several of them rather than on one.  Prints every
process's median and minimum, then per pair the median of the medians and the minimum of
the minima, and the ratios (``x torch``, ``x jax``: the peer's time / this row's; one
thread / two threads).  ``steal`` is the share of the machine's CPU time the hypervisor took
for other guests while a process timed its steps (``/proc/stat``; nan where unreadable).

``numba-pool`` is the Numba backend after ``fastrnn.set_num_threads(n)``: BLAS on one thread
and the whole step on Numba's ``n`` threads (its "vs 1 thread" ratio is against ``numba``);
``numba`` and ``cython`` with ``n`` threads leave BLAS on ``n`` and the rest serial.

``jax`` is ``peers_models.jax_ptb`` (jit + ``lax.scan``); its process puts XLA on ``n``
threads (``xla_threads.xla_thread_env``) before JAX is imported.  JAX reads its thread
count only when it starts, which is why the pytest run times it on one thread only.

The step is the benchmark's: SGD on a row-sparse embedding gradient everywhere
(``sparse_embedding=True``, ``nn.Embedding(sparse=True)``, JAX's gradient with respect to
the rows looked up), and each peer's loss must equal fastrnn's on the same weights before
it is timed.  A peer's rows are left out when it is not installed.
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = ("torch", "jax")


def cpu_ticks():
    """``(steal, total)`` CPU ticks of the machine so far (``/proc/stat``), or None.  Steal is
    time the hypervisor gave this virtual machine's CPUs to someone else."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def child(impl, threads, steps):
    if impl == "torch":
        # PyTorch's OpenMP runtime is libgomp, the library Numba's threads use: imported
        # first, it starts with its own defaults rather than with the short spin fastrnn
        # starts Numba's threads with (fastrnn._kernels._threads) when its kernels load.
        import torch  # noqa: F401
    sys.path.insert(0, os.path.join(HERE, os.pardir))
    sys.path.insert(0, HERE)
    import xla_threads
    if impl == "jax":
        os.environ.update(xla_threads.xla_thread_env(threads))   # before JAX starts
    import numpy as np

    import fastrnn
    from peers_models import jax_ptb
    from test_bench_models import PTB, _ptb_batch, _ptb_fastrnn, _ptb_torch, _threads

    if impl in PEERS:
        # the weights come from a NumPy-reference model: no Numba threads in this process
        model = fastrnn.LSTM(PTB["V"], PTB["H"], num_layers=PTB["L"], dtype=np.float32,
                             backend="numpy", seed=0)
        x, y = _ptb_batch()
        want = model.loss(x, y)[0]
        if impl == "torch":
            step, loss = _ptb_torch(model, threads)
        else:
            assert xla_threads.jax_threads() == threads
            step, loss = jax_ptb(model.to_torch_state_dict(tensors=False), x, y)
        assert abs(loss() - want) <= 1e-4 * abs(want), (impl, loss(), want)
        ctx = None
    else:
        _, step, _ = _ptb_fastrnn("numba" if impl == "numba-pool" else impl)
        ctx = _threads(threads, blas=1 if impl == "numba-pool" else None)
        ctx.__enter__()
    step()
    step()
    times = []
    before = cpu_ticks()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    after = cpu_ticks()
    if ctx is not None:
        ctx.__exit__(None, None, None)
    steal = float("nan")
    if before and after and after[1] > before[1]:
        steal = 100.0 * (after[0] - before[0]) / (after[1] - before[1])
    print(f"{statistics.median(times) * 1e3:.2f} {min(times) * 1e3:.2f} {steal:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.steps)
        return

    sys.path.insert(0, os.path.join(HERE, os.pardir))
    import fastrnn
    impls = [n for n, ok in fastrnn.available_backends().items() if ok is True and n != "numpy"]
    if "numba" in impls:
        impls.append("numba-pool")
    for peer in PEERS:
        if importlib.util.find_spec(peer) is None:
            print(f"{peer} not installed: its rows are left out")
        else:
            impls.append(peer)
    runs = {}
    for r in range(args.rounds):
        for threads in args.threads:
            for impl in impls:
                if impl == "numba-pool" and threads == 1:
                    continue          # the same as numba on one thread
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--steps",
                                      str(args.steps), "--child", impl, str(threads)],
                                     capture_output=True, text=True, check=True).stdout.split()
                med, low, steal = float(out[0]), float(out[1]), float(out[2])
                runs.setdefault((impl, threads), []).append((med, low))
                print(f"round {r + 1}: {impl:10s} {threads} thread(s)  median {med:7.1f} ms"
                      f"  min {low:7.1f} ms  steal {steal:4.1f} %", flush=True)
    print()
    summary = {k: (statistics.median(m for m, _ in v), min(lo for _, lo in v))
               for k, v in runs.items()}
    for (impl, threads), (med, low) in summary.items():
        line = f"{impl:10s} {threads} thread(s): median of medians {med:7.1f} ms, min {low:7.1f} ms"
        for peer in PEERS:
            if peer == impl:
                break                 # fastrnn's rows against every peer, jax's against torch
            if (peer, threads) in summary:
                pm, pl = summary[peer, threads]
                line += f"; x {peer} {pm / med:.2f} (minima {pl / low:.2f})"
        one = "numba" if impl == "numba-pool" else impl
        if threads != 1 and (one, 1) in summary:
            om, ol = summary[one, 1]
            line += f"; {threads} threads vs 1: {om / med:.2f}x (minima {ol / low:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()

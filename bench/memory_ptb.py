"""Peak memory of the PTB-small LSTM training step, against the arrays it must hold.

    python bench/memory_ptb.py [backend] [--sparse-embedding] [--threads N]

Runs in its own process: measures the resident set after imports (the baseline: Python,
NumPy, Numba, SciPy), builds the model (2 x 200 LSTM, V=10000, float32), runs 5 SGD steps
on a batch of 20 x 20 (the gradient arrays passed back in, as a training loop does) and reads the peak resident set (``ru_maxrss``).  "Must hold" is
the parameters, the gradients, the optimizer state (none for SGD) and the activations the
backward pass needs (embedded inputs, per-layer states, caches and projections, logits).
With ``--sparse-embedding`` the step is the PTB benchmark's (``loss_and_grad(...,
sparse_embedding=True)``), and the embedding's gradient counts as its ``T * B`` rows at most.
With ``--threads N`` the step runs after ``fastrnn.set_num_threads(N)`` (the Numba backend's
step on Numba's threads, BLAS on one).
Prints one line of ``key=value`` pairs.
"""
import resource
import sys

import numpy as np


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak():
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(backend="numba", sparse=False, threads=None):
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    import fastrnn
    from fastrnn import optim

    V, H, L, B, T = 10000, 200, 2, 20, 20
    if threads is not None:
        fastrnn.set_num_threads(threads)
    tiny = fastrnn.LSTM(10, 2, num_layers=L, dtype=np.float32, backend=backend, seed=0)
    tiny.loss_and_grad(np.ones((2, 1), int), np.ones((2, 1), int))   # loads the kernels
    base = rss_mb()
    # OpenBLAS packs its operands into buffers of its own whose pages are touched only when
    # a large product first runs; one product of the decoder's shapes touches them now, so
    # that the second baseline isolates what the training step itself allocates.
    a = np.ones((T * B, H), np.float32)
    w = np.ones((V, H), np.float32)
    z = a @ w.T
    _ = z.T @ a, z @ w
    del a, w, z, _
    base_blas = rss_mb()
    reset_ok = reset_peak()
    model = fastrnn.LSTM(V, H, num_layers=L, dtype=np.float32, backend=backend, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    seq = rng.integers(0, V, (T + 1, B))
    grads = None
    for _ in range(5):
        _, grads, _ = model.loss_and_grad(seq[:-1], seq[1:], grads=grads,   # reused
                                          sparse_embedding=sparse)
        opt.step(grads)
    peak = peak_mb()
    item = 4
    params = sum(a.nbytes for a in model.parameters().values()) / 2**20
    grads_mb = params
    if sparse:      # the dense embedding gradient is not held, at most T*B of its rows are
        grads_mb += (min(T * B, V) - V) * model.embedding_dim * item / 2**20
    # activations: inputs to each layer (T,B,H), states (T+1,B,H), gate caches (T,B,4H)
    # for states c as well (T+1,B,H), projections (T,B,4H), logits/gradient (T*B, V)
    acts = (L * (T * B * H + 2 * (T + 1) * B * H + 2 * T * B * 4 * H) + T * B * V) * item / 2**20
    must = params + grads_mb + acts
    used = peak - base_blas
    print(f"backend={backend} sparse_embedding={sparse} threads={threads} baseline_rss_mb={base_blas:.1f} blas_buffers_mb={base_blas - base:.1f} "
          f"peak_reset={reset_ok} peak_rss_mb={peak:.1f} "
          f"params_mb={params:.1f} grads_mb={grads_mb:.1f} "
          f"activations_mb={acts:.1f} must_hold_mb={must:.1f} peak_over_baseline_mb={used:.1f} "
          f"ratio={used / must:.2f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    sparse = "--sparse-embedding" in args
    threads = None
    if "--threads" in args:
        i = args.index("--threads")
        threads = int(args[i + 1])
        del args[i:i + 2]
    rest = [a for a in args if a != "--sparse-embedding"]
    main(*rest, sparse=sparse, threads=threads)

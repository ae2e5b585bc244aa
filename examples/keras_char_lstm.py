#!/usr/bin/env python
"""The Keras ``lstm_text_generation`` example on fastrnn's :class:`fastrnn.RNNKeras`.

Configuration (as in the Keras example)
---------------------------------------
* text: ``nietzsche.txt`` lowercased (600893 chars, 57 distinct symbols),
* windows of 40 characters every 3 characters (200285 samples), one-hot,
* ``LSTM(128) -> Dense(57) -> softmax``, categorical cross-entropy,
* ``RMSprop(lr=0.01)`` (Keras's rule, eps outside the square root), batch 128, shuffled,
* float32 (Keras's default floatX).

After every epoch it prints the mean training loss (nats per character, what Keras's
progress bar shows), the epoch's wall time, and 200 generated characters at temperatures
0.2, 0.5 and 1.0 from a random seed window of the text.

Memory: the one-hot ``X`` is kept as bools (200285 x 40 x 57 = 457 MB); each batch is
converted to float32 on its own, never the whole array (``RNNKeras.fit`` would make a
1.8 GB float32 copy, which is why this script runs its own epoch loop).

Usage::

    python examples/keras_char_lstm.py                   # 3 epochs, default corpus
    python examples/keras_char_lstm.py --epochs 10 --backend numba
    python examples/keras_char_lstm.py PATH/TO/nietzsche.txt --epochs 1

The example's published curve is 2.29, 1.62, 1.50 for epochs 1-3.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from fastrnn import RNNKeras  # noqa: E402
from fastrnn.seed_models import char_windows, sample  # noqa: E402

DEFAULT_CORPUS = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "nietzsche",
                                               "nietzsche.txt"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS,
                   help=f"path of nietzsche.txt (default: {DEFAULT_CORPUS})")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backend", default=None, help="numba, cython or numpy (default: fastrnn's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--gate-activation", choices=("sigmoid", "hard_sigmoid"), default="sigmoid",
                   help="LSTM recurrent_activation (Keras >= 2.3: sigmoid; Keras 1/2.0-2.2: "
                        "hard_sigmoid)")
    p.add_argument("--maxlen", type=int, default=40)
    p.add_argument("--step", type=int, default=3)
    p.add_argument("--gen-chars", type=int, default=200)
    p.add_argument("--seed", type=int, default=1, help="seed of weights, shuffling and sampling")
    p.add_argument("--log-every", type=int, default=200,
                   help="print the running loss every N steps (0: never)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="minutes; stop before starting an epoch that would not finish in time")
    a = p.parse_args(argv)
    if a.epochs < 1:
        p.error("--epochs must be >= 1")
    return a


def generate(model, text, chars, maxlen, n_chars, temperature, start, rng):
    """Keras example's loop: feed the last ``maxlen`` chars, sample one, append, repeat."""
    index = {c: i for i, c in enumerate(chars)}
    V = len(chars)
    sentence = text[start:start + maxlen]
    out = []
    x = np.zeros((1, maxlen, V), np.float32)
    for _ in range(n_chars):
        x[:] = 0
        x[0, np.arange(maxlen), [index[c] for c in sentence]] = 1
        preds = model.predict(x)
        nxt = chars[sample(preds, temperature, rng=rng)]
        out.append(nxt)
        sentence = sentence[1:] + nxt
    return "".join(out)


def main(argv=None):
    a = parse_args(argv)
    if not os.path.isfile(a.corpus):
        sys.exit(f"error: corpus not found: {a.corpus}\n"
                 f"pass the path of nietzsche.txt as the first argument")
    t0 = time.perf_counter()
    with open(a.corpus, encoding="utf-8") as f:
        text = f.read().lower()
    X, y, chars = char_windows(text, maxlen=a.maxlen, step=a.step, dtype=bool)
    N, L, V = X.shape
    print(f"corpus length: {len(text)}")
    print(f"total chars: {V}")
    print(f"nb sequences: {N}   X {X.shape} {X.dtype} ({X.nbytes / 1e6:.0f} MB)   "
          f"[prepared in {time.perf_counter() - t0:.1f}s]")

    model = RNNKeras(L, V, a.hidden, gate_activation=a.gate_activation, lr=a.lr,
                     backend=a.backend, dtype=np.float32, seed=a.seed)
    print(f"model: LSTM({a.hidden}, {a.gate_activation} gates) -> Dense({V}) -> softmax, "
          f"float32, backend "
          f"{model._be.name}, RMSprop(lr={a.lr}, rho=0.9, eps=1e-7 outside sqrt), "
          f"batch {a.batch_size}", flush=True)
    gen_rng = np.random.default_rng(a.seed + 1000)
    steps = (N + a.batch_size - 1) // a.batch_size
    t_start = time.perf_counter()
    history = []
    for epoch in range(1, a.epochs + 1):
        if a.time_budget is not None and history:
            used = (time.perf_counter() - t_start) / 60
            per_epoch = used / len(history)
            if used + per_epoch > a.time_budget:
                print(f"stopping: epoch {epoch} would end after the {a.time_budget:.0f} min "
                      f"budget ({used:.1f} min used, {per_epoch:.1f} min/epoch)")
                break
        print(f"\n--- epoch {epoch}/{a.epochs} ({steps} steps)", flush=True)
        order = model._rng.permutation(N)
        total = 0.0
        seen = 0
        te = time.perf_counter()
        for k, s in enumerate(range(0, N, a.batch_size), 1):
            idx = np.sort(order[s:s + a.batch_size])      # sorted: faster gather, same batch
            xb = X[idx].astype(np.float32)                # one batch converted at a time
            yb = y[idx].astype(np.float32)
            loss, grads = model.loss_and_grad(xb, yb)
            model.optimizer.step(grads)
            if not np.isfinite(loss):
                sys.exit(f"error: non-finite loss at epoch {epoch} step {k}")
            total += loss * len(idx)
            seen += len(idx)
            if k == 20:
                dt = time.perf_counter() - te
                print(f"  first 20 steps: {dt:.2f}s ({dt / 20 * 1000:.0f} ms/step) -> "
                      f"epoch estimate {dt / 20 * steps / 60:.1f} min", flush=True)
            if a.log_every and k % a.log_every == 0:
                dt = time.perf_counter() - te
                print(f"  step {k}/{steps}  running loss {total / seen:.4f}  "
                      f"{dt:.0f}s  {seen / dt:.0f} samples/s", flush=True)
        dt = time.perf_counter() - te
        history.append(total / N)
        print(f"epoch {epoch}: loss {total / N:.4f} nats/char   time {dt:.1f}s "
              f"({dt / 60:.1f} min, {N / dt:.0f} samples/s, {dt / steps * 1000:.0f} ms/step)",
              flush=True)
        start = int(gen_rng.integers(0, len(text) - L - 1))
        print(f'----- generating with seed: "{text[start:start + L]}"')
        for temp in (0.2, 0.5, 1.0):
            tg = time.perf_counter()
            s = generate(model, text, chars, L, a.gen_chars, temp, start, gen_rng)
            print(f"----- temperature {temp} ({time.perf_counter() - tg:.1f}s):")
            print(text[start:start + L] + s, flush=True)
    print("\nloss per epoch:", ", ".join(f"{v:.4f}" for v in history))
    print(f"total training+sampling time {(time.perf_counter() - t_start) / 60:.1f} min")
    return history


if __name__ == "__main__":
    main()

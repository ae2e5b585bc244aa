#!/usr/bin/env python
"""WildML GRU tutorial model (:class:`fastrnn.GRUTheano`) on the reddit comments prefix.

* data: ``reddit-comments-2015-08.head1000.csv`` through the tutorial pipeline
  (:func:`fastrnn.text.load_comments`: lowercase, Punkt sentences, NLTK words,
  ``SENTENCE_START ... SENTENCE_END``) -> 1143 sentences, 4524 distinct tokens;
* the last 10% of the sentences are held out (:meth:`Corpus.split`); the vocabulary
  (``--vocab`` most frequent tokens, ``UNKNOWN_TOKEN`` last) is built from the training
  sentences only, so no held-out word is "known" just because it occurs in the held-out
  part (``--vocab-from-all`` uses ``load_comments``' vocabulary of the whole file instead);
* model: two GRU layers (hard-sigmoid gates), hidden/embedding size ``--hidden`` (128);
* training as in the tutorial: one RMSprop step per sentence,
  ``model.sgd_step(x, y, learning_rate=0.001, decay=0.9)`` (eps 1e-6 inside the root),
  sentence order shuffled each epoch (seeded);
* after each epoch: mean loss per word (nats) on train and held-out, time, tokens/s;
* at the end: 3 sentences sampled from ``model.predict`` (until ``SENTENCE_END``,
  at most 30 tokens; the unknown token is redrawn as the tutorial's sampler does).

Vocabulary choice: the file has only 4524 distinct tokens and ~2/3 of them occur once.
The tutorial's 8000 would keep every word, including all singletons, whose rows are
trained on a single occurrence (or never, for words only in the held-out part); 2000
keeps the words seen at least twice or so and maps the rest to ``UNKNOWN_TOKEN``.

Usage::

    python examples/gru_reddit.py                       # 2000 words, hidden 128, 10 epochs
    python examples/gru_reddit.py --epochs 20 --hidden 64 --vocab 8000
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from fastrnn import GRUTheano  # noqa: E402
from fastrnn.text import (SENTENCE_END, SENTENCE_START, UNKNOWN_TOKEN, Vocabulary,  # noqa: E402
                          load_comments)

DEFAULT_CSV = os.path.normpath(os.path.join(REPO, "..", "shared", "data",
                                            "reddit-comments-2015-08",
                                            "reddit-comments-2015-08.head1000.csv"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="?", default=DEFAULT_CSV,
                   help=f"CSV of comments (default: {DEFAULT_CSV})")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2000, help="vocabulary size (incl. unknown)")
    p.add_argument("--vocab-from-all", action="store_true",
                   help="use load_comments' vocabulary of the whole file (train + held-out)")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--decay", type=float, default=0.9)
    p.add_argument("--valid", type=float, default=0.1, help="held-out fraction (last sentences)")
    p.add_argument("--backend", default=None, help="numba, cython or numpy (default: fastrnn's)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float32 is the tutorial's Theano floatX")
    p.add_argument("--no-shuffle", action="store_true", help="tutorial order (no shuffling)")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--n-sentences", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=30)
    a = p.parse_args(argv)
    if a.epochs < 1:
        p.error("--epochs must be >= 1")
    return a


def sample_sentence(model, vocab, rng, max_tokens):
    """Tutorial sampler: draw from ``predict(sentence)[-1]`` until SENTENCE_END."""
    start = vocab.word_to_index[SENTENCE_START]
    end = vocab.word_to_index.get(SENTENCE_END)
    unk = vocab.unknown_index
    ids = [start]
    while len(ids) - 1 < max_tokens:
        p = model.predict(np.array(ids))[-1].astype(np.float64)
        p /= p.sum()
        w = unk
        for _ in range(100):               # the tutorial redraws the unknown token
            w = int(rng.choice(len(p), p=p))
            if w != unk and w != start:
                break
        if w == end:
            break
        ids.append(w)
    words = vocab.decode(ids[1:])
    return " ".join(words), len(words), (len(ids) - 1 < max_tokens)


def known_word_loss(model, X, Y, unk):
    """Mean loss per word over the targets that are not ``UNKNOWN_TOKEN``."""
    tot, n = 0.0, 0
    for x, y in zip(X, Y):
        o = model.predict(x)
        keep = y != unk
        tot -= float(np.log(o[np.arange(len(y))[keep], y[keep]].astype(np.float64)).sum())
        n += int(keep.sum())
    return tot / n


def main(argv=None):
    a = parse_args(argv)
    if not os.path.isfile(a.csv):
        sys.exit(f"error: comments file not found: {a.csv}")
    t0 = time.perf_counter()
    corpus = load_comments(a.csv, vocabulary_size=a.vocab)
    n_types = len(corpus.vocab.frequencies)
    n_all = len(corpus.sentences)
    n_valid = int(round(n_all * a.valid))
    cut = n_all - n_valid
    if a.vocab_from_all:
        vocab = corpus.vocab
        src = "whole file"
    else:
        vocab = Vocabulary.build(corpus.tokens[:cut], a.vocab, UNKNOWN_TOKEN, "words")
        src = "training sentences"
    sents = [vocab.encode(t) for t in corpus.tokens]
    train, valid = sents[:cut], sents[cut:]
    Xtr, Ytr = [s[:-1] for s in train], [s[1:] for s in train]
    Xva, Yva = [s[:-1] for s in valid], [s[1:] for s in valid]
    ntr = sum(len(y) for y in Ytr)
    nva = sum(len(y) for y in Yva)
    unk = vocab.unknown_index
    unk_tr = sum(int((y == unk).sum()) for y in Ytr) / ntr
    unk_va = sum(int((y == unk).sum()) for y in Yva) / nva
    print(f"{n_all} sentences, {n_types} distinct tokens (incl. SENTENCE_START/END) "
          f"[{time.perf_counter() - t0:.1f}s]")
    last = vocab.index_to_word[-2]
    print(f"vocabulary {len(vocab)} (from the {src}); least frequent kept: {last!r} "
          f"({vocab.frequencies[last]} occurrences)")
    print(f"train: {len(train)} sentences, {ntr} target words ({unk_tr:.1%} unknown)")
    print(f"held-out: {len(valid)} sentences, {nva} target words ({unk_va:.1%} unknown)")

    np.random.seed(a.seed)                     # the tutorial draws the weights from np.random
    dtype = np.float32 if a.dtype == "float32" else np.float64
    model = GRUTheano(len(vocab), hidden_dim=a.hidden, bptt_truncate=-1, backend=a.backend,
                      dtype=dtype)
    print(f"GRUTheano: 2 layers, hidden {a.hidden}, {a.dtype}, backend {model._be.name}; "
          f"RMSprop lr {a.lr} decay {a.decay}, one step per sentence", flush=True)
    rng = np.random.default_rng(a.seed)

    te = time.perf_counter()
    l_tr, l_va = model.calculate_loss(Xtr, Ytr), model.calculate_loss(Xva, Yva)
    print(f"epoch  0: train {l_tr:.4f}  held-out {l_va:.4f}  (ln V = {np.log(len(vocab)):.4f}; "
          f"eval {time.perf_counter() - te:.1f}s)", flush=True)
    rows = [(0, l_tr, l_va, None, None)]
    for epoch in range(1, a.epochs + 1):
        order = np.arange(len(train)) if a.no_shuffle else rng.permutation(len(train))
        t1 = time.perf_counter()
        online = 0.0
        for i in order:
            online += model.sgd_step(Xtr[i], Ytr[i], learning_rate=a.lr, decay=a.decay)
        dt = time.perf_counter() - t1
        te = time.perf_counter()
        l_tr, l_va = model.calculate_loss(Xtr, Ytr), model.calculate_loss(Xva, Yva)
        kw = known_word_loss(model, Xva, Yva, unk)
        de = time.perf_counter() - te
        if not (np.isfinite(l_tr) and np.isfinite(l_va)):
            sys.exit(f"error: non-finite loss at epoch {epoch}")
        rows.append((epoch, l_tr, l_va, dt, ntr / dt))
        print(f"epoch {epoch:2d}: train {l_tr:.4f}  held-out {l_va:.4f} (known words only "
              f"{kw:.4f})  "
              f"(online mean during epoch {online / ntr:.4f})  train time {dt:.1f}s  "
              f"{ntr / dt:.0f} tokens/s  eval {de:.1f}s", flush=True)

    best = min(rows[1:], key=lambda r: r[2])
    print(f"\nbest held-out loss {best[2]:.4f} at epoch {best[0]} "
          f"(perplexity {np.exp(best[2]):.1f}); final train {rows[-1][1]:.4f}, "
          f"held-out {rows[-1][2]:.4f}")
    print(f"\n{a.n_sentences} sampled sentences (max {a.max_tokens} tokens):")
    for k in range(a.n_sentences):
        s, n, ended = sample_sentence(model, vocab, rng, a.max_tokens)
        print(f"  {k + 1}. [{n} tokens{'' if ended else ', cut at max'}] {s}")


if __name__ == "__main__":
    main()

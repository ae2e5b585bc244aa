"""Command line: ``fastrnn train | demo | generate | evaluate``.

``fastrnn demo`` (or ``fastrnn train`` without a corpus) trains a small model on the
English text shipped in ``fastrnn/data/`` and prints generated sentences.

User errors (a missing or unreadable file, an empty corpus, bytes that are not UTF-8, a
CSV without the column, a bad option value, a corrupt model or checkpoint) print one line
``fastrnn: error: ...`` on stderr and exit with status 2; a diverged run exits with 3 and
an interrupted one with 130.  ``FASTRNN_DEBUG=1`` shows tracebacks instead.
"""
import argparse
import os
import sys
import time

EXIT_USAGE = 2
EXIT_DIVERGED = 3


class _UserError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (usage is in ``--help``)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(minimum=1):
    def conv(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v
    return conv


def _positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def _fraction(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {s}")
    return v


def _add_backend(p):
    p.add_argument("--backend", choices=["numba", "cython", "numpy"], default=None,
                   help="kernel backend (default: FASTRNN_BACKEND, else the fastest available)")


# Chosen on fastrnn/data/everyday.txt (344 sentences, 3722 words, 379 words seen twice or
# more): 25 epochs take 2-15 s on the shared 2-core machine (load varies) and bring the
# training loss from 6.0 to about 1.8 nats/word; validation (the last 10%, a story of its
# own) levels off near 4.  Full BPTT or evaluating every 2 epochs learned more slowly.
DEMO_DEFAULTS = dict(vocab_size=400, hidden=64, lr=0.03, epochs=25, bptt_truncate=4,
                     valid_fraction=0.1, eval_every=5, samples=5, mode="sentence",
                     truncation="model")
#: Defaults of ``train`` on a corpus (the tutorial's where it has one).
TRAIN_DEFAULTS = dict(vocab_size=8000, hidden=100, lr=0.005, epochs=10, bptt_truncate=4,
                      valid_fraction=0.05, eval_every=1, samples=3, mode="sentence",
                      truncation="model")


def _dflt(key):
    a, b = TRAIN_DEFAULTS[key], DEMO_DEFAULTS[key]
    return f"default {a}" + (f"; {b} for the built-in corpus" if a != b else "")


def build_parser():
    """The ``argparse`` parser of all subcommands."""
    parser = _Parser(prog="fastrnn", description="Train, sample and evaluate RNN language "
                     "models (the WildML tutorial's RNNNumpy/RNNTheano), fast on a CPU.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add_train_options(p):
        g = p.add_argument_group("model")
        g.add_argument("--vocab-size", type=_positive_int(1), default=None,
                       help="vocabulary size N: the N-1 most frequent tokens + UNKNOWN_TOKEN "
                            "(" + _dflt("vocab_size") + "; must be >= 3)")
        g.add_argument("--hidden", type=_positive_int(1), default=None,
                       help="hidden size H (" + _dflt("hidden") + ")")
        g.add_argument("--model", choices=["numpy", "theano"], default="numpy",
                       help="RNNNumpy (window truncation) or RNNTheano (last-k truncation)")
        g.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                       help="parameter dtype (float32 needs --model theano)")
        g.add_argument("--bptt-truncate", type=int, default=None,
                       help="the model's bptt_truncate (" + _dflt("bptt_truncate") + ")")
        g = p.add_argument_group("training")
        g.add_argument("--mode", choices=["sentence", "stream"], default=None,
                       help="per-sentence SGD (the tutorial) or chunked truncated BPTT over "
                            "one stream (" + _dflt("mode") + ")")
        g.add_argument("--bptt", type=_positive_int(1), default=35,
                       help="chunk length in stream mode (default %(default)s)")
        g.add_argument("--truncation", choices=["model", "window", "last", "full"],
                       default=None,
                       help="BPTT in sentence mode: the model's own or another ("
                            + _dflt("truncation") + ")")
        g.add_argument("--lr", type=_positive_float, default=None,
                       help="initial learning rate (" + _dflt("lr") + ")")
        g.add_argument("--clip", type=_positive_float, default=None,
                       help="clip each step's gradient to this global L2 norm (default: no "
                            "clipping, the tutorial's fused step); fixed when resuming")
        g.add_argument("--epochs", type=_positive_int(0), default=None,
                       help="epochs (" + _dflt("epochs") + "; when resuming, the "
                            "checkpoint's)")
        g.add_argument("--eval-every", type=_positive_int(1), default=None,
                       help="evaluate every this many epochs; the rate halves when the loss "
                            "rises (" + _dflt("eval_every") + ")")
        g.add_argument("--valid-fraction", type=_fraction,
                       default=None,
                       help="last fraction of sentences held out for validation "
                            "(" + _dflt("valid_fraction") + ")")
        g.add_argument("--no-shuffle", action="store_true", help="keep the sentence order")
        g.add_argument("--seed", type=int, default=10,
                       help="seed of the initial weights and the shuffling (default %(default)s)")
        g.add_argument("--max-sentences", type=_positive_int(1), default=None,
                       help="use only the first N sentences of the corpus")
        g = p.add_argument_group("output")
        g.add_argument("--out", default=None,
                       help="directory for checkpoint.npz, model.npz and loss.png "
                            "(default runs/<corpus name>)")
        g.add_argument("--checkpoint-every", type=_positive_int(0), default=1000,
                       help="steps between checkpoints, 0 = only at evaluations "
                            "(default %(default)s)")
        g.add_argument("--resume", metavar="CHECKPOINT", default=None,
                       help="continue the run saved in this checkpoint")
        g.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                       help="progress bar (default: only on a terminal)")
        g.add_argument("--samples", type=_positive_int(0), default=None,
                       help="sentences to generate after training (" + _dflt("samples") + ")")
        _add_backend(p)

    p = sub.add_parser("train", help="train a model on a corpus", description="Train a model. "
                       "Without CORPUS, trains on the small English corpus shipped with fastrnn "
                       "(like `fastrnn demo`).")
    p.add_argument("corpus", nargs="?", default=None,
                   help="CSV of comments (text in --column), plain text, one-sentence-per-line "
                        "or character corpus (see --format)")
    p.add_argument("--format", choices=["auto", "csv", "text", "lines", "chars"], default="auto",
                   help="corpus format; auto: csv for *.csv, else text (default %(default)s)")
    p.add_argument("--column", default="0",
                   help="CSV column of the text: index or header name (default 0)")
    p.add_argument("--splitter", choices=["nltk", "punkt"], default="nltk",
                   help="Punkt implementation for sentence splitting (default %(default)s, "
                        "which reproduces nltk.sent_tokenize)")
    add_train_options(p)
    p.set_defaults(func=cmd_train, demo=False)

    p = sub.add_parser("demo", help="train on the built-in English corpus and print samples",
                       description="Train a small model on the English text shipped in "
                                   "fastrnn/data/ (well under a minute) and print samples.")
    add_train_options(p)
    p.set_defaults(func=cmd_train, demo=True, corpus=None, format="text", column="0",
                   splitter="nltk")

    p = sub.add_parser("generate", help="sample sentences from a model file")
    p.add_argument("model", help="model or checkpoint file (.npz) with a vocabulary")
    p.add_argument("-n", "--num", type=_positive_int(1), default=5,
                   help="sentences to generate (default %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divide the logits by this; 0 = greedy (default %(default)s)")
    p.add_argument("--top-k", type=_positive_int(1), default=None,
                   help="sample among the k most probable tokens only")
    p.add_argument("--prefix", default=None, help="text every sentence starts with")
    p.add_argument("--min-length", type=_positive_int(0), default=3,
                   help="minimum words per sentence (default %(default)s)")
    p.add_argument("--max-length", type=_positive_int(1), default=40,
                   help="maximum words per sentence (default %(default)s)")
    p.add_argument("--length", type=_positive_int(1), default=300,
                   help="characters to generate for a character model (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="cross-entropy and perplexity of a model on a corpus")
    p.add_argument("model", help="model or checkpoint file (.npz) with a vocabulary")
    p.add_argument("corpus", help="corpus file, read like the model's training corpus")
    p.add_argument("--format", choices=["auto", "csv", "text", "lines", "chars"], default="auto",
                   help="corpus format (default: the model's)")
    p.add_argument("--column", default="0", help="CSV column (default 0)")
    p.add_argument("--mode", choices=["sentence", "stream"], default=None,
                   help="sentences from a zero state or one stream (default: the model's)")
    p.add_argument("--bptt", type=_positive_int(1), default=None,
                   help="chunk length in stream mode (default: the model's, else 35)")
    p.add_argument("--max-sentences", type=_positive_int(1), default=None)
    _add_backend(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


# ----------------------------------------------------------------------------- helpers

def _column(s):
    return int(s) if s.lstrip("-").isdigit() else s


def _load_corpus(path, fmt, vocab_size, vocab=None, column="0", splitter="nltk",
                 max_sentences=None):
    from . import text

    if path is None:
        c = text.load_text(text.default_corpus_path(), vocab_size, splitter, vocab)
    else:
        c = text.load_corpus(path, fmt, vocab_size, vocab, _column(column), splitter)
    if max_sentences is not None and max_sentences < len(c):
        c = text.Corpus(c.sentences[:max_sentences], c.vocab, None, c.source)
    return c


def _join(words, vocab):
    from .text import join_words

    if vocab.kind == "chars":
        return "".join(words)
    if vocab.kind == "lines":
        return " ".join(words)
    return join_words(words)


def _print_samples(model, vocab, n, rng, file=sys.stdout, **kw):
    from .generate import Sampler, generate_sentence, generate_text

    sampler = Sampler(model, vocab, rng)
    if vocab.kind == "chars":
        print(generate_text(model, vocab, kw.get("length", 300), sampler=sampler,
                            temperature=kw.get("temperature", 1.0), top_k=kw.get("top_k")),
              file=file)
        return
    for _ in range(n):
        words = generate_sentence(model, vocab, sampler=sampler,
                                  min_length=kw.get("min_length", 3),
                                  max_length=kw.get("max_length", 40),
                                  temperature=kw.get("temperature", 1.0),
                                  top_k=kw.get("top_k"), prefix=kw.get("prefix"))
        print("  " + _join(words, vocab), file=file)


# ----------------------------------------------------------------------------- commands

def cmd_train(args):
    """``fastrnn train`` / ``fastrnn demo``: returns the exit status."""
    import numpy as np

    from . import io, text
    from .backends import get_backend
    from .train import Trainer, plot_history
    from .tutorial import RNNNumpy, RNNTheano

    builtin = args.demo or (args.corpus is None and args.resume is None)
    epochs_given = args.epochs is not None
    for key, value in (DEMO_DEFAULTS if builtin else TRAIN_DEFAULTS).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.vocab_size < 3:
        raise _UserError(f"--vocab-size must be at least 3 (two sentence markers and "
                         f"UNKNOWN_TOKEN), got {args.vocab_size}")
    if args.dtype == "float32" and args.model != "theano":
        raise _UserError("--dtype float32 needs --model theano (RNNNumpy is float64)")
    t_start = time.perf_counter()

    resume = args.resume
    if resume is not None and args.clip is not None:
        raise _UserError("--clip cannot be changed when resuming: the run continues with "
                         "its checkpoint's setting")
    if resume is not None:
        loaded = io.load_model(resume)      # clear errors for missing/corrupt files
        cfg = loaded.config
        if loaded.vocab is None or "corpus" not in cfg:
            raise _UserError(f"{resume}: not a fastrnn training checkpoint")
        corpus_path = args.corpus if args.corpus is not None else cfg["corpus"]
        corpus = _load_corpus(corpus_path, cfg.get("format", "auto"), len(loaded.vocab),
                              loaded.vocab, cfg.get("column", "0"), cfg.get("splitter", "nltk"),
                              cfg.get("max_sentences"))
        valid_fraction = cfg.get("valid_fraction", 0.0)
        out = args.out or os.path.dirname(os.path.abspath(resume))
    else:
        corpus_path = args.corpus
        corpus = _load_corpus(corpus_path, args.format, args.vocab_size, None, args.column,
                              args.splitter, args.max_sentences)
        valid_fraction = args.valid_fraction
        name = ("demo" if args.demo else "everyday") if corpus_path is None else \
            os.path.splitext(os.path.basename(corpus_path))[0]
        out = args.out or os.path.join("runs", name)
    be = get_backend(args.backend).name
    if len(corpus) < 2:
        valid_fraction = 0.0
    if valid_fraction > 0:
        train_c, valid_c = corpus.split(valid_fraction)
    else:
        train_c, valid_c = corpus, None
    vocab = corpus.vocab
    os.makedirs(out, exist_ok=True)
    ckpt = resume if resume is not None else os.path.join(out, "checkpoint.npz")
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    plot_path = os.path.join(out, "loss.png")

    last_plot = [-1e9]

    def on_eval(model, seen, loss, final=False):
        # Redrawing costs ~0.2-0.5 s (matplotlib), so during training at most every 20 s.
        now = time.perf_counter()
        if not final and now - last_plot[0] < 20.0:
            return
        last_plot[0] = now
        try:
            plot_history(trainer.history, plot_path,
                         title=f"fastrnn: {os.path.basename(str(corpus.source))}")
        except Exception as exc:          # a plot must never stop training
            print(f"fastrnn: warning: could not save the loss plot: {exc}", file=sys.stderr)

    Xv = valid_c.X if valid_c is not None else None
    yv = valid_c.y if valid_c is not None else None
    if resume is not None:
        trainer = Trainer.resume(resume, train_c.X, train_c.y, Xv, yv, backend=args.backend,
                                 progress=progress, callback=on_eval,
                                 **({"nepoch": args.epochs} if epochs_given else {}))
        model = trainer.model
        print(f"Resuming {resume}: epoch {trainer.epoch}, step {trainer.steps}, "
              f"learning rate {trainer.learning_rate:g}")
    else:
        np.random.seed(args.seed)           # the tutorial's initialisation, reproducibly
        if args.model == "theano":
            model = RNNTheano(len(vocab), args.hidden, bptt_truncate=args.bptt_truncate,
                              dtype=args.dtype, backend=args.backend)
        else:
            model = RNNNumpy(len(vocab), args.hidden, bptt_truncate=args.bptt_truncate,
                             backend=args.backend)
        config = {"corpus": os.path.abspath(corpus_path) if corpus_path else None,
                  "format": "text" if corpus_path is None else args.format,
                  "column": args.column, "splitter": args.splitter,
                  "max_sentences": args.max_sentences, "valid_fraction": valid_fraction,
                  "mode": args.mode, "bptt": args.bptt}
        trainer = Trainer(model, train_c.X, train_c.y, Xv, yv, learning_rate=args.lr,
                          nepoch=args.epochs, evaluate_loss_after=args.eval_every,
                          mode=args.mode, bptt=args.bptt,
                          truncation=None if args.truncation == "model" else args.truncation,
                          shuffle=not args.no_shuffle, seed=args.seed, checkpoint_path=ckpt,
                          checkpoint_every=args.checkpoint_every, vocab=vocab, config=config,
                          progress=progress, callback=on_eval, clip=args.clip)
    print(f"Corpus: {corpus.source}: {len(corpus)} sentences, {corpus.n_tokens} tokens, "
          f"vocabulary {len(vocab)}; train {len(train_c)} / validation "
          f"{len(valid_c) if valid_c is not None else 0} sentences")
    print(f"Model: {type(model).__name__} H={model.hidden_dim} V={len(vocab)}, backend {be}, "
          f"mode {trainer.mode}, {trainer.nepoch} epochs, lr {trainer.learning_rate:g}"
          + (f", gradient clipped to norm {trainer.clip:g}" if trainer.clip else ""))
    sys.stdout.flush()
    try:
        history = trainer.train()
    except KeyboardInterrupt:
        print(f"\nfastrnn: interrupted; resume with: fastrnn train --resume {ckpt}",
              file=sys.stderr)
        return 130
    model_path = io.save_model(os.path.join(out, "model.npz"), model, vocab,
                               config=dict(trainer.config, mode=trainer.mode, bptt=trainer.bptt))
    on_eval(model, None, None, final=True)
    first, last = history[0], history[-1]
    parts = []
    for key, name in (("train_loss", "train"), ("valid_loss", "validation")):
        if key in first and key in last:
            parts.append(f"{name} {first[key]:.4f} -> {last[key]:.4f}")
    if "valid_ppl" in last:
        parts.append(f"validation perplexity {last['valid_ppl']:.2f}")
    print("Loss (nats/word): " + ", ".join(parts)
          + f"; {trainer.tokens_per_second:,.0f} tokens/s in SGD steps; "
          f"{time.perf_counter() - t_start:.1f} s in all")
    print(f"Saved {model_path}, {ckpt} and {plot_path}")
    if args.samples:
        print("Samples:")
        _print_samples(model, vocab, args.samples, np.random.default_rng(args.seed))
    return 0


def cmd_generate(args):
    """``fastrnn generate``: print sampled sentences (or text) from a model file."""
    import numpy as np

    from . import io

    loaded = io.load_model(args.model)
    if loaded.vocab is None:
        raise _UserError(f"{args.model}: the file holds no vocabulary (a tutorial parameter "
                         f"file?); generate needs a model saved by fastrnn")
    if args.temperature < 0:
        raise _UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.min_length > args.max_length:
        raise _UserError(f"--min-length {args.min_length} exceeds --max-length "
                         f"{args.max_length}")
    _print_samples(loaded.model, loaded.vocab, args.num, np.random.default_rng(args.seed),
                   temperature=args.temperature, top_k=args.top_k, prefix=args.prefix,
                   min_length=args.min_length, max_length=args.max_length, length=args.length)
    return 0


def cmd_evaluate(args):
    """``fastrnn evaluate``: cross-entropy and perplexity of a model on a corpus file."""
    from . import io, text
    from .backends import get_backend
    from .train import evaluate

    get_backend(args.backend)
    loaded = io.load_model(args.model, backend=args.backend)
    if loaded.vocab is None:
        raise _UserError(f"{args.model}: the file holds no vocabulary; evaluate needs a "
                         f"model saved by fastrnn")
    cfg = loaded.config             # bptt/mode checked by load_model
    vocab = loaded.vocab
    fmt = args.format
    if fmt == "auto":      # the vocabulary says lines/chars; words: csv or text by extension
        fmt = {"lines": "lines", "chars": "chars"}.get(vocab.kind, "auto")
    else:
        allowed = text.KIND_FORMATS.get(vocab.kind, ())
        if fmt not in allowed:
            # every token would be unknown: the perplexity would mean nothing
            raise _UserError(f"--format {fmt} does not match {args.model}, whose vocabulary "
                             f"holds {vocab.kind}; use --format {' or '.join(allowed)} "
                             f"(or auto)")
    corpus = _load_corpus(args.corpus, fmt, len(vocab), vocab, args.column,
                          cfg.get("splitter", "nltk"), args.max_sentences)
    mode = args.mode or cfg.get("mode") or "sentence"
    bptt = args.bptt or cfg.get("bptt") or 35
    t0 = time.perf_counter()
    r = evaluate(loaded.model, corpus, mode=mode, bptt=bptt, unknown_index=vocab.unknown_index)
    dt = max(time.perf_counter() - t0, 1e-9)
    print(f"{args.corpus}: {r['tokens']} tokens, cross-entropy {r['loss']:.4f} nats/word, "
          f"perplexity {r['perplexity']:.2f}, out-of-vocabulary {r['oov_rate']:.2%} "
          f"({r['oov_tokens']} tokens read as {vocab.unknown_token}); "
          f"{mode} mode, {r['tokens'] / dt:,.0f} tokens/s")
    return 0


# ----------------------------------------------------------------------------- entry point

def main(argv=None):
    """Entry point of the ``fastrnn`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ.get("FASTRNN_DEBUG", "") not in ("", "0"):
        return args.func(args)
    from .backends import BackendUnavailableError
    from .train import TrainingDivergedError

    try:
        return args.func(args)
    except TrainingDivergedError as exc:
        print(f"fastrnn: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (_UserError, BackendUnavailableError, ValueError, TypeError, OSError) as exc:
        msg = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and exc.filename not in msg:
            msg = f"{exc.filename}: {msg}"
        print(f"fastrnn: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastrnn: interrupted", file=sys.stderr)
        return 130

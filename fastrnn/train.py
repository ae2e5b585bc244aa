"""Training loops for the tutorial models, with checkpoints that lose nothing.

Two ways through the data (``mode``):

``"sentence"`` -- the tutorial's loop
    One SGD step per sentence, each from a zero hidden state, with the model's own BPTT
    truncation (``RNNNumpy``: the tutorial's window; ``RNNTheano``: Theano's last-k) or
    ``truncation="full"``.  The sentence order is shuffled every epoch by the trainer's
    own :class:`numpy.random.Generator` (``shuffle=False`` gives the tutorial's fixed order).
``"stream"`` -- chunked truncated BPTT over a continuous stream
    The sentences are joined into one id stream and cut into chunks of ``bptt`` tokens;
    each chunk is one SGD step with full BPTT inside the chunk, starting from the last
    hidden state of the previous chunk, which is carried over *without* gradient -- the
    scheme of pytorch/examples ``word_language_model`` (batch size 1).  The state is reset
    to zero at the start of each epoch.

Every ``evaluate_loss_after`` epochs (and at the end) the mean per-word cross-entropy is
computed on the training set and, if given, the validation set (whose perplexity is
``exp(loss)``).  As in the tutorial, when the evaluated loss is higher than at the previous
evaluation the learning rate is halved; the validation loss is used when there is one.

Checkpoints
-----------
Written every ``checkpoint_every`` steps, after each evaluation and at the end, atomically
(see :func:`fastrnn.io.atomic_write`).  A checkpoint is a model file (it loads with
:func:`fastrnn.io.load_model` and the tutorial's loaders) that also holds: the trainer's
generator state (``bit_generator.state``), epoch, position in the epoch, the epoch's
sentence order, the carried hidden state, the learning rate, the loss history, counters,
a fingerprint of the training data, and the format version.  :meth:`Trainer.resume`
continues the same run: in float64 on one thread, a run killed anywhere and resumed ends
with the same weights as one never interrupted (tested bit for bit).

A NaN or infinite loss stops training with :class:`TrainingDivergedError`; checkpoints are
only written while the parameters are finite, so the last one on disk is good.
"""
import hashlib
import math
import numbers
import os
import sys
import time

import numpy as np

from . import _validate
from . import functional as F
from .io import (FORMAT_VERSION, ModelFileError, _record, _vocab_from_meta, build_model,
                 check_config, check_parameters, make_meta, model_parameters, npz_path,
                 read_npz, remove_stale_temps, write_npz)
from .text import sentences_to_stream


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


MODES = ("sentence", "stream")
#: Where :meth:`Trainer.train` is within an epoch: evaluate, draw the order, take steps.
PHASES = ("eval", "order", "train")


def _pairs_to_sentences(pairs):
    # X = s[:-1], y = s[1:]  =>  s = X + y[-1:]
    return [np.concatenate([x, y[-1:]]) for x, y in pairs]


def _fingerprint(pairs):
    h = hashlib.sha256()
    for x, y in pairs:
        h.update(np.ascontiguousarray(x, dtype=np.int64).tobytes())
        h.update(b"|")
        h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
        h.update(b";")
    return h.hexdigest()


def _chunks(n_stream, bptt):
    """Start offsets of the chunks of a stream of ``n_stream`` ids (the last id is a target)."""
    return range(0, max(n_stream - 1, 0), bptt)


# ----------------------------------------------------------------------------- evaluation

def sentence_loss(model, pairs, ws=None):
    """``(total cross-entropy, number of predicted words)`` over sentences, zero initial state."""
    U, V, W = model_parameters(model)
    be = getattr(model, "backend", None)
    total = 0.0
    n = 0
    for x, y in pairs:
        total += F.loss(U, V, W, x, y, backend=be, ws=ws)
        n += len(y)
    return total, n


def stream_loss(model, stream, bptt=35, ws=None):
    """``(total cross-entropy, tokens)`` over a stream, hidden state carried across chunks."""
    bptt = _validate.positive_int(bptt, "bptt")
    U, V, W = model_parameters(model)
    be = getattr(model, "backend", None)
    h = None
    total = 0.0
    n = 0
    for i in _chunks(len(stream), bptt):
        x = stream[i:min(i + bptt, len(stream) - 1)]
        y = stream[i + 1:i + 1 + len(x)]
        L, h = F.loss(U, V, W, x, y, h0=h, backend=be, ws=ws, return_state=True)
        total += L
        n += len(y)
    return total, n


def evaluate(model, X, y=None, mode="sentence", bptt=35, unknown_index=None):
    """Per-word cross-entropy and perplexity of ``model`` on a corpus.

    Parameters
    ----------
    model : RNNNumpy or RNNTheano
    X : Corpus or list of arrays
        A :class:`fastrnn.text.Corpus`, or the inputs ``X`` (then pass ``y``).
    y : list of arrays, optional
    mode : {"sentence", "stream"}
        Sentences from a zero state (the tutorial's ``calculate_loss``), or one stream with
        the state carried across chunks of ``bptt`` tokens.
    bptt : int
        Chunk length of ``mode="stream"`` (>= 1).
    unknown_index : int, optional
        Id of the vocabulary's unknown token; then the result also reports how many of the
        predicted words (the targets ``y``) are out of the vocabulary.

    Returns
    -------
    dict
        ``loss`` (nats per predicted word), ``perplexity`` (``exp(loss)``), ``tokens``; with
        ``unknown_index`` also ``oov_tokens`` and ``oov_rate`` (their fraction of the
        targets, whatever the mode).
    """
    if y is None:
        X, y = X.X, X.y
    bptt = _validate.positive_int(bptt, "bptt")
    U = model_parameters(model)[0]
    pairs = _validate.corpus(X, y, U.shape[1])
    ws = F.Workspace(U.shape[0], U.shape[1], U.dtype)
    if mode == "sentence":
        total, n = sentence_loss(model, pairs, ws)
    elif mode == "stream":
        total, n = stream_loss(model, sentences_to_stream(_pairs_to_sentences(pairs)), bptt, ws)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    loss = total / n
    out = {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf,
           "tokens": n}
    if unknown_index is not None:
        unk = _validate.positive_int(unknown_index, "unknown_index", minimum=0)
        n_oov = sum(int(np.count_nonzero(ys == unk)) for _, ys in pairs)
        n_targets = sum(len(ys) for _, ys in pairs)
        out["oov_tokens"] = n_oov
        out["oov_rate"] = n_oov / n_targets
    return out


def evaluate_file(model, vocab, path, fmt="auto", mode="sentence", bptt=35, **read_kw):
    """:func:`evaluate` on a corpus file read with the model's vocabulary.

    ``fmt`` and ``read_kw`` go to :func:`fastrnn.text.load_corpus`; words outside the
    vocabulary count as its unknown token, as in training (the result's ``oov_rate``).  A
    format that does not give the vocabulary's kind of tokens is a
    :class:`fastrnn.text.CorpusError`.
    """
    from .text import load_corpus

    if fmt == "auto":
        fmt = {"lines": "lines", "chars": "chars"}.get(vocab.kind, "auto")
    corpus = load_corpus(path, fmt, len(vocab), vocab, **read_kw)
    return evaluate(model, corpus, mode=mode, bptt=bptt, unknown_index=vocab.unknown_index)


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """SGD training of a tutorial model with evaluation, progress and checkpoints.

    Parameters
    ----------
    model : RNNNumpy or RNNTheano
        Trained in place.  Its ``backend`` attribute selects the kernels.
    X_train, y_train : list of int arrays
        Sentences: ``y`` is ``X`` shifted by one (``X = s[:-1]``, ``y = s[1:]``).
    X_valid, y_valid : list of int arrays, optional
        Validation sentences.
    learning_rate : float
        Initial SGD step (the tutorial: 0.005).
    nepoch : int
        Epochs to run in total (a resumed run continues up to this).
    evaluate_loss_after : int
        Evaluate (and possibly halve the learning rate) every this many epochs.
    mode : {"sentence", "stream"}
        See the module notes.
    bptt : int
        Chunk length of ``mode="stream"``.
    truncation : {None, "window", "last", "full"}
        BPTT of ``mode="sentence"``: None keeps the model's own (``bptt_truncate``).
    shuffle : bool
        Shuffle sentences every epoch (``mode="sentence"``).
    seed : int
        Seed of the trainer's :class:`numpy.random.Generator`.
    checkpoint_path : str, optional
        Where to write checkpoints (``.npz`` is appended if missing); None writes none.
        Temporary files that killed writes of this checkpoint left in its directory are
        removed when the trainer is made.
    checkpoint_every : int
        Steps (sentences or chunks) between periodic checkpoints; 0 only at evaluations.
    vocab : Vocabulary, optional
        Stored in checkpoints so they are self-contained model files.
    config : dict, optional
        Extra JSON-able settings stored in checkpoints (e.g. the corpus path and format).
    progress : bool or None
        tqdm progress bar; None shows it only on a terminal.
    verbose : bool
        Print one line per evaluation (to ``log_file``, default stdout).
    callback : callable, optional
        ``callback(model, num_examples_seen, loss)`` after each evaluation, as the tutorial's.
    eval_train : bool
        Also evaluate on the whole training set (costs a forward pass over it).
    clip : float, optional
        Clip the global L2 norm of the step's gradient ``(dU, dV, dW)`` to this value
        before the update (:func:`fastrnn.optim.clip_grad_norm`).  None (the default, and
        the tutorial's) uses the fused step, whose update is folded into the products; with
        clipping the step forms dense gradients first, so it is slower (about 1.5-2x at the
        tutorial's size).  A step whose gradient is not finite updates nothing.
    """

    def __init__(self, model, X_train, y_train, X_valid=None, y_valid=None, *,
                 learning_rate=0.005, nepoch=10, evaluate_loss_after=1, mode="sentence",
                 bptt=35, truncation=None, shuffle=True, seed=0, checkpoint_path=None,
                 checkpoint_every=1000, vocab=None, config=None, progress=None, verbose=True,
                 callback=None, eval_train=True, log_file=None, clip=None):
        self.model = model
        U, V, W = model_parameters(model)
        F.check_params(U, V, W)
        self.n_words = U.shape[1]
        self.pairs = _validate.corpus(X_train, y_train, self.n_words)
        self.valid_pairs = None
        if X_valid is not None and len(X_valid):
            self.valid_pairs = _validate.corpus(X_valid, y_valid, self.n_words)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.bptt = _validate.positive_int(bptt, "bptt")
        if truncation is None:
            self.truncation = ("last" if hasattr(model.U, "get_value") else "window")
            self.bptt_truncate = int(model.bptt_truncate)
        else:
            self.truncation = truncation
            self.bptt_truncate = int(getattr(model, "bptt_truncate", 0))
        _validate.truncation(self.truncation, self.bptt_truncate)
        self.learning_rate = _validate.finite_scalar(learning_rate, "learning_rate", positive=True)
        self.clip = None if clip is None else _validate.finite_scalar(clip, "clip", positive=True)
        self.nepoch = _validate.positive_int(nepoch, "nepoch", minimum=0)
        self.evaluate_loss_after = _validate.positive_int(evaluate_loss_after,
                                                          "evaluate_loss_after")
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        # np.savez (so write_npz) appends .npz: use the name actually written everywhere
        self.checkpoint_path = npz_path(checkpoint_path) if checkpoint_path else None
        self.checkpoint_every = _validate.positive_int(checkpoint_every, "checkpoint_every",
                                                       minimum=0)
        if vocab is not None and len(vocab) != self.n_words:
            raise ValueError(f"vocabulary has {len(vocab)} entries but the model has "
                             f"{self.n_words} words")
        self.vocab = vocab
        self.config = dict(config or {})
        self.progress = progress
        self.verbose = verbose
        self.callback = callback
        self.eval_train = eval_train
        self.log_file = log_file
        self.fingerprint = _fingerprint(self.pairs)
        self._ws = F.Workspace(U.shape[0], U.shape[1], U.dtype)
        if self.checkpoint_path:
            # a process killed inside atomic_write leaves its temporary file behind
            remove_stale_temps(self.checkpoint_path)

        if mode == "stream":
            self.stream = sentences_to_stream(_pairs_to_sentences(self.pairs))
            self.valid_stream = (sentences_to_stream(_pairs_to_sentences(self.valid_pairs))
                                 if self.valid_pairs else None)
            self.n_steps = len(_chunks(len(self.stream), self.bptt))
            self.epoch_tokens = max(len(self.stream) - 1, 0)
        else:
            self.n_steps = len(self.pairs)
            self.epoch_tokens = sum(len(y) for _, y in self.pairs)

        # Training state: everything here goes into a checkpoint.
        self.epoch = 0
        self.position = 0           # steps done in the current epoch
        self.phase = "eval"         # "eval" -> "order" -> "train" -> next epoch
        self.order = None           # sentence order of the current epoch
        self.h = None               # carried hidden state (stream mode)
        self.steps = 0              # SGD steps in total
        self.examples_seen = 0      # sentences (sentence mode) or chunks seen
        self.tokens_seen = 0
        self.history = []           # one dict per evaluation
        self.run_loss = 0.0         # sum of step losses since the last evaluation
        self.run_tokens = 0
        self.elapsed = 0.0          # seconds of train(), over all sessions
        self.train_seconds = 0.0    # seconds of SGD steps only (no evaluation/checkpoints)
        self.finished = False

    # -- state -----------------------------------------------------------------------------

    def state(self):
        """The JSON-able training state (what a checkpoint adds to a model file)."""
        return {
            "mode": self.mode, "bptt": self.bptt, "truncation": self.truncation,
            "bptt_truncate": self.bptt_truncate, "learning_rate": self.learning_rate,
            "nepoch": self.nepoch, "evaluate_loss_after": self.evaluate_loss_after,
            "shuffle": self.shuffle, "seed": self.seed, "checkpoint_every": self.checkpoint_every,
            "eval_train": self.eval_train, "clip": self.clip,
            "rng_state": self.rng.bit_generator.state,
            "epoch": self.epoch, "position": self.position, "phase": self.phase,
            "steps": self.steps, "examples_seen": self.examples_seen,
            "tokens_seen": self.tokens_seen, "history": self.history,
            "run_loss": self.run_loss, "run_tokens": self.run_tokens,
            "elapsed": self._current_elapsed(), "train_seconds": self.train_seconds,
            "finished": self.finished,
            "data_fingerprint": self.fingerprint, "n_train": len(self.pairs),
            "n_valid": len(self.valid_pairs) if self.valid_pairs else 0,
            "has_order": self.order is not None, "has_h": self.h is not None,
        }

    def save_checkpoint(self, path=None):
        """Write a checkpoint (atomically) to ``path`` or ``checkpoint_path``."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path given")
        path = npz_path(path)
        U, V, W = model_parameters(self.model)
        for name, a in (("U", U), ("V", V), ("W", W)):
            if not np.isfinite(a).all():
                raise TrainingDivergedError(
                    f"parameter {name} holds non-finite values at epoch {self.epoch} step "
                    f"{self.steps}; checkpoint not written, the last good one is kept at {path}")
        arrays = {"U": U, "V": V, "W": W}
        if self.order is not None:
            arrays["order"] = self.order
        if self.h is not None:
            arrays["h"] = self.h
        meta = make_meta(self.model, self.vocab, self.config, kind="checkpoint")
        meta["train"] = self.state()
        return write_npz(path, arrays, meta)

    @classmethod
    def resume(cls, path, X_train, y_train, X_valid=None, y_valid=None, backend=None,
               **overrides):
        """Continue the run saved in checkpoint ``path`` on the same data.

        ``overrides`` may change presentation and the run length (``nepoch``,
        ``checkpoint_path``, ``progress``, ``verbose``, ``callback``, ``log_file``,
        ``checkpoint_every``); anything else is taken from the checkpoint.

        Raises
        ------
        ModelFileError
            ``path`` is not a checkpoint, or the data differ from the checkpointed run's.
        """
        path = os.fspath(path)
        arrays, meta = read_npz(path)
        if not meta or "train" not in meta:
            raise ModelFileError(f"{path}: not a fastrnn checkpoint (no training state); "
                                 f"a model file can be trained further, not resumed")
        U, V, W = check_parameters(path, arrays)
        st = meta["train"]
        if not isinstance(st, dict):
            raise ModelFileError(f"{path}: corrupt checkpoint: the 'train' record must be a "
                                 f"JSON object, got {type(st).__name__}")
        try:
            model = build_model(U, V, W, _record(path, meta, "model"), backend)
            vocab = _vocab_from_meta(path, meta, U.shape[1])
            config = check_config(path, _record(path, meta, "config"))
            for k in ("shuffle", "eval_train", "finished", "has_order", "has_h"):
                if not isinstance(st[k], bool):
                    _bad_field(path, k, "true or false", st[k])
            allowed = {"nepoch", "checkpoint_path", "progress", "verbose", "callback",
                       "log_file", "checkpoint_every"}
            bad = set(overrides) - allowed
            if bad:
                raise TypeError(f"cannot override {sorted(bad)} when resuming")
            kw = dict(learning_rate=st["learning_rate"], nepoch=st["nepoch"],
                      evaluate_loss_after=st["evaluate_loss_after"], mode=st["mode"],
                      bptt=st["bptt"], truncation=st["truncation"], shuffle=st["shuffle"],
                      seed=st["seed"], checkpoint_every=st["checkpoint_every"],
                      eval_train=st["eval_train"], checkpoint_path=path, vocab=vocab,
                      config=config, clip=st.get("clip"))
            kw.update(overrides)
            model.bptt_truncate = st["bptt_truncate"]
            tr = cls(model, X_train, y_train, X_valid, y_valid, **kw)
            tr.bptt_truncate = st["bptt_truncate"]
            if tr.fingerprint != st["data_fingerprint"]:
                raise ModelFileError(
                    f"{path}: the training data differ from the checkpointed run's "
                    f"({len(tr.pairs)} sentences given, {st['n_train']} in the checkpoint)")
            n_valid = len(tr.valid_pairs) if tr.valid_pairs else 0
            if n_valid != st["n_valid"]:
                raise ModelFileError(f"{path}: {n_valid} validation sentences given, the "
                                     f"checkpointed run had {st['n_valid']}")
            rng = np.random.Generator(np.random.PCG64())
            try:
                rng.bit_generator.state = st["rng_state"]
            except (TypeError, ValueError, KeyError) as exc:
                if "rng_state" not in st:
                    raise
                _bad_field(path, "rng_state", "a PCG64 generator state", st["rng_state"],
                           f" ({type(exc).__name__}: {exc})")
            tr.rng = rng
            tr._restore_state(path, st, arrays)
        except KeyError as exc:
            raise ModelFileError(f"{path}: checkpoint record lacks {exc}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"{path}: corrupt checkpoint: {exc}") from None
        return tr

    def _restore_state(self, path, st, arrays):
        """Set the training state from checkpoint record ``st`` after checking every field.

        A state that :meth:`train` could not have written (an order that is not a
        permutation of the sentences, a position outside the epoch, an unknown phase,
        negative or non-integer counters, a malformed history, a carried hidden state of
        the wrong shape or non-finite) is a :class:`ModelFileError` naming ``path`` and the
        field, instead of a silently wrong run or an error deep inside :meth:`train`.
        """
        counters = {}
        for k in ("epoch", "steps", "examples_seen", "tokens_seen", "run_tokens"):
            counters[k] = _nonneg_int(path, k, st[k])
        phase = st["phase"]
        if not isinstance(phase, str) or phase not in PHASES:
            _bad_field(path, "phase", f"one of {', '.join(PHASES)}", phase)
        position = _nonneg_int(path, "position", st["position"])
        if position > self.n_steps:
            _bad_field(path, "position", f"between 0 and the epoch's {self.n_steps} steps",
                       position)
        if phase != "train" and position != 0:
            _bad_field(path, "position", f"0 in phase {phase!r}", position)
        floats = {}
        for k, default in (("run_loss", None), ("elapsed", None), ("train_seconds", 0.0)):
            v = st[k] if default is None else st.get(k, default)
            if (isinstance(v, bool) or not isinstance(v, numbers.Real)
                    or not math.isfinite(v) or v < 0):
                _bad_field(path, k, "a finite number >= 0", v)
            floats[k] = float(v)
        history = st["history"]
        if not isinstance(history, list):
            _bad_field(path, "history", "a list of evaluation records", history)
        for i, rec in enumerate(history):
            if not isinstance(rec, dict):
                _bad_field(path, "history", "a list of evaluation records (JSON objects)",
                           rec, f" (entry {i}), got {_got(rec)}")
            for k in ("steps", "examples_seen"):
                v = rec.get(k)
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    _bad_field(path, "history", f"records with an integer {k!r} >= 0", v,
                               f" (entry {i}), got {k}={v!r:.80}")
            for k in ("loss", "train_loss", "valid_loss", "valid_ppl", "avg_step_loss",
                      "learning_rate"):
                v = rec.get(k)
                if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                    _bad_field(path, "history", f"records whose {k!r} is a number or null", v,
                               f" (entry {i}), got {k}={v!r:.80}")

        order = None
        if st["has_order"]:
            if "order" not in arrays:
                _bad_field(path, "order", "an array (the record says has_order)", None,
                           ": the array is missing")
            order = arrays["order"]
            n = len(self.pairs)
            if (order.dtype.kind not in "iu" or order.ndim != 1 or order.shape[0] != n
                    or not np.array_equal(np.sort(order), np.arange(n))):
                what = (f"dtype {order.dtype}" if order.dtype.kind not in "iu"
                        else f"shape {order.shape}" if order.ndim != 1 or order.shape[0] != n
                        else f"values in [{order.min()}, {order.max()}] with "
                             f"{n - len(np.unique(order))} repeat(s)")
                raise ModelFileError(
                    f"{path}: corrupt checkpoint: field 'order' must be a permutation of the "
                    f"{n} sentence indices 0..{n - 1} (an integer array of shape ({n},)), "
                    f"got {what}")
            order = np.ascontiguousarray(order, dtype=np.intp)
        elif self.mode == "sentence" and phase == "train":
            _bad_field(path, "order", "present during an epoch in sentence mode", None,
                       ": the checkpoint holds none (has_order is false)")

        h = None
        H, _ = model_parameters(self.model)[0].shape
        dtype = model_parameters(self.model)[0].dtype
        if st["has_h"]:
            if "h" not in arrays:
                _bad_field(path, "h", "an array (the record says has_h)", None,
                           ": the array is missing")
            h = arrays["h"]
            if h.dtype.kind != "f" or h.shape != (H,):
                raise ModelFileError(
                    f"{path}: corrupt checkpoint: field 'h' (the carried hidden state) must "
                    f"be a float vector of shape ({H},), got dtype {h.dtype} shape {h.shape}")
            with np.errstate(over="ignore"):
                h = np.ascontiguousarray(h, dtype=dtype)
            if not np.isfinite(h).all():
                raise ModelFileError(f"{path}: corrupt checkpoint: field 'h' (the carried "
                                     f"hidden state) holds non-finite values")
        elif self.mode == "stream" and phase == "train" and position > 0:
            _bad_field(path, "h", "present in the middle of a stream epoch", None,
                       ": the checkpoint holds none (has_h is false)")

        for k, v in counters.items():
            setattr(self, k, v)
        self.phase = phase
        self.position = position
        self.run_loss = floats["run_loss"]
        self.elapsed = floats["elapsed"]
        self.train_seconds = floats["train_seconds"]
        self.history = history
        self.finished = st["finished"]
        self.learning_rate = float(st["learning_rate"])
        self.order = order
        self.h = h

    def _current_elapsed(self):
        t0 = getattr(self, "_t_session", None)
        return self.elapsed + (time.perf_counter() - t0 if t0 is not None else 0.0)

    # -- evaluation ------------------------------------------------------------------------

    def _loss_of(self, pairs, stream):
        if self.mode == "stream":
            total, n = stream_loss(self.model, stream, self.bptt, self._ws)
        else:
            total, n = sentence_loss(self.model, pairs, self._ws)
        return total / max(n, 1)

    def evaluate(self):
        """Evaluate now, append to :attr:`history`, halve the rate if the loss rose."""
        rec = {"epoch": self.epoch, "steps": self.steps, "examples_seen": self.examples_seen,
               "tokens_seen": self.tokens_seen, "learning_rate": self.learning_rate}
        rec["avg_step_loss"] = (self.run_loss / self.run_tokens) if self.run_tokens else None
        if self.eval_train:
            rec["train_loss"] = self._loss_of(self.pairs, getattr(self, "stream", None))
        if self.valid_pairs:
            vl = self._loss_of(self.valid_pairs, getattr(self, "valid_stream", None))
            rec["valid_loss"] = vl
            rec["valid_ppl"] = math.exp(vl) if vl < 700 else math.inf
        metric = rec.get("valid_loss", rec.get("train_loss", rec["avg_step_loss"]))
        if metric is not None and not math.isfinite(metric):
            raise TrainingDivergedError(
                f"evaluated loss is {metric} at epoch {self.epoch}; "
                f"{self._kept_msg()}")
        rec["loss"] = metric
        self.run_loss = 0.0
        self.run_tokens = 0
        prev = [h["loss"] for h in self.history if h.get("loss") is not None]
        self.history.append(rec)
        halved = False
        if metric is not None and prev and metric > prev[-1]:
            self.learning_rate *= 0.5
            halved = True
        if self.verbose:
            self._print_eval(rec, halved)
        if self.callback is not None:
            self.callback(self.model, self.examples_seen, metric)
        return rec

    def _print_eval(self, rec, halved):
        parts = [f"Loss after num_examples_seen={rec['examples_seen']} epoch={rec['epoch']}:"]
        if "train_loss" in rec:
            parts.append(f"train {rec['train_loss']:f}")
        if "valid_loss" in rec:
            parts.append(f"valid {rec['valid_loss']:f} (perplexity {rec['valid_ppl']:.2f})")
        if "train_loss" not in rec and "valid_loss" not in rec and rec["avg_step_loss"]:
            parts.append(f"running {rec['avg_step_loss']:f}")
        out = self.log_file or sys.stdout
        print(time.strftime("%Y-%m-%d-%H-%M-%S") + ": " + " ".join(parts), file=out)
        if halved:
            print(f"Setting learning rate to {self.learning_rate:f}", file=out)
        out.flush()

    def _kept_msg(self):
        if self.checkpoint_path and os.path.exists(self.checkpoint_path):
            return f"the last good checkpoint is kept at {self.checkpoint_path}"
        return "no checkpoint was written"

    # -- training --------------------------------------------------------------------------

    def _step(self, i):
        """One SGD step (index ``i`` of the epoch); returns (loss, tokens)."""
        U, V, W = model_parameters(self.model)
        be = getattr(self.model, "backend", None)
        if self.mode == "stream":
            n = len(self.stream)
            start = i * self.bptt
            x = self.stream[start:min(start + self.bptt, n - 1)]
            y = self.stream[start + 1:start + 1 + len(x)]
            trunc, k, h0 = "full", 0, self.h
        else:
            x, y = self.pairs[self.order[i]]
            trunc, k, h0 = self.truncation, self.bptt_truncate, None
        stream = self.mode == "stream"
        if self.clip is None:
            out = F.sgd_step(U, V, W, x, y, self.learning_rate, trunc, k, h0=h0, backend=be,
                             ws=self._ws, return_state=stream)
        else:
            out = self._clipped_step(U, V, W, x, y, trunc, k, h0, be, stream)
        if stream:
            L, self.h = out
        else:
            L = out
        return L, len(y)

    def _clipped_step(self, U, V, W, x, y, trunc, k, h0, be, stream):
        """Gradient, global-norm clipping, then ``p -= lr * g``; nothing is updated when the
        gradient is not finite (the caller then stops on the loss)."""
        from .optim import clip_grad_norm
        res = F.grad(U, V, W, x, y, trunc, k, h0=h0, backend=be, ws=self._ws,
                     return_state=stream)
        L, grads = res[0], {"U": res[1], "V": res[2], "W": res[3]}
        norm = clip_grad_norm(grads, self.clip, error_if_nonfinite=False)
        if math.isfinite(norm) and math.isfinite(L):
            lr = U.dtype.type(self.learning_rate)
            for p, name in ((U, "U"), (V, "V"), (W, "W")):
                g = grads[name]
                g *= lr
                p -= g
        elif math.isfinite(L):
            L = float("nan")                  # a non-finite gradient stops the run too
        return (L, res[4]) if stream else L

    def _new_epoch(self):
        if self.mode == "sentence":
            n = len(self.pairs)
            self.order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        else:
            self.order = None
            self.h = None

    def _bar(self):
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is a dependency, but training must not need it
            return None
        disable = None if self.progress is None else (not self.progress)
        done = 0
        if self.position:
            if self.mode == "stream":
                done = min(self.position * self.bptt, self.epoch_tokens)
            else:
                done = sum(len(self.pairs[j][1]) for j in self.order[:self.position])
        return tqdm(total=self.epoch_tokens, initial=done, unit="tok", unit_scale=True,
                    desc=f"epoch {self.epoch + 1}/{self.nepoch}", disable=disable,
                    leave=False, dynamic_ncols=True, file=sys.stderr)

    def train(self, max_steps=None):
        """Run until ``nepoch`` epochs are done (or ``max_steps`` more steps).

        Returns
        -------
        list of dict
            :attr:`history`: one record per evaluation (``loss`` is the metric used for the
            learning-rate rule; ``train_loss``, ``valid_loss``, ``valid_ppl`` as computed).
        """
        self._t_session = time.perf_counter()
        budget = math.inf if max_steps is None else int(max_steps)
        done_now = 0
        if self.epoch < self.nepoch:
            self.finished = False           # a finished run resumed with more epochs
        try:
            while self.epoch < self.nepoch and done_now < budget:
                if self.phase == "eval":
                    already = bool(self.history) and self.history[-1]["steps"] == self.steps
                    if self.epoch % self.evaluate_loss_after == 0 and not already:
                        self.evaluate()
                    self.phase = "order"
                    if self.checkpoint_path and self.history:
                        self.save_checkpoint()
                if self.phase == "order":
                    self._new_epoch()
                    self.phase = "train"
                bar = self._bar()
                try:
                    last_post = 0.0
                    t_steps = time.perf_counter()
                    while self.position < self.n_steps and done_now < budget:
                        L, ntok = self._step(self.position)
                        if not math.isfinite(L):
                            raise TrainingDivergedError(
                                f"loss is {L} at epoch {self.epoch}, step {self.steps} "
                                f"(learning rate {self.learning_rate:g}); training stopped, "
                                f"{self._kept_msg()}. Try a smaller learning rate.")
                        self.position += 1
                        self.steps += 1
                        done_now += 1
                        self.examples_seen += 1
                        self.tokens_seen += ntok
                        self.run_loss += L
                        self.run_tokens += ntok
                        if bar is not None:
                            bar.update(ntok)
                            now = time.perf_counter()
                            if now - last_post > 0.5:
                                last_post = now
                                bar.set_postfix(loss=f"{self.run_loss / self.run_tokens:.3f}",
                                                lr=f"{self.learning_rate:.2g}", refresh=False)
                        if (self.checkpoint_path and self.checkpoint_every
                                and self.steps % self.checkpoint_every == 0):
                            t_ck = time.perf_counter()
                            self.train_seconds += t_ck - t_steps
                            self.save_checkpoint()
                            t_steps = time.perf_counter()
                finally:
                    self.train_seconds += time.perf_counter() - t_steps
                    if bar is not None:
                        bar.close()
                if self.position >= self.n_steps:
                    self.epoch += 1
                    self.position = 0
                    self.phase = "eval"
            if self.epoch >= self.nepoch and not self.finished:
                if not self.history or self.history[-1]["steps"] != self.steps:
                    self.evaluate()
                self.finished = True
                if self.checkpoint_path:
                    self.save_checkpoint()
        finally:
            self.elapsed = self._current_elapsed()
            self._t_session = None
        return self.history

    @property
    def tokens_per_second(self):
        """Training tokens per second of SGD steps, over all sessions.

        Evaluation, checkpoints and callbacks are not counted; the progress bar's rate
        includes the bar's own overhead only.
        """
        return self.tokens_seen / self.train_seconds if self.train_seconds > 0 else float("nan")


def _bad_field(path, field, expected, got, detail=None):
    """Raise the :class:`ModelFileError` of a checkpoint field that fails its check."""
    tail = detail if detail is not None else f", got {_got(got)}"
    raise ModelFileError(f"{path}: corrupt checkpoint: field {field!r} must be {expected}{tail}")


def _got(v):
    return f"{type(v).__name__} {v!r:.80}"


def _nonneg_int(path, field, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        _bad_field(path, field, "an integer >= 0", v)
    return v


def train_with_sgd(model, X_train, y_train, **kwargs):
    """Functional shortcut: ``Trainer(model, X_train, y_train, **kwargs).train()``."""
    return Trainer(model, X_train, y_train, **kwargs).train()


def plot_history(history, path, title=None):
    """Save a PNG of training and validation loss against examples seen (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .io import atomic_write

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [h["examples_seen"] for h in history]
    for key, label in (("train_loss", "train"), ("valid_loss", "validation"),
                       ("avg_step_loss", "running (during epoch)")):
        pts = [(x, h[key]) for x, h in zip(xs, history) if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("examples seen")
    ax.set_ylabel("cross-entropy (nats per word)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return path


__all__ = ["Trainer", "TrainingDivergedError", "evaluate", "evaluate_file", "plot_history",
           "train_with_sgd",
           "sentence_loss", "stream_loss", "FORMAT_VERSION"]

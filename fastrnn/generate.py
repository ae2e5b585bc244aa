"""Sampling text from a trained model, one RNN step per token.

The tutorial's ``generate_sentence`` re-ran ``forward_propagation`` over the whole sentence
for every new word (quadratic in the length).  Here the hidden state is kept between
tokens, so each token costs one step::

    s <- tanh(U[:, x] + W s)          (H,)
    p  = softmax(V s / temperature)   (V,)

The prefix is fed through the same step once.  Sampling draws from a caller-owned
:class:`numpy.random.Generator`, so a seed reproduces the text.

Differences from the tutorial's sampler: the unknown token is removed from ``p`` and the
rest renormalised, instead of drawing again until a different word comes up (the same
distribution, but it also ends when ``p[unknown]`` is 1); ``SENTENCE_START`` is removed
the same way (an untrained model can otherwise emit it inside a sentence); and the draw
inverts the cumulative distribution at one uniform number rather than calling
``np.random.multinomial``.
"""
import numpy as np

from .io import model_parameters
from .text import SENTENCE_END, SENTENCE_START


class Sampler:
    """Incremental sampler over the parameters of a tutorial model.

    Parameters
    ----------
    model : RNNNumpy or RNNTheano
    vocab : Vocabulary, optional
        Needed for words (prefix strings, sentences); token ids work without.
    rng : numpy.random.Generator or int or None
        Generator (or seed) for the draws.

    The parameters are copied once, so later training of ``model`` does not affect a
    sampler already made.
    """

    def __init__(self, model, vocab=None, rng=None):
        U, V, W = model_parameters(model)
        self.model = model          # the model sampled (its parameters as of now, copied)
        # Copies in the model's dtype: a step reads all of V (6.4 MB in float64 at the
        # tutorial's size), so it is memory-bound and float32 models sample twice as fast.
        self.U = np.array(U, copy=True)
        self.V = np.array(V, copy=True)
        self.W = np.array(W, copy=True)
        self.H, self.n_words = self.U.shape
        if vocab is not None and len(vocab) != self.n_words:
            raise ValueError(f"vocabulary has {len(vocab)} entries but the model has "
                             f"{self.n_words} words")
        self.vocab = vocab
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.reset()

    def reset(self, h=None):
        """Set the hidden state (zeros by default)."""
        dt = self.U.dtype
        self.h = np.zeros(self.H, dt) if h is None else np.array(h, dtype=dt)

    def step(self, token):
        """Feed one token id; returns the logits ``V s`` of the next token, shape ``(V,)``."""
        token = int(token)
        if not 0 <= token < self.n_words:
            raise ValueError(f"token id {token} out of range for vocabulary of {self.n_words}")
        self.h = np.tanh(self.U[:, token] + self.W @ self.h)
        return self.V @ self.h

    def feed(self, tokens):
        """Feed several token ids; returns the logits after the last one."""
        logits = None
        for t in tokens:
            logits = self.step(t)
        if logits is None:
            raise ValueError("cannot feed an empty prefix")
        return logits

    def probabilities(self, logits, temperature=1.0, top_k=None, exclude=()):
        """Next-token distribution from logits, with temperature, top-k and exclusions.

        ``temperature`` 0 gives the arg-max (greedy) distribution.
        """
        z = np.array(logits, dtype=np.float64)      # small (V,), exact softmax in float64
        for e in exclude:
            z[e] = -np.inf
        if temperature < 0 or not np.isfinite(temperature):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        if top_k is not None:
            top_k = int(top_k)
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1, got {top_k}")
            if top_k < z.size:
                kth = np.partition(z, -top_k)[-top_k]
                z[z < kth] = -np.inf
        if temperature == 0:
            p = np.zeros_like(z)
            p[int(np.argmax(z))] = 1.0
            return p
        z = z / temperature
        m = z.max()
        if not np.isfinite(m):
            raise ValueError("no token left to sample from (all excluded)")
        p = np.exp(z - m)
        return p / p.sum()

    def draw(self, p):
        """One id from distribution ``p`` (inverse CDF on a uniform draw)."""
        c = np.cumsum(p)
        i = int(np.searchsorted(c, self.rng.random() * c[-1], side="right"))
        return min(i, p.size - 1)

    def generate(self, prefix, max_new_tokens, temperature=1.0, top_k=None, stop=(),
                 exclude=()):
        """Continue ``prefix`` (token ids) by up to ``max_new_tokens`` sampled ids.

        Stops after emitting a token in ``stop``.  Returns the new ids only.  The hidden
        state starts from zeros.
        """
        self.reset()
        logits = self.feed(prefix)
        out = []
        stop = set(int(s) for s in stop)
        for _ in range(int(max_new_tokens)):
            tok = self.draw(self.probabilities(logits, temperature, top_k, exclude))
            out.append(tok)
            if tok in stop:
                break
            logits = self.step(tok)
        return out


def generate_sentence(model, vocab, rng=None, min_length=0, max_length=100,
                      temperature=1.0, top_k=None, prefix=None, max_tries=100, sampler=None):
    """The tutorial's sentence sampler: from ``SENTENCE_START`` until ``SENTENCE_END``.

    Parameters
    ----------
    model : RNNNumpy or RNNTheano
    vocab : Vocabulary
        With ``SENTENCE_START`` and ``SENTENCE_END`` (a ``<eos>`` vocabulary works too:
        sentences then run from ``<eos>`` to ``<eos>``).
    rng : numpy.random.Generator or int, optional
    min_length, max_length : int
        Words (boundary tokens excluded).  A sentence shorter than ``min_length`` is drawn
        again (the tutorial's loop); one reaching ``max_length`` words without ending is
        drawn again too.
    temperature : float
        Divides the logits; 1 samples the model, < 1 sharpens, 0 is greedy.
    top_k : int, optional
        Sample only among the ``top_k`` most probable tokens.
    prefix : str or list of str, optional
        Words the sentence starts with (lower-cased and word-tokenised if a string).
    max_tries : int
        Redraws allowed before giving up; the last draw is then returned cut at
        ``max_length``.
    sampler : Sampler, optional
        Reuse one (its generator is then used instead of ``rng``).  It must have been made
        from ``model`` (or a model of the same sizes; ``model`` may then be None) and for a
        vocabulary of ``vocab``'s size, else ``ValueError``.

    Returns
    -------
    list of str
        The words, prefix included, boundary tokens excluded.
    """
    sampler = _checked_sampler(model, vocab, rng, sampler)
    if "SENTENCE_START" in vocab:
        start, end = vocab.word_to_index[SENTENCE_START], vocab.word_to_index[SENTENCE_END]
    elif "<eos>" in vocab:
        start = end = vocab.word_to_index["<eos>"]
    else:
        raise ValueError("the vocabulary has neither SENTENCE_START/SENTENCE_END nor <eos>; "
                         "use generate_text for character models")
    if min_length < 0 or max_length < 1 or min_length > max_length:
        raise ValueError(f"need 0 <= min_length <= max_length and max_length >= 1, got "
                         f"min_length={min_length}, max_length={max_length}")
    words = _prefix_words(prefix, vocab)
    prefix_ids = [start] + list(vocab.encode(words))
    unk = vocab.unknown_index
    # UNKNOWN_TOKEN is redrawn (the tutorial); SENTENCE_START cannot occur inside a sentence
    # (it is never a training target in sentence mode), so it is excluded too.
    exclude = tuple(t for t in {unk, start} if t != end)
    budget = max_length - len(words) + 1
    new = []
    for _ in range(max(1, int(max_tries))):
        new = sampler.generate(prefix_ids, max(budget, 1), temperature, top_k,
                               stop=(end,), exclude=exclude)
        ended = bool(new) and new[-1] == end
        body = new[:-1] if ended else new
        n = len(words) + len(body)
        if ended and min_length <= n <= max_length:
            return words + vocab.decode(body)
    body = new[:-1] if new and new[-1] == end else new
    return (words + vocab.decode(body))[:max_length]


def _checked_sampler(model, vocab, rng, sampler):
    """``sampler``, after checking it samples ``model`` over ``vocab``; or a new one."""
    if sampler is None:
        if model is None:
            raise ValueError("pass a model or a sampler")
        return Sampler(model, vocab, rng)
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a Sampler, got {type(sampler).__name__}")
    if model is not None and model is not getattr(sampler, "model", None):
        H, n_words = model_parameters(model)[0].shape
        if (H, n_words) != (sampler.H, sampler.n_words):
            raise ValueError(
                f"the sampler was made from a model with hidden size {sampler.H} and "
                f"{sampler.n_words} words, but the model passed has hidden size {H} and "
                f"{n_words} words; pass the sampler's own model (or no sampler)")
    if len(vocab) != sampler.n_words:
        raise ValueError(f"vocabulary has {len(vocab)} entries but the sampler's model has "
                         f"{sampler.n_words} words")
    if sampler.vocab is not None and sampler.vocab is not vocab and sampler.vocab != vocab:
        raise ValueError(f"the sampler was made with a different vocabulary ({sampler.vocab!r}) "
                         f"than the one passed ({vocab!r})")
    return sampler


def _prefix_words(prefix, vocab):
    if prefix is None or prefix == "":
        return []
    if isinstance(prefix, str):
        if vocab.kind == "lines":
            return prefix.split()
        from .text import word_tokenize

        return word_tokenize(prefix.lower())
    return [str(w) for w in prefix]


def generate_text(model, vocab, length=200, prefix="\n", rng=None, temperature=1.0,
                  top_k=None, sampler=None):
    """Sample ``length`` tokens after ``prefix`` and join them (character models).

    Returns the prefix followed by the new text.  For word vocabularies the tokens are
    joined by spaces.  A ``sampler`` is checked as in :func:`generate_sentence`.
    """
    sampler = _checked_sampler(model, vocab, rng, sampler)
    if vocab.kind == "chars":
        toks = list(prefix) or ["\n"]
        sep = ""
    else:
        toks = _prefix_words(prefix, vocab) or [vocab.index_to_word[0]]
        sep = " "
    ids = vocab.encode(toks)
    unk = vocab.unknown_index
    new = sampler.generate(ids, length, temperature, top_k, exclude=(unk,))
    return sep.join(toks + vocab.decode(new))

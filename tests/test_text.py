"""Text pipeline: readers, tokenisation, vocabulary, and the tutorial's published counts."""
import itertools
import os

import numpy as np
import pytest

from fastrnn import text as T


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(p)


def test_tutorial_sentence_tokens_split_the_final_period():
    # word_tokenize runs Punkt first, so "." before SENTENCE_END is a token of its own.
    toks = T.tutorial_sentence_tokens("i don't like rain.")
    assert toks == ["SENTENCE_START", "i", "do", "n't", "like", "rain", ".", "SENTENCE_END"]


def test_csv_pipeline_lowercases_splits_and_wraps(tmp_path):
    p = _write(tmp_path, "c.csv", 'body\n"Hello there. How are you?"\n"Second, comment!"\n')
    c = T.load_comments(p, vocabulary_size=100)
    assert [len(s) for s in c.tokens] == [5, 6, 6]
    assert c.tokens[0] == ["SENTENCE_START", "hello", "there", ".", "SENTENCE_END"]
    assert c.tokens[2][-3:] == ["comment", "!", "SENTENCE_END"]
    for x, y, s in zip(c.X, c.y, c.sentences):
        assert np.array_equal(x, s[:-1]) and np.array_equal(y, s[1:])


def test_vocabulary_keeps_most_frequent_and_unknown_last():
    sents = [["a", "b", "a", "c"], ["a", "b", "d"]]
    v = T.Vocabulary.build(sents, 3)
    assert v.index_to_word == ["a", "b", "UNKNOWN_TOKEN"]
    assert v.unknown_index == 2
    assert list(v.encode(["a", "c", "zzz", "b"])) == [0, 2, 2, 1]
    assert v.decode([1, 0]) == ["b", "a"]
    # ties keep first appearance order
    v = T.Vocabulary.build([["x", "y", "z"]], 3)
    assert v.index_to_word == ["x", "y", "UNKNOWN_TOKEN"]
    with pytest.raises(ValueError, match="out of range"):
        v.decode([3])


def test_vocabulary_json_roundtrip(tmp_path):
    v = T.Vocabulary.build([["é", "b", "é", "ünï"]], 10)
    p = str(tmp_path / "v.json")
    v.save(p)
    assert T.Vocabulary.load(p) == v
    assert T.Vocabulary.from_json(v.to_json()).word_to_index == v.word_to_index


def test_vocabulary_size_below_three_is_an_error():
    with pytest.raises(T.CorpusError, match="at least 3"):
        T.Vocabulary.build([["a", "b"]], 2)


def test_non_utf8_names_file_and_offset(tmp_path):
    p = _write(tmp_path, "bad.txt", b"good text\nmore \xff here")
    with pytest.raises(T.CorpusError) as e:
        T.load_text(p)
    msg = str(e.value)
    assert "bad.txt" in msg and "offset 15" in msg and "0xff" in msg


def test_empty_corpus_is_an_error(tmp_path):
    for name, data in [("e.txt", ""), ("w.txt", "  \n\n  \n")]:
        with pytest.raises(T.CorpusError, match="empty"):
            T.load_text(_write(tmp_path, name, data))
    with pytest.raises(T.CorpusError, match="empty"):
        T.load_comments(_write(tmp_path, "e.csv", ""))
    with pytest.raises(T.CorpusError, match="empty"):
        T.load_comments(_write(tmp_path, "h.csv", "body\n"))


def test_csv_missing_column(tmp_path):
    p = _write(tmp_path, "c.csv", "body\nhello.\n")
    with pytest.raises(T.CorpusError, match="no column 3"):
        T.load_comments(p, column=3)
    with pytest.raises(T.CorpusError, match="no column named 'text'"):
        T.load_comments(p, column="text")
    p = _write(tmp_path, "d.csv", "id,body\n1,hello.\n2\n")
    with pytest.raises(T.CorpusError, match="line 3"):
        T.load_comments(p, column="body")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        T.load_text(str(tmp_path / "nope.txt"))


def test_lines_reader_ptb_style(tmp_path):
    p = _write(tmp_path, "p.txt", " the cat <unk> sat \n\n a dog ran \n")
    c = T.load_lines(p)
    assert c.vocab.unknown_token == "<unk>"
    assert c.vocab.index_to_word[-1] == "<unk>"
    assert c.tokens[0] == ["<eos>", "the", "cat", "<unk>", "sat", "<eos>"]
    words = c.vocab.decode(c.stream())
    assert words == ["<eos>", "the", "cat", "<unk>", "sat", "<eos>", "a", "dog", "ran", "<eos>"]


def test_chars_reader_stream_is_the_text(tmp_path):
    text = "ab c\n\nxyz\n"
    c = T.load_chars(_write(tmp_path, "c.txt", text))
    assert c.vocab.kind == "chars"
    assert "".join(c.vocab.decode(c.stream())) == "\n" + text


def test_default_corpus_is_shipped_and_reasonable():
    c = T.load_text(T.default_corpus_path(), 10000)
    assert len(c) >= 250
    assert len(c.vocab) > 300


def test_split_holds_out_the_tail():
    c = T.load_text(T.default_corpus_path(), 500)
    tr, va = c.split(0.1)
    assert len(tr) + len(va) == len(c)
    assert np.array_equal(va.sentences[-1], c.sentences[-1])


def test_join_words():
    assert T.join_words(["i", "do", "n't", "know", ",", "really", "."]) == "i don't know, really."


# ----------------------------------------------------------------------------- real data

@pytest.mark.shared
def test_reddit_head_reproduces_the_tutorial_counts(shared_data):
    """1143 sentences and 4524 distinct tokens (START/END included), see SOURCE.md."""
    p = os.path.join(shared_data, "reddit-comments-2015-08", "reddit-comments-2015-08.head1000.csv")
    assert len(T.read_csv_comments(p)) == 212
    c = T.load_comments(p, vocabulary_size=8000)
    assert len(c) == 1143
    assert len(set(itertools.chain.from_iterable(c.tokens))) == 4524
    freq = c.vocab.frequencies
    assert (freq["."], freq["the"], freq[","]) == (1010, 762, 736)
    # the tutorial's example sentence, the first of the file
    assert c.tokens[0] == ["SENTENCE_START", "i", "joined", "a", "new", "league", "this", "year",
                           "and", "they", "have", "different", "scoring", "rules", "than", "i",
                           "'m", "used", "to", ".", "SENTENCE_END"]
    # the punkt package's own tokenizer merges a run of lone periods: 13 sentences fewer
    c2 = T.load_comments(p, vocabulary_size=8000, splitter="punkt")
    assert len(c2) == 1130
    assert len(set(itertools.chain.from_iterable(c2.tokens))) == 4524


@pytest.mark.shared
def test_ptb_valid_counts(shared_data):
    c = T.load_lines(os.path.join(shared_data, "ptb", "ptb.valid.txt"))
    assert len(c) == 3370
    assert len(c.stream()) - 1 == 73760          # words + one <eos> per line
    assert "<unk>" in c.vocab and "N" in c.vocab


@pytest.mark.shared
def test_tinyshakespeare_chars(shared_data):
    c = T.load_chars(os.path.join(shared_data, "tinyshakespeare", "input.txt"))
    assert len(c.vocab) == 65 + 1                  # 65 characters + <unk>
    assert len(c.stream()) == 1115394 + 1


def test_vocabulary_kind_and_record_are_checked():
    """Regression: a vocabulary kind outside words/lines/chars, malformed records."""
    from fastrnn.text import KINDS, Vocabulary

    assert set(KINDS) == {"words", "lines", "chars"}
    with pytest.raises(ValueError, match="kind.*words.*got 5"):
        Vocabulary(["a", "UNKNOWN_TOKEN"], kind=5)
    good = {"index_to_word": ["a", "UNKNOWN_TOKEN"], "unknown_token": "UNKNOWN_TOKEN",
            "kind": "words"}
    assert Vocabulary.from_dict(good).kind == "words"
    for bad in ([1, 2], dict(good, kind="zz"), dict(good, index_to_word="aU"),
                dict(good, index_to_word=["a", 3, "UNKNOWN_TOKEN"]), dict(good, unknown_token=3)):
        with pytest.raises(ValueError):
            Vocabulary.from_dict(bad)


def test_load_corpus_rejects_a_format_foreign_to_the_vocabulary(tmp_path):
    """Regression: reading text as chars with a word vocabulary makes every token unknown."""
    from fastrnn.text import CorpusError, load_corpus, load_text

    p = tmp_path / "t.txt"
    p.write_text("The cat sat. The dog ran home.\n")
    c = load_text(str(p), 20)
    for fmt in ("chars", "lines"):
        with pytest.raises(CorpusError, match=f"{fmt}.*words"):
            load_corpus(str(p), fmt, 20, c.vocab)
    assert len(load_corpus(str(p), "text", 20, c.vocab)) == len(c)
    assert len(load_corpus(str(p), "auto", 20, c.vocab)) == len(c)

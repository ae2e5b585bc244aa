"""Generation: incremental steps equal the forward pass; seeded, tempered, top-k sampling."""
import numpy as np
import pytest

from fastrnn import RNNNumpy, RNNTheano
from fastrnn.generate import Sampler, generate_sentence, generate_text
from fastrnn.text import Vocabulary

WORDS = ["SENTENCE_START", "SENTENCE_END", "the", "cat", "sat", "on", "a", "mat",
         "UNKNOWN_TOKEN"]


def _setup(cls=RNNNumpy, seed=4, H=6, **kw):
    np.random.seed(seed)
    vocab = Vocabulary(WORDS)
    model = cls(len(vocab), H, **kw)
    return model, vocab


@pytest.mark.parametrize("cls", [RNNNumpy, RNNTheano])
def test_incremental_steps_equal_forward_propagation(cls):
    model, vocab = _setup(cls)
    x = [0, 2, 3, 4, 5, 6, 7]
    o = model.forward_propagation(x)
    o = o[0] if isinstance(o, list) else o
    sp = Sampler(model, vocab)
    for t, tok in enumerate(x):
        p = sp.probabilities(sp.step(tok))
        np.testing.assert_allclose(p, o[t], rtol=1e-10, atol=1e-12)


def test_seeded_generation_is_reproducible():
    model, vocab = _setup()
    a = [generate_sentence(model, vocab, rng=np.random.default_rng(7)) for _ in range(3)]
    b = [generate_sentence(model, vocab, rng=np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    sp1 = Sampler(model, vocab, 5)
    sp2 = Sampler(model, vocab, 5)
    s1 = [generate_sentence(model, vocab, sampler=sp1) for _ in range(5)]
    s2 = [generate_sentence(model, vocab, sampler=sp2) for _ in range(5)]
    assert s1 == s2 and len({tuple(s) for s in s1}) > 1


def test_unknown_never_generated_and_lengths_respected():
    model, vocab = _setup()
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = generate_sentence(model, vocab, rng=rng, min_length=2, max_length=6)
        assert "UNKNOWN_TOKEN" not in s and "SENTENCE_START" not in s
        assert 2 <= len(s) <= 6


def test_unknown_is_excluded_even_when_it_dominates():
    model, vocab = _setup()
    model.V[vocab.unknown_index] += 50.0         # p(unknown) ~ 1: rejection would never end
    s = generate_sentence(model, vocab, rng=np.random.default_rng(1), max_length=5)
    assert "UNKNOWN_TOKEN" not in s


def test_greedy_and_top1_are_deterministic_and_agree():
    model, vocab = _setup()
    g = [generate_sentence(model, vocab, rng=np.random.default_rng(i), temperature=0,
                           max_length=8, max_tries=1) for i in range(3)]
    k = [generate_sentence(model, vocab, rng=np.random.default_rng(i + 10), top_k=1,
                           max_length=8, max_tries=1) for i in range(3)]
    assert g[0] == g[1] == g[2] == k[0] == k[1] == k[2]


def test_top_k_restricts_support_and_temperature_sharpens():
    model, vocab = _setup()
    sp = Sampler(model, vocab, 0)
    logits = sp.step(0)
    p = sp.probabilities(logits, top_k=3)
    assert np.count_nonzero(p) == 3
    assert set(np.flatnonzero(p)) == set(np.argsort(logits)[-3:])
    ent = [-(q[q > 0] * np.log(q[q > 0])).sum() for q in
           (sp.probabilities(logits, t) for t in (2.0, 1.0, 0.5))]
    assert ent[0] > ent[1] > ent[2]
    with pytest.raises(ValueError, match="top_k"):
        sp.probabilities(logits, top_k=0)


def test_sampling_follows_the_distribution():
    model, vocab = _setup()
    sp = Sampler(model, vocab, 123)
    p = sp.probabilities(sp.step(0))
    draws = np.bincount([sp.draw(p) for _ in range(20000)], minlength=p.size) / 20000
    np.testing.assert_allclose(draws, p, atol=0.015)


def test_prefix_is_kept_and_fed_once():
    model, vocab = _setup()
    s = generate_sentence(model, vocab, rng=np.random.default_rng(3), prefix="The cat")
    assert s[:2] == ["the", "cat"]
    s = generate_sentence(model, vocab, rng=np.random.default_rng(3), prefix=["a", "mat"])
    assert s[:2] == ["a", "mat"]


def test_generate_text_for_characters():
    chars = ["\n", "a", "b", " ", "<unk>"]
    vocab = Vocabulary(chars, "<unk>", kind="chars")
    np.random.seed(0)
    model = RNNNumpy(len(vocab), 4)
    out = generate_text(model, vocab, length=30, prefix="ab", rng=np.random.default_rng(0))
    assert out.startswith("ab") and len(out) == 32 and "<unk>" not in out


def test_vocab_size_mismatch():
    model, _ = _setup()
    with pytest.raises(ValueError, match="vocabulary"):
        Sampler(model, Vocabulary(["a", "UNKNOWN_TOKEN"]))


def test_sampler_must_match_model_and_vocabulary():
    """Regression: a passed sampler is checked against ``model`` and ``vocab``."""
    model, vocab = _setup()
    sp = Sampler(model, vocab, 0)
    other = RNNNumpy(len(vocab) + 3, 6)
    with pytest.raises(ValueError, match="sampler.*model"):
        generate_sentence(other, vocab, sampler=sp)
    with pytest.raises(ValueError, match="sampler.*model"):
        generate_sentence(RNNNumpy(len(vocab), 7), vocab, sampler=sp)     # hidden size
    with pytest.raises(ValueError, match="sampler.*model"):
        generate_text(other, vocab, length=5, sampler=sp)
    small = Vocabulary(["SENTENCE_START", "SENTENCE_END", "a", "UNKNOWN_TOKEN"])
    bare = Sampler(model, None, 0)                  # made without a vocabulary
    with pytest.raises(ValueError, match="vocabulary has 4 entries.*sampler.*9"):
        generate_sentence(model, small, sampler=bare)
    with pytest.raises(ValueError, match="vocabulary has 4 entries.*sampler.*9"):
        generate_text(model, small, length=5, sampler=bare)
    renamed = Vocabulary(WORDS[:-2] + ["rug", "UNKNOWN_TOKEN"])
    with pytest.raises(ValueError, match="different vocabulary"):
        generate_sentence(model, renamed, sampler=sp)
    # consistent uses work: the same model, a bare sampler, an equal copy of the model
    np.random.seed(4)
    twin = RNNNumpy(len(vocab), 6)
    for m, smp in ((model, sp), (model, bare), (twin, sp), (None, sp)):
        s = generate_sentence(m, vocab, sampler=smp, min_length=1, max_length=5)
        assert isinstance(s, list) and 1 <= len(s) <= 5

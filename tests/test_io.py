"""Model files: tutorial layout both ways, fastrnn metadata, clear errors, atomic writes."""
import os
import zipfile

import numpy as np
import pytest

from fastrnn import RNNNumpy, RNNTheano, io
from fastrnn import reference
from fastrnn.text import Vocabulary


def _model(V=12, H=5, seed=3, cls=RNNNumpy, **kw):
    np.random.seed(seed)
    return cls(V, H, **kw)


def test_tutorial_save_load_numpy_roundtrip(tmp_path, capsys):
    m = _model()
    path = io.save_model_parameters_numpy(str(tmp_path / "rnn-numpy"), m)
    assert path.endswith(".npz") and os.path.exists(path)     # np.savez appends .npz
    with np.load(path) as f:                                  # the tutorial's reader
        assert sorted(f.files) == ["U", "V", "W"]
    m2 = _model(V=3, H=2, seed=9)
    io.load_model_parameters_numpy(path, m2)
    assert "hidden_dim=5 word_dim=12" in capsys.readouterr().out
    assert (m2.hidden_dim, m2.word_dim) == (5, 12)
    for a, b in zip((m.U, m.V, m.W), (m2.U, m2.V, m2.W)):
        assert np.array_equal(a, b)


def test_tutorial_save_load_theano_roundtrip(tmp_path):
    m = _model(cls=RNNTheano, dtype=np.float32)
    path = io.save_model_parameters_theano(str(tmp_path / "t.npz"), m)
    m2 = _model(V=3, H=2, cls=RNNTheano, dtype=np.float32)
    io.load_model_parameters_theano(path, m2)
    assert m2.U.get_value().dtype == np.float32
    assert np.array_equal(m2.V.get_value(), m.V.get_value())


def test_file_written_like_the_tutorial_loads(tmp_path):
    m = _model()
    p = str(tmp_path / "tut.npz")
    np.savez(p, U=m.U, V=m.V, W=m.W)                          # exactly what the tutorial wrote
    loaded = io.load_model(p)
    assert loaded.vocab is None and loaded.config == {}
    assert isinstance(loaded.model, RNNNumpy)
    assert np.array_equal(loaded.model.W, m.W)


def test_save_model_carries_vocab_and_config(tmp_path):
    vocab = Vocabulary(["SENTENCE_START", "SENTENCE_END", "a", "b", "UNKNOWN_TOKEN"])
    m = _model(V=5, H=3, cls=RNNTheano, bptt_truncate=7)
    p = io.save_model(str(tmp_path / "m.npz"), m, vocab, config={"lr": 0.01, "corpus": "x"})
    model, v, cfg = io.load_model(p)
    assert isinstance(model, RNNTheano) and model.bptt_truncate == 7
    assert v == vocab and cfg == {"lr": 0.01, "corpus": "x"}
    assert np.array_equal(model.U.get_value(), m.U.get_value())
    with np.load(p) as f:                                     # still the tutorial's keys
        assert {"U", "V", "W"} <= set(f.files)
    with pytest.raises(ValueError, match="word_dim"):
        io.save_model(str(tmp_path / "bad.npz"), _model(V=6), vocab)


def test_load_does_not_consume_the_global_rng(tmp_path):
    p = io.save_model(str(tmp_path / "m.npz"), _model(V=50, H=8))
    np.random.seed(1)
    io.load_model(p)
    a = np.random.random()
    np.random.seed(1)
    assert np.random.random() == a


# ----------------------------------------------------------------------------- bad files

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        io.load_model(str(tmp_path / "nothere.npz"))


def test_truncated_file(tmp_path):
    p = io.save_model(str(tmp_path / "m.npz"), _model(V=200, H=20))
    data = open(p, "rb").read()
    for cut in (0, 10, len(data) // 2, len(data) - 30):
        q = tmp_path / f"cut{cut}.npz"
        q.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.npz"):
            io.load_model(str(q))


def test_foreign_files(tmp_path):
    z = tmp_path / "random.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("hello.txt", "not numpy")
    with pytest.raises(ValueError, match="random.zip.*missing array"):
        io.load_model(str(z))
    t = tmp_path / "text.npz"
    t.write_text("just text")
    with pytest.raises(ValueError, match="text.npz.*not a NumPy .npz"):
        io.load_model(str(t))
    p = str(tmp_path / "noU.npz")
    np.savez(p, V=np.zeros((3, 2)), W=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="noU.npz.*missing array.*U"):
        io.load_model(p)


def test_shape_inconsistent_and_bad_values(tmp_path):
    p = str(tmp_path / "shape.npz")
    np.savez(p, U=np.zeros((4, 10)), V=np.zeros((10, 3)), W=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"shape.npz.*V must be \(10, 4\), got \(10, 3\)"):
        io.load_model(p)
    p = str(tmp_path / "w.npz")
    np.savez(p, U=np.zeros((4, 10)), V=np.zeros((10, 4)), W=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="W must be"):
        io.load_model(p)
    p = str(tmp_path / "nan.npz")
    U = np.zeros((4, 10))
    U[1, 1] = np.nan
    np.savez(p, U=U, V=np.zeros((10, 4)), W=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="nan.npz.*non-finite"):
        io.load_model(p)
    p = str(tmp_path / "int.npz")
    np.savez(p, U=np.zeros((4, 10), int), V=np.zeros((10, 4)), W=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="dtype int"):
        io.load_model(p)
    p = str(tmp_path / "obj.npz")
    np.savez(p, U=np.array([None, 1], dtype=object), V=np.zeros((10, 4)), W=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="obj.npz"):
        io.load_model(p)                        # object arrays need pickle: refused


def test_corrupt_metadata(tmp_path):
    p = str(tmp_path / "meta.npz")
    np.savez(p, U=np.zeros((2, 3)), V=np.zeros((3, 2)), W=np.zeros((2, 2)),
             __fastrnn__=np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(ValueError, match="meta.npz.*corrupt"):
        io.load_model(p)


# ----------------------------------------------------------------------------- atomic writes

def test_atomic_write_leaves_no_temp_and_keeps_old_file_on_failure(tmp_path):
    p = str(tmp_path / "f.bin")
    io.atomic_write(p, lambda f: f.write(b"old"))

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(p, boom)
    assert open(p, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


# ----------------------------------------------------------------------------- pretrained

@pytest.mark.shared
def test_pretrained_tutorial_model_loads_and_gives_reference_outputs(shared_data):
    p = os.path.join(shared_data, "rnnlm-pretrained", "trained-model-theano.npz")
    model, vocab, cfg = io.load_model(p)
    assert isinstance(model, RNNTheano) and vocab is None
    U, V, W = (model.U.get_value(), model.V.get_value(), model.W.get_value())
    assert U.dtype == np.float32 and U.shape == (50, 8000) and V.shape == (8000, 50)
    with np.load(p) as f:                        # bit-identical to the stored arrays
        assert np.array_equal(f["U"], U) and np.array_equal(f["W"], W)

    x = np.array([0, 17, 4, 1999, 7999, 3, 250])  # synthetic ids (the vocabulary is absent)
    o = model.forward_propagation(x)
    # the reference backend, called directly
    s = np.zeros((len(x) + 1, 50), np.float32)
    o_ref = np.empty((len(x), 8000), np.float32)
    reference.rnn_forward(U, V, W, x, s, o_ref)
    # and the equations by hand, in float64
    h = np.zeros(50)
    o_hand = []
    for t in x:
        h = np.tanh(U[:, t].astype(np.float64) + W.astype(np.float64) @ h)
        z = V.astype(np.float64) @ h
        e = np.exp(z - z.max())
        o_hand.append(e / e.sum())
    o_hand = np.array(o_hand)
    np.testing.assert_allclose(o, o_ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(o, o_hand, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(o.sum(axis=1), 1.0, rtol=1e-5)

    # the tutorial's loader on a fresh RNNTheano
    m2 = RNNTheano(10, 5, dtype=np.float32)
    io.load_model_parameters_theano(p, m2)
    assert (m2.hidden_dim, m2.word_dim) == (50, 8000)
    np.testing.assert_array_equal(m2.forward_propagation(x), o)


@pytest.mark.shared
def test_small_pretrained_model_loads(shared_data):
    p = os.path.join(shared_data, "rnnlm-pretrained", "small_rnn_model.npz")
    m = RNNNumpy(3, 2)
    io.load_model_parameters_numpy(p, m)
    assert m.U.shape == (20, 20)


def test_atomic_write_gives_normal_permissions(tmp_path):
    p = str(tmp_path / "m.npz")
    io.save_model(p, _model())
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~mask
    os.chmod(p, 0o640)
    io.save_model(p, _model())
    assert os.stat(p).st_mode & 0o777 == 0o640

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


# ----------------------------------------------------------------------------- review fixes

def test_non_npy_member_is_a_model_file_error(tmp_path):
    """Regression: a member that is not a .npy array (np.load hands back bytes)."""
    raw = str(tmp_path / "raw.npz")
    with zipfile.ZipFile(raw, "w") as z:
        for k in "UVW":
            z.writestr(f"{k}.npy", "garbage")
    with pytest.raises(io.ModelFileError, match=r"raw.npz.*member 'U.npy'.*not a NumPy"):
        io.load_model(raw)
    with pytest.raises(io.ModelFileError, match=r"raw.npz.*member 'U.npy'"):
        io.read_npz(raw)
    # a good model file with one corrupted member
    good = io.save_model(str(tmp_path / "good.npz"), _model())
    bad = str(tmp_path / "onebad.npz")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, b"\x00\x01junk" if name == "W.npy" else zin.read(name))
    with pytest.raises(io.ModelFileError, match=r"onebad.npz.*member 'W.npy'"):
        io.load_model(bad)
    meta = str(tmp_path / "metabytes.npz")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(meta, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, b"{}" if name == "__fastrnn__.npy" else zin.read(name))
    with pytest.raises(io.ModelFileError, match=r"metabytes.npz.*__fastrnn__"):
        io.load_model(meta)


def _with_meta(tmp_path, name, meta):
    import json
    p = str(tmp_path / name)
    raw = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(p, U=np.zeros((2, 3)), V=np.zeros((3, 2)), W=np.zeros((2, 2)), __fastrnn__=raw)
    return p


def test_corrupt_meta_records_name_the_file(tmp_path):
    """Regression: config/vocab/model records of the wrong JSON type, a bad vocabulary kind."""
    vocab = {"index_to_word": ["a", "b", "UNKNOWN_TOKEN"], "unknown_token": "UNKNOWN_TOKEN",
             "kind": "words"}
    base = {"format_version": 1, "kind": "model", "model": None, "vocab": vocab, "config": {}}
    p = _with_meta(tmp_path, "ok.npz", base)
    assert io.load_model(p).vocab.kind == "words"
    for name, change, what in [
            ("cfglist.npz", {"config": [1, 2]}, "config"),
            ("cfgstr.npz", {"config": "x"}, "config"),
            ("vocablist.npz", {"vocab": [1, 2]}, "vocab"),
            ("modellist.npz", {"model": [1, 2]}, "model"),
            ("kind5.npz", {"vocab": dict(vocab, kind=5)}, "kind"),
            ("kindzz.npz", {"vocab": dict(vocab, kind="zz")}, "kind"),
            ("itw.npz", {"vocab": dict(vocab, index_to_word="ab")}, "index_to_word"),
            ("ver.npz", {"format_version": True}, "format_version")]:
        p = _with_meta(tmp_path, name, dict(base, **change))
        with pytest.raises(io.ModelFileError, match=f"{name}.*{what}"):
            io.load_model(p)


def test_bad_stored_bptt_or_mode_is_a_model_file_error(tmp_path):
    """Regression: a model file whose config holds a bptt/mode that evaluate cannot use."""
    m = _model()
    for name, cfg, what in [("neg.npz", {"bptt": -1}, "bptt"), ("zero.npz", {"bptt": 0}, "bptt"),
                            ("str.npz", {"bptt": "5"}, "bptt"),
                            ("mode.npz", {"mode": "zzz"}, "mode")]:
        p = io.save_model(str(tmp_path / name), m, config=cfg)
        with pytest.raises(io.ModelFileError, match=f"{name}.*{what}"):
            io.load_model(p)
    p = io.save_model(str(tmp_path / "fine.npz"), m, config={"bptt": 7, "mode": "stream"})
    assert io.load_model(p).config == {"bptt": 7, "mode": "stream"}


def test_remove_stale_temps_only_touches_its_own_pattern(tmp_path):
    """Regression: only ``.<name>.XXXXXXXX.tmp`` beside the file goes."""
    own = [".ck.npz.a1b2c3_d.tmp", ".ck.npz.zzzzzzzz.tmp"]
    keep = ["ck.npz", ".ck.npz.tmp", ".ck.npz.abc.tmp", ".other.npz.a1b2c3d4.tmp",
            ".ck.npz.a1b2c3d4.tmp.bak", "x.ck.npz.a1b2c3d4.tmp", ".ck.npzz.a1b2c3d4.tmp"]
    for n in own + keep:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / ".ck.npz.dirdirdi.tmp").mkdir()
    removed = io.remove_stale_temps(str(tmp_path / "ck.npz"))
    assert sorted(os.path.basename(r) for r in removed) == sorted(own)
    assert sorted(os.listdir(tmp_path)) == sorted(keep + [".ck.npz.dirdirdi.tmp"])
    # the pattern matches what atomic_write really creates
    before = set(os.listdir(tmp_path))
    during = []
    io.atomic_write(str(tmp_path / "ck.npz"), lambda f: during.extend(os.listdir(tmp_path)))
    (tmp_name,) = set(during) - before
    assert io._temp_name_re(str(tmp_path / "ck.npz")).match(tmp_name)

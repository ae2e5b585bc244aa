"""The command line, run as ``python -m fastrnn`` in a subprocess."""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastrnn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))

TEXT = ("The cat sat on the mat. The dog sat on the rug. A cat and a dog ran home.\n\n"
        "It is cold today. It was warm yesterday. The sun is out and the sky is blue.\n")


def run(args, cwd, timeout=180):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("FASTRNN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_user_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fastrnn: error:") or err.startswith("fastrnn train: error:") \
        or "error:" in err, err
    for f in fragments:
        assert f in err, (f, err)


@pytest.mark.parametrize("cmd", [[], ["train"], ["demo"], ["generate"], ["evaluate"]])
def test_help(tmp_path, cmd):
    r = run([*cmd, "--help"], tmp_path)
    assert r.returncode == 0 and "usage: fastrnn" in r.stdout
    if cmd == ["train"]:
        assert "--backend" in r.stdout and "--resume" in r.stdout and "--mode" in r.stdout


def test_missing_corpus(tmp_path):
    assert_user_error(run(["train", "nope.csv"], tmp_path), "nope.csv", "no such file")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    assert_user_error(run(["train", "empty.txt"], tmp_path), "empty.txt", "empty")


def test_non_utf8_corpus(tmp_path):
    (tmp_path / "latin.txt").write_bytes("Caf\xe9 au lait.".encode("latin-1"))
    assert_user_error(run(["train", "latin.txt"], tmp_path), "latin.txt", "offset 3", "0xe9")


def test_csv_without_the_column(tmp_path):
    (tmp_path / "c.csv").write_text("body\nhello there.\n")
    assert_user_error(run(["train", "c.csv", "--column", "2"], tmp_path), "c.csv", "no column 2")
    assert_user_error(run(["train", "c.csv", "--column", "text"], tmp_path), "no column named")


def test_vocabulary_size_below_three(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    assert_user_error(run(["train", "t.txt", "--vocab-size", "2"], tmp_path), "at least 3")


def test_bad_option_value_is_one_line(tmp_path):
    assert_user_error(run(["train", "--lr", "-1"], tmp_path), "--lr")


def test_corrupt_resume_file(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    assert_user_error(run(["train", "t.txt", "--resume", "bad.npz"], tmp_path), "bad.npz")
    with zipfile.ZipFile(tmp_path / "foreign.npz", "w") as z:
        z.writestr("x.txt", "hi")
    assert_user_error(run(["train", "t.txt", "--resume", "foreign.npz"], tmp_path),
                      "foreign.npz", "missing array")
    assert_user_error(run(["train", "--resume", "missing.npz"], tmp_path), "missing.npz")


def test_generate_errors(tmp_path):
    assert_user_error(run(["generate", "missing.npz"], tmp_path), "missing.npz")
    np.savez(tmp_path / "tut.npz", U=np.zeros((2, 5)), V=np.zeros((5, 2)), W=np.zeros((2, 2)))
    assert_user_error(run(["generate", "tut.npz"], tmp_path), "no vocabulary")


def test_train_generate_evaluate_resume_end_to_end(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT * 3)
    out = tmp_path / "run"
    r = run(["train", "t.txt", "--epochs", "3", "--hidden", "8", "--vocab-size", "30",
             "--out", str(out), "--lr", "0.05", "--samples", "2", "--checkpoint-every", "5",
             "--backend", "numpy"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Loss (nats/word): train" in r.stdout and "Samples:" in r.stdout
    for f in ("model.npz", "checkpoint.npz", "loss.png"):
        assert (out / f).exists(), f
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"

    r = run(["generate", str(out / "model.npz"), "-n", "3", "--seed", "1"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 3
    r2 = run(["generate", str(out / "model.npz"), "-n", "3", "--seed", "1"], tmp_path)
    assert r2.stdout == r.stdout

    r = run(["evaluate", str(out / "model.npz"), "t.txt"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "perplexity" in r.stdout

    r = run(["train", "--resume", str(out / "checkpoint.npz"), "--epochs", "4",
             "--samples", "0"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Resuming" in r.stdout and "epoch 3" in r.stdout


@pytest.mark.parametrize("cmd", [["demo"], ["train"]])
def test_builtin_corpus_runs(tmp_path, cmd):
    r = run([*cmd, "--epochs", "2", "--out", str(tmp_path / "d"), "--samples", "2"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "everyday.txt" in r.stdout and "vocabulary 400" in r.stdout   # demo settings
    assert "Samples:" in r.stdout and len(r.stdout.split("Samples:")[1].split("\n")) >= 3
    assert (tmp_path / "d" / "loss.png").exists()


# ----------------------------------------------------------------------------- review fixes

def _words_model(tmp_path, name="words_model.npz", config=None):
    from fastrnn import RNNNumpy, io
    from fastrnn.text import load_text

    (tmp_path / "ok.txt").write_text(TEXT)
    c = load_text(str(tmp_path / "ok.txt"), 20)
    np.random.seed(0)
    m = RNNNumpy(len(c.vocab), 6)
    return io.save_model(str(tmp_path / name), m, c.vocab, config=config)


def test_evaluate_non_npy_members_is_one_line(tmp_path):
    """Regression: a model file whose members are not .npy arrays gives one error line."""
    (tmp_path / "x.txt").write_text(TEXT)
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as z:
        for k in "UVW":
            z.writestr(f"{k}.npy", "garbage")
    assert_user_error(run(["evaluate", "raw.npz", "x.txt"], tmp_path), "raw.npz", "U.npy")
    assert_user_error(run(["generate", "raw.npz"], tmp_path), "raw.npz", "U.npy")


def test_evaluate_bad_stored_bptt_is_one_line(tmp_path):
    """Regression: config {"bptt": -1} in the model file."""
    _words_model(tmp_path, "neg.npz", {"bptt": -1, "mode": "stream"})
    assert_user_error(run(["evaluate", "neg.npz", "ok.txt"], tmp_path), "neg.npz", "bptt")
    _words_model(tmp_path, "good.npz", {"bptt": 4, "mode": "stream"})
    r = run(["evaluate", "good.npz", "ok.txt"], tmp_path)
    assert r.returncode == 0 and "stream mode" in r.stdout, r.stderr


def test_evaluate_rejects_a_format_foreign_to_the_vocabulary(tmp_path):
    """Regression: --format chars on a word model; the OOV rate is reported."""
    _words_model(tmp_path)
    for fmt in ("chars", "lines"):
        assert_user_error(run(["evaluate", "words_model.npz", "ok.txt", "--format", fmt],
                              tmp_path), f"--format {fmt}", "words")
    r = run(["evaluate", "words_model.npz", "ok.txt", "--format", "text"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "perplexity" in r.stdout and "out-of-vocabulary" in r.stdout


def test_resume_with_a_corrupt_training_state_is_one_line(tmp_path):
    """Regression: a corrupt training state in --resume gives one error line."""
    from fastrnn import io

    (tmp_path / "t.txt").write_text(TEXT * 2)
    r = run(["train", "t.txt", "--epochs", "2", "--hidden", "4", "--vocab-size", "20",
             "--out", "run", "--samples", "0", "--backend", "numpy"], tmp_path)
    assert r.returncode == 0, r.stderr
    arrays, meta = io.read_npz(str(tmp_path / "run" / "checkpoint.npz"))
    meta["train"]["phase"] = "zzz"
    io.write_npz(str(tmp_path / "bad.npz"), arrays, meta)
    assert_user_error(run(["train", "--resume", "bad.npz", "--samples", "0"], tmp_path),
                      "bad.npz", "phase")


def test_train_with_clip_and_resume_keeps_it(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT * 3)
    out = tmp_path / "run"
    r = run(["train", "t.txt", "--epochs", "2", "--hidden", "8", "--vocab-size", "30",
             "--out", str(out), "--lr", "0.05", "--samples", "0", "--clip", "0.5",
             "--backend", "numpy"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "gradient clipped to norm 0.5" in r.stdout
    ck = str(out / "checkpoint.npz")
    r = run(["train", "--resume", ck, "--epochs", "3", "--samples", "0"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "gradient clipped to norm 0.5" in r.stdout
    r = run(["train", "--resume", ck, "--clip", "1.0"], tmp_path)
    assert_user_error(r, "--clip cannot be changed when resuming")
    r = run(["train", "t.txt", "--clip", "0"], tmp_path)
    assert r.returncode == 2 and "--clip" in r.stderr and "Traceback" not in r.stderr

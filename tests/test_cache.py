"""The on-disk kernel cache is invalidated when any kernel source changes."""
import os

import fastrnn._kernels as K


def test_stale_cache_files_are_removed_when_sources_change(tmp_path, monkeypatch):
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    monkeypatch.setattr(K, "_cache_dir", lambda: str(cache))
    digest = {"value": "a"}
    monkeypatch.setattr(K, "_sources_digest", lambda: digest["value"])

    K._check_cache()                                  # first run: stamp written
    (cache / "rnn.rnn_sgd-1.py311.nbi").write_text("index")
    (cache / "rnn.rnn_sgd-1.py311.1.nbc").write_text("code")
    K._check_cache()                                  # same sources: cache kept
    assert sorted(os.listdir(cache)) == ["fastrnn-kernels.stamp", "rnn.rnn_sgd-1.py311.1.nbc",
                                         "rnn.rnn_sgd-1.py311.nbi"]
    digest["value"] = "b"                             # a callee module was edited
    K._check_cache()
    assert os.listdir(cache) == ["fastrnn-kernels.stamp"]
    assert (cache / "fastrnn-kernels.stamp").read_text().strip() == "b"


def test_digest_covers_every_kernel_module():
    import glob
    here = os.path.dirname(K.__file__)
    assert len(glob.glob(os.path.join(here, "*.py"))) >= 6   # rnn, blas, softmax, common, cells
    assert len(K._sources_digest()) == 64

"""Model files: the tutorial's ``.npz`` layout, plus vocabulary and configuration.

A model file is a NumPy ``.npz`` archive with the tutorial's keys ``U (H, V)``,
``V (V, H)``, ``W (H, H)``, so files written by the tutorial's
``save_model_parameters_numpy/theano`` load here and files written here load in the
tutorial.  fastrnn adds one more member, ``__fastrnn__``: a ``uint8`` array holding UTF-8
JSON with the format version, the model class and configuration, and the vocabulary.
Checkpoints (:mod:`fastrnn.train`) add their training state to the same record and a few
arrays (``h`` the carried hidden state, ``order`` the epoch's sentence order).  Nothing is
pickled: every file is read with ``allow_pickle=False``.

Every write is atomic: the archive is written to a temporary file in the destination
directory, flushed and fsynced, renamed over the destination with :func:`os.replace`,
and the directory is fsynced, so a crash leaves either the old file or the new one.

Reading checks the file and names it in every error: missing (:class:`FileNotFoundError`),
not an ``.npz`` archive, truncated, lacking ``U``/``V``/``W``, arrays of the wrong
dimension, dtype or mutually inconsistent shapes, non-finite values
(:class:`ModelFileError`, a :class:`ValueError`).
"""
import json
import numbers
import os
import re
import tempfile
import warnings
import zipfile

import numpy as np

from .text import Vocabulary
from .tutorial import RNNNumpy, RNNTheano

FORMAT_VERSION = 1
META_KEY = "__fastrnn__"


class ModelFileError(ValueError):
    """A model or checkpoint file is unreadable or inconsistent."""


# ----------------------------------------------------------------------------- atomic write

def _fsync_dir(dirname):
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:           # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777        # keep an existing file's mode
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write(path, write):
    """Write a file atomically: ``write(fileobj)`` fills a temporary file that replaces ``path``.

    The temporary file lives in the same directory (so :func:`os.replace` is a rename on one
    file system) and is removed if ``write`` raises.
    """
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=dirname, prefix=_TEMP_PREFIX.format(os.path.basename(path)),
                               suffix=_TEMP_SUFFIX)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dirname)
    return path


# Temporary files of atomic_write: ".<name>.<8 random characters>.tmp" (tempfile.mkstemp).
_TEMP_PREFIX = ".{}."
_TEMP_SUFFIX = ".tmp"


def _temp_name_re(path):
    """Regular expression matching the base names of :func:`atomic_write`'s temporaries for
    ``path`` (``tempfile`` draws 8 characters from ``[a-z0-9_]``)."""
    base = os.path.basename(os.fspath(path))
    return re.compile(re.escape(_TEMP_PREFIX.format(base)) + r"[a-z0-9_]{8}"
                      + re.escape(_TEMP_SUFFIX) + r"\Z")


def remove_stale_temps(path):
    """Remove temporary files left by :func:`atomic_write` calls on ``path`` that never
    finished (the process was killed mid-write).

    Only regular files in ``path``'s directory whose names match the temporary-file pattern
    of exactly this ``path`` are removed.  Call it only when no other process is writing
    ``path``.  Returns the paths removed; errors (a file already gone, no permission) are
    ignored.
    """
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    pattern = _temp_name_re(path)
    removed = []
    try:
        names = os.listdir(dirname)
    except OSError:
        return removed
    for name in names:
        if not pattern.match(name):
            continue
        full = os.path.join(dirname, name)
        try:
            if os.path.isfile(full) and not os.path.islink(full):
                os.unlink(full)
                removed.append(full)
        except OSError:
            pass
    return removed


def npz_path(path):
    """``path`` with ``.npz`` appended if it lacks it, as :func:`numpy.savez` does."""
    # np.savez appends ".npz" to a file name without it; the tutorial relied on that.
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


_npz_path = npz_path        # the former private name


def write_npz(path, arrays, meta=None):
    """Atomically write ``arrays`` (and the JSON record ``meta``) as an uncompressed ``.npz``.

    Returns the path written (``.npz`` appended if missing, as ``np.savez`` does).
    """
    path = npz_path(path)
    arrays = dict(arrays)
    if meta is not None:
        # allow_nan: a perplexity can overflow to inf (written as Infinity, read back by json)
        raw = json.dumps(meta, ensure_ascii=False, allow_nan=True).encode("utf-8")
        arrays[META_KEY] = np.frombuffer(raw, dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


# ----------------------------------------------------------------------------- reading

def read_npz(path):
    """Read every array of an ``.npz`` file and its fastrnn record, checking the container.

    Returns
    -------
    arrays : dict of str to ndarray
    meta : dict or None
        The ``__fastrnn__`` JSON record, None for a plain tutorial file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, expected a .npz model file")
    if not zipfile.is_zipfile(path):
        size = os.path.getsize(path)
        what = "empty" if size == 0 else "not a zip archive (truncated or not a model file)"
        raise ModelFileError(f"{path}: not a NumPy .npz model file: {what}")
    arrays = {}
    not_arrays = []
    try:
        with warnings.catch_warnings():
            # Files written on Python 2 (the tutorial's) need extra header parsing; NumPy
            # warns each time, though they load fine.
            warnings.filterwarnings("ignore", message=".*created on Python 2.*")
            with np.load(path, allow_pickle=False) as npz:
                zf = getattr(npz, "zip", None)       # NpzFile's ZipFile (names with .npy)
                members = set(zf.namelist()) if zf is not None else set()
                for key in npz.files:
                    arrays[key] = value = npz[key]
                    if not isinstance(value, np.ndarray):
                        # np.load returns the raw bytes of a member without the .npy magic
                        not_arrays.append(key + ".npy" if key + ".npy" in members else key)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: unreadable .npz file (truncated or corrupt?): "
                             f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # zlib.error and friends from a damaged member
        raise ModelFileError(f"{path}: unreadable .npz file: {type(exc).__name__}: {exc}") from None
    if not_arrays:
        msg = f"{path}: member {not_arrays[0]!r} is not a NumPy .npy array"
        if len(not_arrays) > 1:
            msg += f" (nor are {', '.join(repr(n) for n in not_arrays[1:])})"
        missing = [k for k in ("U", "V", "W")
                   if not isinstance(arrays.get(k), np.ndarray)
                   and not any(n in (k, k + ".npy") for n in not_arrays)]
        if missing == ["U", "V", "W"]:
            msg += " (not an RNN model file: missing array(s) U, V, W)"
        else:
            msg += " (corrupt model file?)"
        raise ModelFileError(msg)
    meta = None
    if META_KEY in arrays:
        raw = arrays.pop(META_KEY)
        try:
            meta = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path}: the {META_KEY} record is corrupt: {exc}") from None
        version = meta.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ModelFileError(f"{path}: the {META_KEY} record has no valid format_version "
                                 f"(expected an integer >= 1, got {version!r:.40})")
        if version > FORMAT_VERSION:
            raise ModelFileError(f"{path}: format version {version} is newer than this fastrnn "
                                 f"reads ({FORMAT_VERSION}); upgrade fastrnn")
    return arrays, meta


def check_parameters(path, arrays):
    """Check and return ``U, V, W`` from a dict of arrays read from ``path``."""
    missing = [k for k in ("U", "V", "W") if k not in arrays]
    if missing:
        have = sorted(k for k in arrays)
        raise ModelFileError(f"{path}: not an RNN model file: missing array(s) "
                             f"{', '.join(missing)} (found: {have or 'none'})")
    U, V, W = arrays["U"], arrays["V"], arrays["W"]
    for name, a in (("U", U), ("V", V), ("W", W)):
        if not isinstance(a, np.ndarray):
            raise ModelFileError(f"{path}: {name} is {type(a).__name__}, expected a NumPy "
                                 f"array")
        if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
            raise ModelFileError(f"{path}: array {name} has dtype {a.dtype}, expected float32 "
                                 f"or float64")
        if a.ndim != 2:
            raise ModelFileError(f"{path}: array {name} has shape {a.shape}, expected 2-D")
    H, Vn = U.shape
    if V.shape != (Vn, H):
        raise ModelFileError(f"{path}: inconsistent shapes: U is {U.shape} so V must be "
                             f"{(Vn, H)}, got {V.shape}")
    if W.shape != (H, H):
        raise ModelFileError(f"{path}: inconsistent shapes: U is {U.shape} so W must be "
                             f"{(H, H)}, got {W.shape}")
    if H < 1 or Vn < 1:
        raise ModelFileError(f"{path}: empty parameter arrays (U is {U.shape})")
    for name, a in (("U", U), ("V", V), ("W", W)):
        if not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise ModelFileError(f"{path}: array {name} holds {bad} non-finite value(s)")
    return U, V, W


# ----------------------------------------------------------------------------- model access

def model_parameters(model):
    """The live ``(U, V, W)`` arrays of an :class:`RNNNumpy` or :class:`RNNTheano`.

    For ``RNNTheano`` these are the shared variables' own arrays (``borrow=True``), so
    updating them in place updates the model.
    """
    U = model.U
    if hasattr(U, "get_value"):
        return (model.U.get_value(borrow=True), model.V.get_value(borrow=True),
                model.W.get_value(borrow=True))
    return model.U, model.V, model.W


def model_config(model):
    """Constructor arguments of a tutorial model, as a JSON-able dict."""
    U = model_parameters(model)[0]
    return {"model_class": type(model).__name__, "word_dim": int(U.shape[1]),
            "hidden_dim": int(U.shape[0]), "bptt_truncate": int(model.bptt_truncate),
            "dtype": str(U.dtype)}


def build_model(U, V, W, model_config=None, backend=None):
    """A tutorial model holding ``U, V, W`` (copies), of the class named in ``model_config``.

    Without a config (a plain tutorial file) float32 parameters give an
    :class:`RNNTheano` (Theano's floatX was float32) and float64 an :class:`RNNNumpy`,
    both with the tutorial's ``bptt_truncate=4``.
    """
    cfg = dict(model_config or {})
    cls_name = cfg.get("model_class") or ("RNNTheano" if U.dtype == np.float32 else "RNNNumpy")
    bptt = int(cfg.get("bptt_truncate", 4))
    H, Vn = U.shape
    # Construct from a throw-away tiny draw so the global NumPy RNG is not consumed for a
    # full-size initialisation that is immediately overwritten.
    state = np.random.get_state()
    try:
        if cls_name == "RNNTheano":
            model = RNNTheano(1, 1, bptt_truncate=bptt, dtype=U.dtype, backend=backend)
        elif cls_name == "RNNNumpy":
            model = RNNNumpy(1, 1, bptt_truncate=bptt, backend=backend)
        else:
            raise ValueError(f"unknown model class {cls_name!r}")
    finally:
        np.random.set_state(state)
    model.word_dim, model.hidden_dim = Vn, H
    if cls_name == "RNNTheano":
        model.U.set_value(U)
        model.V.set_value(V)
        model.W.set_value(W)
    else:
        model.U, model.V, model.W = (np.array(U, copy=True), np.array(V, copy=True),
                                     np.array(W, copy=True))
    return model


# ----------------------------------------------------------------------------- tutorial API

def save_model_parameters_numpy(outfile, model):
    """The tutorial's saver: ``U``, ``V``, ``W`` of an :class:`RNNNumpy` in an ``.npz`` file.

    Atomic; ``.npz`` is appended to a name without it, as ``np.savez`` does.
    """
    U, V, W = model_parameters(model)
    path = write_npz(outfile, {"U": U, "V": V, "W": W})
    print(f"Saved model parameters to {path}.")
    return path


def save_model_parameters_theano(outfile, model):
    """The tutorial's saver for :class:`RNNTheano` (same file layout)."""
    return save_model_parameters_numpy(outfile, model)


def load_model_parameters_numpy(path, model):
    """The tutorial's loader: set ``model.U/V/W`` (and its dimensions) from a file."""
    U, V, W = check_parameters(path, read_npz(path)[0])
    model.hidden_dim = U.shape[0]
    model.word_dim = U.shape[1]
    model.U = U
    model.V = V
    model.W = W
    print(f"Loaded model parameters from {path}. hidden_dim={U.shape[0]} word_dim={U.shape[1]}")
    return model


def load_model_parameters_theano(path, model):
    """The tutorial's loader for :class:`RNNTheano`: ``set_value`` on the shared arrays."""
    U, V, W = check_parameters(path, read_npz(path)[0])
    model.hidden_dim = U.shape[0]
    model.word_dim = U.shape[1]
    model.U.set_value(U)
    model.V.set_value(V)
    model.W.set_value(W)
    print(f"Loaded model parameters from {path}. hidden_dim={U.shape[0]} word_dim={U.shape[1]}")
    return model


# ----------------------------------------------------------------------------- fastrnn files

class LoadedModel(tuple):
    """``(model, vocab, config)`` as returned by :func:`load_model`; also by attribute."""

    __slots__ = ()

    def __new__(cls, model, vocab, config):
        return tuple.__new__(cls, (model, vocab, config))

    model = property(lambda self: self[0])
    vocab = property(lambda self: self[1])
    config = property(lambda self: self[2])


def make_meta(model, vocab=None, config=None, kind="model"):
    """The ``__fastrnn__`` record of a model file: format version, kind, model, vocab, config."""
    return {"format_version": FORMAT_VERSION, "kind": kind, "model": model_config(model),
            "vocab": vocab.to_dict() if vocab is not None else None,
            "config": dict(config or {})}


def save_model(path, model, vocab=None, config=None):
    """Save a model with its vocabulary and configuration (atomic).

    Parameters
    ----------
    path : str or path-like
        ``.npz`` is appended if missing.
    model : RNNNumpy or RNNTheano
    vocab : Vocabulary, optional
        Must have ``model.word_dim`` entries.
    config : dict, optional
        Any JSON-able settings (training options, the corpus format...).

    Returns
    -------
    str
        The path written.  The file also loads with the tutorial's loaders.
    """
    U, V, W = model_parameters(model)
    if vocab is not None and len(vocab) != U.shape[1]:
        raise ValueError(f"vocabulary has {len(vocab)} entries but the model's word_dim is "
                         f"{U.shape[1]}")
    return write_npz(path, {"U": U, "V": V, "W": W}, make_meta(model, vocab, config))


#: Config keys that fastrnn itself reads back (``fastrnn evaluate``), with their checks.
CONFIG_MODES = ("sentence", "stream")


def _record(path, meta, key):
    """``meta[key]``: a JSON object or None (absent), else :class:`ModelFileError`."""
    value = (meta or {}).get(key)
    if value is not None and not isinstance(value, dict):
        raise ModelFileError(f"{path}: the {META_KEY} record's {key!r} must be a JSON object "
                             f"or null, got {type(value).__name__} {value!r:.60}")
    return value


def check_config(path, config):
    """Check a stored ``config`` record; returns it as a dict (empty if absent).

    The record is free-form, but the keys fastrnn reads back must be usable: ``bptt`` a
    positive integer and ``mode`` one of ``sentence``/``stream`` (or null).
    """
    config = dict(config or {})
    bptt = config.get("bptt")
    if bptt is not None and (isinstance(bptt, bool) or not isinstance(bptt, numbers.Integral)
                             or bptt < 1):
        raise ModelFileError(f"{path}: the stored config has bptt={bptt!r}, expected a "
                             f"positive integer")
    mode = config.get("mode")
    if mode is not None and mode not in CONFIG_MODES:
        raise ModelFileError(f"{path}: the stored config has mode={mode!r}, expected one of "
                             f"{', '.join(CONFIG_MODES)}")
    return config


def _vocab_from_meta(path, meta, word_dim):
    if not _record(path, meta, "vocab"):
        return None
    try:
        vocab = Vocabulary.from_dict(meta["vocab"])
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: the stored vocabulary is corrupt: {exc}") from None
    if len(vocab) != word_dim:
        raise ModelFileError(f"{path}: the stored vocabulary has {len(vocab)} entries but U "
                             f"has {word_dim} columns")
    return vocab


def load_model(path, backend=None):
    """Load a model file written by :func:`save_model`, a checkpoint, or the tutorial.

    Returns
    -------
    LoadedModel
        ``(model, vocab, config)``; ``vocab`` is None and ``config`` empty for a tutorial
        file, which holds only ``U``, ``V``, ``W``.
    """
    path = os.fspath(path)
    arrays, meta = read_npz(path)
    U, V, W = check_parameters(path, arrays)
    model_record = _record(path, meta, "model")
    config = check_config(path, _record(path, meta, "config"))
    try:
        model = build_model(U, V, W, model_record, backend)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: cannot build the model: {exc}") from None
    vocab = _vocab_from_meta(path, meta, U.shape[1])
    return LoadedModel(model, vocab, config)

"""General RNN, GRU and LSTM language models over any backend's layer kernels.

Architecture (PyTorch's ``word_language_model`` without dropout)::

    x (T, B) ids -> embedding (V, E) -> num_layers recurrent layers (H) -> decoder H -> V
                 -> softmax over the vocabulary

Everything is time-major: ``x`` and ``y`` are ``(T, B)``, outputs ``(T, B, V)``, hidden
state ``(num_layers, B, H)`` (LSTM: a pair ``(h, c)`` of those), as in ``torch.nn.RNN``.

Division of labour (see :mod:`fastrnn.reference.gru` for the kernel contract): this module
does the whole-sequence matrix products with NumPy's BLAS -- ``Xp = X W_ihᵀ + b_ih`` for
all steps, the decoder ``Z = H_top W_decᵀ + b``, and in the backward pass ``dW = dGᵀ X`` --
and the backend's kernels do the sequential recurrence (``<cell>_layer_forward`` /
``<cell>_layer_backward``) and the fused softmax + NLL + gradient (``rnn_softmax_xent``).

Padding and masks
-----------------
``mask (T, B)`` of 0/1 marks padding: a step with ``mask == 0`` adds nothing to the loss
and does *not advance the state* (``h_t = h_{t-1}``, also ``c``).  So a batch of padded
sequences gives the same loss, gradients and final hidden states as running the sequences
one at a time, whether the padding is at the end or at the start.  A mask is *not* a way
to drop a target in the middle of a sentence: the input at that step would be skipped too.

Parameter names and the PyTorch layout
--------------------------------------
``parameters()`` (live arrays, in this order)::

    embedding.weight   (V, E)
    weight_ih_l{k}     (G*H, E if k == 0 else H)     G = 1 (RNN), 3 (GRU: r,z,n), 4 (LSTM: i,f,g,o)
    weight_hh_l{k}     (G*H, H)
    bias_ih_l{k}       (G*H,)          # only with bias=True
    bias_hh_l{k}       (G*H,)          # only with bias=True
    decoder.weight     (V, H)
    decoder.bias       (V,)

:meth:`to_torch_state_dict` maps them onto the module ::

    class TorchLM(torch.nn.Module):
        def __init__(self, V, E, H, L, bias=True):
            super().__init__()
            self.embedding = torch.nn.Embedding(V, E)
            self.rnn = torch.nn.GRU(E, H, L, bias=bias)      # or torch.nn.RNN / torch.nn.LSTM
            self.decoder = torch.nn.Linear(H, V)

as ``embedding.weight -> embedding.weight``, ``weight_ih_l0 -> rnn.weight_ih_l0`` (and the
other recurrent keys likewise, identical after the ``rnn.`` prefix), ``decoder.* ->
decoder.*``.  ``torch.nn.GRU`` is the ``reset_after=True, hard_gates=False`` GRU;
``torch.nn.RNN`` is the tanh RNN; ``torch.nn.LSTM`` the ``hard_gates=False`` LSTM.
"""
import numbers
import threading

import numpy as np

from . import _validate
from .backends import BackendUnavailableError, get_backend
from .optim import RowSparse

__all__ = ["RNN", "GRU", "LSTM"]

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_TORCH_CLASS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


# ----------------------------------------------------------------------------- core

class _Layer:
    """Forward cache of one layer: inputs, states and the kernel's gate cache."""
    __slots__ = ("inp", "ids", "Hs", "Cs", "cache")


def _kernel(be, name):
    fn = getattr(be, name, None)
    if fn is None:
        raise BackendUnavailableError(
            f"backend {be.name!r} has no kernel {name!r}; use backend='numba' or 'numpy'")
    return fn


def _mm(be, A, B, trans_a=False, trans_b=False, out=None, threads=1, bias=None):
    """``op(A) @ op(B)`` for the whole-sequence products, on the BLAS the backend's kernels use.

    ``out``, if given, is a C-contiguous array of the product's shape and dtype (checked by
    the caller) that receives the product.  ``bias``, if given, is a vector of the product's
    width added to every row.  ``threads`` is :func:`_step_threads`'s answer for this step:
    above 1 the product (and the bias) is cut into that many blocks run on Numba's threads
    (:func:`fastrnn._kernels.blas.gemm_parallel`), each a single-threaded BLAS call.

    The Numba and Cython kernels call the BLAS of :mod:`fastrnn._kernels._blas_lib`.  When
    that is NumPy's own (the usual case), ``np.matmul`` already runs in it.  When it is
    SciPy's (the fallback), NumPy's ``@`` would call a second OpenBLAS with threads of its
    own, and the two libraries' spinning workers fight over the cores (measured on the
    2-core machine: the PTB-shaped LSTM step took 246 ms on two threads against 132 ms on
    one), so the product goes through the kernels' ``gemm``.  Operands that are not
    C-contiguous (rare column slices) take NumPy's path.  On the Numba backend a product
    with a bias goes through the kernels' BLAS too, the bias written first and added by
    the product (:func:`fastrnn._kernels.blas.gemm_bias`; the Cython backend would have to
    import Numba for it).
    """
    name = getattr(be, "name", None)
    if name in ("numba", "cython") and A.flags.c_contiguous and B.flags.c_contiguous \
            and A.dtype == B.dtype and (threads > 1 or _kernels_blas() != "numpy" or (
                name == "numba" and bias is not None)):
        from ._kernels.blas import PARALLEL_MIN_MACS, gemm, gemm_bias, gemm_parallel
        m = A.shape[1] if trans_a else A.shape[0]
        n = B.shape[0] if trans_b else B.shape[1]
        k = A.shape[0] if trans_a else A.shape[1]
        C = np.empty((m, n), A.dtype) if out is None else out
        fits = bias is not None and bias.dtype == C.dtype and bias.shape == (n,)
        if threads > 1 and m * n * k >= PARALLEL_MIN_MACS and (bias is None or fits):
            gemm_parallel(trans_a, trans_b, A, B, C[0, :0] if bias is None else bias, C,
                          threads)
            return C
        if fits:
            gemm_bias(trans_a, trans_b, A, B, bias, C)
            return C
        gemm(trans_a, trans_b, 1.0, A, B, 0.0, C)
    else:
        C = np.matmul(A.T if trans_a else A, B.T if trans_b else B, out=out)
    if bias is not None:
        C += bias
    return C


def _step_threads(be):
    """How many of Numba's threads a step's parallel parts run on (1: none).

    Two ways to use several cores, chosen by how the user set the thread counts:

    * BLAS multi-threaded (OpenBLAS's default): the whole-sequence products use BLAS's
      threads and everything else runs serially.  Running Numba's threads beside them
      does not pay: OpenBLAS's workers keep spinning for a while after each product
      (see :func:`fastrnn._kernels.common._blas_single_threaded`).
    * BLAS on one thread and Numba on ``n > 1`` (:func:`fastrnn.set_num_threads`, or
      ``threadpoolctl.threadpool_limits(1)`` with ``numba.set_num_threads(n)``), Numba
      backend: Numba's ``n`` threads run the products
      in blocks, the softmax in row chunks, the LSTM recurrence in blocks of hidden
      units or of sequences (:func:`._kernels.lstm.parallel_lstm_by_rows`) and, from 8
      (GRU) or 16 (Elman) sequences a thread, the GRU and Elman recurrences in blocks of
      sequences -- one pool of threads for the whole step.

    Returns ``n`` in the second case, else 1.
    """
    if getattr(be, "name", None) != "numba":
        return 1
    from numba import get_num_threads
    n = get_num_threads()
    if n <= 1:
        return 1
    from ._kernels._blas_lib import library
    return n if library().num_threads() == 1 else 1


# False: never run the decoder's weight-gradient products beside the recurrent stack's
# backward pass (:func:`_overlap_decoder`); for A/B measurements.
_OVERLAP = True
_helpers = None
_helpers_lock = threading.Lock()


def _helper_pool(n):
    """A lazily made pool of at least ``n`` Python threads for :func:`_beside`.  A bigger
    one replaces it when asked for; the old one is not shut down (a step on another
    thread may still be submitting to it), its idle threads end when it is collected."""
    global _helpers
    from concurrent.futures import ThreadPoolExecutor
    with _helpers_lock:
        if _helpers is None or _helpers._max_workers < n:
            _helpers = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastrnn")
        return _helpers


def _beside(main, tasks, helpers):
    """Run ``main()`` on this thread while ``helpers`` other threads work through
    ``tasks`` (callables, independent of ``main`` and of each other, each writing its own
    output); when ``main`` returns, this thread takes the tasks left.  Returns ``main()``'s
    value after every task has finished, also when ``main`` raises.

    Every task runs exactly once, on whichever thread takes it first, so the results do
    not depend on the timing.  The tasks and ``main`` must release the GIL for their work
    (BLAS calls, ``nogil`` Numba kernels) to overlap.

    If ``main`` raises, the tasks not yet started are dropped and the running ones waited
    for; main's error is then the one raised (a helper's is dropped).  A helper that has
    not started by the time this thread is done is not waited for (its tasks were done
    here), and the pool is not used when it cannot take work (interpreter shutdown).
    """
    lock = threading.Lock()
    pending = iter(tasks)

    def work():
        while True:
            with lock:
                task = next(pending, None)
            if task is None:
                return
            task()

    pool = _helper_pool(helpers)
    futures = []
    for _ in range(helpers):
        try:
            futures.append(pool.submit(work))
        except RuntimeError:        # "cannot schedule new futures after ... shutdown"
            break
    ok = False
    try:
        result = main()
        work()
        ok = True
    finally:
        if not ok:
            with lock:
                pending = iter(())
        error = None
        for f in futures:
            if not f.cancel():
                try:
                    f.result()
                except BaseException as exc:     # raised below unless main's error is
                    error = error or exc
        if ok and error is not None:
            raise error
    return result


def _overlap_decoder(layers, V, threads):
    """Whether a step on ``threads`` of Numba's threads computes the decoder's weight and
    bias gradients beside the recurrent stack's backward pass (:func:`_beside`) instead of
    after it.

    Both need only ``dZ`` and the top layer's output.  Beside, the stack runs serially on
    the calling thread (its recurrence then needs no barrier per time step), and the
    decoder's product, cut in blocks, on the helper threads and then on every thread.  On
    two threads that is better whenever the decoder's work is at least the stack's (the
    stack alone, parallel, gains at most 2x), estimated here in multiply-adds per token, a
    recurrent step's counted twice (measured: about twice the time per multiply-add of a
    whole-sequence product at PTB-small's shapes).  Only when Numba's OpenMP workers spin
    briefly (:data:`fastrnn._kernels._threads.low_spin`): beside workers that spin for
    milliseconds after each parallel region the helper threads lose that time.

    Measured at PTB-small (2 x 200 LSTM, V=10000, B=20, T=20, float32, two threads, steps
    interleaved in one process): 1.5-2.8 ms faster per step with it (five processes), and
    1.3-1.4 ms slower with libgomp's default spin; in twenty fresh processes alternating
    the two ways, 63.2 against 66.1 ms (medians of the process medians).
    """
    if threads <= 1 or not _OVERLAP:
        return False
    from ._kernels import _threads
    if not _threads.low_spin:
        return False
    H = layers[0][1].shape[1]
    stack = sum(W_hh.shape[0] * (2 * H + 2 * W_ih.shape[1] + W_hh.shape[1])
                for W_ih, W_hh, _, _ in layers)
    return V * (H + 1) >= stack


def _numba_kernels(name):
    """A Numba kernel module (``"elman"``, ``"gru"``, ``"lstm"``), for its parallel variants,
    which are not in the backend table (only a Numba-backend step has threads, see
    :func:`_step_threads`)."""
    import importlib
    return importlib.import_module(f"._kernels.{name}", __package__)


def _kernels_blas():
    from ._kernels._blas_lib import library
    return library().name


def stack_forward(be, cell, flags, layers, X0, h0, c0, mask, threads=None, X0_ids=None):
    """Run a stack of recurrent layers forward over a whole (padded) batch.

    Parameters
    ----------
    be : backend table (:func:`fastrnn.backends.get_backend`)
    cell : {"rnn", "gru", "lstm"}
    flags : dict
        ``reset_after`` (GRU) and ``hard_gates`` (GRU, LSTM).
    layers : list of tuple
        ``(W_ih (G*H, I), W_hh (G*H, H), b_ih (G*H,) or None, b_hh (G*H,) or None)``.
    X0 : ndarray, shape (T, B, I0)
        Input of the first layer, C-contiguous, the parameters' dtype.
    h0, c0 : ndarray, shape (L, B, H)
        Initial states (``c0`` only for LSTM, else None), C-contiguous.
    mask : ndarray, shape (T, B)
        1 for real steps, 0 for padding (state held).
    threads : int, optional
        :func:`_step_threads`'s answer, if the caller has it.
    X0_ids : ndarray of intp, shape (T, B), optional
        Given when every input vector ``X0[t, b]`` is one-hot, at ``X0_ids[t, b]`` (the
        caller derives it from ``X0``; checked here for shape and range only).  The first
        layer's product ``X0 W_ihᵀ`` is then a gather of columns of ``W_ih``, bit for bit
        the product's value (each sum is one exact product and zeros), and the backward
        pass sums ``dW_ih``'s columns from the rows of the gate gradients
        (:func:`stack_backward`).

    Returns
    -------
    list of _Layer
        One forward cache per layer; ``caches[-1].Hs[1:]`` is the top output ``(T, B, H)``.
    """
    _check_stack(cell, layers, X0, h0, c0, mask)
    if threads is None:
        threads = _step_threads(be)
    T, B = X0.shape[:2]
    dt = X0.dtype
    if X0_ids is not None:
        _check_ids(X0_ids, (T, B), X0.shape[2])
    out = []
    inp = X0
    for k, (W_ih, W_hh, b_ih, b_hh) in enumerate(layers):
        G, H = W_hh.shape
        if k == 0 and X0_ids is not None:
            Xp = np.ascontiguousarray(W_ih.T)[X0_ids]           # (T, B, G)
            if b_ih is not None:
                Xp += b_ih
        else:
            Xp = _mm(be, inp.reshape(T * B, -1), W_ih, trans_b=True, threads=threads,
                     bias=b_ih)
            Xp = Xp.reshape(T, B, G)
        if b_hh is None:
            b_hh = np.zeros(G, dt)
        lay = _Layer()
        lay.inp = inp
        lay.ids = X0_ids if k == 0 else None
        lay.Hs = np.empty((T + 1, B, H), dt)
        lay.Cs = None
        lay.cache = None
        if cell == "rnn":
            args = (Xp, W_hh, b_hh, h0[k], mask, lay.Hs)
            if threads > 1 and _numba_kernels("elman").parallel_rnn_by_rows(B, threads):
                _numba_kernels("elman").parallel_rnn_layer_forward(*args, threads)
            else:
                _kernel(be, "rnn_layer_forward")(*args)
        elif cell == "gru":
            lay.cache = np.empty((T, B, 4 * H), dt)
            args = (Xp, W_hh, b_hh, h0[k], mask, flags["reset_after"], flags["hard_gates"],
                    lay.Hs, lay.cache)
            if threads > 1 and _numba_kernels("gru").parallel_gru_by_rows(B, threads):
                _numba_kernels("gru").parallel_gru_layer_forward(*args, threads)
            else:
                _kernel(be, "gru_layer_forward")(*args)
        else:
            lay.Cs = np.empty((T + 1, B, H), dt)
            lay.cache = np.empty((T, B, 4 * H), dt)
            args = (Xp, W_hh, b_hh, h0[k], c0[k], mask, flags["hard_gates"], lay.Hs, lay.Cs,
                    lay.cache)
            if threads > 1:
                kern = _numba_kernels("lstm")
                kern.parallel_lstm_layer_forward(*args, threads,
                                                 kern.parallel_lstm_by_rows(B, threads))
            else:
                _kernel(be, "lstm_layer_forward")(*args)
        out.append(lay)
        inp = lay.Hs[1:]
    return out


def stack_backward(be, cell, flags, layers, caches, mask, dTop, need_dX0=True, threads=None,
                   out=None):
    """Full BPTT through a stack run by :func:`stack_forward`.

    Parameters
    ----------
    dTop : ndarray, shape (T, B, H)
        ``dL/dh_t`` of the top layer's outputs, C-contiguous.
    need_dX0 : bool
        Whether to compute the gradient of the first layer's input.
    threads : int, optional
        :func:`_step_threads`'s answer, if the caller has it.
    out : list of tuple, optional
        Per layer ``(dW_ih, dW_hh, db_ih, db_hh)`` arrays (each may be None) to write the
        gradients into instead of new arrays: C-contiguous, writeable, of the parameter's
        shape and dtype, not overlapping each other or any input (checked by the caller).

    Returns
    -------
    grads : list of tuple
        Per layer ``(dW_ih, dW_hh, db_ih, db_hh)`` (biases always returned; the arrays of
        ``out`` where given).
    dX0 : ndarray, shape (T, B, I0), or None
    dh0, dc0 : ndarray, shape (L, B, H) (``dc0`` None unless LSTM)
    """
    L = len(layers)
    H = layers[0][1].shape[1]
    if len(caches) != L:
        raise ValueError(f"stack_backward: {len(caches)} forward caches for {L} layers")
    T, B = caches[0].Hs.shape[0] - 1, caches[0].Hs.shape[1]
    _check_array(dTop, "dTop", (T, B, H), caches[0].Hs.dtype)
    _check_array(mask, "mask", (T, B), caches[0].Hs.dtype)
    if threads is None:
        threads = _step_threads(be)
    dt = dTop.dtype
    grads = [None] * L
    dh0 = np.empty((L, B, H), dt)
    dc0 = np.empty((L, B, H), dt) if cell == "lstm" else None
    dHs = dTop
    dX0 = None
    for k in range(L - 1, -1, -1):
        W_ih, W_hh, _, _ = layers[k]
        lay = caches[k]
        G = W_hh.shape[0]
        if cell == "rnn":
            dGx = np.empty((T, B, G), dt)
            args = (W_hh, mask, lay.Hs, dHs, dGx, dh0[k])
            if threads > 1 and _numba_kernels("elman").parallel_rnn_by_rows(B, threads):
                _numba_kernels("elman").parallel_rnn_layer_backward(*args, threads)
            else:
                _kernel(be, "rnn_layer_backward")(*args)
            dGh = dGx
        elif cell == "gru":
            dGx = np.empty((T, B, G), dt)
            dGh = np.empty((T, B, G), dt)
            args = (W_hh, mask, flags["reset_after"], flags["hard_gates"], lay.Hs, lay.cache, dHs,
                    dGx, dGh, dh0[k])
            if threads > 1 and _numba_kernels("gru").parallel_gru_by_rows(B, threads):
                _numba_kernels("gru").parallel_gru_layer_backward(*args, threads)
            else:
                _kernel(be, "gru_layer_backward")(*args)
        else:
            dGx = np.empty((T, B, G), dt)
            args = (W_hh, mask, flags["hard_gates"], lay.Hs, lay.Cs, lay.cache, dHs, dGx,
                    dh0[k], dc0[k])
            if threads > 1:
                kern = _numba_kernels("lstm")
                kern.parallel_lstm_layer_backward(*args, threads,
                                                  kern.parallel_lstm_by_rows(B, threads))
            else:
                _kernel(be, "lstm_layer_backward")(*args)
            dGh = dGx
        gx = dGx.reshape(T * B, G)
        gh = dGh.reshape(T * B, G)
        inp = lay.inp.reshape(T * B, -1)
        hprev = lay.Hs[:T].reshape(T * B, H)
        o_ih, o_hh, o_bih, o_bhh = out[k] if out is not None else (None,) * 4
        if lay.ids is not None:        # one-hot input: column v sums the rows at id v
            dW_ih = _one_hot_weight_grad(lay.ids, gx, W_ih.shape[1])
            if o_ih is not None:
                o_ih[...] = dW_ih
                dW_ih = o_ih
        else:
            dW_ih = _mm(be, gx, inp, trans_a=True, threads=threads, out=o_ih)
        if cell == "gru" and not flags["reset_after"]:
            # the n rows of W_hh act on r * h_{t-1}, cached by the kernel
            dW_hh = np.empty_like(W_hh) if o_hh is None else o_hh
            dW_hh[:2 * H] = gh[:, :2 * H].T @ hprev
            dW_hh[2 * H:] = gh[:, 2 * H:].T @ lay.cache[:, :, 3 * H:].reshape(T * B, H)
        else:
            dW_hh = _mm(be, gh, hprev, trans_a=True, threads=threads, out=o_hh)
        db_ih = gx.sum(axis=0, out=o_bih)
        if gh is gx:                   # RNN, LSTM: the same sums
            if o_bhh is None:
                db_hh = db_ih.copy()
            else:
                db_hh = o_bhh
                db_hh[...] = db_ih
        else:
            db_hh = gh.sum(axis=0, out=o_bhh)
        grads[k] = (dW_ih, dW_hh, db_ih, db_hh)
        if k > 0 or need_dX0:
            dX = _mm(be, gx, W_ih, threads=threads).reshape(T, B, -1)
            if k > 0:
                dHs = dX
            else:
                dX0 = dX
    return grads, dX0, dh0, dc0


def _group_rows(flat, rows):
    """``rows`` grouped by the ids ``flat`` (one per row): ``(ids, starts, grouped)`` with
    ``grouped = rows`` in order of id (a stable sort: within an id, in the order they came),
    ``ids`` the sorted ids of ``grouped``'s rows and ``starts`` where each id's group begins."""
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    return ids, starts, rows[order]


def _one_hot_weight_grad(ids, gx, size):
    """``gxᵀ X`` for one-hot rows ``X`` at ``ids``: ``(G, size)``, column ``v`` the sum of
    the rows of ``gx (N, G)`` where ``ids == v`` (:func:`_sum_groups`).  At the Keras
    char-LSTM's shape (5120 rows of 512, 57 ids) summing took 2.3 ms against 5.5 ms for the
    product (minima, float32)."""
    flat = ids.reshape(-1)
    out = np.zeros((size, gx.shape[1]), gx.dtype)
    if flat.size:
        sorted_ids, starts, rows = _group_rows(flat, gx)
        out[sorted_ids[starts]] = _sum_groups(rows, starts)
    return np.ascontiguousarray(out.T)


def _sum_groups(rows, starts, short=16):
    """The sum of each group of consecutive ``rows`` (group ``i`` from ``starts[i]`` to the
    next start), the rows added one after another in their order: ``np.sum(..., axis=0)``'s
    order, so a result does not depend on how its group was summed.

    Groups of up to ``short`` rows are summed together, one NumPy operation per row position
    (as many as the longest of them has rows); longer ones one ``np.sum`` each.  With many
    small groups -- the embedding gradient of a word-level batch, PTB-small's 400 tokens
    with 391 distinct ids -- this took 0.04-0.06 ms against 0.4-0.8 ms for
    ``np.add.reduceat``, which also sums in another order (not one row after another).
    """
    n = rows.shape[0]
    lens = np.diff(starts, append=n)
    out = rows[starts]
    sel = np.flatnonzero((lens > 1) & (lens <= short))
    k = 1
    while sel.size:
        out[sel] += rows[starts[sel] + k]
        k += 1
        sel = sel[lens[sel] > k]
    for i in np.flatnonzero(lens > short):
        np.sum(rows[starts[i]:starts[i] + lens[i]], axis=0, out=out[i])
    return out


def _embedding_rows(xa, dX):
    """The embedding gradient's nonzero rows: ``(ids, sums)``, ``ids`` the distinct token ids
    of ``xa`` in increasing order and ``sums[i]`` the sum of the rows of ``dX (T, B, E)`` at
    the positions of ``ids[i]``, added in the order they occur (:func:`_sum_groups`)."""
    flat = xa.reshape(-1)
    rows = dX.reshape(flat.size, -1)
    if flat.size == 0:
        return flat.astype(np.intp), rows[:0].copy()
    ids, starts, grouped = _group_rows(flat, rows)
    return ids[starts].astype(np.intp, copy=False), _sum_groups(grouped, starts)


# ----------------------------------------------------------------------------- validation

def _check_ids(ids, shape, size):
    """``ids`` must be a C-contiguous intp array of ``shape`` with values in ``[0, size)``."""
    if not isinstance(ids, np.ndarray) or ids.dtype != np.intp or ids.shape != shape \
            or not ids.flags.c_contiguous:
        raise ValueError(f"X0_ids must be a C-contiguous intp array of shape {shape}, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)} "
                         f"{getattr(ids, 'shape', '')}")
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ValueError(f"X0_ids must lie in [0, {size}), got values in "
                         f"[{ids.min()}, {ids.max()}]")


def _check_array(a, name, shape, dtype):
    """``a`` must be a C-contiguous ndarray of exactly ``dtype`` and ``shape`` (no values read).

    This is what the compiled kernels assume of every array they index (they have no bounds
    checks and never raise), so it is checked here, once per call, before they run.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray), got a "
                         f"non-contiguous or Fortran-ordered array of shape {a.shape}")
    return a


def _check_stack(cell, layers, X0, h0, c0, mask):
    """Shapes, dtypes and layouts of everything :func:`stack_forward` gives the kernels.

    O(number of layers); values are not read.  Callers check their own parameters first
    with their own names (:meth:`_LanguageModel._check_params` ...); this is the backstop
    that keeps any caller of :func:`stack_forward` from reaching a kernel with arrays of
    inconsistent sizes.
    """
    if cell not in _GATES:
        raise ValueError(f"cell must be one of {sorted(_GATES)}, got {cell!r}")
    if not isinstance(X0, np.ndarray) or X0.ndim != 3:
        raise ValueError(f"X0 must be a (T, B, I) array, got "
                         f"{getattr(X0, 'shape', type(X0).__name__)}")
    dt = X0.dtype
    if dt not in _validate.FLOAT_DTYPES:
        raise TypeError(f"X0 must be float32 or float64, got dtype {dt}")
    T, B, I = X0.shape
    _check_array(X0, "X0", (T, B, I), dt)
    L = len(layers)
    if L == 0:
        raise ValueError("layers is empty; expected at least one layer")
    W_hh0 = layers[0][1]
    if not isinstance(W_hh0, np.ndarray) or W_hh0.ndim != 2:
        raise ValueError(f"layer 0 W_hh must be a (G*H, H) array, got "
                         f"{getattr(W_hh0, 'shape', type(W_hh0).__name__)}")
    H = W_hh0.shape[1]
    G = _GATES[cell] * H
    for k, (W_ih, W_hh, b_ih, b_hh) in enumerate(layers):
        _check_array(W_ih, f"layer {k} W_ih", (G, I if k == 0 else H), dt)
        _check_array(W_hh, f"layer {k} W_hh", (G, H), dt)
        for bn, b in (("b_ih", b_ih), ("b_hh", b_hh)):
            if b is not None:
                _check_array(b, f"layer {k} {bn}", (G,), dt)
    _check_array(h0, "h0", (L, B, H), dt)
    if cell == "lstm":
        _check_array(c0, "c0", (L, B, H), dt)
    _check_array(mask, "mask", (T, B), dt)


def _tokens2d(x, vocab_size, name):
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a (T, B) array of integer token ids, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except ValueError as exc:
        raise ValueError(f"{name} must be a (T, B) array of token ids; got a ragged "
                         f"sequence ({exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (T, B) (time-major: steps x sequences), "
                         f"got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one step and one sequence, got shape {arr.shape}")
    flat = _validate.tokens(arr.reshape(-1), vocab_size, name)
    return flat.reshape(arr.shape)


def _mask(mask, shape, dtype):
    if mask is None:
        return np.ones(shape, dtype)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask must have shape {shape} like x, got {m.shape}")
    if m.dtype.kind not in "biuf":
        raise TypeError(f"mask must hold 0/1 values, got dtype {m.dtype}")
    bad = (m != 0) & (m != 1)
    if bad.any():
        v = m[bad].flat[0]
        raise ValueError(f"mask must hold only 0 and 1, got the value {v!r}")
    return np.ascontiguousarray(m, dtype=dtype)


def _state(h, L, B, H, dtype, name):
    if h is None:
        return np.zeros((L, B, H), dtype)
    if hasattr(h, "detach"):           # a torch tensor
        h = h.detach().cpu().numpy()
    arr = np.asarray(h)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.shape != (L, B, H):
        raise ValueError(f"{name} must have shape (num_layers, B, H) = {(L, B, H)}, got {arr.shape}")
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=dtype)    # cast first: 1e300 is inf in float32
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds {int(arr.size - np.isfinite(arr).sum())} non-finite "
                         f"value(s) (in {np.dtype(dtype).name})")
    return arr


def _flag(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}")
    return bool(v)


# ----------------------------------------------------------------------------- models

class _LanguageModel:
    """Shared implementation of :class:`RNN`, :class:`GRU` and :class:`LSTM`."""

    cell = None

    def __init__(self, vocab_size, hidden_size, num_layers=1, embedding_dim=None, bias=True,
                 dtype=np.float32, backend=None, seed=None, **flags):
        V = _validate.positive_int(vocab_size, "vocab_size")
        H = _validate.positive_int(hidden_size, "hidden_size")
        L = _validate.positive_int(num_layers, "num_layers")
        E = H if embedding_dim is None else _validate.positive_int(embedding_dim, "embedding_dim")
        self.vocab_size, self.hidden_size, self.num_layers, self.embedding_dim = V, H, L, E
        self.bias = _flag(bias, "bias")
        self.dtype = _validate.as_dtype(dtype)
        self.flags = flags
        self.backend = backend
        self._be = get_backend(backend)
        # check now that the backend has this cell, not at the first call
        for suffix in ("layer_forward", "layer_backward"):
            _kernel(self._be, f"{self.cell}_{suffix}")
        _kernel(self._be, "rnn_softmax_xent")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__} {seed!r}")
        rng = np.random.default_rng(seed)
        dt = self.dtype
        G = _GATES[self.cell]
        k = 1.0 / np.sqrt(H)

        def u(shape, a):
            return rng.uniform(-a, a, shape).astype(dt)

        # PyTorch's init for the recurrent weights (U(+-1/sqrt(H))); word_language_model's
        # for the embedding and decoder (U(+-0.1), zero decoder bias).
        p = {"embedding.weight": u((V, E), 0.1)}
        for layer in range(L):
            p[f"weight_ih_l{layer}"] = u((G * H, E if layer == 0 else H), k)
            p[f"weight_hh_l{layer}"] = u((G * H, H), k)
            if self.bias:
                p[f"bias_ih_l{layer}"] = u((G * H,), k)
                p[f"bias_hh_l{layer}"] = u((G * H,), k)
        p["decoder.weight"] = u((V, H), 0.1)
        p["decoder.bias"] = np.zeros(V, dt)
        self._params = p

    # -- parameters ---------------------------------------------------------------
    def parameters(self):
        """The live parameter arrays, ``name -> ndarray`` (see the module docstring).

        An optimizer given this dict updates the model in place.  Prefer assigning in place
        (``parameters()[name][...] = values``); a replaced entry must be a C-contiguous
        array of the model's dtype and exact shape, which every call checks (O(number of
        parameters)) before any kernel runs.
        """
        return self._params

    def _shapes(self):
        return {n: a.shape for n, a in self._params.items()}

    def _expected_shapes(self):
        """``name -> shape`` every parameter must have, from the model's sizes (in order)."""
        V, E, H, L = self.vocab_size, self.embedding_dim, self.hidden_size, self.num_layers
        GH = _GATES[self.cell] * H
        out = {"embedding.weight": (V, E)}
        for k in range(L):
            out[f"weight_ih_l{k}"] = (GH, E if k == 0 else H)
            out[f"weight_hh_l{k}"] = (GH, H)
            if self.bias:
                out[f"bias_ih_l{k}"] = (GH,)
                out[f"bias_hh_l{k}"] = (GH,)
        out["decoder.weight"] = (V, H)
        out["decoder.bias"] = (V,)
        return out

    def _check_params(self):
        """Check the live parameters before any kernel runs; O(number of parameters).

        :meth:`parameters` is a live dict, so an entry may have been replaced since the
        last call: every one must be present, an ndarray of the model's dtype,
        C-contiguous and of exactly the shape the sizes give.  Values are not scanned
        (NaN/inf are checked where values are loaded: :meth:`load_state_dict`).
        """
        return _validate.param_dict(self._params, self._expected_shapes(), self.dtype)

    def state_dict(self):
        """Copies of the parameters, ``name -> ndarray``."""
        return {n: a.copy() for n, a in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy values into the live parameter arrays (in place, so optimizers stay valid).

        Keys must be exactly those of :meth:`parameters`; shapes must be those the model's
        sizes give; values must be finite *in the model's dtype* (they are cast first, so a
        finite float64 1e300 is rejected for a float32 model).  Nothing is changed unless
        every entry is valid.  A live entry that was replaced by an unusable array (wrong
        shape, dtype or layout) is replaced by a new array holding the loaded values.
        """
        want_shapes = self._expected_shapes()
        keys, want = set(state_dict), set(want_shapes)
        if keys != want:
            raise ValueError(f"state_dict keys do not match the model: missing "
                             f"{sorted(want - keys)}, unexpected {sorted(keys - want)}")
        dt = self.dtype
        vals = {}
        for n, shape in want_shapes.items():
            v = state_dict[n]
            if hasattr(v, "detach"):
                v = v.detach().cpu().numpy()
            v = np.asarray(v)
            if v.dtype.kind not in "fiu":
                raise TypeError(f"state_dict[{n!r}] must be a float array, got dtype {v.dtype}")
            if v.shape != shape:
                raise ValueError(f"state_dict[{n!r}] has shape {v.shape}, expected {shape}")
            with np.errstate(over="ignore", invalid="ignore"):
                v = np.array(v, dtype=dt, order="C")        # cast first, then check
            if not np.isfinite(v).all():
                bad = int(v.size - np.count_nonzero(np.isfinite(v)))
                raise ValueError(f"state_dict[{n!r}] holds {bad} non-finite value(s) "
                                 f"(NaN or inf in {dt.name})")
            vals[n] = v
        p = self._params
        for n, shape in want_shapes.items():
            a = p.get(n)
            if (isinstance(a, np.ndarray) and a.dtype == dt and a.shape == shape
                    and a.flags.c_contiguous and a.flags.writeable):
                a[...] = vals[n]              # in place: optimizers holding it stay valid
            else:
                p[n] = vals[n]
        for n in [n for n in p if n not in want_shapes]:
            del p[n]

    def to_torch_state_dict(self, rnn_prefix="rnn.", tensors=True):
        """The parameters under the key names of ``Embedding + RNN/GRU/LSTM + Linear``.

        Parameters
        ----------
        rnn_prefix : str
            Prefix of the recurrent module's keys (the attribute name of the torch RNN
            module plus a dot).
        tensors : bool
            Return ``torch.Tensor`` copies (needs torch); ``False`` gives NumPy copies.

        Returns
        -------
        dict
            ``embedding.weight``, ``{rnn_prefix}weight_ih_l{k}`` ..., ``decoder.weight``,
            ``decoder.bias``.
        """
        if self.cell == "gru" and (self.flags["hard_gates"] or not self.flags["reset_after"]):
            raise ValueError("torch.nn.GRU is the GRU with reset_after=True and hard_gates=False; "
                             f"this model has {self.flags}")
        if self.cell == "lstm" and self.flags["hard_gates"]:
            raise ValueError("torch.nn.LSTM has sigmoid gates; this model has hard_gates=True")
        out = {}
        for n, a in self._params.items():
            key = n if n.startswith(("embedding.", "decoder.")) else rnn_prefix + n
            out[key] = a.copy()
        if tensors:
            import torch
            out = {k: torch.from_numpy(v) for k, v in out.items()}
        return out

    @classmethod
    def from_torch_state_dict(cls, state_dict, rnn_prefix="rnn.", dtype=None, backend=None):
        """Build a model from the ``state_dict()`` of ``Embedding + RNN/GRU/LSTM + Linear``.

        Sizes are read from the shapes: ``embedding.weight (V, E)``,
        ``{rnn_prefix}weight_hh_l0 (G*H, H)``, the number of layers from the keys, ``bias``
        from the presence of ``{rnn_prefix}bias_ih_l0``.  ``dtype`` defaults to the arrays'
        (float32 or float64).  Values may be torch tensors or arrays.
        """
        sd = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
              for k, v in state_dict.items()}
        for key, dims in (("embedding.weight", "(V, E)"),
                          (f"{rnn_prefix}weight_hh_l0", "(G*H, H)"),
                          ("decoder.weight", "(V, H)")):
            if key not in sd:
                raise ValueError(f"state_dict has no key {key!r}; keys are {sorted(sd)}")
            if sd[key].ndim != 2:
                raise ValueError(f"state_dict[{key!r}] must be 2-D {dims}, got shape "
                                 f"{sd[key].shape}")
        V, E = sd["embedding.weight"].shape
        GH, H = sd[f"{rnn_prefix}weight_hh_l0"].shape
        for key, n in (("embedding.weight", V), ("embedding.weight", E),
                       (f"{rnn_prefix}weight_hh_l0", H)):
            if n == 0:
                raise ValueError(f"state_dict[{key!r}] has an empty dimension: shape "
                                 f"{sd[key].shape}")
        G = _GATES[cls.cell]
        if GH != G * H:
            raise ValueError(f"{rnn_prefix}weight_hh_l0 has shape {(GH, H)}; a {cls.__name__} "
                             f"needs ({G}*H, H) = {(G * H, H)}")
        L = 0
        while f"{rnn_prefix}weight_ih_l{L}" in sd:
            L += 1
        bias = f"{rnn_prefix}bias_ih_l0" in sd
        if dtype is None:
            dt = sd["embedding.weight"].dtype
            dtype = dt if dt in _validate.FLOAT_DTYPES else np.float32
        model = cls(V, H, num_layers=L, embedding_dim=E, bias=bias, dtype=dtype,
                    backend=backend, seed=0)
        mapped = {}
        for k, v in sd.items():
            if k.startswith(rnn_prefix) and not k.startswith(("embedding.", "decoder.")):
                mapped[k[len(rnn_prefix):]] = v
            else:
                mapped[k] = v
        model.load_state_dict(mapped)
        return model

    # -- state --------------------------------------------------------------------
    def init_hidden(self, batch_size):
        """Zero initial state: ``(num_layers, B, H)`` (LSTM: a pair ``(h, c)``)."""
        B = _validate.positive_int(batch_size, "batch_size")
        z = np.zeros((self.num_layers, B, self.hidden_size), self.dtype)
        return (z, z.copy()) if self.cell == "lstm" else z

    def _hidden_in(self, hidden, B):
        L, H, dt = self.num_layers, self.hidden_size, self.dtype
        if self.cell == "lstm":
            if hidden is None:
                return _state(None, L, B, H, dt, "h0"), _state(None, L, B, H, dt, "c0")
            if not isinstance(hidden, (tuple, list)) or len(hidden) != 2:
                raise TypeError("an LSTM's hidden state must be a pair (h, c) of "
                                f"(num_layers, B, H) arrays, got {type(hidden).__name__}")
            return _state(hidden[0], L, B, H, dt, "h0"), _state(hidden[1], L, B, H, dt, "c0")
        return _state(hidden, L, B, H, dt, "hidden"), None

    def _hidden_out(self, caches):
        T = caches[0].Hs.shape[0] - 1
        h = np.stack([c.Hs[T] for c in caches])
        if self.cell == "lstm":
            return h, np.stack([c.Cs[T] for c in caches])
        return h

    def _layers(self):
        p = self._params
        return [(p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"], p.get(f"bias_ih_l{k}"),
                 p.get(f"bias_hh_l{k}")) for k in range(self.num_layers)]

    # -- passes -------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_local", None)          # per-thread scratch: not part of the model
        return state

    def _logits_buffer(self, n_tok):
        """A reusable ``(n_tok, V)`` logits array for :meth:`loss` / :meth:`loss_and_grad`.

        Per model and per thread (``threading.local``): the logits never leave those
        methods, and a fresh 16 MB array per step (PTB-small) costs page faults and keeps
        the allocator's heap high.  One buffer is kept, for the last batch shape.
        """
        local = self.__dict__.get("_local")
        if local is None:
            local = self.__dict__.setdefault("_local", threading.local())
        buf = getattr(local, "logits", None)
        shape = (n_tok, self.vocab_size)
        if buf is None or buf.shape != shape or buf.dtype != self.dtype:
            buf = local.logits = None          # free the old one before allocating
            buf = local.logits = np.empty(shape, self.dtype)
        return buf

    def _run(self, x, hidden, mask, reuse=False):
        self._check_params()
        xa = _tokens2d(x, self.vocab_size, "x")
        T, B = xa.shape
        m = _mask(mask, (T, B), self.dtype)
        h0, c0 = self._hidden_in(hidden, B)
        X0 = self._params["embedding.weight"][xa]                # (T, B, E), a copy
        layers = self._layers()
        threads = _step_threads(self._be)
        caches = stack_forward(self._be, self.cell, self.flags, layers, X0, h0, c0, m, threads)
        top = caches[-1].Hs[1:].reshape(T * B, self.hidden_size)
        Z = _mm(self._be, top, self._params["decoder.weight"], trans_b=True,
                out=self._logits_buffer(T * B) if reuse else None, threads=threads,
                bias=self._params["decoder.bias"])
        return xa, m, layers, caches, top, Z

    def forward(self, x, hidden=None, mask=None, output="log_probs"):
        """Run the model over a batch.

        Parameters
        ----------
        x : array_like of int, shape (T, B)
            Token ids, time-major.
        hidden : ndarray (num_layers, B, H), or for LSTM a pair ``(h, c)``; optional
            Initial state (zeros if None).
        mask : array_like of 0/1, shape (T, B), optional
            0 marks padding: the state is held there (see the module docstring).
        output : {"log_probs", "logits", "probs"}

        Returns
        -------
        out : ndarray, shape (T, B, V)
        hidden : the final state, like ``hidden`` (at padded steps: the last real state)
        """
        if output not in ("log_probs", "logits", "probs"):
            raise ValueError(f"output must be 'log_probs', 'logits' or 'probs', got {output!r}")
        xa, m, layers, caches, top, Z = self._run(x, hidden, mask)
        T, B = xa.shape
        if output != "logits":
            self._be.rnn_log_softmax(Z, Z)
            if output == "probs":
                np.exp(Z, out=Z)
        return Z.reshape(T, B, self.vocab_size), self._hidden_out(caches)

    __call__ = forward

    def _loss(self, x, y, mask, hidden):
        xa, m, layers, caches, top, Z = self._run(x, hidden, mask, reuse=True)
        ya = _tokens2d(y, self.vocab_size, "y")
        if ya.shape != xa.shape:
            raise ValueError(f"y must have the shape of x {xa.shape}, got {ya.shape}")
        count = float(m.sum())
        if count == 0:
            raise ValueError("mask selects no tokens; the mean loss is undefined")
        # rnn_softmax_xent indexes Z[i, y[i]] without bounds checks: y was checked against
        # vocab_size, so the logits must be exactly that wide (guaranteed by _check_params).
        n_tok = xa.size
        if Z.shape != (n_tok, self.vocab_size) or Z.dtype != self.dtype \
                or not Z.flags.c_contiguous:
            raise ValueError(f"logits must be a C-contiguous {self.dtype.name} array of shape "
                             f"(T*B, vocab_size) = {(n_tok, self.vocab_size)}, got {Z.shape}")
        total = float(self._be.rnn_softmax_xent(Z, ya.reshape(-1), m.reshape(-1), 1.0 / count))
        return total / count, xa, m, layers, caches, top, Z

    def loss(self, x, y, mask=None, hidden=None):
        """Mean negative log-likelihood per unmasked token.

        Parameters
        ----------
        x, y : array_like of int, shape (T, B)
            Inputs and targets (usually ``y[t] = x[t + 1]``).
        mask : array_like of 0/1, shape (T, B), optional
        hidden : initial state, optional

        Returns
        -------
        loss : float
            ``-(1/N) sum_{t,b: mask=1} log p(y[t, b] | x[:t+1, b])``, ``N = mask.sum()``.
        hidden : the final state
        """
        L, xa, m, layers, caches, top, Z = self._loss(x, y, mask, hidden)
        return L, self._hidden_out(caches)

    def loss_and_grad(self, x, y, mask=None, hidden=None, grads=None, sparse_embedding=False):
        """Mean NLL and its exact gradient (full BPTT over the ``T`` steps given).

        The incoming ``hidden`` is treated as a constant (a stream trainer passes the
        previous chunk's final state: truncated BPTT at chunk boundaries).

        Parameters
        ----------
        x, y, mask, hidden : as in :meth:`loss`
        grads : dict, optional
            The ``grads`` of an earlier call (or any dict with the keys, shapes and dtype of
            :meth:`parameters`, C-contiguous and writeable): the new gradient is written
            into its arrays and the same dict is returned.  Saves allocating (and
            page-faulting) a full set of gradient arrays every step.
        sparse_embedding : bool, default False
            Return the embedding's gradient as a :class:`fastrnn.optim.RowSparse`: only the
            rows of the tokens in ``x`` (at most ``T * B`` of ``vocab_size``), as PyTorch's
            ``nn.Embedding(sparse=True)``.  :class:`fastrnn.optim.SGD` then updates only
            those rows; every optimizer and clipping function accepts it.  With ``grads``,
            its ``"embedding.weight"`` entry is replaced by the new ``RowSparse``.

        Returns
        -------
        loss : float
        grads : dict ``name -> ndarray``
            Same keys, shapes and dtype as :meth:`parameters` (``"embedding.weight"`` a
            ``RowSparse`` with ``sparse_embedding=True``).
        hidden : the final state (new arrays)
        """
        sparse_embedding = _flag(sparse_embedding, "sparse_embedding")
        want = self._expected_shapes()
        if grads is not None:
            if sparse_embedding:
                if not isinstance(grads, dict) or "embedding.weight" not in grads:
                    raise ValueError("grads must hold an 'embedding.weight' entry (any earlier "
                                     "gradient; it is replaced)")
                grads_in = {n: a for n, a in grads.items() if n != "embedding.weight"}
                _validate.param_dict(grads_in, {n: v for n, v in want.items()
                                                if n != "embedding.weight"},
                                     self.dtype, name="grads")
            else:
                grads_in = _validate.param_dict(grads, want, self.dtype, name="grads")
            bad = [n for n, a in grads_in.items() if not a.flags.writeable]
            if bad:
                raise ValueError(f"grads[{bad[0]!r}] is read-only; grads must be writeable arrays")
            p = self._params
            shared = [n for n, a in grads_in.items()
                      if any(np.may_share_memory(a, q) for q in p.values())]
            if shared:
                raise ValueError(f"grads[{shared[0]!r}] shares memory with the model's "
                                 "parameters; pass separate arrays")
            items = list(grads_in.items())
            for i, (n1, a1) in enumerate(items):
                for n2, a2 in items[i + 1:]:
                    if np.may_share_memory(a1, a2):
                        raise ValueError(f"grads[{n1!r}] and grads[{n2!r}] share memory; each "
                                         "gradient needs its own array")
        L, xa, m, layers, caches, top, dZ = self._loss(x, y, mask, hidden)
        T, B = xa.shape
        p = self._params
        threads = _step_threads(self._be)
        dTop = _mm(self._be, dZ, p["decoder.weight"], threads=threads).reshape(
            T, B, self.hidden_size)
        # the recurrent layers' gradients go straight into the arrays of `grads`
        outs = None if grads is None else [
            tuple(grads.get(f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for k in range(self.num_layers)]
        g = grads if grads is not None else {}
        dW = g.get("decoder.weight")
        if dW is None:
            dW = np.empty_like(p["decoder.weight"])
        db = np.empty_like(p["decoder.bias"]) if grads is None else g["decoder.bias"]
        ones = np.ones((1, dZ.shape[0]), dZ.dtype)

        def stack():
            lg, dX0, _, _ = stack_backward(self._be, self.cell, self.flags, layers, caches, m,
                                           dTop, threads=1 if overlap else threads, out=outs)
            return lg, _embedding_rows(xa, dX0)

        # the column sums of dZ as a product with a row of ones: at PTB-small's (400, 10000)
        # float32, just written, 0.44-0.47 ms against 1.0 ms for dZ.sum(axis=0) (medians).
        # On one thread: cut in blocks on Numba's threads it took 1.0-1.2 ms.
        def bias_grad():
            _mm(self._be, ones, dZ, threads=1, out=db.reshape(1, -1))

        overlap = _overlap_decoder(layers, dW.shape[0], threads)
        if overlap:
            from ._kernels.blas import gemm

            def block(r0, r1):
                return lambda: gemm(True, False, 1.0, dZ[:, r0:r1], top, 0.0, dW[r0:r1])
            V = dW.shape[0]
            nb = max(1, min(V, 16 * threads))       # fixed blocks: the same sums every run
            tasks = [bias_grad] + [block(k * V // nb, (k + 1) * V // nb) for k in range(nb)]
            lg, (ids, rows) = _beside(stack, tasks, threads - 1)
        else:
            lg, (ids, rows) = stack()
            _mm(self._be, dZ, top, trans_a=True, out=dW, threads=threads)
            bias_grad()
        g["decoder.weight"] = dW
        g["decoder.bias"] = db
        if sparse_embedding:
            g["embedding.weight"] = RowSparse(ids, rows, p["embedding.weight"].shape)
        else:
            dEmb = g.get("embedding.weight")
            if dEmb is None:
                dEmb = np.zeros_like(p["embedding.weight"])
            else:
                dEmb.fill(0)
            dEmb[ids] = rows
            g["embedding.weight"] = dEmb

        def put(name, value):
            if grads is None:
                g[name] = value
            elif g[name] is not value:
                g[name][...] = value

        for k, (dW_ih, dW_hh, db_ih, db_hh) in enumerate(lg):
            put(f"weight_ih_l{k}", dW_ih)
            put(f"weight_hh_l{k}", dW_hh)
            if self.bias:
                put(f"bias_ih_l{k}", db_ih)
                put(f"bias_hh_l{k}", db_hh)
        if grads is None:                        # the documented key order
            g = {n: g[n] for n in want}
        return L, g, self._hidden_out(caches)

    def __repr__(self):
        extra = "".join(f", {k}={v}" for k, v in self.flags.items())
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, embedding_dim={self.embedding_dim}, bias={self.bias}, "
                f"dtype={self.dtype.name}, backend={self._be.name!r}{extra})")


class RNN(_LanguageModel):
    """Tanh (Elman) RNN language model; see the module docstring.

    Parameters
    ----------
    vocab_size : int
        ``V``.
    hidden_size : int
        ``H``.
    num_layers : int, default 1
    embedding_dim : int, optional
        ``E``; defaults to ``hidden_size``.
    bias : bool, default True
    dtype : float32 (default) or float64
    backend : str, optional
        ``"numba"``, ``"numpy"`` (the reference) ...; default: the fastest available.
    seed : int, optional
        Seed of the initial weights.
    """

    cell = "rnn"

    def __init__(self, vocab_size, hidden_size, num_layers=1, embedding_dim=None, bias=True,
                 dtype=np.float32, backend=None, seed=None):
        super().__init__(vocab_size, hidden_size, num_layers, embedding_dim, bias, dtype,
                         backend, seed)


class GRU(_LanguageModel):
    """GRU language model (gate order ``r, z, n``); see the module docstring.

    Parameters are those of :class:`RNN`, plus

    reset_after : bool, default True
        True: PyTorch's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; False: the
        Theano tutorial's ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.
    hard_gates : bool, default False
        Gates ``r, z`` use ``clip(0.2 x + 0.5, 0, 1)`` instead of the sigmoid.
    """

    cell = "gru"

    def __init__(self, vocab_size, hidden_size, num_layers=1, embedding_dim=None, bias=True,
                 dtype=np.float32, backend=None, seed=None, reset_after=True, hard_gates=False):
        super().__init__(vocab_size, hidden_size, num_layers, embedding_dim, bias, dtype,
                         backend, seed, reset_after=_flag(reset_after, "reset_after"),
                         hard_gates=_flag(hard_gates, "hard_gates"))


class LSTM(_LanguageModel):
    """LSTM language model (gate order ``i, f, g, o``; state ``(h, c)``).

    Parameters are those of :class:`RNN`, plus

    hard_gates : bool, default False
        Gates ``i, f, o`` use ``clip(0.2 x + 0.5, 0, 1)`` instead of the sigmoid.
    """

    cell = "lstm"

    def __init__(self, vocab_size, hidden_size, num_layers=1, embedding_dim=None, bias=True,
                 dtype=np.float32, backend=None, seed=None, hard_gates=False):
        super().__init__(vocab_size, hidden_size, num_layers, embedding_dim, bias, dtype,
                         backend, seed, hard_gates=_flag(hard_gates, "hard_gates"))

# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
# cython: initializedcheck=False
"""Cython backend of the vanilla (Elman) tanh RNN kernels.

Same four functions, signatures and semantics as :mod:`fastrnn.reference.rnn` (the oracle);
see there for the model and the truncation modes.  Inputs were validated at the Python
boundary: these kernels never check and never raise.

Design note
-----------
Dimensions: ``T`` tokens, ``H`` hidden units, ``V`` vocabulary (``Vn`` in the code, to keep
``V`` for the parameter).  Parameters ``U (H, Vn)``, ``V (Vn, H)``, ``W (H, H)``; all arrays
C-contiguous, one dtype (float32 or float64, one fused ``floating`` specialisation each).

Workspaces (caller-allocated):

``s (T+1, H)``
    hidden states; row ``T`` holds the initial state on entry, so ``s[t-1]`` is the previous
    state for every ``t`` (for ``t = 0`` it is row ``T``).
``z (T, Vn)``
    logits ``Z = S Vᵀ`` (one GEMM for the whole sentence), then in place the probabilities
    ``P = softmax(Z)`` row by row, then ``Δ = P - onehot(y)``.  In ``MODE_LAST`` only rows
    ``t >= first = max(0, T-k)`` are turned into ``Δ`` and used.
``g (T, H)``
    first ``dS = Δ V`` (dL/ds_t coming from output t, one GEMM), then in place the
    per-step pre-activation gradients ``G[t] = dL/d(U[:, x_t] + W s_{t-1})``.
``dW (H, H)``
    in ``rnn_sgd`` a workspace for ``Σ_t G[t] s_{t-1}ᵀ`` before ``W -= lr dW``.

Once ``G`` is known every parameter gradient is a product:
``dV = Δᵀ S``, ``dW = Gᵀ S_prev`` (a GEMM over ``t = 1..T-1`` plus one rank-1 update with
``s[T]`` for ``t = 0``), ``dU[:, x_t] += G[t]``.  ``rnn_sgd`` never builds ``dU`` or ``dV``:
``V += (-lr) Δᵀ S`` is one GEMM with ``beta = 1`` (after ``dS = Δ V`` has used the old V),
and ``U`` is updated column by column for the tokens that occur.  ``W`` is updated last
because the backward recurrence uses it.

BLAS layout trick: BLAS is column-major, so a C-contiguous ``(m, n)`` array *is* the
column-major ``(n, m)`` matrix ``Aᵀ`` with leading dimension ``n``.  A C-order product
``C = A B`` is therefore computed as the column-major product ``Cᵀ = Bᵀ Aᵀ`` -- swap the
operands, keep the transposition flags as they would be for the transposes.  Concretely
(``ld`` = row length of the C array):

* ``s_t += W s_{t-1}``:   ``gemv('T', H, H, W, ld=H)``  (col-major W is ``Wᵀ``; 'T' gives ``W``)
* ``v = Wᵀ u``:           ``gemv('N', H, H, W, ld=H)``
* ``Z = S Vᵀ (T, Vn)``:   ``gemm('T', 'N', m=Vn, n=T, k=H, A=V ld H, B=S ld H, C=Z ld Vn)``
* ``dS = Δ V (T, H)``:    ``gemm('N', 'N', m=H, n=T, k=Vn, A=V ld H, B=Δ ld Vn, C=dS ld H)``
* ``dV = Δᵀ S (Vn, H)``:  ``gemm('N', 'T', m=H, n=Vn, k=T, A=S ld H, B=Δ ld Vn, C=dV ld H)``
* ``dW = Gᵀ S_prev``:     ``gemm('N', 'T', m=H, n=H, k=T-1, A=S_prev ld H, B=G ld H, C=dW ld H)``
* ``dW += G[0] s[T]ᵀ``:   ``ger(m=H, n=H, x=s[T], y=G[0], A=dW ld H)``

Numerics: the loss and the softmax normaliser are accumulated in double also for float32.
``exp`` of the softmax is a branch-free polynomial in C (``fastrnn_exp_shift_d/_f`` below,
~1 ulp) that the compiler vectorises -- libm's scalar ``exp`` made the softmax cost as much
as a GEMM at V = 8000.  Only results below the smallest normal number are flushed to 0.
NaN anywhere in the logits gives a NaN loss (nothing is clamped away silently).
The fused-type helpers around it (``_exp_shift``, the chunked ``_exp_sum``, ``_sum``,
``_rowmax``, ``_gemm``) and the C attribute macros are shared with :mod:`._cells_cy`
through ``_shared.pxi``; the C exp kernels themselves are this module's own.

The GIL is released around all numerical work; the kernels keep no global state.
"""
from cython cimport floating
from libc.math cimport log, tanh, tanhf, NAN
from libc.stdlib cimport malloc, free
from libc.string cimport memset

include "_shared.pxi"   # _gemm, _exp_shift, _sum, _exp_sum, _rowmax, FASTRNN_VEC (shared)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* exp(src[j] - m) for arguments <= 0 (softmax: z - max z), written so that the loop
       vectorises: no libm call, selects instead of branches, no float->int conversion.
       x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 split in two), exp(r) by its Taylor
       polynomial (float64: degree 13, truncation < 5e-18 relative; float32: degree 7,
       < 6e-9; measured max error ~1 ulp), times 2^n assembled in the exponent bits.  n is
       rounded with the 1.5*2^52 (1.5*2^23) shifter, whose low mantissa bits then hold n.
       Arguments below -708 (-87 for float32) give 0: only subnormal results are flushed.
       NaN propagates through the polynomial.

       FASTRNN_VEC (no-trapping-math, so that the selects vectorise; plus an AVX2+FMA
       clone on x86-64 glibc) comes from _shared.pxi.

       Not shared with _cells_cy on purpose: its float32 kernel flushes only below -87.3
       (here -87.0) and extracts the exponent bits differently, so merging would change
       float32 results of one module or the other. */

    FASTRNN_VEC static void
    fastrnn_exp_shift_d(const double *src, double *dst, Py_ssize_t len, double m) {
        const double shifter = 6755399441055744.0;          /* 1.5 * 2^52 */
        const double log2e = 1.4426950408889634074;
        const double ln2_hi = 6.93147180369123816490e-01;
        const double ln2_lo = 1.90821492927058770002e-10;
        for (Py_ssize_t j = 0; j < len; j++) {
            double x = src[j] - m;
            double xc = x < -708.0 ? -708.0 : x;
            double kd = xc * log2e + shifter;
            int64_t ki;
            memcpy(&ki, &kd, sizeof ki);
            double n = kd - shifter;
            double r = (xc - n * ln2_hi) - n * ln2_lo;
            double p = 1.0 / 6227020800.0;
            p = p * r + 1.0 / 479001600.0;
            p = p * r + 1.0 / 39916800.0;
            p = p * r + 1.0 / 3628800.0;
            p = p * r + 1.0 / 362880.0;
            p = p * r + 1.0 / 40320.0;
            p = p * r + 1.0 / 5040.0;
            p = p * r + 1.0 / 720.0;
            p = p * r + 1.0 / 120.0;
            p = p * r + 1.0 / 24.0;
            p = p * r + 1.0 / 6.0;
            p = p * r + 0.5;
            p = p * r + 1.0;
            p = p * r + 1.0;
            int64_t bits = (int64_t)((uint64_t)(ki + 1023) << 52);
            double scale;
            memcpy(&scale, &bits, sizeof scale);
            double e = p * scale;
            dst[j] = x < -708.0 ? 0.0 : e;
        }
    }

    FASTRNN_VEC static void
    fastrnn_exp_shift_f(const float *src, float *dst, Py_ssize_t len, float m) {
        const float shifter = 12582912.0f;                   /* 1.5 * 2^23 */
        const float log2e = 1.44269504088896341f;
        const float ln2_hi = 0.693359375f;
        const float ln2_lo = -2.12194440e-4f;
        for (Py_ssize_t j = 0; j < len; j++) {
            float x = src[j] - m;
            float xc = x < -87.0f ? -87.0f : x;
            float kd = xc * log2e + shifter;
            int32_t ki;
            memcpy(&ki, &kd, sizeof ki);
            float n = kd - shifter;
            float r = (xc - n * ln2_hi) - n * ln2_lo;
            float p = 1.0f / 5040.0f;
            p = p * r + 1.0f / 720.0f;
            p = p * r + 1.0f / 120.0f;
            p = p * r + 1.0f / 24.0f;
            p = p * r + 1.0f / 6.0f;
            p = p * r + 0.5f;
            p = p * r + 1.0f;
            p = p * r + 1.0f;
            int32_t bits = (int32_t)((uint32_t)(ki + 127) << 23);
            float scale;
            memcpy(&scale, &bits, sizeof scale);
            float e = p * scale;
            dst[j] = x < -87.0f ? 0.0f : e;
        }
    }
    """
    void _exp_shift_d "fastrnn_exp_shift_d"(const double *src, double *dst, Py_ssize_t n,
                                             double m) noexcept nogil
    void _exp_shift_f "fastrnn_exp_shift_f"(const float *src, float *dst, Py_ssize_t n,
                                             float m) noexcept nogil


# ---------------------------------------------------------------------------------------
# BLAS dispatch on the fused type (all arguments by value; _gemm is in _shared.pxi)
# ---------------------------------------------------------------------------------------

cdef inline void _gemv(char ta, int m, int n, floating alpha, floating *a, int lda,
                       floating *x, floating beta, floating *y) noexcept nogil:
    cdef Py_ssize_t v[4]
    cdef int i32[4]
    cdef long long i64[4]
    cdef size_t w
    v[0] = m; v[1] = n; v[2] = lda; v[3] = 1          # the last one: both increments
    cdef char *p = _blas_ints(v, 4, i64, i32, &w)
    cdef _blas11 f = _p_dgemv if floating is double else _p_sgemv
    f(&ta, p, p + w, &alpha, a, p + 2 * w, x, p + 3 * w, &beta, y, p + 3 * w)


cdef inline void _ger(int m, int n, floating alpha, floating *x, floating *y,
                      floating *a, int lda) noexcept nogil:
    cdef Py_ssize_t v[4]
    cdef int i32[4]
    cdef long long i64[4]
    cdef size_t w
    v[0] = m; v[1] = n; v[2] = lda; v[3] = 1          # the last one: both increments
    cdef char *p = _blas_ints(v, 4, i64, i32, &w)
    cdef _blas9 f = _p_dger if floating is double else _p_sger
    f(p, p + w, &alpha, x, p + 3 * w, y, p + 3 * w, a, p + 2 * w)


cdef inline void _axpy(int n, floating alpha, floating *x, floating *y) noexcept nogil:
    cdef Py_ssize_t v[2]
    cdef int i32[2]
    cdef long long i64[2]
    cdef size_t w
    v[0] = n; v[1] = 1                                 # the increment of both vectors
    cdef char *p = _blas_ints(v, 2, i64, i32, &w)
    cdef _blas6 f = _p_daxpy if floating is double else _p_saxpy
    f(p, &alpha, x, p + w, y, p + w)


# ---------------------------------------------------------------------------------------
# Pieces of the forward and backward passes (raw pointers, no GIL)
# ---------------------------------------------------------------------------------------

cdef void _recurrence(floating *U, floating *W, const Py_ssize_t *x, floating *s,
                      Py_ssize_t T, Py_ssize_t H, Py_ssize_t Vn) noexcept nogil:
    """``s[t] = tanh(U[:, x[t]] + W s[t-1])`` for t = 0..T-1 (``s[-1]`` is row T)."""
    cdef Py_ssize_t t, i, col
    cdef floating *st
    cdef floating *prev
    for t in range(T):
        st = s + t * H
        prev = s + (t - 1 if t > 0 else T) * H
        col = x[t]
        for i in range(H):
            st[i] = U[i * Vn + col]
        _gemv(c'T', <int>H, <int>H, <floating>1, W, <int>H, prev, <floating>1, st)
        for i in range(H):
            if floating is double:
                st[i] = tanh(st[i])
            else:
                st[i] = tanhf(st[i])


cdef inline void _logits(floating *Vp, floating *s, floating *z, Py_ssize_t T,
                         Py_ssize_t H, Py_ssize_t Vn) noexcept nogil:
    """``Z = S[:T] Vᵀ`` ``(T, Vn)`` into ``z``: one GEMM."""
    _gemm(c'T', c'N', <int>Vn, <int>T, <int>H, <floating>1, Vp, <int>H, s, <int>H,
          <floating>0, z, <int>Vn)


cdef double _softmax_rows(floating *z, const Py_ssize_t *y, Py_ssize_t T, Py_ssize_t Vn,
                          Py_ssize_t first, int store) noexcept nogil:
    """Row-wise stable softmax of the logits in ``z``; returns ``Σ_t lse_t - z[t, y_t]``.

    ``store``: 0 -- leave ``z`` alone (loss only; needs ``y``);
    1 -- overwrite every row with its probabilities (``y`` may be NULL, loss then 0);
    2 -- overwrite rows ``t >= first`` with ``Δ = P - onehot(y)`` (earlier rows untouched).
    """
    cdef Py_ssize_t t, j
    cdef floating *row
    cdef floating m, inv
    cdef double acc, zy = 0.0, loss = 0.0
    cdef bint write
    for t in range(T):
        row = z + t * Vn
        m = _rowmax(row, Vn)
        if y != NULL:
            zy = <double>(row[y[t]] - m)
        write = store == 1 or (store == 2 and t >= first)
        if write:
            _exp_shift(row, row, Vn, m)
            acc = _sum(row, Vn)
        else:
            acc = _exp_sum(row, Vn, m)
        # lse_t - z[y] = log Σ exp(z - m) - (z[y] - m)
        if y != NULL:
            loss += log(acc) - zy
        if write:
            inv = <floating>(1.0 / acc)
            for j in range(Vn):
                row[j] *= inv
            if store == 2:
                row[y[t]] -= 1
    return loss


cdef void _backward_g(floating *W, floating *s, floating *g, int mode, Py_ssize_t k,
                      Py_ssize_t T, Py_ssize_t H, Py_ssize_t first,
                      floating *tmp) noexcept nogil:
    """Turn ``g`` from ``dS`` into the pre-activation gradients ``G`` (rows ``>= first``).

    ``tmp`` holds ``2 H`` values (used in MODE_WINDOW only).
    """
    cdef Py_ssize_t t, tau, lo, i
    cdef floating *gt
    cdef floating *st
    cdef floating *a
    cdef floating *b
    cdef floating *c
    if mode == 0:   # MODE_WINDOW: output t's error flows back through steps t..max(0, t-k)
        # Outputs in increasing order: when output t is processed, rows < t of g already
        # hold G (no later output writes row t before output t), rows >= t still hold dS.
        for t in range(T):
            gt = g + t * H
            st = s + t * H
            a = tmp
            b = tmp + H
            for i in range(H):
                a[i] = gt[i] * (1 - st[i] * st[i])
                gt[i] = a[i]
            lo = t - k if t > k else 0
            tau = t
            while tau > lo:
                _gemv(c'N', <int>H, <int>H, <floating>1, W, <int>H, a, <floating>0, b)
                st = s + (tau - 1) * H
                gt = g + (tau - 1) * H
                for i in range(H):
                    b[i] *= 1 - st[i] * st[i]
                    gt[i] += b[i]
                c = a
                a = b
                b = c
                tau -= 1
    else:           # MODE_FULL / MODE_LAST: one recurrence dh_t = dS_t + Wᵀ G_{t+1}
        t = T - 1
        while t >= first:
            gt = g + t * H
            st = s + t * H
            if t < T - 1:
                _gemv(c'N', <int>H, <int>H, <floating>1, W, <int>H, gt + H, <floating>1, gt)
            for i in range(H):
                gt[i] *= 1 - st[i] * st[i]
            t -= 1


cdef void _weight_grad(floating *s, floating *g, floating *dW, Py_ssize_t T, Py_ssize_t H,
                       Py_ssize_t first) noexcept nogil:
    """``dW = Σ_{t >= first} G[t] s[t-1]ᵀ`` (overwrites ``dW``)."""
    cdef Py_ssize_t t0 = first if first > 1 else 1
    if T - t0 > 0:
        _gemm(c'N', c'T', <int>H, <int>H, <int>(T - t0), <floating>1, s + (t0 - 1) * H, <int>H,
              g + t0 * H, <int>H, <floating>0, dW, <int>H)
    else:
        memset(dW, 0, H * H * sizeof(floating))
    if first == 0:
        _ger(<int>H, <int>H, <floating>1, s + T * H, g, dW, <int>H)


cdef double _loss_and_g(floating *U, floating *Vp, floating *W, const Py_ssize_t *x,
                        const Py_ssize_t *y, int mode, Py_ssize_t k, floating *s,
                        floating *z, floating *g, Py_ssize_t T, Py_ssize_t H,
                        Py_ssize_t Vn, Py_ssize_t first, floating alpha_v, floating *dV,
                        floating *tmp) noexcept nogil:
    """Common part of grad and sgd: forward, Δ in z, dS in g, dV (or V's update), G in g.

    With ``dV != NULL`` writes ``dV = Δᵀ S``; otherwise applies ``V += alpha_v Δᵀ S``
    after ``dS`` has been computed with the old ``V``.
    """
    cdef double loss
    cdef Py_ssize_t nr = T - first
    _recurrence(U, W, x, s, T, H, Vn)
    _logits(Vp, s, z, T, H, Vn)
    loss = _softmax_rows(z, y, T, Vn, first, 2)
    if nr > 0:
        # dS = Δ V  (rows first..T-1)
        _gemm(c'N', c'N', <int>H, <int>nr, <int>Vn, <floating>1, Vp, <int>H, z + first * Vn,
              <int>Vn, <floating>0, g + first * H, <int>H)
        if dV != NULL:
            _gemm(c'N', c'T', <int>H, <int>Vn, <int>nr, <floating>1, s + first * H, <int>H,
                  z + first * Vn, <int>Vn, <floating>0, dV, <int>H)
        else:
            _gemm(c'N', c'T', <int>H, <int>Vn, <int>nr, alpha_v, s + first * H, <int>H,
                  z + first * Vn, <int>Vn, <floating>1, Vp, <int>H)
        _backward_g(W, s, g, mode, k, T, H, first, tmp)
    elif dV != NULL:
        memset(dV, 0, Vn * H * sizeof(floating))
    return loss


cdef inline Py_ssize_t _first(int mode, Py_ssize_t k, Py_ssize_t T) noexcept nogil:
    if mode == 1 and k < T:         # MODE_LAST: steps T-k .. T-1 only
        return T - k if k >= 0 else 0
    return 0


# ---------------------------------------------------------------------------------------
# Python-callable kernels
# ---------------------------------------------------------------------------------------

def rnn_forward(floating[:, ::1] U, floating[:, ::1] V, floating[:, ::1] W,
                const Py_ssize_t[::1] x, floating[:, ::1] s, floating[:, ::1] o):
    """Forward pass.  Fills ``s[:T]`` (hidden states) and ``o`` ``(T, V)`` (probabilities).

    ``s[T]`` must hold the initial state on entry.
    """
    cdef Py_ssize_t T = x.shape[0], H = U.shape[0], Vn = U.shape[1]
    if T == 0:
        return
    with nogil:
        _recurrence(&U[0, 0], &W[0, 0], &x[0], &s[0, 0], T, H, Vn)
        _logits(&V[0, 0], &s[0, 0], &o[0, 0], T, H, Vn)
        _softmax_rows(&o[0, 0], NULL, T, Vn, 0, 1)


def rnn_loss(floating[:, ::1] U, floating[:, ::1] V, floating[:, ::1] W,
             const Py_ssize_t[::1] x, const Py_ssize_t[::1] y, floating[:, ::1] s,
             floating[:, ::1] z):
    """Total cross-entropy ``-Σ_t log softmax(V s_t)[y_t]``; fills ``s``; ``z`` gets the logits."""
    cdef Py_ssize_t T = x.shape[0], H = U.shape[0], Vn = U.shape[1]
    cdef double loss = 0.0
    if T == 0:
        return loss
    with nogil:
        _recurrence(&U[0, 0], &W[0, 0], &x[0], &s[0, 0], T, H, Vn)
        _logits(&V[0, 0], &s[0, 0], &z[0, 0], T, H, Vn)
        loss = _softmax_rows(&z[0, 0], &y[0], T, Vn, 0, 0)
    return loss


def rnn_grad(floating[:, ::1] U, floating[:, ::1] V, floating[:, ::1] W,
             const Py_ssize_t[::1] x, const Py_ssize_t[::1] y, int mode, Py_ssize_t k,
             floating[:, ::1] s, floating[:, ::1] z, floating[:, ::1] g,
             floating[:, ::1] dU, floating[:, ::1] dV, floating[:, ::1] dW):
    """Loss and its (truncated) gradient.  Overwrites ``dU``, ``dV``, ``dW``; returns the loss.

    ``z`` ``(T, V)`` and ``g`` ``(T, H)`` are workspaces.  Returns NaN if the ``2 H``
    scratch values of MODE_WINDOW cannot be allocated.
    """
    cdef Py_ssize_t T = x.shape[0], H = U.shape[0], Vn = U.shape[1]
    cdef Py_ssize_t first, t, i, col
    cdef double loss = 0.0
    cdef floating *tmp = NULL
    cdef floating *gt
    cdef floating *pdU
    with nogil:
        memset(&dU[0, 0], 0, H * Vn * sizeof(floating))
        if T == 0:
            memset(&dV[0, 0], 0, H * Vn * sizeof(floating))
            memset(&dW[0, 0], 0, H * H * sizeof(floating))
        else:
            first = _first(mode, k, T)
            if mode == 0:
                tmp = <floating *>malloc(2 * H * sizeof(floating))
            if mode == 0 and tmp == NULL:
                loss = NAN
            else:
                loss = _loss_and_g(&U[0, 0], &V[0, 0], &W[0, 0], &x[0], &y[0], mode, k,
                                   &s[0, 0], &z[0, 0], &g[0, 0], T, H, Vn, first,
                                   <floating>0, &dV[0, 0], tmp)
                free(tmp)
                _weight_grad(&s[0, 0], &g[0, 0], &dW[0, 0], T, H, first)
                pdU = &dU[0, 0]
                for t in range(first, T):
                    gt = &g[t, 0]
                    col = x[t]
                    for i in range(H):
                        pdU[i * Vn + col] += gt[i]
    return loss


def rnn_sgd(floating[:, ::1] U, floating[:, ::1] V, floating[:, ::1] W,
            const Py_ssize_t[::1] x, const Py_ssize_t[::1] y, int mode, Py_ssize_t k,
            double lr, floating[:, ::1] s, floating[:, ::1] z, floating[:, ::1] g,
            floating[:, ::1] dW):
    """One SGD step in place: ``P -= lr * dL/dP`` for P in U, V, W.  Returns the loss before it.

    ``dW`` ``(H, H)`` is a workspace.  Dense ``dU``/``dV`` are never formed: V gets one GEMM
    with ``beta = 1``, U only the columns of the tokens that occur, W an axpy at the end.
    """
    cdef Py_ssize_t T = x.shape[0], H = U.shape[0], Vn = U.shape[1]
    cdef Py_ssize_t first, t, i, col
    cdef double loss = 0.0
    cdef floating *tmp = NULL
    cdef floating *gt
    cdef floating *pU
    cdef floating alpha = <floating>(-lr)
    if T == 0:
        return loss
    with nogil:
        first = _first(mode, k, T)
        if mode == 0:
            tmp = <floating *>malloc(2 * H * sizeof(floating))
        if mode == 0 and tmp == NULL:
            loss = NAN
        else:
            loss = _loss_and_g(&U[0, 0], &V[0, 0], &W[0, 0], &x[0], &y[0], mode, k,
                               &s[0, 0], &z[0, 0], &g[0, 0], T, H, Vn, first,
                               alpha, NULL, tmp)
            free(tmp)
            if first < T:
                _weight_grad(&s[0, 0], &g[0, 0], &dW[0, 0], T, H, first)
                pU = &U[0, 0]
                for t in range(first, T):
                    gt = &g[t, 0]
                    col = x[t]
                    for i in range(H):
                        pU[i * Vn + col] += alpha * gt[i]
                _axpy(<int>(H * H), alpha, &dW[0, 0], &W[0, 0])
    return loss

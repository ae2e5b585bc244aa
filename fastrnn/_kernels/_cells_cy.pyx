# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
# cython: initializedcheck=False
"""Cython backend of the batched layer kernels: tanh (Elman), GRU and LSTM layers and the
output-layer softmax kernels.

Same functions, signatures and semantics as the NumPy reference (the oracle):
:mod:`fastrnn.reference.elman` (``rnn_layer_forward``, ``rnn_layer_backward``,
``rnn_softmax_xent``, ``rnn_log_softmax``), :mod:`fastrnn.reference.gru`
(``gru_layer_forward``, ``gru_layer_backward``) and :mod:`fastrnn.reference.lstm`
(``lstm_layer_forward``, ``lstm_layer_backward``), and the GRU tutorial's RMSprop update
(``gru_rmsprop``, ``gru_rmsprop_columns``, also in :mod:`fastrnn.reference.gru`).  The
equations, the flags ``reset_after`` / ``hard_gates``, the mask semantics
(``mask[t, b] == 0``: the state is held, no gradient reaches the gates) and the cache
layouts are documented there.

Design note
-----------
Arrays are time-major and C-contiguous, one float dtype per call (float32 or float64: one
fused ``floating`` specialisation each; the mask has the same dtype, ``y`` is ``intp``).
Dimensions: ``T`` steps, ``B`` sequences, ``H`` units, ``G = k H`` gate rows (k = 1, 3, 4).
The caller (:mod:`fastrnn.models`) does the whole-sequence GEMMs (``Xp = X W_ihᵀ + b_ih``,
``dW = dGᵀ X``); these kernels run only the sequential part, one or two BLAS GEMMs on the
``(B, H)`` state per step plus fused element-wise loops.  Unlike :mod:`._rnn_cy` the
kernels check the array shapes once at entry (O(1), ``ValueError``): a wrong shape would
otherwise write out of bounds; ``gru_layer_backward`` also refuses ``dGx`` and ``dGh``
sharing memory.  Values are not checked.

BLAS layout (column-major; the library is :mod:`fastrnn._kernels._blas_lib`'s): a C-contiguous ``(m, n)`` block
with row stride ``ld`` *is* the column-major ``n x m`` matrix (its transpose) with leading
dimension ``ld``.  So a row-major product ``C = A B`` is the column-major ``Cᵀ = Bᵀ Aᵀ``:

* forward,  ``A (B, N) = h (B, H) W (N, H)ᵀ``:  ``gemm('T', 'N', m=N, n=B, k=H, W ld H, h ld H, A ld N)``
* backward, ``D (B, H) += dG (B, K) W (K, H)``: ``gemm('N', 'N', m=H, n=B, k=K, W ld H, dG ld rs, D ld H)``

where a block's leading dimension is its row stride, so column blocks of a cache row (e.g.
``r * h`` at ``cache[t, :, 3H:]``, row stride ``4H``; the ``r, z`` part of ``dGh[t]``, row
stride ``3H``) go to BLAS in place, without a copy.

Per step:

* tanh layer: ``Hs[t+1] = h_{t-1} W_hhᵀ`` (GEMM straight into the output), then
  ``tanh(Xp + . + b)`` in place.  Backward: ``dG`` row by row, then
  ``dh = dG W_hh + (held rows: dh)`` as one GEMM with ``beta = 1`` into a buffer that holds 0
  for real rows and the carried gradient for padded rows.
* GRU: one GEMM ``(B, H) x (H, 3H)`` (reset_after) or two (``r, z`` first, then
  ``W_hn (r * h)`` with ``r * h`` read from the cache).  Backward: one GEMM
  ``dGh W_hh`` (reset_after) or two (``da = dn W_hn`` before ``dr``, then ``[dr, dz] W_rz``).
* LSTM: one GEMM straight into ``cache[t]`` (``(B, 4H)``, the pre-activations are then
  turned into gate values in place); backward one GEMM ``dG W_hh``.  ``tanh(c_t)`` is
  recomputed in the backward pass with the same function as in the forward pass.

Workspaces (a few ``(B, H)`` or ``(B, 3H)`` buffers) are allocated with NumPy before the
time loop; nothing is allocated inside it.  The GIL is released around all numerical work.
The per-row element loops of the GRU and LSTM backward passes are written in C below
(non-overlapping pointers, flags branched on outside the loop) because GCC does not
vectorise them in the Cython-generated code; the forward loops are short and stay here.

Measured (T=20, B=20, H=200, float32, one BLAS thread, CPU time, shared 2-core machine so
+-15%): forward + backward 2.0 / 6.8 / 8.4 ms for the tanh / GRU / LSTM layer, vs 2.6 /
8.5 / 11 ms for the Numba kernels; the per-step GEMMs alone take ~1.0 / 2.9 / 3.9 ms
(OpenBLAS spends about half of that packing ``W_hh`` at every call).

Numerics: float64 uses libm (``exp``, ``tanh``) for the activations, so it agrees with the
reference to a few ulp.  float32 uses branch-free activations written in C below, which
GCC vectorises (a libm call per element is not): ``exp(x)`` for ``x <= 0`` by Cody-Waite
reduction and a Taylor polynomial (max error ~2 ulp measured for sigmoid and tanh),
``sigmoid(x) = 1/(1+e)`` or ``e/(1+e)`` with ``e = exp(-|x|)`` (never overflows),
``tanh|x| = (1-e)/(1+e)`` with ``e = exp(-2|x|)`` (and the odd Taylor series for
``|x| < 1/4``, where that quotient cancels).  The softmax kernels use the same vectorised
``exp`` in both precisions (degree 13 for float64, ~1 ulp), accumulate sums and the loss in
double, and let NaN through (a NaN logit gives a NaN loss).  The hard sigmoid is
``clip(0.2 x + 0.5, 0, 1)`` evaluated in the array's dtype as the reference does; its
derivative is taken from the gate output ``y``: ``0.2`` where ``0 < y < 1``, else 0 (so 0
at ``x = +-2.5`` exactly, as in the reference).  The AVX2 clones of the C loops may fuse
multiply-adds, so results can differ from the reference in the last bit or two.

The fused-type softmax helpers (``_exp_shift``, the chunked ``_exp_sum``, ``_sum``,
``_rowmax``), ``_gemm`` and the C attribute macros are shared with :mod:`._rnn_cy` through
``_shared.pxi``; the C exp and activation kernels are this module's own (its float32 ``exp``
differs from ``_rnn_cy``'s, see the comment in the C block below).
"""
import numpy as np

from cython cimport floating
from libc.math cimport exp, log, sqrt, tanh
from libc.string cimport memcpy, memmove, memset

include "_shared.pxi"   # _gemm, _exp_shift, _sum, _exp_sum, _rowmax, FASTRNN_VEC (shared)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    /* Element-wise activations that GCC vectorises: no libm call, selects not branches.

       cells_expneg_*(x) = exp(x) for x <= 0 (callers pass -|v| or z - max z).  Write
       x = k ln2 + r, |r| <= ln2/2, k = round(x / ln2) obtained with the 1.5 * 2^52
       (1.5 * 2^23) rounding constant, whose low mantissa bits then hold k as an integer;
       ln2 is split in a short high part (exact k * hi) and a low part.  exp(r) is its Taylor
       polynomial in Horner form (float64: to r^13, remainder < 5e-18 relative; float32: to
       r^7, < 6e-9) and 2^k is built in the exponent field.  Arguments below -708 (-87.3)
       give 0: only results that would be subnormal are flushed.  NaN stays NaN.

       The attributes FASTRNN_NOTRAP / FASTRNN_VEC (no-trapping-math, so that the selects
       vectorise; FASTRNN_VEC adds an AVX2 + FMA clone on x86-64 glibc) come from
       _shared.pxi.  These exp kernels are not shared with _rnn_cy on purpose: its float32
       kernel flushes below -87.0 (here -87.3) and extracts the exponent bits differently,
       so merging would change float32 results of one module or the other. */

    FASTRNN_NOTRAP static inline double cells_expneg_d(double x) {
        const double round_c = 6755399441055744.0;           /* 1.5 * 2^52 */
        const double inv_ln2 = 1.4426950408889634074;
        const double ln2_hi = 6.93147180369123816490e-01;  /* 32 significant bits */
        const double ln2_lo = 1.90821492927058770002e-10;
        double xc = x < -708.0 ? -708.0 : x;
        double kr = xc * inv_ln2 + round_c;
        int64_t ki;
        memcpy(&ki, &kr, sizeof ki);
        double k = kr - round_c;
        double r = (xc - k * ln2_hi) - k * ln2_lo;
        double p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24
                 + r * (1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320
                 + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800
                 + r * (1.0 / 479001600 + r * (1.0 / 6227020800.0)))))))))))));
        /* the low 32 bits of kr hold k in two's complement */
        int64_t e = (int64_t)(int32_t)(uint32_t)(uint64_t)ki + 1023;
        uint64_t bits = (uint64_t)e << 52;
        double two_k;
        memcpy(&two_k, &bits, sizeof two_k);
        double v = p * two_k;
        return x < -708.0 ? 0.0 : v;
    }

    FASTRNN_NOTRAP static inline float cells_expneg_f(float x) {
        const float round_c = 12582912.0f;                    /* 1.5 * 2^23 */
        const float inv_ln2 = 1.44269504088896341f;
        const float ln2_hi = 0.693359375f;                   /* 9 significant bits */
        const float ln2_lo = -2.12194440e-4f;
        float xc = x < -87.3f ? -87.3f : x;
        float kr = xc * inv_ln2 + round_c;
        int32_t ki;
        memcpy(&ki, &kr, sizeof ki);
        float k = kr - round_c;
        float r = (xc - k * ln2_hi) - k * ln2_lo;
        float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24
                + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
        /* the low 22 bits of kr hold k (|k| <= 126) in two's complement */
        int32_t kk = (int32_t)((uint32_t)ki << 10) >> 10;
        uint32_t bits = (uint32_t)(kk + 127) << 23;
        float two_k;
        memcpy(&two_k, &bits, sizeof two_k);
        float v = p * two_k;
        return x < -87.3f ? 0.0f : v;
    }

    /* dst[j] = exp(src[j] - m), arguments <= 0; dst may be src */
    FASTRNN_VEC static void
    cells_exp_shift_d(const double *src, double *dst, Py_ssize_t n, double m) {
        for (Py_ssize_t j = 0; j < n; j++) dst[j] = cells_expneg_d(src[j] - m);
    }

    FASTRNN_VEC static void
    cells_exp_shift_f(const float *src, float *dst, Py_ssize_t n, float m) {
        for (Py_ssize_t j = 0; j < n; j++) dst[j] = cells_expneg_f(src[j] - m);
    }

    /* dst = sigmoid(src), float32; dst may be src */
    FASTRNN_VEC static void
    cells_sigmoid_f(const float *src, float *dst, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; j++) {
            float x = src[j];
            float e = cells_expneg_f(-fabsf(x));
            float q = 1.0f / (1.0f + e);
            dst[j] = x >= 0.0f ? q : e * q;
        }
    }

    /* dst = tanh(src), float32; dst may be src */
    FASTRNN_VEC static void
    cells_tanh_f(const float *src, float *dst, Py_ssize_t n) {
        for (Py_ssize_t j = 0; j < n; j++) {
            float x = src[j];
            float a = fabsf(x);
            float e = cells_expneg_f(-2.0f * a);
            float big = (1.0f - e) / (1.0f + e);
            float a2 = a * a;
            /* tanh a = a - a^3/3 + 2a^5/15 - 17a^7/315 + 62a^9/2835 - ...  (|a| < 1/4) */
            float small = a * (1.0f + a2 * (-1.0f / 3 + a2 * (2.0f / 15 + a2 * (-17.0f / 315
                        + a2 * (62.0f / 2835)))));
            float t = a < 0.25f ? small : big;
            dst[j] = copysignf(t, x);
        }
    }

    /* Per-row element loops of the GRU and LSTM backward passes, one definition for float
       and double (macro templates).  The pointers are declared non-overlapping and the
       flags are branched on outside the loops, so that GCC vectorises them (in the
       Cython-generated code there are too many pointers for its run-time alias checks).
       Same expressions, in the same order, as the reference.  CELLS_GG_* is the gate
       derivative as a function of the gate output y. */
    #define CELLS_GG_HARD(T, y) (((y) > (T)0 && (y) < (T)1) ? (T)0.2 : (T)0)
    #define CELLS_GG_SOFT(T, y) ((y) * ((T)1 - (y)))

    /* GRU, one sequence b at step t, real (unmasked) row: dh holds dL/dh_t minus dHs[t] on
       entry and d * z (the direct part of dL/dh_{t-1}) on return; gx, gh are the rows of
       dGx[t], dGh[t].  Without reset_after the r block is filled by the second function
       once da = dn W_hn is known, which also adds da * r to dh. */
    #define CELLS_GRU_LOOP(T, GG, RA) \
        for (Py_ssize_t j = 0; j < H; j++) { \
            T d = dh[j] + dy[j]; \
            T r = ca[j], z = ca[H + j], n = ca[2 * H + j]; \
            T dnp = d * ((T)1 - z) * ((T)1 - n * n); \
            T dzp = d * (hp[j] - n) * GG(T, z); \
            gx[H + j] = dzp; \
            gh[H + j] = dzp; \
            gx[2 * H + j] = dnp; \
            dh[j] = d * z; \
            if (RA) { \
                T drp = dnp * ca[3 * H + j] * GG(T, r); \
                gx[j] = drp; \
                gh[j] = drp; \
                gh[2 * H + j] = dnp * r; \
            } else { \
                gh[2 * H + j] = dnp; \
            } \
        }
    #define CELLS_GRU_RESET_LOOP(T, GG) \
        for (Py_ssize_t j = 0; j < H; j++) { \
            T r = ca[j], a = da[j]; \
            T drp = a * hp[j] * GG(T, r); \
            gx[j] = drp; \
            gh[j] = drp; \
            dh[j] += a * r; \
        }
    #define CELLS_GRU_BWD_ROW(T, SUF) \
    FASTRNN_VEC static void \
    cells_gru_bwd_row_##SUF(Py_ssize_t H, const T *__restrict dy, const T *__restrict hp, \
                            const T *__restrict ca, int reset_after, int hard, \
                            T *__restrict dh, T *__restrict gx, T *__restrict gh) { \
        if (reset_after) { \
            if (hard) { CELLS_GRU_LOOP(T, CELLS_GG_HARD, 1) } \
            else { CELLS_GRU_LOOP(T, CELLS_GG_SOFT, 1) } \
        } else { \
            if (hard) { CELLS_GRU_LOOP(T, CELLS_GG_HARD, 0) } \
            else { CELLS_GRU_LOOP(T, CELLS_GG_SOFT, 0) } \
        } \
    } \
    FASTRNN_VEC static void \
    cells_gru_bwd_reset_row_##SUF(Py_ssize_t H, const T *__restrict da, \
                                  const T *__restrict hp, const T *__restrict ca, int hard, \
                                  T *__restrict dh, T *__restrict gx, T *__restrict gh) { \
        if (hard) { CELLS_GRU_RESET_LOOP(T, CELLS_GG_HARD) } \
        else { CELLS_GRU_RESET_LOOP(T, CELLS_GG_SOFT) } \
    }
    CELLS_GRU_BWD_ROW(float, f)
    CELLS_GRU_BWD_ROW(double, d)

    /* LSTM, one real row: tc = tanh(c_t) of the row; dh (dL/dh_t minus dHs[t]) is set to 0
       for the GEMM with beta = 1 that follows, dc becomes dL/dc_{t-1}; g4 the row of dG[t]. */
    #define CELLS_LSTM_LOOP(T, GG) \
        for (Py_ssize_t j = 0; j < H; j++) { \
            T d = dh[j] + dy[j]; \
            T i = ca[j], f = ca[H + j], g = ca[2 * H + j], o = ca[3 * H + j], t = tc[j]; \
            T dct = dc[j] + d * o * ((T)1 - t * t); \
            g4[j] = dct * g * GG(T, i); \
            g4[H + j] = dct * cp[j] * GG(T, f); \
            g4[2 * H + j] = dct * i * ((T)1 - g * g); \
            g4[3 * H + j] = d * t * GG(T, o); \
            dc[j] = dct * f; \
            dh[j] = 0; \
        }
    #define CELLS_LSTM_BWD_ROW(T, SUF) \
    FASTRNN_VEC static void \
    cells_lstm_bwd_row_##SUF(Py_ssize_t H, const T *__restrict dy, const T *__restrict cp, \
                             const T *__restrict ca, const T *__restrict tc, int hard, \
                             T *__restrict dh, T *__restrict dc, T *__restrict g4) { \
        if (hard) { CELLS_LSTM_LOOP(T, CELLS_GG_HARD) } \
        else { CELLS_LSTM_LOOP(T, CELLS_GG_SOFT) } \
    }
    CELLS_LSTM_BWD_ROW(float, f)
    CELLS_LSTM_BWD_ROW(double, d)
    """
    void _exp_shift_d "cells_exp_shift_d"(const double *src, double *dst, Py_ssize_t n,
                                           double m) noexcept nogil
    void _exp_shift_f "cells_exp_shift_f"(const float *src, float *dst, Py_ssize_t n,
                                           float m) noexcept nogil
    void _sigmoid_f "cells_sigmoid_f"(const float *src, float *dst, Py_ssize_t n) noexcept nogil
    void _tanh_f "cells_tanh_f"(const float *src, float *dst, Py_ssize_t n) noexcept nogil
    void _gru_bwd_row_f "cells_gru_bwd_row_f"(Py_ssize_t H, const float *dy, const float *hp,
                                               const float *ca, int reset_after, int hard,
                                               float *dh, float *gx, float *gh) noexcept nogil
    void _gru_bwd_row_d "cells_gru_bwd_row_d"(Py_ssize_t H, const double *dy, const double *hp,
                                               const double *ca, int reset_after, int hard,
                                               double *dh, double *gx, double *gh) noexcept nogil
    void _gru_bwd_reset_row_f "cells_gru_bwd_reset_row_f"(Py_ssize_t H, const float *da,
                                                           const float *hp, const float *ca,
                                                           int hard, float *dh, float *gx,
                                                           float *gh) noexcept nogil
    void _gru_bwd_reset_row_d "cells_gru_bwd_reset_row_d"(Py_ssize_t H, const double *da,
                                                           const double *hp, const double *ca,
                                                           int hard, double *dh, double *gx,
                                                           double *gh) noexcept nogil
    void _lstm_bwd_row_f "cells_lstm_bwd_row_f"(Py_ssize_t H, const float *dy, const float *cp,
                                                 const float *ca, const float *tc, int hard,
                                                 float *dh, float *dc, float *g4) noexcept nogil
    void _lstm_bwd_row_d "cells_lstm_bwd_row_d"(Py_ssize_t H, const double *dy,
                                                 const double *cp, const double *ca,
                                                 const double *tc, int hard, double *dh,
                                                 double *dc, double *g4) noexcept nogil


# ---------------------------------------------------------------------------------------
# BLAS (fused dispatch; arguments by value; _gemm itself is in _shared.pxi)
# ---------------------------------------------------------------------------------------

cdef inline void _proj(const floating *h, Py_ssize_t ldh, const floating *W, floating *out,
                       Py_ssize_t B, Py_ssize_t H, Py_ssize_t N, Py_ssize_t ldo) noexcept nogil:
    """``out (B, N) = h (B, H) W (N, H)ᵀ``; ``h`` has row stride ``ldh``, ``out`` ``ldo``."""
    _gemm(c'T', c'N', N, B, H, <floating>1, W, H, h, ldh, <floating>0, out, ldo)


cdef inline void _back(const floating *dG, Py_ssize_t ldg, const floating *W, floating *out,
                       Py_ssize_t B, Py_ssize_t H, Py_ssize_t K) noexcept nogil:
    """``out (B, H) += dG (B, K) W (K, H)``; ``dG`` has row stride ``ldg``."""
    _gemm(c'N', c'N', H, B, K, <floating>1, W, H, dG, ldg, <floating>1, out, H)


# ---------------------------------------------------------------------------------------
# Activations on rows (dst may be src)
# ---------------------------------------------------------------------------------------

cdef inline void _sigmoid_row(const floating *src, floating *dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef double x, e
    if floating is float:
        _sigmoid_f(src, dst, n)
    else:
        for j in range(n):
            x = src[j]
            e = exp(-x if x >= 0 else x)
            dst[j] = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


cdef inline void _hard_row(const floating *src, floating *dst, Py_ssize_t n) noexcept nogil:
    """``clip(0.2 x + 0.5, 0, 1)`` in the array's dtype (NaN stays NaN)."""
    cdef Py_ssize_t j
    cdef floating y
    for j in range(n):
        y = <floating>0.2 * src[j] + <floating>0.5
        if y < <floating>0:
            y = 0
        elif y > <floating>1:
            y = 1
        dst[j] = y


cdef inline void _gate_row(const floating *src, floating *dst, Py_ssize_t n,
                           bint hard) noexcept nogil:
    if hard:
        _hard_row(src, dst, n)
    else:
        _sigmoid_row(src, dst, n)


cdef inline void _tanh_row(const floating *src, floating *dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if floating is float:
        _tanh_f(src, dst, n)
    else:
        for j in range(n):
            dst[j] = tanh(src[j])


# ---------------------------------------------------------------------------------------
# Entry checks (O(1), with the GIL)
# ---------------------------------------------------------------------------------------

def _expect(name, got, want):
    if tuple(got) != tuple(want):
        raise ValueError(f"{name} must have shape {tuple(want)}, got {tuple(got)}")


# ---------------------------------------------------------------------------------------
# Tanh (Elman) layer
# ---------------------------------------------------------------------------------------

def rnn_layer_forward(const floating[:, :, ::1] Xp, const floating[:, ::1] W_hh,
                      const floating[::1] b_hh, const floating[:, ::1] h0,
                      const floating[:, ::1] mask, floating[:, :, ::1] Hs):
    """Forward recurrence; see :func:`fastrnn.reference.elman.rnn_layer_forward`."""
    cdef Py_ssize_t T = Xp.shape[0], B = Xp.shape[1], H = Xp.shape[2]
    cdef Py_ssize_t t, b, j, BH = B * H
    cdef const floating *x
    cdef const floating *pb
    cdef floating *hp
    cdef floating *hn
    _expect("W_hh", (W_hh.shape[0], W_hh.shape[1]), (H, H))
    _expect("b_hh", (b_hh.shape[0],), (H,))
    _expect("h0", (h0.shape[0], h0.shape[1]), (B, H))
    _expect("mask", (mask.shape[0], mask.shape[1]), (T, B))
    _expect("Hs", (Hs.shape[0], Hs.shape[1], Hs.shape[2]), (T + 1, B, H))
    if BH == 0:
        return
    with nogil:
        memmove(&Hs[0, 0, 0], &h0[0, 0], BH * sizeof(floating))
        pb = &b_hh[0]
        for t in range(T):
            hp = &Hs[t, 0, 0]
            hn = hp + BH
            _proj(hp, H, &W_hh[0, 0], hn, B, H, H, H)
            for b in range(B):
                if mask[t, b] == 0:
                    memcpy(hn + b * H, hp + b * H, H * sizeof(floating))
                    continue
                x = &Xp[t, b, 0]
                for j in range(H):
                    hn[b * H + j] = (x[j] + hn[b * H + j]) + pb[j]
                _tanh_row(hn + b * H, hn + b * H, H)


def rnn_layer_backward(const floating[:, ::1] W_hh, const floating[:, ::1] mask,
                       const floating[:, :, ::1] Hs, const floating[:, :, ::1] dHs,
                       floating[:, :, ::1] dG, floating[:, ::1] dh0):
    """Backward recurrence; see :func:`fastrnn.reference.elman.rnn_layer_backward`."""
    cdef Py_ssize_t T = dHs.shape[0], B = dHs.shape[1], H = dHs.shape[2]
    cdef Py_ssize_t t, b, j, BH = B * H
    cdef floating d, hv
    cdef const floating *dy
    cdef const floating *h
    cdef floating *g
    _expect("W_hh", (W_hh.shape[0], W_hh.shape[1]), (H, H))
    _expect("mask", (mask.shape[0], mask.shape[1]), (T, B))
    _expect("Hs", (Hs.shape[0], Hs.shape[1], Hs.shape[2]), (T + 1, B, H))
    _expect("dG", (dG.shape[0], dG.shape[1], dG.shape[2]), (T, B, H))
    _expect("dh0", (dh0.shape[0], dh0.shape[1]), (B, H))
    if BH == 0:
        return
    # dh: dL/dh_t (from above and through the recurrence); before the GEMM of a step it
    # holds 0 for real rows and the carried gradient for padded rows, so that
    # "dh = dG W_hh + (padded ? dh : 0)" is one GEMM with beta = 1.
    cdef floating[:, ::1] dh = np.zeros((B, H), np.float64 if floating is double else np.float32)
    cdef floating *pdh = &dh[0, 0]
    with nogil:
        t = T - 1
        while t >= 0:
            g = &dG[t, 0, 0]
            for b in range(B):
                dy = &dHs[t, b, 0]
                if mask[t, b] == 0:
                    for j in range(H):
                        pdh[b * H + j] += dy[j]
                        g[b * H + j] = 0
                    continue
                h = &Hs[t + 1, b, 0]
                for j in range(H):
                    d = pdh[b * H + j] + dy[j]
                    hv = h[j]
                    g[b * H + j] = d * (<floating>1 - hv * hv)
                    pdh[b * H + j] = 0
            _back(g, H, &W_hh[0, 0], pdh, B, H, H)
            t -= 1
        memcpy(&dh0[0, 0], pdh, BH * sizeof(floating))


# ---------------------------------------------------------------------------------------
# GRU layer
# ---------------------------------------------------------------------------------------

def gru_layer_forward(const floating[:, :, ::1] Xp, const floating[:, ::1] W_hh,
                      const floating[::1] b_hh, const floating[:, ::1] h0,
                      const floating[:, ::1] mask, bint reset_after, bint hard_gates,
                      floating[:, :, ::1] Hs, floating[:, :, ::1] cache):
    """Forward recurrence; see :func:`fastrnn.reference.gru.gru_layer_forward`."""
    cdef Py_ssize_t T = Xp.shape[0], B = Xp.shape[1], H = h0.shape[1]
    cdef Py_ssize_t t, b, j, BH = B * H, H2 = 2 * H, H3 = 3 * H, H4 = 4 * H
    cdef floating a, z
    cdef const floating *x
    cdef const floating *pb
    cdef const floating *W
    cdef floating *hp
    cdef floating *hn
    cdef floating *ca
    cdef floating *gb
    _expect("Xp", (Xp.shape[0], Xp.shape[1], Xp.shape[2]), (T, B, H3))
    _expect("h0", (h0.shape[0], h0.shape[1]), (B, H))
    _expect("W_hh", (W_hh.shape[0], W_hh.shape[1]), (H3, H))
    _expect("b_hh", (b_hh.shape[0],), (H3,))
    _expect("mask", (mask.shape[0], mask.shape[1]), (T, B))
    _expect("Hs", (Hs.shape[0], Hs.shape[1], Hs.shape[2]), (T + 1, B, H))
    _expect("cache", (cache.shape[0], cache.shape[1], cache.shape[2]), (T, B, H4))
    if BH == 0:
        return
    # gh (B, 3H): h_{t-1} W_hhᵀ (reset_after), or [h_{t-1} W_rzᵀ, (r * h_{t-1}) W_hnᵀ]
    cdef floating[:, ::1] gh = np.empty((B, H3), np.float64 if floating is double else np.float32)
    cdef floating *pgh = &gh[0, 0]
    with nogil:
        memmove(&Hs[0, 0, 0], &h0[0, 0], BH * sizeof(floating))
        pb = &b_hh[0]
        W = &W_hh[0, 0]
        for t in range(T):
            hp = &Hs[t, 0, 0]
            hn = hp + BH
            _proj(hp, H, W, pgh, B, H, H3 if reset_after else H2, H3)
            for b in range(B):
                x = &Xp[t, b, 0]
                gb = pgh + b * H3
                ca = &cache[t, b, 0]
                for j in range(H2):                                 # r, z
                    ca[j] = x[j] + (gb[j] + pb[j])
                _gate_row(ca, ca, H2, hard_gates)
                if reset_after:
                    for j in range(H):
                        a = gb[H2 + j] + pb[H2 + j]
                        ca[H3 + j] = a
                        ca[H2 + j] = x[H2 + j] + ca[j] * a
                    _tanh_row(ca + H2, ca + H2, H)                  # n
                else:
                    for j in range(H):
                        ca[H3 + j] = ca[j] * hp[b * H + j]          # a = r * h_{t-1}
            if not reset_after:
                # (r * h_{t-1}) W_hnᵀ, reading r * h from the cache (row stride 4H)
                _proj(&cache[t, 0, H3], H4, W + H2 * H, pgh + H2, B, H, H, H3)
                for b in range(B):
                    x = &Xp[t, b, 0]
                    gb = pgh + b * H3
                    ca = &cache[t, b, 0]
                    for j in range(H):
                        ca[H2 + j] = x[H2 + j] + (gb[H2 + j] + pb[H2 + j])
                    _tanh_row(ca + H2, ca + H2, H)
            for b in range(B):
                if mask[t, b] == 0:
                    memcpy(hn + b * H, hp + b * H, H * sizeof(floating))
                    continue
                ca = &cache[t, b, 0]
                for j in range(H):
                    z = ca[H + j]
                    hn[b * H + j] = (<floating>1 - z) * ca[H2 + j] + z * hp[b * H + j]


def gru_layer_backward(const floating[:, ::1] W_hh, const floating[:, ::1] mask,
                       bint reset_after, bint hard_gates, const floating[:, :, ::1] Hs,
                       const floating[:, :, ::1] cache, const floating[:, :, ::1] dHs,
                       floating[:, :, ::1] dGx, floating[:, :, ::1] dGh,
                       floating[:, ::1] dh0):
    """Backward recurrence; see :func:`fastrnn.reference.gru.gru_layer_backward`."""
    cdef Py_ssize_t T = dHs.shape[0], B = dHs.shape[1], H = dHs.shape[2]
    cdef Py_ssize_t t, b, j, BH = B * H, H2 = 2 * H, H3 = 3 * H, H4 = 4 * H
    cdef const floating *dy
    cdef const floating *hp
    cdef const floating *ca
    cdef const floating *W
    cdef floating *gx
    cdef floating *gh
    cdef floating *dhb
    _expect("W_hh", (W_hh.shape[0], W_hh.shape[1]), (H3, H))
    _expect("mask", (mask.shape[0], mask.shape[1]), (T, B))
    _expect("Hs", (Hs.shape[0], Hs.shape[1], Hs.shape[2]), (T + 1, B, H))
    _expect("cache", (cache.shape[0], cache.shape[1], cache.shape[2]), (T, B, H4))
    _expect("dGx", (dGx.shape[0], dGx.shape[1], dGx.shape[2]), (T, B, H3))
    _expect("dGh", (dGh.shape[0], dGh.shape[1], dGh.shape[2]), (T, B, H3))
    _expect("dh0", (dh0.shape[0], dh0.shape[1]), (B, H))
    if BH == 0:
        return
    if T > 0 and (&dGx[0, 0, 0] < &dGh[0, 0, 0] + T * B * H3
                  and &dGh[0, 0, 0] < &dGx[0, 0, 0] + T * B * H3):
        raise ValueError("dGx and dGh must be distinct arrays")
    dt = np.float64 if floating is double else np.float32
    # dh: the running dL/dh; within a step it becomes dL/dh_{t-1} in place (d * z, plus
    # da * r, plus the GEMMs with beta = 1; padded rows keep d).  da = dn W_hn (reset before).
    cdef floating[:, ::1] dh = np.zeros((B, H), dt)
    cdef floating[:, ::1] da = np.empty((B if not reset_after else 1, H if not reset_after else 1), dt)
    cdef floating *pdh = &dh[0, 0]
    cdef floating *pda = &da[0, 0]
    with nogil:
        W = &W_hh[0, 0]
        t = T - 1
        while t >= 0:
            for b in range(B):
                dy = &dHs[t, b, 0]
                dhb = pdh + b * H
                gx = &dGx[t, b, 0]
                gh = &dGh[t, b, 0]
                if mask[t, b] == 0:            # state held: gradient passes, gates get 0
                    for j in range(H):
                        dhb[j] += dy[j]
                    memset(gx, 0, H3 * sizeof(floating))
                    memset(gh, 0, H3 * sizeof(floating))
                    continue
                hp = &Hs[t, b, 0]
                ca = &cache[t, b, 0]
                # dz, dn (and dr with reset_after) of the row; dhb becomes d * z
                if floating is float:
                    _gru_bwd_row_f(H, dy, hp, ca, reset_after, hard_gates, dhb, gx, gh)
                else:
                    _gru_bwd_row_d(H, dy, hp, ca, reset_after, hard_gates, dhb, gx, gh)
            if reset_after:
                _back(&dGh[t, 0, 0], H3, W, pdh, B, H, H3)          # dh += dGh W_hh
            else:
                # da = dn W_hn (B, H); the n block of dGx[t] has row stride 3H
                _gemm(c'N', c'N', H, B, H, <floating>1, W + H2 * H, H, &dGx[t, 0, H2], H3,
                      <floating>0, pda, H)
                for b in range(B):
                    if mask[t, b] == 0:
                        continue
                    hp = &Hs[t, b, 0]
                    ca = &cache[t, b, 0]
                    gx = &dGx[t, b, 0]
                    gh = &dGh[t, b, 0]
                    dhb = pdh + b * H
                    # dr = da * h_{t-1} * r', dh += da * r
                    if floating is float:
                        _gru_bwd_reset_row_f(H, pda + b * H, hp, ca, hard_gates, dhb, gx, gh)
                    else:
                        _gru_bwd_reset_row_d(H, pda + b * H, hp, ca, hard_gates, dhb, gx, gh)
                _back(&dGh[t, 0, 0], H3, W, pdh, B, H, H2)          # dh += [dr, dz] W_rz
            t -= 1
        memcpy(&dh0[0, 0], pdh, BH * sizeof(floating))


# ---------------------------------------------------------------------------------------
# LSTM layer
# ---------------------------------------------------------------------------------------

def lstm_layer_forward(const floating[:, :, ::1] Xp, const floating[:, ::1] W_hh,
                       const floating[::1] b_hh, const floating[:, ::1] h0,
                       const floating[:, ::1] c0, const floating[:, ::1] mask, bint hard_gates,
                       floating[:, :, ::1] Hs, floating[:, :, ::1] Cs,
                       floating[:, :, ::1] cache):
    """Forward recurrence; see :func:`fastrnn.reference.lstm.lstm_layer_forward`."""
    cdef Py_ssize_t T = Xp.shape[0], B = Xp.shape[1], H = h0.shape[1]
    cdef Py_ssize_t t, b, j, BH = B * H, H2 = 2 * H, H3 = 3 * H, H4 = 4 * H
    cdef const floating *x
    cdef const floating *pb
    cdef floating *hp
    cdef floating *hn
    cdef floating *cp
    cdef floating *cn
    cdef floating *ca
    _expect("Xp", (Xp.shape[0], Xp.shape[1], Xp.shape[2]), (T, B, H4))
    _expect("h0", (h0.shape[0], h0.shape[1]), (B, H))
    _expect("W_hh", (W_hh.shape[0], W_hh.shape[1]), (H4, H))
    _expect("b_hh", (b_hh.shape[0],), (H4,))
    _expect("c0", (c0.shape[0], c0.shape[1]), (B, H))
    _expect("mask", (mask.shape[0], mask.shape[1]), (T, B))
    _expect("Hs", (Hs.shape[0], Hs.shape[1], Hs.shape[2]), (T + 1, B, H))
    _expect("Cs", (Cs.shape[0], Cs.shape[1], Cs.shape[2]), (T + 1, B, H))
    _expect("cache", (cache.shape[0], cache.shape[1], cache.shape[2]), (T, B, H4))
    if BH == 0:
        return
    with nogil:
        memmove(&Hs[0, 0, 0], &h0[0, 0], BH * sizeof(floating))
        memmove(&Cs[0, 0, 0], &c0[0, 0], BH * sizeof(floating))
        pb = &b_hh[0]
        for t in range(T):
            hp = &Hs[t, 0, 0]
            hn = hp + BH
            cp = &Cs[t, 0, 0]
            cn = cp + BH
            _proj(hp, H, &W_hh[0, 0], &cache[t, 0, 0], B, H, H4, H4)   # straight into the cache
            for b in range(B):
                x = &Xp[t, b, 0]
                ca = &cache[t, b, 0]
                for j in range(H4):
                    ca[j] = (x[j] + ca[j]) + pb[j]
                _gate_row(ca, ca, H2, hard_gates)                       # i, f
                _tanh_row(ca + H2, ca + H2, H)                          # g
                _gate_row(ca + H3, ca + H3, H, hard_gates)              # o
                if mask[t, b] == 0:
                    memcpy(hn + b * H, hp + b * H, H * sizeof(floating))
                    memcpy(cn + b * H, cp + b * H, H * sizeof(floating))
                    continue
                for j in range(H):
                    cn[b * H + j] = ca[H + j] * cp[b * H + j] + ca[j] * ca[H2 + j]
                _tanh_row(cn + b * H, hn + b * H, H)
                for j in range(H):
                    hn[b * H + j] = ca[H3 + j] * hn[b * H + j]


def lstm_layer_backward(const floating[:, ::1] W_hh, const floating[:, ::1] mask,
                        bint hard_gates, const floating[:, :, ::1] Hs,
                        const floating[:, :, ::1] Cs, const floating[:, :, ::1] cache,
                        const floating[:, :, ::1] dHs, floating[:, :, ::1] dG,
                        floating[:, ::1] dh0, floating[:, ::1] dc0):
    """Backward recurrence; see :func:`fastrnn.reference.lstm.lstm_layer_backward`."""
    cdef Py_ssize_t T = dHs.shape[0], B = dHs.shape[1], H = dHs.shape[2]
    cdef Py_ssize_t t, b, j, BH = B * H, H2 = 2 * H, H3 = 3 * H, H4 = 4 * H
    cdef const floating *dy
    cdef const floating *cp
    cdef const floating *ca
    cdef floating *g4
    cdef floating *dhb
    cdef floating *dcb
    _expect("W_hh", (W_hh.shape[0], W_hh.shape[1]), (H4, H))
    _expect("mask", (mask.shape[0], mask.shape[1]), (T, B))
    _expect("Hs", (Hs.shape[0], Hs.shape[1], Hs.shape[2]), (T + 1, B, H))
    _expect("Cs", (Cs.shape[0], Cs.shape[1], Cs.shape[2]), (T + 1, B, H))
    _expect("cache", (cache.shape[0], cache.shape[1], cache.shape[2]), (T, B, H4))
    _expect("dG", (dG.shape[0], dG.shape[1], dG.shape[2]), (T, B, H4))
    _expect("dh0", (dh0.shape[0], dh0.shape[1]), (B, H))
    _expect("dc0", (dc0.shape[0], dc0.shape[1]), (B, H))
    if BH == 0:
        return
    dt = np.float64 if floating is double else np.float32
    # dh as in rnn_layer_backward (0 for real rows before the GEMM with beta = 1);
    # dc the running dL/dc; tcr one row of tanh(c_t), recomputed as in the forward pass.
    cdef floating[:, ::1] dh = np.zeros((B, H), dt)
    cdef floating[:, ::1] dc = np.zeros((B, H), dt)
    cdef floating[::1] tcr = np.empty(H, dt)
    cdef floating *pdh = &dh[0, 0]
    cdef floating *pdc = &dc[0, 0]
    cdef floating *ptc = &tcr[0]
    with nogil:
        t = T - 1
        while t >= 0:
            for b in range(B):
                dy = &dHs[t, b, 0]
                dhb = pdh + b * H
                dcb = pdc + b * H
                g4 = &dG[t, b, 0]
                if mask[t, b] == 0:            # h and c held: both gradients pass through
                    for j in range(H):
                        dhb[j] += dy[j]
                    memset(g4, 0, H4 * sizeof(floating))
                    continue
                _tanh_row(&Cs[t + 1, b, 0], ptc, H)
                cp = &Cs[t, b, 0]
                ca = &cache[t, b, 0]
                # dG row: di = dct g i', df = dct c_{t-1} f', dg = dct i (1 - g^2),
                # do = d tanh(c_t) o' with dct = dc + d o (1 - tanh^2 c_t); dc = dct f, dh = 0
                if floating is float:
                    _lstm_bwd_row_f(H, dy, cp, ca, ptc, hard_gates, dhb, dcb, g4)
                else:
                    _lstm_bwd_row_d(H, dy, cp, ca, ptc, hard_gates, dhb, dcb, g4)
            _back(&dG[t, 0, 0], H4, &W_hh[0, 0], pdh, B, H, H4)     # dh += dG W_hh
            t -= 1
        memcpy(&dh0[0, 0], pdh, BH * sizeof(floating))
        memcpy(&dc0[0, 0], pdc, BH * sizeof(floating))


# ---------------------------------------------------------------------------------------
# Output layer: fused softmax + cross-entropy + gradient, and log-softmax
# ---------------------------------------------------------------------------------------

def rnn_softmax_xent(floating[:, ::1] Z, const Py_ssize_t[::1] y, const floating[::1] mask,
                     double scale):
    """Masked softmax cross-entropy of the rows of ``Z``; ``Z`` becomes its gradient.

    See :func:`fastrnn.reference.layers.softmax_xent`: on return
    ``Z[n] = scale * mask[n] * (softmax(Z[n]) - onehot(y[n]))``; returns the unscaled
    ``-sum_n mask[n] * log softmax(Z[n])[y[n]]`` (accumulated in double).  ``y`` must be
    in ``[0, V)`` (validated by the caller).
    """
    cdef Py_ssize_t N = Z.shape[0], Vn = Z.shape[1], n, j
    cdef double loss = 0.0, s, mk, w
    cdef floating m, zy, wf
    cdef floating *row
    _expect("y", (y.shape[0],), (N,))
    _expect("mask", (mask.shape[0],), (N,))
    if N == 0 or Vn == 0:
        return loss
    with nogil:
        for n in range(N):
            row = &Z[n, 0]
            mk = mask[n]
            if mk == 0:
                memset(row, 0, Vn * sizeof(floating))
                continue
            m = _rowmax(row, Vn)
            zy = row[y[n]] - m          # before exponentiating: exp(zy) may underflow
            _exp_shift(row, row, Vn, m)
            s = _sum(row, Vn)
            loss -= mk * (<double>zy - log(s))
            w = scale * mk / s
            wf = <floating>w
            for j in range(Vn):
                row[j] = row[j] * wf
            row[y[n]] -= <floating>(scale * mk)
    return loss


def rnn_log_softmax(const floating[:, ::1] Z, floating[:, ::1] out):
    """Row-wise ``log softmax`` of ``Z (N, V)`` into ``out (N, V)`` (may be ``Z`` itself)."""
    cdef Py_ssize_t N = Z.shape[0], Vn = Z.shape[1], n, j
    cdef floating m, ls
    cdef double s
    cdef const floating *zr
    cdef floating *orow
    _expect("out", (out.shape[0], out.shape[1]), (N, Vn))
    if N == 0 or Vn == 0:
        return
    with nogil:
        for n in range(N):
            zr = &Z[n, 0]
            orow = &out[n, 0]
            m = _rowmax(zr, Vn)
            s = _exp_sum(zr, Vn, m)
            ls = <floating>log(s)
            for j in range(Vn):
                orow[j] = (zr[j] - m) - ls


# ---------------------------------------------------------------------------------------
# The GRU tutorial's RMSprop update (eps inside the square root)
# ---------------------------------------------------------------------------------------
# The rule, its order of roundings and coef = [rho, 1 - rho, lr, eps] (the parameters'
# dtype) are those of fastrnn.reference.gru.gru_rmsprop; the results equal it bit for bit.
# Every operation stays in the parameters' dtype: ``sqrt`` is the double one, and the
# square root of a float rounded to float is the correctly rounded float square root.

cdef inline void _rms_step(floating *p, floating *m, floating decayed, floating g,
                           floating omr, floating lr, floating eps) noexcept nogil:
    """``m = decayed + (1 - rho) g**2`` (``decayed`` is ``m * rho``), then ``p``'s step."""
    cdef floating mm = decayed + omr * g * g
    cdef floating s = <floating>sqrt(<double>(mm + eps))
    m[0] = mm
    p[0] = p[0] - lr * g / s


def gru_rmsprop(floating[::1] P, floating[::1] M, const floating[::1] G,
                const floating[::1] coef):
    """See :func:`fastrnn.reference.gru.gru_rmsprop`."""
    cdef Py_ssize_t n = P.shape[0], i
    cdef floating rho, omr, lr, eps
    _expect("M", (M.shape[0],), (n,))
    _expect("G", (G.shape[0],), (n,))
    _expect("coef", (coef.shape[0],), (4,))
    rho, omr, lr, eps = coef[0], coef[1], coef[2], coef[3]
    with nogil:
        for i in range(n):
            _rms_step(&P[i], &M[i], M[i] * rho, G[i], omr, lr, eps)


def gru_rmsprop_columns(floating[:, ::1] P, floating[:, ::1] M, const Py_ssize_t[::1] cols,
                        const floating[:, ::1] G, const floating[::1] coef):
    """See :func:`fastrnn.reference.gru.gru_rmsprop_columns` (``cols`` distinct and in
    range: checked by the caller)."""
    cdef Py_ssize_t R = P.shape[0], C = P.shape[1], n = cols.shape[0], r, c, i
    cdef floating rho, omr, lr, eps
    _expect("M", (M.shape[0], M.shape[1]), (R, C))
    _expect("G", (G.shape[0], G.shape[1]), (n, R))
    _expect("coef", (coef.shape[0],), (4,))
    rho, omr, lr, eps = coef[0], coef[1], coef[2], coef[3]
    with nogil:
        for r in range(R):
            for c in range(C):
                M[r, c] = M[r, c] * rho
            for i in range(n):       # their m is decayed already
                c = cols[i]
                _rms_step(&P[r, c], &M[r, c], M[r, c], G[i, r], omr, lr, eps)

# Numerical helpers shared by _rnn_cy.pyx and _cells_cy.pyx (textual ``include``; each
# module gets its own copy of the compiled code, so there is no cross-module call).
#
# What is here was identical in both modules up to names, const-ness and (``_gemm``) the
# integer type of the size arguments; ``_exp_sum`` is the chunked exp-and-sum loop that both
# softmax paths wrote out inline.  Outputs are bit-for-bit those of the separate copies.
#
# What is NOT here, on purpose: the C exp kernels behind ``_exp_shift`` (``_exp_shift_d`` /
# ``_exp_shift_f``); each including module declares those two itself.  The float32 kernels
# differ in ways that change results: _rnn_cy flushes arguments below -87.0 to 0, _cells_cy
# only those below -87.3 (its ``cells_expneg_f`` is also the core of the float32 sigmoid and
# tanh), and they extract the exponent bits differently.  The float64 kernels compute the
# same operations but are written differently (_cells_cy inlines a scalar helper); merging
# them is left for a change that re-checks the compiled code.
#
# Requires ``from cython cimport floating`` before the include.

cdef extern from *:
    """
    /* Function attributes for the element-wise C loops of the including module.

       GCC keeps `a < b ? c : d` on floating-point compares as a branch under its default
       -ftrapping-math, which blocks vectorisation; the loops are therefore compiled with
       no-trapping-math (FP exception flags are never inspected here, results are
       unchanged).  On x86-64 glibc an AVX2+FMA clone is added, picked at load time
       (ifunc); "default" is SSE2.  FASTRNN_NOTRAP alone is for static inline helpers
       called from FASTRNN_VEC loops. */
    #if defined(__GNUC__) && !defined(__clang__)
    #  define FASTRNN_NOTRAP __attribute__((optimize("no-trapping-math")))
    #  if defined(__x86_64__) && defined(__ELF__) && defined(__GLIBC__) && __GNUC__ >= 11
    #    define FASTRNN_VEC FASTRNN_NOTRAP \
            __attribute__((target_clones("arch=x86-64-v3", "default")))
    #  else
    #    define FASTRNN_VEC FASTRNN_NOTRAP
    #  endif
    #else
    #  define FASTRNN_NOTRAP
    #  define FASTRNN_VEC
    #endif
    """


# ---------------------------------------------------------------------------------------
# BLAS through the addresses of fastrnn._kernels._blas_lib (NumPy's ILP64 OpenBLAS, or
# SciPy's cython_blas as the fallback), so that these modules and the Numba kernels call one
# library.  Every argument is passed by pointer (Fortran convention); integer arguments are
# 64-bit when ``_ilp64`` and 32-bit otherwise, chosen at run time per call.
# ---------------------------------------------------------------------------------------

ctypedef void (*_blas6)(void *, void *, void *, void *, void *, void *) noexcept nogil
ctypedef void (*_blas9)(void *, void *, void *, void *, void *, void *, void *, void *,
                        void *) noexcept nogil
ctypedef void (*_blas11)(void *, void *, void *, void *, void *, void *, void *, void *,
                         void *, void *, void *) noexcept nogil
ctypedef void (*_blas13)(void *, void *, void *, void *, void *, void *, void *, void *,
                         void *, void *, void *, void *, void *) noexcept nogil

cdef bint _ilp64 = False
cdef _blas13 _p_sgemm = NULL
cdef _blas13 _p_dgemm = NULL
cdef _blas11 _p_sgemv = NULL
cdef _blas11 _p_dgemv = NULL
cdef _blas9 _p_sger = NULL
cdef _blas9 _p_dger = NULL
cdef _blas6 _p_saxpy = NULL
cdef _blas6 _p_daxpy = NULL


def _bind_blas():
    """Resolve the BLAS routines (once, at import).  Returns the library's description."""
    global _ilp64, _p_sgemm, _p_dgemm, _p_sgemv, _p_dgemv, _p_sger, _p_dger
    global _p_saxpy, _p_daxpy
    from fastrnn._kernels._blas_lib import library
    lib = library()
    a = lib.addr
    _ilp64 = lib.ilp64
    _p_sgemm = <_blas13><size_t>a["sgemm"]
    _p_dgemm = <_blas13><size_t>a["dgemm"]
    _p_sgemv = <_blas11><size_t>a["sgemv"]
    _p_dgemv = <_blas11><size_t>a["dgemv"]
    _p_sger = <_blas9><size_t>a["sger"]
    _p_dger = <_blas9><size_t>a["dger"]
    _p_saxpy = <_blas6><size_t>a["saxpy"]
    _p_daxpy = <_blas6><size_t>a["daxpy"]
    return repr(lib)


BLAS = _bind_blas()


cdef inline char *_blas_ints(const Py_ssize_t *v, int n, long long *i64, int *i32,
                             size_t *width) noexcept nogil:
    """The ``n`` integer arguments ``v`` in the library's width: written to ``i64`` (ILP64)
    or ``i32``; returns that buffer, its element size in ``width``.  Callers keep every
    value below 2^31."""
    cdef int j
    if _ilp64:
        for j in range(n):
            i64[j] = v[j]
        width[0] = sizeof(long long)
        return <char *>i64
    for j in range(n):
        i32[j] = <int>v[j]
    width[0] = sizeof(int)
    return <char *>i32


cdef inline void _gemm(char ta, char tb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       floating alpha, const floating *a, Py_ssize_t lda,
                       const floating *b, Py_ssize_t ldb, floating beta,
                       floating *c, Py_ssize_t ldc) noexcept nogil:
    """Fused dispatch to ``dgemm`` / ``sgemm``, arguments by value (BLAS wants pointers).

    Sizes are ``Py_ssize_t`` for the callers' convenience (see :func:`_blas_ints`); ``a``
    and ``b`` are only read.
    """
    cdef Py_ssize_t v[6]
    cdef int i32[6]
    cdef long long i64[6]
    cdef size_t w
    v[0] = m; v[1] = n; v[2] = k; v[3] = lda; v[4] = ldb; v[5] = ldc
    cdef char *p = _blas_ints(v, 6, i64, i32, &w)
    cdef _blas13 f = _p_dgemm if floating is double else _p_sgemm
    f(&ta, &tb, p, p + w, p + 2 * w, &alpha, <void *>a, p + 3 * w, <void *>b, p + 4 * w,
      &beta, c, p + 5 * w)


cdef enum:
    # Row chunk of _exp_sum (the exp-and-sum of softmax rows that must not be overwritten,
    # through a stack buffer of _CHUNK values).  Same value in both modules; the chunked sums (and so the
    # losses) depend on it, so change it only knowingly.
    _CHUNK = 512


cdef inline void _exp_shift(const floating *src, floating *dst, Py_ssize_t n,
                            floating m) noexcept nogil:
    """``dst[j] = exp(src[j] - m)`` for ``j < n`` (``dst`` may be ``src``).

    Dispatches to the including module's own ``_exp_shift_d`` / ``_exp_shift_f``.
    """
    if floating is double:
        _exp_shift_d(src, dst, n, m)
    else:
        _exp_shift_f(src, dst, n, m)


cdef inline double _sum(const floating *a, Py_ssize_t n) noexcept nogil:
    """Sum in double with four independent accumulators."""
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
    cdef Py_ssize_t j = 0
    while j + 4 <= n:
        a0 += a[j]
        a1 += a[j + 1]
        a2 += a[j + 2]
        a3 += a[j + 3]
        j += 4
    while j < n:
        a0 += a[j]
        j += 1
    return (a0 + a1) + (a2 + a3)


cdef inline floating _rowmax(const floating *a, Py_ssize_t n) noexcept nogil:
    """Maximum of ``a[:n]`` (n >= 1); a NaN in ``a[0]`` is returned as is, a later NaN is
    skipped here but still reaches the result through ``exp(NaN - m)``."""
    cdef floating m0 = a[0], m1 = a[0]
    cdef Py_ssize_t j = 1
    while j + 2 <= n:
        if a[j] > m0:
            m0 = a[j]
        if a[j + 1] > m1:
            m1 = a[j + 1]
        j += 2
    if j < n and a[j] > m0:
        m0 = a[j]
    return m1 if m1 > m0 else m0


cdef inline double _exp_sum(const floating *src, Py_ssize_t n, floating m) noexcept nogil:
    """``Σ_j exp(src[j] - m)`` for ``j < n``, in double, without writing ``src``: the row
    goes through a stack buffer in chunks of ``_CHUNK`` (each chunk summed by ``_sum``)."""
    cdef floating buf[_CHUNK]
    cdef double acc = 0.0
    cdef Py_ssize_t j = 0, k
    while j < n:
        k = n - j if n - j < _CHUNK else _CHUNK
        _exp_shift(src + j, buf, k, m)
        acc += _sum(buf, k)
        j += k
    return acc

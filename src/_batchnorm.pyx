# Cython directives (boundscheck/wraparound off, cdivision on) are set in setup.py.
"""Fused batch normalization of CS231n lecture 6, forward and backward (the public API
re-exports batchnorm_forward and batchnorm_backward).

x is viewed as N rows of F*S elements: F features (D, or the C channels), each a contiguous
run of S elements per row (S = H*W; S = 1 for an (N, D) input).  Work is split by features
only: a unit of work is a block of whole features, and one thread takes it through all its
passes while its data is in cache.  Every feature's sums are accumulated in an order fixed
by the shape and dtype alone, so results are bit-identical for every thread count; and since
the build forbids reassociation and contraction, for every SIMD level too.  All arithmetic
is in double (float32 is widened on load and rounded once at the store).
"""

include "_common.pxi"

from libc.math cimport sqrt
from lec6fast._batchnorm_cache import BatchNormCache

# Batch norm forks its team from 65536 elements of x on: measured fwd+bwd on 2 threads,
# 32768 elements ran 0.75-1.16x the serial time, 65536 elements 1.1-1.7x.
cdef enum:
    PAR_BN = 65536

_PARALLEL_MIN = {"batchnorm_forward": (PAR_BN, PAR_BN), "batchnorm_backward": (PAR_BN, PAR_BN)}


cdef enum:
    BN_BLOCK_BYTES = 512    # a column block: at most 512 bytes of every row
    BN_BLOCK_MAX = 128      # = BN_BLOCK_BYTES / sizeof(float), its most columns
    BN_PARTS = 16           # partial sums per channel over its H*W runs
    BN_SPAN_BYTES = 16384   # a channel block: about 16 KiB of every row
    BN_RUNS_MAX = 16        # its most channels


# Two kernels, chosen by the shape and dtype only:
#
# - Column blocks, when a feature's run is at most 512 bytes (every (N, D) input, and small
#   H*W such as 7x7): a unit is the columns of BN_BLOCK_BYTES // (S*itemsize) whole features
#   (at least one), i.e. up to 128 float32 or 64 float64 columns.  Column sums run down the
#   rows in row order, vectorized across columns (no reassociation needed); a feature's S
#   column sums are then added in column order.  The block width was chosen by measurement.
#
# - Channel blocks, when the run is longer (H*W > 128 float32 or 64 float64): a unit is a
#   few consecutive channels (about 16 KiB of each row, see _block_channels), each channel
#   N runs of S contiguous elements.  GCC will not vectorize a floating-point sum along a
#   run (that would reassociate it), so element j of each run goes to partial sum
#   j % BN_PARTS and the partials are added in index order at the end: that loop
#   vectorizes, and its result does not depend on the vector width.
#
# Neither the block sizes nor the thread count change any feature's order of summation.

ctypedef struct BN:
    char* x             # the forward's input
    char* out           # forward: out; backward: dx
    const char* dout
    const char* gamma
    const char* beta
    char* rmean         # running statistics, x's dtype
    char* rvar
    double* stats       # (3, F) float64: batch mean, inv_std, gamma (the cache's)
    char* dgamma        # backward outputs, x's dtype
    char* dbeta
    Py_ssize_t N        # rows (samples)
    Py_ssize_t F        # features: D, or channels C
    Py_ssize_t S        # contiguous run per row and feature: H*W, or 1 for (N, D)
    Py_ssize_t first    # column kernels: features in block 0 (see _first_block)
    Py_ssize_t out_bytes    # bytes of out (for _touch_pages)
    double m            # M = N*S, the count each feature is normalized over
    double momentum
    double eps


# ---------------------------------------------------------------- per-feature scalars

cdef inline double _train_feature(floating* tag, const BN* p, Py_ssize_t f,
                                  double mean, double ssq, double* shift) noexcept nogil:
    """Finish feature f of a train-mode forward: store its statistics in the cache and the
    running averages; return gamma*inv_std and set *shift = beta."""
    cdef double var = ssq / p.m
    cdef double inv_std = 1.0 / sqrt(var + p.eps)
    cdef double g = (<const floating*>p.gamma)[f]
    cdef floating* rm = <floating*>p.rmean
    cdef floating* rv = <floating*>p.rvar
    p.stats[f] = mean
    p.stats[p.F + f] = inv_std
    p.stats[2 * p.F + f] = g
    rm[f] = <floating>(p.momentum * rm[f] + (1.0 - p.momentum) * mean)
    rv[f] = <floating>(p.momentum * rv[f] + (1.0 - p.momentum) * var)
    shift[0] = (<const floating*>p.beta)[f]
    return g * inv_std


cdef inline double _test_feature(floating* tag, const BN* p, Py_ssize_t f,
                                 double* mean, double* shift) noexcept nogil:
    """Feature f in test mode: *mean = running_mean, *shift = beta; return gamma*inv_std
    with inv_std = 1/sqrt(running_var + eps)."""
    mean[0] = (<const floating*>p.rmean)[f]
    shift[0] = (<const floating*>p.beta)[f]
    return (<const floating*>p.gamma)[f] / sqrt(<double>(<const floating*>p.rvar)[f] + p.eps)


cdef inline void _backward_feature(floating* tag, const BN* p, Py_ssize_t f, double sum_dout,
                                   double sum_dout_xmu, double* a, double* b, double* c) noexcept nogil:
    """Store dgamma, dbeta of feature f and the coefficients of dx = a*dout + b*(x - mean) + c,
    the closed form (gamma*inv_std/M) * (M*dout - dbeta - xhat*dgamma) expanded."""
    cdef double inv_std = p.stats[p.F + f]
    cdef double g_inv_std = p.stats[2 * p.F + f] * inv_std
    cdef double k = g_inv_std / p.m
    cdef double dgamma = sum_dout_xmu * inv_std         # sum(dout * xhat)
    (<floating*>p.dgamma)[f] = <floating>dgamma
    (<floating*>p.dbeta)[f] = <floating>sum_dout
    a[0] = g_inv_std
    b[0] = -(k * dgamma) * inv_std
    c[0] = -k * sum_dout


# ---------------------------------------------------------------- column blocks

cdef inline bint _use_columns(floating* tag, Py_ssize_t S) noexcept nogil:
    return S * <Py_ssize_t>sizeof(floating) <= BN_BLOCK_BYTES


cdef inline Py_ssize_t _block_features(floating* tag, Py_ssize_t S) noexcept nogil:
    return max(1, BN_BLOCK_BYTES // (S * <Py_ssize_t>sizeof(floating)))


cdef inline Py_ssize_t _first_block(floating* tag, const BN* p, Py_ssize_t k) noexcept nogil:
    """Features in column block 0, chosen so that every later block's part of each row of the
    written array (out, or dx) starts on a 64-byte cache line, where the rows allow it (else
    k).  Two threads writing two halves of one line make it bounce between their cores: with
    out 16 bytes off a line (NumPy's usual for large arrays), 2 threads ran batch norm at
    195x512 no faster than 1.  Block sizes never change a feature's order of summation."""
    cdef Py_ssize_t width = p.S * <Py_ssize_t>sizeof(floating), f
    cdef size_t off = <size_t>p.out % 64
    if off == 0 or (p.F * width) % 64 != 0:
        return k
    for f in range(1, k + 1):
        if (off + <size_t>(f * width)) % 64 == 0:
            return f
    return k


cdef inline Py_ssize_t _block_start(const BN* p, Py_ssize_t u, Py_ssize_t k) noexcept nogil:
    """The first feature of column block u (block 0 has p.first features, the others k)."""
    return 0 if u == 0 else p.first + (u - 1) * k


# The sweeps take four rows at a time over the block's columns (the loads and stores of the
# column sums are shared by four rows) but add each column's rows in row order: the plain
# sequential sum.  L is the row length F*S, w the block's width in columns.

cdef inline void _cols_sum(const floating* x, Py_ssize_t N, Py_ssize_t L, Py_ssize_t w,
                           double* s) noexcept nogil:
    cdef Py_ssize_t n = 0, j
    cdef const floating* r
    while n + 4 <= N:
        r = x + n * L
        for j in range(w):
            s[j] = (((s[j] + r[j]) + r[L + j]) + r[2 * L + j]) + r[3 * L + j]
        n += 4
    while n < N:
        r = x + n * L
        for j in range(w):
            s[j] = s[j] + r[j]
        n += 1


cdef inline void _cols_ssq(const floating* x, Py_ssize_t N, Py_ssize_t L, Py_ssize_t w,
                           const double* mean, double* s) noexcept nogil:
    cdef Py_ssize_t n = 0, j
    cdef const floating* r
    cdef double d0, d1, d2, d3
    while n + 4 <= N:
        r = x + n * L
        for j in range(w):
            d0 = r[j] - mean[j]
            d1 = r[L + j] - mean[j]
            d2 = r[2 * L + j] - mean[j]
            d3 = r[3 * L + j] - mean[j]
            s[j] = (((s[j] + d0 * d0) + d1 * d1) + d2 * d2) + d3 * d3
        n += 4
    while n < N:
        r = x + n * L
        for j in range(w):
            d0 = r[j] - mean[j]
            s[j] = s[j] + d0 * d0
        n += 1


cdef inline void _cols_dot(const floating* dout, const floating* x, Py_ssize_t N, Py_ssize_t L,
                           Py_ssize_t w, const double* mean, double* sb, double* s) noexcept nogil:
    cdef Py_ssize_t n = 0, j
    cdef const floating* r
    cdef const floating* dy
    while n + 4 <= N:
        r = x + n * L
        dy = dout + n * L
        for j in range(w):
            sb[j] = (((sb[j] + dy[j]) + dy[L + j]) + dy[2 * L + j]) + dy[3 * L + j]
            s[j] = ((((s[j] + dy[j] * (r[j] - mean[j]))
                      + dy[L + j] * (r[L + j] - mean[j]))
                     + dy[2 * L + j] * (r[2 * L + j] - mean[j]))
                    + dy[3 * L + j] * (r[3 * L + j] - mean[j]))
        n += 4
    while n < N:
        r = x + n * L
        dy = dout + n * L
        for j in range(w):
            sb[j] = sb[j] + dy[j]
            s[j] = s[j] + dy[j] * (r[j] - mean[j])
        n += 1


cdef inline void _cols_out(const floating* x, floating* out, Py_ssize_t N, Py_ssize_t L,
                           Py_ssize_t w, const double* mean, const double* scale,
                           const double* shift) noexcept nogil:
    cdef Py_ssize_t n, j
    cdef const floating* r
    cdef floating* o
    for n in range(N):
        r = x + n * L
        o = out + n * L
        for j in range(w):
            o[j] = <floating>((r[j] - mean[j]) * scale[j] + shift[j])


cdef inline double _fold_feature(const double* s, Py_ssize_t S, Py_ssize_t i) noexcept nogil:
    """Feature i's total from its S column sums s[i*S : (i+1)*S], added in column order."""
    cdef double t = s[i * S]
    cdef Py_ssize_t q
    for q in range(1, S):
        t = t + s[i * S + q]
    return t


cdef inline void _spread(double* col, Py_ssize_t S, Py_ssize_t i, double v) noexcept nogil:
    cdef Py_ssize_t q
    for q in range(S):
        col[i * S + q] = v


cdef void _fwd_train_cols(floating* x, const BN* p, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t S = p.S, L = p.F * p.S, k = _block_features(x, p.S)
    cdef Py_ssize_t f0 = _block_start(p, u, k)
    cdef Py_ssize_t nf = min(p.first if u == 0 else k, p.F - f0), w = nf * S, i, j
    cdef const floating* xb = x + f0 * S
    cdef double s[BN_BLOCK_MAX]
    cdef double mean[BN_BLOCK_MAX]
    cdef double scale[BN_BLOCK_MAX]
    cdef double shift[BN_BLOCK_MAX]
    cdef double sc, sh
    for j in range(w):
        s[j] = 0.0
    _cols_sum(xb, p.N, L, w, s)
    for i in range(nf):
        _spread(mean, S, i, _fold_feature(s, S, i) / p.m)
    for j in range(w):
        s[j] = 0.0
    _cols_ssq(xb, p.N, L, w, mean, s)
    for i in range(nf):
        sc = _train_feature(x, p, f0 + i, mean[i * S], _fold_feature(s, S, i), &sh)
        _spread(scale, S, i, sc)
        _spread(shift, S, i, sh)
    _cols_out(xb, <floating*>p.out + f0 * S, p.N, L, w, mean, scale, shift)


cdef void _fwd_test_cols(floating* x, const BN* p, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t S = p.S, k = _block_features(x, p.S)
    cdef Py_ssize_t f0 = _block_start(p, u, k), nf = min(p.first if u == 0 else k, p.F - f0), i
    cdef double mean[BN_BLOCK_MAX]
    cdef double scale[BN_BLOCK_MAX]
    cdef double shift[BN_BLOCK_MAX]
    cdef double mu, sc, sh
    for i in range(nf):
        sc = _test_feature(x, p, f0 + i, &mu, &sh)
        _spread(mean, S, i, mu)
        _spread(scale, S, i, sc)
        _spread(shift, S, i, sh)
    _cols_out(x + f0 * S, <floating*>p.out + f0 * S, p.N, p.F * S, nf * S, mean, scale, shift)


cdef void _bwd_cols(floating* x, const BN* p, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t S = p.S, L = p.F * p.S, k = _block_features(x, p.S)
    cdef Py_ssize_t f0 = _block_start(p, u, k)
    cdef Py_ssize_t nf = min(p.first if u == 0 else k, p.F - f0), w = nf * S, n, i, j
    cdef const floating* xb = x + f0 * S
    cdef const floating* db = <const floating*>p.dout + f0 * S
    cdef double mean[BN_BLOCK_MAX]
    cdef double sb[BN_BLOCK_MAX]
    cdef double sg[BN_BLOCK_MAX]
    cdef double a[BN_BLOCK_MAX]
    cdef double b[BN_BLOCK_MAX]
    cdef double c[BN_BLOCK_MAX]
    cdef double ai, bi, ci
    cdef const floating* r
    cdef const floating* dy
    cdef floating* dx
    for i in range(nf):
        _spread(mean, S, i, p.stats[f0 + i])
    for j in range(w):
        sb[j] = 0.0
        sg[j] = 0.0
    _cols_dot(db, xb, p.N, L, w, mean, sb, sg)
    for i in range(nf):
        _backward_feature(x, p, f0 + i, _fold_feature(sb, S, i), _fold_feature(sg, S, i),
                          &ai, &bi, &ci)
        _spread(a, S, i, ai)
        _spread(b, S, i, bi)
        _spread(c, S, i, ci)
    for n in range(p.N):
        r = xb + n * L
        dy = db + n * L
        dx = <floating*>p.out + f0 * S + n * L
        for j in range(w):
            dx[j] = <floating>((a[j] * dy[j] + b[j] * (r[j] - mean[j])) + c[j])


# ---------------------------------------------------------------- channel blocks
# A unit is k consecutive channels (see _block_channels); channel c has N runs of S
# contiguous elements, run n at (n*C + c)*S, so a unit reads k*S contiguous elements a row.

cdef inline void _zero(double* acc, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        acc[k] = 0.0


cdef inline double _fold(const double* acc) noexcept nogil:
    cdef double t = acc[0]
    cdef Py_ssize_t k
    for k in range(1, BN_PARTS):
        t = t + acc[k]
    return t


# Each _add_* adds one run r[0:S] into the BN_PARTS partial sums acc (element j into
# acc[j % BN_PARTS]).  One sum per loop: GCC vectorizes one of these partial-sum loops
# well, but not two interleaved ones.

cdef inline void _add_sum(const floating* r, Py_ssize_t S, double* acc) noexcept nogil:
    cdef Py_ssize_t j, k, S0 = S - S % BN_PARTS
    for j in range(S0 // BN_PARTS):
        for k in range(BN_PARTS):
            acc[k] += r[j * BN_PARTS + k]
    for j in range(S0, S):
        acc[j - S0] += r[j]


cdef inline void _add_ssq(const floating* r, Py_ssize_t S, double mean, double* acc) noexcept nogil:
    cdef Py_ssize_t j, k, S0 = S - S % BN_PARTS
    cdef double d
    for j in range(S0 // BN_PARTS):
        for k in range(BN_PARTS):
            d = r[j * BN_PARTS + k] - mean
            acc[k] += d * d
    for j in range(S0, S):
        d = r[j] - mean
        acc[j - S0] += d * d


cdef inline void _add_dot(const floating* dy, const floating* r, Py_ssize_t S, double mean,
                          double* acc) noexcept nogil:
    cdef Py_ssize_t j, k, S0 = S - S % BN_PARTS
    for j in range(S0 // BN_PARTS):
        for k in range(BN_PARTS):
            acc[k] += dy[j * BN_PARTS + k] * (r[j * BN_PARTS + k] - mean)
    for j in range(S0, S):
        acc[j - S0] += dy[j] * (r[j] - mean)


cdef inline Py_ssize_t _block_channels(floating* tag, Py_ssize_t S, Py_ssize_t C) noexcept nogil:
    """Channels per unit: enough for 16 KiB of each row (the hardware prefetchers lose
    their stream at every jump to another row, so 4 KiB runs alone stream poorly), at most
    BN_RUNS_MAX, and few enough to leave 8 units for the threads to share."""
    cdef Py_ssize_t k = BN_SPAN_BYTES // (S * <Py_ssize_t>sizeof(floating))
    return max(1, min(k, min(<Py_ssize_t>BN_RUNS_MAX, C // 8)))


cdef inline void _runs_out(const floating* xb, floating* ob, Py_ssize_t N, Py_ssize_t L,
                           Py_ssize_t S, Py_ssize_t nc, const double* mean, const double* scale,
                           const double* shift) noexcept nogil:
    """out = (x - mean)*scale + shift over the nc channels of a unit, run by run."""
    cdef Py_ssize_t n, i, j
    cdef const floating* r
    cdef floating* o
    for n in range(N):
        for i in range(nc):
            r = xb + n * L + i * S
            o = ob + n * L + i * S
            for j in range(S):
                o[j] = <floating>((r[j] - mean[i]) * scale[i] + shift[i])


cdef void _fwd_train_runs(floating* x, const BN* p, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t S = p.S, L = p.F * p.S, k = _block_channels(x, p.S, p.F)
    cdef Py_ssize_t c0 = u * k, nc = min(k, p.F - c0), n, i
    cdef const floating* xb = x + c0 * S
    cdef floating* ob = <floating*>p.out + c0 * S
    cdef double acc[BN_RUNS_MAX * BN_PARTS]
    cdef double mean[BN_RUNS_MAX]
    cdef double scale[BN_RUNS_MAX]
    cdef double shift[BN_RUNS_MAX]
    _zero(acc, nc * BN_PARTS)
    for n in range(p.N):
        for i in range(nc):
            _add_sum(xb + n * L + i * S, S, acc + i * BN_PARTS)
    for i in range(nc):
        mean[i] = _fold(acc + i * BN_PARTS) / p.m
    _zero(acc, nc * BN_PARTS)
    for n in range(p.N):
        for i in range(nc):
            _add_ssq(xb + n * L + i * S, S, mean[i], acc + i * BN_PARTS)
    for i in range(nc):
        scale[i] = _train_feature(x, p, c0 + i, mean[i], _fold(acc + i * BN_PARTS), &shift[i])
    _runs_out(xb, ob, p.N, L, S, nc, mean, scale, shift)


cdef void _fwd_test_runs(floating* x, const BN* p, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t S = p.S, L = p.F * p.S, k = _block_channels(x, p.S, p.F)
    cdef Py_ssize_t c0 = u * k, nc = min(k, p.F - c0), i
    cdef const floating* xb = x + c0 * S
    cdef floating* ob = <floating*>p.out + c0 * S
    cdef double mean[BN_RUNS_MAX]
    cdef double scale[BN_RUNS_MAX]
    cdef double shift[BN_RUNS_MAX]
    for i in range(nc):
        scale[i] = _test_feature(x, p, c0 + i, &mean[i], &shift[i])
    _runs_out(xb, ob, p.N, L, S, nc, mean, scale, shift)


cdef void _bwd_runs(floating* x, const BN* p, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t S = p.S, L = p.F * p.S, k = _block_channels(x, p.S, p.F)
    cdef Py_ssize_t c0 = u * k, nc = min(k, p.F - c0), n, i, j
    cdef const floating* xb = x + c0 * S
    cdef const floating* db = <const floating*>p.dout + c0 * S
    cdef floating* gb = <floating*>p.out + c0 * S
    cdef double sb[BN_RUNS_MAX * BN_PARTS]
    cdef double sg[BN_RUNS_MAX * BN_PARTS]
    cdef double mean[BN_RUNS_MAX]
    cdef double a[BN_RUNS_MAX]
    cdef double b[BN_RUNS_MAX]
    cdef double c[BN_RUNS_MAX]
    cdef const floating* r
    cdef const floating* dy
    cdef floating* dx
    for i in range(nc):
        mean[i] = p.stats[c0 + i]
    _zero(sb, nc * BN_PARTS)
    _zero(sg, nc * BN_PARTS)
    for n in range(p.N):        # run by run, so the second loop finds both runs in L1
        for i in range(nc):
            r = xb + n * L + i * S
            dy = db + n * L + i * S
            _add_sum(dy, S, sb + i * BN_PARTS)
            _add_dot(dy, r, S, mean[i], sg + i * BN_PARTS)
    for i in range(nc):
        _backward_feature(x, p, c0 + i, _fold(sb + i * BN_PARTS), _fold(sg + i * BN_PARTS),
                          &a[i], &b[i], &c[i])
    for n in range(p.N):
        for i in range(nc):
            r = xb + n * L + i * S
            dy = db + n * L + i * S
            dx = gb + n * L + i * S
            for j in range(S):
                dx[j] = <floating>((a[i] * dy[j] + b[i] * (r[j] - mean[i])) + c[i])


# ---------------------------------------------------------------- the driver

ctypedef struct Units:
    void* unit          # void (*)(floating*, const BN*, Py_ssize_t), for x's dtype
    char* x
    const BN* p


cdef void _unit32(void* ctx, int64_t u) noexcept nogil:
    cdef Units* w = <Units*>ctx
    (<void (*)(float*, const BN*, Py_ssize_t) noexcept nogil>w.unit)(<float*>w.x, w.p, u)


cdef void _unit64(void* ctx, int64_t u) noexcept nogil:
    cdef Units* w = <Units*>ctx
    (<void (*)(double*, const BN*, Py_ssize_t) noexcept nogil>w.unit)(<double*>w.x, w.p, u)


cdef void _run_units(void (*unit)(floating*, const BN*, Py_ssize_t) noexcept nogil, floating* x,
                 const BN* p, Py_ssize_t units, bint split) noexcept nogil:
    """Run units [0, units) serially, or (split) as the chunks of a job on the pool."""
    cdef Py_ssize_t u
    cdef int nt = num_threads()
    cdef Units w
    if nt <= 1 or units <= 1 or not split:
        for u in range(units):
            unit(x, p, u)
        return
    w.unit = <void*>unit
    w.x = <char*>x
    w.p = p
    _pool.run(_unit32 if floating is float else _unit64, &w, units, nt)


cdef enum Kind:
    TRAIN
    TEST
    BACKWARD


cdef void _run_kind(floating* x, Kind kind, BN* p, bint split) noexcept nogil:
    """Run one call's kernel (see the two kernels above)."""
    cdef void (*unit)(floating*, const BN*, Py_ssize_t) noexcept nogil
    cdef Py_ssize_t k, units
    if _use_columns(x, p.S):
        k = _block_features(x, p.S)
        p.first = _first_block(x, p, k)
        units = 1 + (max(p.F - p.first, 0) + k - 1) // k
        if kind == TRAIN:
            unit = _fwd_train_cols[floating]
        elif kind == TEST:
            unit = _fwd_test_cols[floating]
        else:
            unit = _bwd_cols[floating]
    else:
        k = _block_channels(x, p.S, p.F)
        if kind == TRAIN:
            unit = _fwd_train_runs[floating]
        elif kind == TEST:
            unit = _fwd_test_runs[floating]
        else:
            unit = _bwd_runs[floating]
        units = (p.F + k - 1) // k
    _run_units(unit, x, p, units, split)


cdef enum:
    PAGE_BYTES = 4096
    PAGES_PER_CHUNK = 16


cdef void _touch_pages(void* ctx, int64_t c) noexcept nogil:
    cdef BN* p = <BN*>ctx
    cdef char* lo = p.out + c * PAGES_PER_CHUNK * PAGE_BYTES
    cdef char* end = p.out + p.out_bytes
    cdef char* q = lo
    while q < end and q < lo + PAGES_PER_CHUNK * PAGE_BYTES:
        q[0] = 0
        q += PAGE_BYTES


cdef int _start(Kind kind, int typenum, BN* p, Py_ssize_t size, bint fresh_out=False) except -1:
    """Run a call's kernel; fresh_out: p.out was just allocated by this call."""
    cdef bint split = size >= parallel_min(typenum, PAR_BN, PAR_BN)
    cdef int nt = num_threads()
    if size == 0:
        return 0        # nothing to read or write (and S may be 0)
    with nogil:
        if fresh_out and split and nt > 1:
            # Fresh pages are mapped on first write, and every column block writes to every
            # page of the rows: two threads faulting on the same pages serialize, and on this
            # kind of machine ran 2 threads no faster than 1.  Touch one byte a page first, by
            # page ranges (a job of its own: each page faults in exactly one thread); the
            # kernel overwrites every byte afterwards.
            p.out_bytes = size * (4 if typenum == cnp.NPY_FLOAT32 else 8)
            _pool.run_touching(_touch_pages, p, (p.out_bytes + PAGES_PER_CHUNK * PAGE_BYTES - 1)
                               // (PAGES_PER_CHUNK * PAGE_BYTES), nt)
        if typenum == cnp.NPY_FLOAT32:
            _run_kind(<float*>p.x, kind, p, split)
        else:
            _run_kind(<double*>p.x, kind, p, split)
    return 0


# ---------------------------------------------------------------- validation

cdef str FWD = "batchnorm_forward"
cdef str BWD = "batchnorm_backward"
cdef tuple _FWD_NAMES = ("x", "gamma", "beta", "running_mean", "running_var", "out")
cdef enum:
    IX = 0          # positions in _FWD_NAMES
    IOUT = 5


cdef int _check_forward(PyObject** o, int n, bint train) except -1:
    """The array contract of batchnorm_forward; o = (x, gamma, beta, running_mean,
    running_var[, out]).  Returns the NumPy type number.  Order: type, dtype, shape,
    layout, writeability, overlap, batch size."""
    cdef int i
    cdef unsigned int outputs = (0b11000 if train else 0) | (0b100000 if n > IOUT else 0)
    if n > IOUT and not cnp.PyArray_Check(<object>o[IOUT]):
        raise TypeError(f"{FWD}: out must be None or a numpy.ndarray of float32 or float64, "
                        f"got {type(<object>o[IOUT]).__name__}")
    check_types(FWD, _FWD_NAMES, o, n)
    cdef int typenum = check_dtypes(FWD, _FWD_NAMES, o, n)
    cdef cnp.ndarray x = <cnp.ndarray>o[IX]
    cdef int nd = cnp.PyArray_NDIM(x)
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(x)
    shape = c_shape(x)
    if nd != 2 and nd != 4:
        raise ValueError(f"{FWD}: x must be 2-D (N, D) or 4-D (N, C, H, W), got shape {shape}")
    for i in range(1, IOUT):
        a = <cnp.ndarray>o[i]
        if cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_DIMS(a)[0] != dims[1]:
            raise ValueError(f"{FWD}: {_FWD_NAMES[i]} has shape {c_shape(a)} but x has "
                             f"{dims[1]} {'features' if nd == 2 else 'channels'} (shape {shape})")
    if n > IOUT and c_shape(<object>o[IOUT]) != shape:
        raise ValueError(f"{FWD}: out has shape {c_shape(<object>o[IOUT])} but x has shape {shape}")
    for i in range(n):
        check_layout(FWD, _FWD_NAMES[i], <object>o[i], (outputs >> i) & 1)
    check_writeable(FWD, _FWD_NAMES, o, n, outputs)
    if n > IOUT and shares_memory(o[IX], o[IOUT]):
        # The one overlap allowed: out exactly over x in test mode (in place).  In train mode
        # the cache keeps x for the backward.
        if train:
            raise ValueError(f"{FWD}: out shares memory with x, but in train mode the cache keeps x "
                             f"for batchnorm_backward; pass a separate out (out=x is allowed with "
                             f"train=False)")
        if cnp.PyArray_BYTES(x) != cnp.PyArray_BYTES(<cnp.ndarray>o[IOUT]):
            raise ValueError(f"{FWD}: out overlaps x without being x; pass out=x (in place) or a "
                             f"separate array")
        check_overlaps(FWD, _FWD_NAMES[1:], o + 1, n - 1, outputs >> 1)    # out stands for x
    else:
        check_overlaps(FWD, _FWD_NAMES, o, n, outputs)
    cdef cnp.npy_intp m = dims[0] * (dims[2] * dims[3] if nd == 4 else 1)
    if train and m == 0:
        raise ValueError(f"{FWD}: x of shape {shape} has no samples to compute batch statistics "
                         f"over ({'N' if nd == 2 else 'N*H*W'} = 0); train mode needs at least one")
    if train and m == 1 and dims[1] > 0:
        # one value per feature: the batch variance is 0 and out would be beta, silently
        raise ValueError(f"{FWD}: expected more than 1 value per "
                         f"{'feature' if nd == 2 else 'channel'} when training, got x of shape "
                         f"{shape} ({'N' if nd == 2 else 'N*H*W'} = 1); normalize over a larger "
                         f"batch, or use train=False")
    return typenum


cdef int _check_backward(object x, object stats, object dout) except -1:
    """The cache's x and stats and dout, by C-level reads.  Returns the type number."""
    cdef PyObject* o[2]
    o[0] = <PyObject*>x; o[1] = <PyObject*>dout
    cdef int typenum = check_arrays(BWD, ("x (from the cache)", "dout"), o, 2, 0)
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
    if (nd != 2 and nd != 4) or not cnp.PyArray_CheckExact(stats) \
            or cnp.PyArray_TYPE(<cnp.ndarray>stats) != cnp.NPY_FLOAT64 \
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>stats) \
            or not cnp.PyArray_ISALIGNED(<cnp.ndarray>stats) \
            or cnp.PyArray_NDIM(<cnp.ndarray>stats) != 2 \
            or cnp.PyArray_DIMS(<cnp.ndarray>stats)[0] != 3 \
            or cnp.PyArray_DIMS(<cnp.ndarray>stats)[1] != cnp.PyArray_DIMS(<cnp.ndarray>x)[1]:
        shape = c_shape(x)
        features = shape[1] if nd == 2 or nd == 4 else "F"
        raise ValueError(f"{BWD}: the cache is inconsistent: x of shape {shape} with stats of "
                         f"{type(stats).__name__} {getattr(stats, 'shape', '')} "
                         f"{getattr(stats, 'dtype', '')} (expected C-contiguous float64 of shape "
                         f"(3, {features})); pass the cache batchnorm_forward returned, "
                         f"unmodified")
    return typenum


cdef inline void _fill_shape(BN* p, cnp.ndarray x):
    cdef cnp.npy_intp* d = cnp.PyArray_DIMS(x)
    p.N = d[0]
    p.F = d[1]
    p.S = d[2] * d[3] if cnp.PyArray_NDIM(x) == 4 else 1
    p.m = <double>(p.N * p.S)


# ---------------------------------------------------------------- public functions

def batchnorm_forward(x, gamma, beta, *, running_mean, running_var, train=True,
                      momentum=0.9, eps=1e-5, out=None):
    """Batch normalization forward (the lecture's), fused.  Returns (out, cache).

    x is (N, D), normalized per feature over the N samples, or (N, C, H, W), normalized per
    channel over N, H and W (the spatial form used after convolutions).  gamma, beta,
    running_mean and running_var are 1-D of length D (or C), with x's dtype.  With M the
    count normalized over (N, or N*H*W), per feature:

        train=True:   mean = sum(x)/M;  var = sum((x - mean)**2)/M      (biased)
                      xhat = (x - mean)/sqrt(var + eps);  out = gamma*xhat + beta
                      running_mean = momentum*running_mean + (1 - momentum)*mean   (in place)
                      running_var  = momentum*running_var  + (1 - momentum)*var    (in place)
        train=False:  out = gamma*(x - running_mean)/sqrt(running_var + eps) + beta
                      (running statistics only read; the cache is None)

    Train mode needs more than one value per feature (M > 1), or raises ValueError (with one,
    the batch variance is 0 and out would silently be beta).

    momentum in [0, 1), eps > 0 (finite).  out: None (a new array), or a C-contiguous
    writeable array of x's shape and dtype; in test mode it may be x itself (in place), in
    train mode it must not share memory with x.

    The cache of train mode (lec6fast._batchnorm_cache.BatchNormCache) holds a reference to
    x, not a copy, plus 3 float64 numbers per feature (mean, inv_std, a copy of gamma): do
    not modify x in place before calling batchnorm_backward.

    Numerics: all arithmetic in float64 whatever x's dtype, rounded once at each store; the
    statistics take two passes (the mean, then the centered squares), so float32 input far
    from zero (such as 1e4 + N(0, 1)) still gets its variance to float32 precision.  A
    feature with zero batch variance gives out = beta.

    PyTorch: torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta,
    training, momentum=1 - momentum, eps) normalizes the same way, but its momentum weights
    the NEW statistic (torch momentum = 1 - ours, so ours 0.9 is torch's 0.1) and its
    running_var is updated with the UNBIASED batch variance var*M/(M - 1); ours, like the
    lecture's, uses the biased one.

    Contract: wrong dtype, a dtype mismatch, non-native byte order or a non-array raise
    TypeError; a wrong shape, a non-contiguous or unaligned array, a read-only output
    (running statistics in train mode, out), overlapping outputs, an empty batch in train
    mode or a hyperparameter out of range raise ValueError, before anything is written.
    The GIL is released; work is split by features across lec6fast.set_num_threads()
    threads with bit-identical results for every thread count and SIMD level.
    """
    cdef PyObject* o[6]
    cdef int n = 5
    cdef BN p
    cdef cnp.npy_intp sdims[2]
    cdef bint tr = flag(FWD, "train", train)
    p.momentum = real(FWD, "momentum", momentum, UNIT)
    p.eps = real(FWD, "eps", eps, POSITIVE)
    o[0] = <PyObject*>x; o[1] = <PyObject*>gamma; o[2] = <PyObject*>beta
    o[3] = <PyObject*>running_mean; o[4] = <PyObject*>running_var
    if out is not None:
        o[5] = <PyObject*>out
        n = 6
    cdef int typenum = _check_forward(o, n, tr)
    cdef bint fresh_out = out is None
    _fill_shape(&p, <cnp.ndarray>x)
    if out is None:
        out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>x), cnp.PyArray_DIMS(<cnp.ndarray>x),
                                typenum, 0)
    p.stats = NULL
    stats = None
    if tr:
        sdims[0] = 3
        sdims[1] = p.F
        stats = cnp.PyArray_EMPTY(2, sdims, cnp.NPY_FLOAT64, 0)
        p.stats = <double*>cnp.PyArray_DATA(<cnp.ndarray>stats)
    # Allocating can run the garbage collector, and with it user code: check again, then run
    # exactly what this check saw.
    o[5] = <PyObject*>out
    typenum = _check_forward(o, 6, tr)
    _fill_shape(&p, <cnp.ndarray>x)
    if tr and cnp.PyArray_DIMS(<cnp.ndarray>stats)[1] != p.F:
        raise ValueError(f"{FWD}: x changed shape while its arguments were read (now {c_shape(x)})")
    p.x = cnp.PyArray_BYTES(<cnp.ndarray>x)
    p.out = cnp.PyArray_BYTES(<cnp.ndarray>out)
    p.gamma = cnp.PyArray_BYTES(<cnp.ndarray>gamma)
    p.beta = cnp.PyArray_BYTES(<cnp.ndarray>beta)
    p.rmean = cnp.PyArray_BYTES(<cnp.ndarray>running_mean)
    p.rvar = cnp.PyArray_BYTES(<cnp.ndarray>running_var)
    _start(TRAIN if tr else TEST, typenum, &p, cnp.PyArray_SIZE(<cnp.ndarray>x), fresh_out)
    return out, (BatchNormCache(x, stats) if tr else None)


def batchnorm_backward(dout, cache):
    """Batch normalization backward, the closed form, fused.  Returns (dx, dgamma, dbeta).

    cache is what batchnorm_forward returned with train=True; dout has the forward input's
    shape and dtype.  With xhat = (x - mean)*inv_std recomputed from the cached x and
    statistics, per feature over its M elements:

        dbeta  = sum(dout)
        dgamma = sum(dout * xhat)
        dx     = (gamma*inv_std/M) * (M*dout - dbeta - xhat*dgamma)

    (gamma as it was at the forward call).  Two passes over x and dout: the sums, then dx.
    dx, dgamma and dbeta are new arrays of x's dtype; arithmetic is in float64.

    A cache that is not a train-mode cache raises TypeError; dout of another dtype TypeError,
    of another shape or non-contiguous ValueError.  The GIL is released; bit-identical for
    every thread count and SIMD level.
    """
    cdef BN p
    cdef cnp.npy_intp pdims[1]
    if type(cache) is not BatchNormCache:
        raise TypeError(f"{BWD}: cache must be the cache returned by batchnorm_forward with "
                        f"train=True, got "
                        + ("None (batchnorm_forward returns no cache with train=False)"
                           if cache is None else type(cache).__name__))
    x = cache.x                 # (the cache's attributes are the user's to replace)
    stats = cache.stats
    cdef int typenum = _check_backward(x, stats, dout)
    _fill_shape(&p, <cnp.ndarray>x)
    dx = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>x), cnp.PyArray_DIMS(<cnp.ndarray>x),
                           typenum, 0)
    pdims[0] = p.F
    dgamma = cnp.PyArray_ZEROS(1, pdims, typenum, 0)     # sums over no elements stay 0
    dbeta = cnp.PyArray_ZEROS(1, pdims, typenum, 0)
    # Allocating can run the garbage collector, and with it user code: check again, then run
    # exactly what this check saw.
    typenum = _check_backward(x, stats, dout)
    _fill_shape(&p, <cnp.ndarray>x)
    if (c_shape(dx) != c_shape(x) or cnp.PyArray_TYPE(<cnp.ndarray>dx) != typenum
            or cnp.PyArray_DIMS(<cnp.ndarray>dgamma)[0] != p.F):
        raise ValueError(f"{BWD}: x changed while the arguments were read (now {c_shape(x)})")
    p.x = cnp.PyArray_BYTES(<cnp.ndarray>x)
    p.out = cnp.PyArray_BYTES(<cnp.ndarray>dx)
    p.dout = cnp.PyArray_BYTES(<cnp.ndarray>dout)
    p.stats = <double*>cnp.PyArray_DATA(<cnp.ndarray>stats)
    p.dgamma = cnp.PyArray_BYTES(<cnp.ndarray>dgamma)
    p.dbeta = cnp.PyArray_BYTES(<cnp.ndarray>dbeta)
    _start(BACKWARD, typenum, &p, cnp.PyArray_SIZE(<cnp.ndarray>x), True)
    return dx, dgamma, dbeta

# Cython directives (boundscheck/wraparound off, cdivision on) are set in setup.py.
"""Fused in-place parameter updates of CS231n lecture 6 (the public API re-exports these).

Every kernel is one pass over memory: each element of each array is read once and written
at most once, with no temporaries.  Arithmetic happens in the arrays' dtype, operation for
operation as in lec6fast.reference (hyperparameters rounded to the dtype the way NumPy rounds
a Python float), so the fast path reproduces the reference's rounding; the build forbids
floating-point contraction so every SIMD level and thread count gives the same bits.
"""

include "_common.pxi"

from libc.math cimport sqrt, sqrtf, pow


cdef inline floating root(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


# ---------------------------------------------------------------- kernels
# Each kernel updates [lo, hi) of the arrays in s.a; s.h holds the derived hyperparameters.

cdef void _sgd(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating neg_lr = <floating>s.h[0]
    cdef Py_ssize_t i
    for i in range(lo, hi):
        x[i] = x[i] + neg_lr * dx[i]


cdef void _momentum(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* v = <floating*>s.a[2]
    cdef floating mu = <floating>s.h[0], lr = <floating>s.h[1]
    cdef floating vi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        vi = mu * v[i] - lr * dx[i]
        v[i] = vi
        x[i] = x[i] + vi


cdef void _nesterov(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* v = <floating*>s.a[2]
    cdef floating mu = <floating>s.h[0], lr = <floating>s.h[1]
    cdef floating neg_mu = <floating>s.h[2], one_plus_mu = <floating>s.h[3]
    cdef floating v_prev, vi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        v_prev = v[i]
        vi = mu * v_prev - lr * dx[i]
        v[i] = vi
        x[i] = x[i] + (neg_mu * v_prev + one_plus_mu * vi)


cdef void _adagrad(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* cache = <floating*>s.a[2]
    cdef floating neg_lr = <floating>s.h[0], eps = <floating>s.h[1]
    cdef floating g, c
    cdef Py_ssize_t i
    for i in range(lo, hi):
        g = dx[i]
        c = cache[i] + g * g
        cache[i] = c
        x[i] = x[i] + neg_lr * g / (root(c) + eps)


cdef void _rmsprop(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* cache = <floating*>s.a[2]
    cdef floating neg_lr = <floating>s.h[0], eps = <floating>s.h[1]
    cdef floating decay = <floating>s.h[2], one_minus_decay = <floating>s.h[3]
    cdef floating g, c
    cdef Py_ssize_t i
    for i in range(lo, hi):
        g = dx[i]
        c = decay * cache[i] + one_minus_decay * (g * g)
        cache[i] = c
        x[i] = x[i] + neg_lr * g / (root(c) + eps)


cdef void _adam(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* m = <floating*>s.a[2]
    cdef floating* v = <floating*>s.a[3]
    cdef floating neg_lr = <floating>s.h[0], eps = <floating>s.h[1]
    cdef floating b1 = <floating>s.h[2], one_minus_b1 = <floating>s.h[3]
    cdef floating b2 = <floating>s.h[4], one_minus_b2 = <floating>s.h[5]
    cdef floating corr1 = <floating>s.h[6], corr2 = <floating>s.h[7]
    cdef floating g, mi, vi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        g = dx[i]
        mi = b1 * m[i] + one_minus_b1 * g
        vi = b2 * v[i] + one_minus_b2 * (g * g)
        m[i] = mi
        v[i] = vi
        x[i] = x[i] + neg_lr * (mi / corr1) / (root(vi / corr2) + eps)


cdef void _ema(floating* x_avg, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* x = <const floating*>s.a[1]
    cdef floating decay = <floating>s.h[0], one_minus_decay = <floating>s.h[1]
    cdef Py_ssize_t i
    for i in range(lo, hi):
        x_avg[i] = decay * x_avg[i] + one_minus_decay * x[i]


# ---------------------------------------------------------------- public wrappers

# Elements (float32, float64) from which a call is split across the threads: where two
# threads first beat one by 10-20% on the development machine (2 cores, AVX-512 level).
cdef enum:
    PAR_SGD_32 = 65536          # sgd_, ema_ and the probes: a few instructions per element
    PAR_SGD_64 = 32768
    PAR_MOMENTUM_32 = 32768     # momentum_, nesterov_
    PAR_MOMENTUM_64 = 16384
    PAR_SQRT_32 = 32768         # adagrad_, rmsprop_: a square root and a division
    PAR_SQRT_64 = 8192
    PAR_ADAM_32 = 16384         # adam_: a square root and three divisions
    PAR_ADAM_64 = 8192

_PARALLEL_MIN = {
    "sgd_": (PAR_SGD_32, PAR_SGD_64), "ema_": (PAR_SGD_32, PAR_SGD_64),
    "_copy": (PAR_SGD_32, PAR_SGD_64), "_triad": (PAR_SGD_32, PAR_SGD_64),
    "_scale_": (PAR_SGD_32, PAR_SGD_64),
    "momentum_": (PAR_MOMENTUM_32, PAR_MOMENTUM_64), "nesterov_": (PAR_MOMENTUM_32, PAR_MOMENTUM_64),
    "adagrad_": (PAR_SQRT_32, PAR_SQRT_64), "rmsprop_": (PAR_SQRT_32, PAR_SQRT_64),
    "adam_": (PAR_ADAM_32, PAR_ADAM_64),
}

cdef tuple _X_DX = ("x", "dx")
cdef tuple _X_DX_V = ("x", "dx", "v")
cdef tuple _X_DX_CACHE = ("x", "dx", "cache")
cdef tuple _X_DX_M_V = ("x", "dx", "m", "v")
cdef tuple _XAVG_X = ("x_avg", "x")

_CONTRACT = """
    All arrays share one shape and one dtype (float32 or float64) and are C-contiguous;
    outputs are writeable and share no memory with any other argument.  Arithmetic is in
    the arrays' dtype.  Wrong dtype or a non-array raises TypeError; any other violation,
    or a hyperparameter outside its range, raises ValueError before anything is written.
    The GIL is released; arrays above a size threshold are split across the threads set by
    lec6fast.set_num_threads(), with bit-identical results for any thread count.
"""


def sgd_(x, dx, *, lr):
    """Vanilla SGD, in place:  x += -lr * dx

    x (updated), dx (read).  lr >= 0.  Returns None.
    """
    cdef PyObject* o[2]
    cdef Step s
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx
    s.h[0] = -real("sgd_", "lr", lr, NONNEG)
    cdef int typenum = check_arrays("sgd_", _X_DX, o, 2, 0b1)
    launch(_sgd[float], _sgd[double], typenum, o, 2, &s, PAR_SGD_32, PAR_SGD_64)


def momentum_(x, dx, v, *, lr, mu=0.9):
    """SGD with momentum, in place:  v = mu*v - lr*dx;  x += v

    x, v (updated), dx (read).  lr >= 0, mu in [0, 1).  Returns None.
    The velocity convention is the lecture's (v includes lr); see the README for PyTorch's.
    """
    cdef PyObject* o[3]
    cdef Step s
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>v
    s.h[1] = real("momentum_", "lr", lr, NONNEG)
    s.h[0] = real("momentum_", "mu", mu, UNIT)
    cdef int typenum = check_arrays("momentum_", _X_DX_V, o, 3, 0b101)
    launch(_momentum[float], _momentum[double], typenum, o, 3, &s, PAR_MOMENTUM_32, PAR_MOMENTUM_64)


def nesterov_(x, dx, v, *, lr, mu=0.9):
    """Nesterov momentum, in place (the lecture's form, with dx taken at x):

        v_prev = v;  v = mu*v - lr*dx;  x += -mu*v_prev + (1 + mu)*v

    x, v (updated), dx (read).  lr >= 0, mu in [0, 1).  Returns None.
    """
    cdef PyObject* o[3]
    cdef Step s
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>v
    s.h[1] = real("nesterov_", "lr", lr, NONNEG)
    s.h[0] = real("nesterov_", "mu", mu, UNIT)
    s.h[2] = -s.h[0]
    s.h[3] = 1.0 + s.h[0]
    cdef int typenum = check_arrays("nesterov_", _X_DX_V, o, 3, 0b101)
    launch(_nesterov[float], _nesterov[double], typenum, o, 3, &s, PAR_MOMENTUM_32, PAR_MOMENTUM_64)


def adagrad_(x, dx, cache, *, lr, eps=1e-7):
    """AdaGrad, in place:  cache += dx**2;  x += -lr * dx / (sqrt(cache) + eps)

    x, cache (updated), dx (read).  lr >= 0, eps > 0.  Returns None.
    """
    cdef PyObject* o[3]
    cdef Step s
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>cache
    s.h[0] = -real("adagrad_", "lr", lr, NONNEG)
    s.h[1] = real("adagrad_", "eps", eps, POSITIVE)
    cdef int typenum = check_arrays("adagrad_", _X_DX_CACHE, o, 3, 0b101)
    launch(_adagrad[float], _adagrad[double], typenum, o, 3, &s, PAR_SQRT_32, PAR_SQRT_64)


def rmsprop_(x, dx, cache, *, lr, decay_rate=0.99, eps=1e-7):
    """RMSProp, in place:

        cache = decay_rate*cache + (1 - decay_rate)*dx**2
        x += -lr * dx / (sqrt(cache) + eps)

    x, cache (updated), dx (read).  lr >= 0, decay_rate in [0, 1), eps > 0.  Returns None.
    """
    cdef PyObject* o[3]
    cdef Step s
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>cache
    s.h[0] = -real("rmsprop_", "lr", lr, NONNEG)
    s.h[1] = real("rmsprop_", "eps", eps, POSITIVE)
    s.h[2] = real("rmsprop_", "decay_rate", decay_rate, UNIT)
    s.h[3] = 1.0 - s.h[2]
    cdef int typenum = check_arrays("rmsprop_", _X_DX_CACHE, o, 3, 0b101)
    launch(_rmsprop[float], _rmsprop[double], typenum, o, 3, &s, PAR_SQRT_32, PAR_SQRT_64)


def adam_(x, dx, m, v, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-7):
    """Adam with bias correction, in place (t is the 1-based step number):

        m = beta1*m + (1 - beta1)*dx
        v = beta2*v + (1 - beta2)*dx**2
        mb = m / (1 - beta1**t);  vb = v / (1 - beta2**t)
        x += -lr * mb / (sqrt(vb) + eps)

    x, m, v (updated), dx (read).  t an integer >= 1, lr >= 0, beta1 and beta2 in [0, 1),
    eps > 0.  The correction factors 1 - beta**t are computed once per call in double
    precision.  Note eps is added after the square root, as in the lecture.  Returns None.
    """
    cdef PyObject* o[4]
    cdef Step s
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>m; o[3] = <PyObject*>v
    cdef double step = step_number("adam_", "t", t)
    s.h[0] = -real("adam_", "lr", lr, NONNEG)
    s.h[1] = real("adam_", "eps", eps, POSITIVE)
    s.h[2] = real("adam_", "beta1", beta1, UNIT)
    s.h[4] = real("adam_", "beta2", beta2, UNIT)
    s.h[3] = 1.0 - s.h[2]
    s.h[5] = 1.0 - s.h[4]
    s.h[6] = 1.0 - pow(s.h[2], step)
    s.h[7] = 1.0 - pow(s.h[4], step)
    cdef int typenum = check_arrays("adam_", _X_DX_M_V, o, 4, 0b1101)
    launch(_adam[float], _adam[double], typenum, o, 4, &s, PAR_ADAM_32, PAR_ADAM_64)


def ema_(x_avg, x, *, decay=0.995):
    """Running (exponential moving) average of parameters, in place:

        x_avg = decay*x_avg + (1 - decay)*x

    x_avg (updated), x (read).  decay in [0, 1).  Use x_avg at test time.  Returns None.
    """
    cdef PyObject* o[2]
    cdef Step s
    o[0] = <PyObject*>x_avg; o[1] = <PyObject*>x
    s.h[0] = real("ema_", "decay", decay, UNIT)
    s.h[1] = 1.0 - s.h[0]
    cdef int typenum = check_arrays("ema_", _XAVG_X, o, 2, 0b1)
    launch(_ema[float], _ema[double], typenum, o, 2, &s, PAR_SGD_32, PAR_SGD_64)


for _f in (sgd_, momentum_, nesterov_, adagrad_, rmsprop_, adam_, ema_):
    _f.__doc__ += _CONTRACT
del _f


# ---------------------------------------------------------------- bandwidth probes (private)
# Same driver, threads and SIMD level as the kernels above, so `lec6fast bench` and the
# benchmarks can read a kernel's GB/s against what this machine moves in the same run.

cdef void _copy_k(floating* dst, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* src = <const floating*>s.a[1]
    cdef Py_ssize_t i
    for i in range(lo, hi):
        dst[i] = src[i]


cdef void _triad_k(floating* a, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* b = <const floating*>s.a[1]
    cdef const floating* c = <const floating*>s.a[2]
    cdef floating k = <floating>s.h[0]
    cdef Py_ssize_t i
    for i in range(lo, hi):
        a[i] = b[i] + k * c[i]


cdef void _scale_k(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef floating k = <floating>s.h[0]
    cdef Py_ssize_t i
    for i in range(lo, hi):
        x[i] = k * x[i]


def _copy(dst, src):
    """Bandwidth probe: dst[...] = src (one read and one write stream)."""
    cdef PyObject* o[2]
    cdef Step s
    o[0] = <PyObject*>dst; o[1] = <PyObject*>src
    launch(_copy_k[float], _copy_k[double], check_arrays("_copy", ("dst", "src"), o, 2, 0b1), o, 2, &s,
           PAR_SGD_32, PAR_SGD_64)


def _triad(a, b, c, *, s):
    """Bandwidth probe (STREAM triad): a[...] = b + s*c (two read streams, one write)."""
    cdef PyObject* o[3]
    cdef Step st
    o[0] = <PyObject*>a; o[1] = <PyObject*>b; o[2] = <PyObject*>c
    st.h[0] = real("_triad", "s", s, NONNEG)
    cdef int typenum = check_arrays("_triad", ("a", "b", "c"), o, 3, 0b1)
    launch(_triad_k[float], _triad_k[double], typenum, o, 3, &st, PAR_SGD_32, PAR_SGD_64)


def _scale_(x, *, s):
    """Bandwidth probe: x *= s in place, the pure read-modify-write stream the updates make."""
    cdef PyObject* o[1]
    cdef Step st
    o[0] = <PyObject*>x
    st.h[0] = real("_scale_", "s", s, NONNEG)
    cdef int typenum = check_arrays("_scale_", ("x",), o, 1, 0b1)
    launch(_scale_k[float], _scale_k[double], typenum, o, 1, &st, PAR_SGD_32, PAR_SGD_64)

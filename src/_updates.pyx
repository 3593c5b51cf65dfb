# Cython directives (boundscheck/wraparound off, cdivision on) are set in setup.py.
"""Fused in-place parameter updates of CS231n lecture 6 (the public API re-exports these).

Every kernel is one pass over memory: each element of each array is read once and written
at most once, with no temporaries.  Arithmetic happens in the arrays' dtype, operation for
operation as in lec6fast.reference (hyperparameters rounded to the dtype the way NumPy rounds
a Python float), so the fast path reproduces the reference's rounding; the build forbids
floating-point contraction so every SIMD level and thread count gives the same bits.
"""

include "_common.pxi"

from libc.math cimport sqrt, sqrtf


cdef inline floating root(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


# ---------------------------------------------------------------- kernels
# Each kernel updates [lo, hi) of the arrays in s.a; s.h holds the derived hyperparameters.
# Every rule reads its gradient as  g = dx*gscale (+ l2*x when l2 != 0)  and its parameter as
# x*shrink: what lec6fast.optim adds (clipping, L2 and decoupled weight decay) happens in the
# same pass.  The standalone functions pass gscale = shrink = 1 and l2 = 0, which change no bit
# (a product by 1 is exact), so they compute exactly the lecture's update.

cdef inline floating grad(floating dx, floating x, floating gscale, floating l2,
                          bint decay) noexcept nogil:
    """The gradient a rule uses: dx*gscale, plus l2*x when decay (lec6fast.reference's order)."""
    cdef floating g = dx * gscale
    if decay:
        g = g + l2 * x
    return g


cdef void _sgd(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating neg_lr = <floating>s.h.neg_lr
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        x[i] = xi + neg_lr * grad(dx[i], xi, gscale, l2, decay)


cdef void _momentum(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* v = <floating*>s.a[2]
    cdef floating mu = <floating>s.h.mu, lr = <floating>s.h.lr
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, vi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        vi = mu * v[i] - lr * grad(dx[i], xi, gscale, l2, decay)
        v[i] = vi
        x[i] = xi + vi


cdef void _nesterov(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* v = <floating*>s.a[2]
    cdef floating mu = <floating>s.h.mu, lr = <floating>s.h.lr
    cdef floating neg_mu = <floating>s.h.neg_mu, one_plus_mu = <floating>s.h.one_plus_mu
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, v_prev, vi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        v_prev = v[i]
        vi = mu * v_prev - lr * grad(dx[i], xi, gscale, l2, decay)
        v[i] = vi
        x[i] = xi + (neg_mu * v_prev + one_plus_mu * vi)


cdef void _adagrad(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* cache = <floating*>s.a[2]
    cdef floating neg_lr = <floating>s.h.neg_lr, eps = <floating>s.h.eps
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, g, c
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        g = grad(dx[i], xi, gscale, l2, decay)
        c = cache[i] + g * g
        cache[i] = c
        x[i] = xi + neg_lr * g / (root(c) + eps)


cdef void _rmsprop(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* cache = <floating*>s.a[2]
    cdef floating neg_lr = <floating>s.h.neg_lr, eps = <floating>s.h.eps
    cdef floating decay_rate = <floating>s.h.decay, one_minus_decay = <floating>s.h.one_minus_decay
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, g, c
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        g = grad(dx[i], xi, gscale, l2, decay)
        c = decay_rate * cache[i] + one_minus_decay * (g * g)
        cache[i] = c
        x[i] = xi + neg_lr * g / (root(c) + eps)


cdef void _adam(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* m = <floating*>s.a[2]
    cdef floating* v = <floating*>s.a[3]
    cdef floating neg_lr = <floating>s.h.neg_lr, eps = <floating>s.h.eps
    cdef floating b1 = <floating>s.h.beta1, one_minus_b1 = <floating>s.h.one_minus_beta1
    cdef floating b2 = <floating>s.h.beta2, one_minus_b2 = <floating>s.h.one_minus_beta2
    cdef floating corr1 = <floating>s.h.corr1, corr2 = <floating>s.h.corr2
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, g, mi, vi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        g = grad(dx[i], xi, gscale, l2, decay)
        mi = b1 * m[i] + one_minus_b1 * g
        vi = b2 * v[i] + one_minus_b2 * (g * g)
        m[i] = mi
        v[i] = vi
        x[i] = xi + neg_lr * (mi / corr1) / (root(vi / corr2) + eps)


cdef void _ema(floating* x_avg, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef const floating* x = <const floating*>s.a[1]
    cdef floating decay = <floating>s.h.decay, one_minus_decay = <floating>s.h.one_minus_decay
    cdef Py_ssize_t i
    for i in range(lo, hi):
        x_avg[i] = decay * x_avg[i] + one_minus_decay * x[i]


cdef void _momentum_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # torch.optim.SGD's buffer form (lec6fast.optim, convention="torch"):  b = mu*b + dx;  x += -lr*b
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* b = <floating*>s.a[2]
    cdef floating mu = <floating>s.h.mu, neg_lr = <floating>s.h.neg_lr
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        bi = mu * b[i] + grad(dx[i], xi, gscale, l2, decay)
        b[i] = bi
        x[i] = xi + neg_lr * bi


cdef void _nesterov_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # torch.optim.SGD(nesterov=True):  b = mu*b + dx;  x += -lr*(dx + mu*b)
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* b = <floating*>s.a[2]
    cdef floating mu = <floating>s.h.mu, neg_lr = <floating>s.h.neg_lr
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, g, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        g = grad(dx[i], xi, gscale, l2, decay)
        bi = mu * b[i] + g
        b[i] = bi
        x[i] = xi + neg_lr * (g + mu * bi)


# torch.optim's own forms (lec6fast.torch), operation for operation as torch's for-loop CPU
# implementation (its default on CPU) computes them in its vectorized kernels (except the square
# root, which is exact here and 1 ulp off in ~0.7% of torch's AVX-512 results): each Python float
# rounded to the dtype once per call, then the tensor operations in their order, where
# x.add_(y, alpha=a) and torch.lerp are one fused multiply-add (fma(a, y, x): correctly rounded,
# so the same bits at every SIMD level), x.addcmul_(y, z, value=a) is fma(a*y, z, x) and
# x.addcdiv_(y, z, value=a) is x + (a*y)/z.
# g is dx (negated when maximize), then g.add(x, alpha=weight_decay) for L2 decay; decoupled
# decay (AdamW) is x *= 1 - lr*weight_decay first.

from libc.math cimport fma, fmaf


cdef inline floating fmadd(floating a, floating b, floating c) noexcept nogil:
    """a*b + c rounded once."""
    if floating is float:
        return fmaf(a, b, c)
    else:
        return fma(a, b, c)


cdef inline floating tgrad(floating dx, floating x, floating gscale, floating l2,
                           bint decay) noexcept nogil:
    """torch's gradient: dx*gscale (gscale is -1 when maximize), then g.add(x, alpha=l2)."""
    cdef floating g = dx * gscale
    if decay:
        g = fmadd(l2, x, g)
    return g


cdef inline floating lerp(floating a, floating b, floating w, bint small) noexcept nogil:
    """torch.lerp(a, b, w): fma(w, b - a, a) when |w| < 0.5, else fma(w - 1, b - a, b)."""
    if small:
        return fmadd(w, b - a, a)
    return fmadd(w - 1, b - a, b)


cdef void _sgd_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # torch.optim.SGD; the momentum buffer b is s.a[2] (NULL: momentum == 0), nesterov is
    # s.h.beta1 != 0:
    #   b = g on the buffer's first step (s.h.first), else b = fma(1 - dampening, g, b*momentum)
    #   x = fma(-lr, u, x),  u = g (no momentum), fma(momentum, b, g) (nesterov), else b
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* b = <floating*>s.a[2]
    cdef bint first = s.h.first != 0.0, nesterov = s.h.beta1 != 0.0
    cdef floating mu = <floating>s.h.mu, damp = <floating>(1.0 - s.h.dampening)
    cdef floating neg_lr = <floating>s.h.neg_lr
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2
    cdef bint decay = s.h.l2 != 0.0
    cdef floating g, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        g = tgrad(dx[i], x[i], gscale, l2, decay)
        if b != NULL:
            bi = g if first else fmadd(damp, g, b[i] * mu)
            b[i] = bi
            g = fmadd(mu, bi, g) if nesterov else bi
        x[i] = fmadd(neg_lr, g, x[i])


cdef inline void adam_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi,
                            bint small, floating* vmax) noexcept nogil:
    # (inlined with constant `small` and vmax NULL or not: one branch-free loop each)
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* m = <floating*>s.a[2]
    cdef floating* v = <floating*>s.a[3]
    cdef floating w = <floating>s.h.one_minus_beta1
    cdef floating b2 = <floating>s.h.beta2, one_minus_b2 = <floating>s.h.one_minus_beta2
    cdef floating neg_step = <floating>(-(s.h.lr / s.h.corr1))
    cdef floating corr2_sqrt = <floating>pow(s.h.corr2, 0.5), eps = <floating>s.h.eps
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2, shrink = <floating>s.h.shrink
    cdef bint decay = s.h.l2 != 0.0
    cdef floating xi, g, mi, vi, vm
    cdef Py_ssize_t i
    for i in range(lo, hi):
        xi = x[i] * shrink
        g = tgrad(dx[i], xi, gscale, l2, decay)
        mi = lerp(m[i], g, w, small)
        vi = fmadd(one_minus_b2 * g, g, v[i] * b2)
        m[i] = mi
        v[i] = vi
        if vmax != NULL:
            vm = vmax[i]
            if vi > vm or vi != vi:     # torch.maximum: a nan in either wins
                vm = vi
            vmax[i] = vm
            vi = vm
        x[i] = xi + (neg_step * mi) / (root(vi) / corr2_sqrt + eps)


cdef void _adam_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # torch.optim.Adam / AdamW (t = the parameter's step; amsgrad when s.a[4], vmax, is given):
    #   m = lerp(m, g, 1 - beta1);  v = fma((1 - beta2)*g, g, v*beta2);  [vmax = max(vmax, v); v = vmax]
    #   x = x + ((-(lr / (1 - beta1**t))) * m) / (sqrt(v) / (1 - beta2**t)**0.5 + eps)
    cdef floating* vmax = <floating*>s.a[4]
    if <floating>s.h.one_minus_beta1 < 0.5:
        if vmax == NULL:
            adam_torch(x, s, lo, hi, True, <floating*>NULL)
        else:
            adam_torch(x, s, lo, hi, True, vmax)
    elif vmax == NULL:
        adam_torch(x, s, lo, hi, False, <floating*>NULL)
    else:
        adam_torch(x, s, lo, hi, False, vmax)


cdef void _adagrad_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # torch.optim.Adagrad (t = the parameter's step; decay holds lr_decay):
    #   sum = fma(g, g, sum);  x = x + ((-(lr / (1 + (t - 1)*lr_decay))) * g) / (sqrt(sum) + eps)
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating* acc = <floating*>s.a[2]
    cdef floating neg_clr = <floating>(-(s.h.lr / (1.0 + (s.h.t - 1.0) * s.h.decay)))
    cdef floating eps = <floating>s.h.eps
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2
    cdef bint decay = s.h.l2 != 0.0
    cdef floating g, c
    cdef Py_ssize_t i
    for i in range(lo, hi):
        g = tgrad(dx[i], x[i], gscale, l2, decay)
        c = fmadd(g, g, acc[i])
        acc[i] = c
        x[i] = x[i] + (neg_clr * g) / (root(c) + eps)


cdef inline void rmsprop_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi,
                               floating* sq, floating* ga, floating* b) noexcept nogil:
    """torch.optim.RMSprop on the state sq, ga (centered, else NULL), b (momentum > 0, else NULL);
    s.h.decay holds alpha:
        sq = fma((1 - alpha)*g, g, sq*alpha)
        centered:  ga = lerp(ga, g, 1 - alpha);  d = sqrt(fma(-ga, ga, sq)) + eps,  else d = sqrt(sq) + eps
        momentum > 0:  b = b*momentum + g/d;  x = fma(-lr, b, x),   else  x = x + ((-lr)*g)/d
    """
    cdef const floating* dx = <const floating*>s.a[1]
    cdef floating alpha = <floating>s.h.decay, w = <floating>s.h.one_minus_decay
    cdef bint small = w < 0.5
    cdef floating mu = <floating>s.h.mu, neg_lr = <floating>s.h.neg_lr, eps = <floating>s.h.eps
    cdef floating gscale = <floating>s.h.gscale, l2 = <floating>s.h.l2
    cdef bint decay = s.h.l2 != 0.0
    cdef floating g, q, a, d, bi
    cdef Py_ssize_t i
    for i in range(lo, hi):
        g = tgrad(dx[i], x[i], gscale, l2, decay)
        q = fmadd(w * g, g, sq[i] * alpha)
        sq[i] = q
        if ga != NULL:
            a = lerp(ga[i], g, w, small)
            ga[i] = a
            q = fmadd(-a, a, q)
        d = root(q) + eps
        if b != NULL:
            bi = b[i] * mu + g / d
            b[i] = bi
            x[i] = fmadd(neg_lr, bi, x[i])
        else:
            x[i] = x[i] + (neg_lr * g) / d


cdef void _rmsprop_torch(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # the state: square_avg [, momentum_buffer]
    rmsprop_torch(x, s, lo, hi, <floating*>s.a[2], NULL, <floating*>s.a[3])


cdef void _rmsprop_torch_centered(floating* x, const Step* s, Py_ssize_t lo,
                                  Py_ssize_t hi) noexcept nogil:
    # the state: square_avg, grad_avg [, momentum_buffer]
    rmsprop_torch(x, s, lo, hi, <floating*>s.a[2], <floating*>s.a[3], <floating*>s.a[4])


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
    The GIL is released from 4096 elements on; arrays above a size threshold are split across
    the threads set by lec6fast.set_num_threads(), with bit-identical results for any thread
    count.
"""


def sgd_(x, dx, *, lr):
    """Vanilla SGD, in place:  x += -lr * dx

    x (updated), dx (read).  lr >= 0.  Returns None.
    """
    cdef PyObject* o[2]
    cdef Step s = new_step()
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx
    s.h.lr = real("sgd_", "lr", lr, NONNEG)
    derive(&s.h, 0)
    cdef int typenum = check_arrays("sgd_", _X_DX, o, 2, 0b1)
    launch(_sgd[float], _sgd[double], typenum, o, 2, &s, PAR_SGD_32, PAR_SGD_64)


def momentum_(x, dx, v, *, lr, mu=0.9):
    """SGD with momentum, in place:  v = mu*v - lr*dx;  x += v

    x, v (updated), dx (read).  lr >= 0, mu in [0, 1).  Returns None.
    The velocity convention is the lecture's (v includes lr); see the README for PyTorch's.
    """
    cdef PyObject* o[3]
    cdef Step s = new_step()
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>v
    s.h.lr = real("momentum_", "lr", lr, NONNEG)
    s.h.mu = real("momentum_", "mu", mu, UNIT)
    derive(&s.h, 0)
    cdef int typenum = check_arrays("momentum_", _X_DX_V, o, 3, 0b101)
    launch(_momentum[float], _momentum[double], typenum, o, 3, &s, PAR_MOMENTUM_32, PAR_MOMENTUM_64)


def nesterov_(x, dx, v, *, lr, mu=0.9):
    """Nesterov momentum, in place (the lecture's form, with dx taken at x):

        v_prev = v;  v = mu*v - lr*dx;  x += -mu*v_prev + (1 + mu)*v

    x, v (updated), dx (read).  lr >= 0, mu in [0, 1).  Returns None.
    """
    cdef PyObject* o[3]
    cdef Step s = new_step()
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>v
    s.h.lr = real("nesterov_", "lr", lr, NONNEG)
    s.h.mu = real("nesterov_", "mu", mu, UNIT)
    derive(&s.h, 0)
    cdef int typenum = check_arrays("nesterov_", _X_DX_V, o, 3, 0b101)
    launch(_nesterov[float], _nesterov[double], typenum, o, 3, &s, PAR_MOMENTUM_32, PAR_MOMENTUM_64)


def adagrad_(x, dx, cache, *, lr, eps=1e-7):
    """AdaGrad, in place:  cache += dx**2;  x += -lr * dx / (sqrt(cache) + eps)

    x, cache (updated), dx (read).  lr >= 0, eps > 0.  Returns None.
    """
    cdef PyObject* o[3]
    cdef Step s = new_step()
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>cache
    s.h.lr = real("adagrad_", "lr", lr, NONNEG)
    s.h.eps = real("adagrad_", "eps", eps, POSITIVE)
    derive(&s.h, 0)
    cdef int typenum = check_arrays("adagrad_", _X_DX_CACHE, o, 3, 0b101)
    launch(_adagrad[float], _adagrad[double], typenum, o, 3, &s, PAR_SQRT_32, PAR_SQRT_64)


def rmsprop_(x, dx, cache, *, lr, decay_rate=0.99, eps=1e-7):
    """RMSProp, in place:

        cache = decay_rate*cache + (1 - decay_rate)*dx**2
        x += -lr * dx / (sqrt(cache) + eps)

    x, cache (updated), dx (read).  lr >= 0, decay_rate in [0, 1), eps > 0.  Returns None.
    """
    cdef PyObject* o[3]
    cdef Step s = new_step()
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>cache
    s.h.lr = real("rmsprop_", "lr", lr, NONNEG)
    s.h.eps = real("rmsprop_", "eps", eps, POSITIVE)
    s.h.decay = real("rmsprop_", "decay_rate", decay_rate, UNIT)
    derive(&s.h, 0)
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
    cdef Step s = new_step()
    o[0] = <PyObject*>x; o[1] = <PyObject*>dx; o[2] = <PyObject*>m; o[3] = <PyObject*>v
    cdef double step = step_number("adam_", "t", t)
    s.h.lr = real("adam_", "lr", lr, NONNEG)
    s.h.eps = real("adam_", "eps", eps, POSITIVE)
    s.h.beta1 = real("adam_", "beta1", beta1, UNIT)
    s.h.beta2 = real("adam_", "beta2", beta2, UNIT)
    derive(&s.h, step)
    cdef int typenum = check_arrays("adam_", _X_DX_M_V, o, 4, 0b1101)
    launch(_adam[float], _adam[double], typenum, o, 4, &s, PAR_ADAM_32, PAR_ADAM_64)


def ema_(x_avg, x, *, decay=0.995):
    """Running (exponential moving) average of parameters, in place:

        x_avg = decay*x_avg + (1 - decay)*x

    x_avg (updated), x (read).  decay in [0, 1).  Use x_avg at test time.  Returns None.
    """
    cdef PyObject* o[2]
    cdef Step s = new_step()
    o[0] = <PyObject*>x_avg; o[1] = <PyObject*>x
    s.h.decay = real("ema_", "decay", decay, UNIT)
    derive(&s.h, 0)
    cdef int typenum = check_arrays("ema_", _XAVG_X, o, 2, 0b1)
    launch(_ema[float], _ema[double], typenum, o, 2, &s, PAR_SGD_32, PAR_SGD_64)


for _f in (sgd_, momentum_, nesterov_, adagrad_, rmsprop_, adam_, ema_):
    _f.__doc__ += _CONTRACT
del _f


# ---------------------------------------------------------------- the model step (lec6fast.optim)
# One call updates every parameter of a model with one rule: the rule's kernel above runs on
# each parameter with its group's hyperparameters (the clipping factor and weight decay inside
# the kernel's pass), and the running average follows in sub-blocks of SUB elements while x is
# still in cache.  The parameters of one dtype form one index space cut into chunks (see
# chunk_size), so many small arrays share a chunk and the pool splits the step by bytes, not by
# array.

from libc.stdlib cimport malloc, free, qsort

cdef enum:
    RULE_SGD, RULE_MOMENTUM, RULE_NESTEROV, RULE_ADAGRAD, RULE_RMSPROP, RULE_ADAM,
    RULE_MOMENTUM_TORCH, RULE_NESTEROV_TORCH, RULE_SGD_TORCH, RULE_SGD_TORCH_MOMENTUM, RULE_ADAM_TORCH, RULE_ADAM_TORCH_AMSGRAD,
    RULE_ADAGRAD_TORCH, RULE_RMSPROP_TORCH, RULE_RMSPROP_TORCH_MOMENTUM,
    RULE_RMSPROP_TORCH_CENTERED, RULE_RMSPROP_TORCH_CENTERED_MOMENTUM, N_RULES
    SUB = 2048              # elements per sub-block of a parameter with a running average
    NORM_BLOCK = 4096       # elements per block of the global gradient norm
    NORM_LANES = 16         # independent sums per block (see _sumsq)
    PAR_NORM = 32768        # elements from which the norm's blocks are split across the threads
    PAR_AVERAGE = 16384     # average_: from this many elements of out

# The rules lec6fast.optim can step: name -> (id, state arrays, the kernel's thresholds).
RULES = {
    "sgd": (RULE_SGD, 0, PAR_SGD_32), "momentum": (RULE_MOMENTUM, 1, PAR_MOMENTUM_32),
    "nesterov": (RULE_NESTEROV, 1, PAR_MOMENTUM_32), "adagrad": (RULE_ADAGRAD, 1, PAR_SQRT_32),
    "rmsprop": (RULE_RMSPROP, 1, PAR_SQRT_32), "adam": (RULE_ADAM, 2, PAR_ADAM_32),
    "momentum_torch": (RULE_MOMENTUM_TORCH, 1, PAR_MOMENTUM_32),
    "nesterov_torch": (RULE_NESTEROV_TORCH, 1, PAR_MOMENTUM_32),
    # lec6fast.torch (torch.optim's forms; the state in torch's names, in this order):
    "sgd_torch": (RULE_SGD_TORCH, 0, PAR_SGD_32),                      # (no state)
    "sgd_torch_momentum": (RULE_SGD_TORCH_MOMENTUM, 1, PAR_MOMENTUM_32),  # momentum_buffer
    "adam_torch": (RULE_ADAM_TORCH, 2, PAR_ADAM_32),                    # exp_avg, exp_avg_sq
    "adam_torch_amsgrad": (RULE_ADAM_TORCH_AMSGRAD, 3, PAR_ADAM_32),    # ..., max_exp_avg_sq
    "adagrad_torch": (RULE_ADAGRAD_TORCH, 1, PAR_SQRT_32),              # sum
    "rmsprop_torch": (RULE_RMSPROP_TORCH, 1, PAR_SQRT_32),              # square_avg
    "rmsprop_torch_momentum": (RULE_RMSPROP_TORCH_MOMENTUM, 2, PAR_SQRT_32),   # ..., momentum_buffer
    "rmsprop_torch_centered": (RULE_RMSPROP_TORCH_CENTERED, 2, PAR_SQRT_32),   # ..., grad_avg
    "rmsprop_torch_centered_momentum": (RULE_RMSPROP_TORCH_CENTERED_MOMENTUM, 3, PAR_SQRT_32),
}
cdef kernel32 RULE32[N_RULES]
cdef kernel64 RULE64[N_RULES]
RULE32[RULE_SGD], RULE64[RULE_SGD] = _sgd[float], _sgd[double]
RULE32[RULE_MOMENTUM], RULE64[RULE_MOMENTUM] = _momentum[float], _momentum[double]
RULE32[RULE_NESTEROV], RULE64[RULE_NESTEROV] = _nesterov[float], _nesterov[double]
RULE32[RULE_ADAGRAD], RULE64[RULE_ADAGRAD] = _adagrad[float], _adagrad[double]
RULE32[RULE_RMSPROP], RULE64[RULE_RMSPROP] = _rmsprop[float], _rmsprop[double]
RULE32[RULE_ADAM], RULE64[RULE_ADAM] = _adam[float], _adam[double]
RULE32[RULE_MOMENTUM_TORCH], RULE64[RULE_MOMENTUM_TORCH] = _momentum_torch[float], _momentum_torch[double]
RULE32[RULE_NESTEROV_TORCH], RULE64[RULE_NESTEROV_TORCH] = _nesterov_torch[float], _nesterov_torch[double]
RULE32[RULE_SGD_TORCH], RULE64[RULE_SGD_TORCH] = _sgd_torch[float], _sgd_torch[double]
RULE32[RULE_SGD_TORCH_MOMENTUM], RULE64[RULE_SGD_TORCH_MOMENTUM] = _sgd_torch[float], _sgd_torch[double]
RULE32[RULE_ADAM_TORCH], RULE64[RULE_ADAM_TORCH] = _adam_torch[float], _adam_torch[double]
RULE32[RULE_ADAM_TORCH_AMSGRAD], RULE64[RULE_ADAM_TORCH_AMSGRAD] = _adam_torch[float], _adam_torch[double]
RULE32[RULE_ADAGRAD_TORCH], RULE64[RULE_ADAGRAD_TORCH] = _adagrad_torch[float], _adagrad_torch[double]
RULE32[RULE_RMSPROP_TORCH], RULE64[RULE_RMSPROP_TORCH] = _rmsprop_torch[float], _rmsprop_torch[double]
RULE32[RULE_RMSPROP_TORCH_MOMENTUM] = _rmsprop_torch[float]
RULE64[RULE_RMSPROP_TORCH_MOMENTUM] = _rmsprop_torch[double]
RULE32[RULE_RMSPROP_TORCH_CENTERED] = _rmsprop_torch_centered[float]
RULE64[RULE_RMSPROP_TORCH_CENTERED] = _rmsprop_torch_centered[double]
RULE32[RULE_RMSPROP_TORCH_CENTERED_MOMENTUM] = _rmsprop_torch_centered[float]
RULE64[RULE_RMSPROP_TORCH_CENTERED_MOMENTUM] = _rmsprop_torch_centered[double]

# The columns of the per-parameter hyperparameter table a step receives.  The last four are
# lec6fast.torch's (0 leaves a rule as lec6fast.optim steps it): SGD's dampening, first (1: the
# momentum buffer is new), maximize (1: the gradient is negated) and t (> 0: the parameter's own
# 1-based step, used instead of the call's).
HYPER_COLUMNS = ("lr", "mu", "eps", "decay", "beta1", "beta2", "l2", "shrink", "ema",
                 "dampening", "first", "maximize", "t")
cdef enum:
    NCOL = 13


ctypedef struct Param:
    Step s              # the kernel's call: a[0] x, a[1] dx, a[2] and a[3] the state; h: its group's
    Step avg            # the running average's call (a[0] the average, a[1] x); a[0] NULL: none
    Py_ssize_t n        # elements
    Py_ssize_t start    # its first element in the concatenated elements of its dtype
    Py_ssize_t block    # its first norm block
    int f64


ctypedef struct Model:
    Param* p
    int rule
    int nstate
    int* order[2]               # per dtype (float32, float64): its parameters, in model order
    int count[2]
    Py_ssize_t total[2]
    Py_ssize_t chunk[2]
    Py_ssize_t nchunks[2]
    Py_ssize_t nblocks
    double* partial             # the norm: one sum of squares per block
    int* block_param            # the parameter each block belongs to


cdef void _segment(floating* x_unused, const Model* m, const Param* q, Py_ssize_t a,
                   Py_ssize_t b) noexcept nogil:
    """Elements [a, b) of parameter q: the rule's kernel (clipping and weight decay happen in
    it), then the running average, sub-block by sub-block while x is still in cache."""
    cdef Step s = q.s, e
    cdef int i
    cdef Py_ssize_t lo, n
    for i in range(2 + m.nstate):
        s.a[i] = q.s.a[i] + a * <Py_ssize_t>sizeof(floating)
    if q.avg.a[0] == NULL:
        if floating is float:
            RULE32[m.rule](<float*>s.a[0], &s, 0, b - a)
        else:
            RULE64[m.rule](<double*>s.a[0], &s, 0, b - a)
        return
    e = q.avg
    e.a[0] = q.avg.a[0] + a * <Py_ssize_t>sizeof(floating)
    e.a[1] = s.a[0]
    lo = 0
    while lo < b - a:
        n = min(<Py_ssize_t>SUB, b - a - lo)
        if floating is float:
            RULE32[m.rule](<float*>s.a[0], &s, lo, lo + n)
        else:
            RULE64[m.rule](<double*>s.a[0], &s, lo, lo + n)
        _ema(<floating*>e.a[0], &e, lo, lo + n)
        lo += n


cdef void _model_chunk(void* ctx, int64_t c) noexcept nogil:
    cdef Model* m = <Model*>ctx
    cdef int d = 0
    if c >= m.nchunks[0]:
        c -= m.nchunks[0]
        d = 1
    cdef Py_ssize_t lo = c * m.chunk[d]
    cdef Py_ssize_t hi = min(m.total[d], lo + m.chunk[d]), end
    cdef int* order = m.order[d]
    cdef int k = 0, top = m.count[d] - 1, mid
    cdef Param* q
    while k < top:                  # the first parameter that ends after lo
        mid = (k + top) // 2
        if m.p[order[mid]].start + m.p[order[mid]].n <= lo:
            k = mid + 1
        else:
            top = mid
    while lo < hi:
        q = &m.p[order[k]]
        end = min(hi, q.start + q.n)
        if end > lo:
            if d == 0:
                _segment(<float*>NULL, m, q, lo - q.start, end - q.start)
            else:
                _segment(<double*>NULL, m, q, lo - q.start, end - q.start)
            lo = end
        k += 1


cdef double _sumsq(const floating* g, Py_ssize_t n) noexcept nogil:
    """Sum of squares in double, in NORM_LANES lanes (element i in lane i % NORM_LANES, each
    summed in order), then the lanes halved: lane j += lane j + w for w = 8, 4, 2, 1 (the
    order lec6fast.reference.global_norm spells out).  Sixteen independent sums keep a core's
    adders busy: with eight, the pass was bound by the adds' latency and read the gradients at
    well under the memory's bandwidth (clip_norm cost 1.38x a plain step instead of 32/28)."""
    cdef double l[NORM_LANES]
    cdef Py_ssize_t i, j, w, nl = n - n % NORM_LANES
    for j in range(NORM_LANES):
        l[j] = 0.0
    i = 0
    while i < nl:
        for j in range(NORM_LANES):
            l[j] = l[j] + <double>g[i + j] * <double>g[i + j]
        i += NORM_LANES
    for i in range(nl, n):
        l[i - nl] = l[i - nl] + <double>g[i] * <double>g[i]
    w = NORM_LANES // 2
    while w >= 1:
        for j in range(w):
            l[j] = l[j] + l[j + w]
        w = w // 2
    return l[0]


cdef void _norm_chunk(void* ctx, int64_t c) noexcept nogil:
    cdef Model* m = <Model*>ctx
    cdef const Param* q = &m.p[m.block_param[c]]
    cdef Py_ssize_t lo = (c - q.block) * NORM_BLOCK
    cdef Py_ssize_t n = min(<Py_ssize_t>NORM_BLOCK, q.n - lo)
    if q.f64:
        m.partial[c] = _sumsq(<const double*>q.s.a[1] + lo, n)
    else:
        m.partial[c] = _sumsq(<const float*>q.s.a[1] + lo, n)


ctypedef struct Span:       # an array's bytes, for the overlap check of a step
    char* lo
    char* hi
    int who                 # index into the step's names
    int written


cdef int _by_start(const void* a, const void* b) noexcept nogil:
    cdef const Span* x = <const Span*>a
    cdef const Span* y = <const Span*>b
    return -1 if x.lo < y.lo else (1 if x.lo > y.lo else 0)


_RANGES = {"nonneg": NONNEG, "positive": POSITIVE, "unit": UNIT, "prob": PROB}


def _real(str fn, str name, value, str range):
    """A hyperparameter as a float, checked as the kernels check theirs (lec6fast._rules names
    the ranges: nonneg, positive, unit, prob); ValueError naming it otherwise."""
    return real(fn, name, value, _RANGES[range])


cdef class ModelStep:
    """The fused step of one lec6fast.optim optimizer over a fixed list of parameters.

    ModelStep(rule, names, params) checks the parameters and records their shapes and dtypes
    (the `shapes` and `dtypes` attributes); bind(states, avgs) then gives it the optimizer's
    state arrays (views into the optimizer's buffers).  step() checks the parameters and the
    gradients with C-level reads and runs the whole model in one job on the pool.
    """
    cdef Model m                # the parameters and their layout: what every step walks
    cdef int n
    cdef Py_ssize_t par_min
    cdef Span* spans
    cdef list names, gnames, pairs
    cdef str fn
    cdef readonly list shapes, dtypes
    cdef cnp.npy_intp* dims     # every parameter's dimensions, one after the other
    cdef int* ndim
    cdef object keep            # the state arrays and the buffers they are views of
    cdef bint bound
    cdef int nbuf
    cdef char* buf_lo[2]        # the optimizer's buffers: no argument of a step may be in them
    cdef char* buf_hi[2]

    def __cinit__(self, str rule, list names, list gnames, list params, str fn="step"):
        cdef int i, k, d
        cdef Param* q
        self.m.rule, self.m.nstate, self.par_min = RULES[rule]
        self.n = len(names)
        self.names = list(names)
        self.gnames = list(gnames)
        self.pairs = [(a, b) for a, b in zip(self.names, self.gnames)]
        self.fn = fn
        self.bound = False
        self.nbuf = 0
        if len(params) != self.n or len(gnames) != self.n:
            raise ValueError(f"{fn}: {len(names)} names and {len(gnames)} gradient names for "
                             f"{len(params)} parameters")
        self.m.p = <Param*>malloc(max(self.n, 1) * sizeof(Param))
        self.spans = <Span*>malloc((2 * self.n + 2) * sizeof(Span))
        self.m.order[0] = <int*>malloc(max(self.n, 1) * sizeof(int))
        self.m.order[1] = <int*>malloc(max(self.n, 1) * sizeof(int))
        if (self.m.p == NULL or self.spans == NULL or self.m.order[0] == NULL
                or self.m.order[1] == NULL):
            raise MemoryError()
        self.dims = NULL
        self.ndim = NULL
        self._check(params, None)
        self.shapes = [c_shape(x) for x in params]
        self.ndim = <int*>malloc(max(self.n, 1) * sizeof(int))
        self.dims = <cnp.npy_intp*>malloc(max(sum([len(sh) for sh in self.shapes]), 1)
                                          * sizeof(cnp.npy_intp))
        if self.ndim == NULL or self.dims == NULL:
            raise MemoryError()
        k = 0
        for i in range(self.n):
            self.ndim[i] = len(self.shapes[i])
            for d in range(self.ndim[i]):
                self.dims[k] = self.shapes[i][d]
                k += 1
        self.dtypes = ["float64" if cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_FLOAT64 else "float32"
                       for x in params]
        self.m.nblocks = 0
        for d in range(2):
            self.m.count[d] = 0
            self.m.total[d] = 0
        for i in range(self.n):
            q = &self.m.p[i]
            q.s = new_step()
            q.avg = new_step()
            q.n = cnp.PyArray_SIZE(<cnp.ndarray>params[i])
            q.f64 = 1 if self.dtypes[i] == "float64" else 0
            q.start = self.m.total[q.f64]
            self.m.total[q.f64] += q.n
            self.m.order[q.f64][self.m.count[q.f64]] = i
            self.m.count[q.f64] += 1
            q.block = self.m.nblocks
            self.m.nblocks += (q.n + NORM_BLOCK - 1) // NORM_BLOCK
        self.m.partial = <double*>malloc(max(self.m.nblocks, 1) * sizeof(double))
        self.m.block_param = <int*>malloc(max(self.m.nblocks, 1) * sizeof(int))
        if self.m.partial == NULL or self.m.block_param == NULL:
            raise MemoryError()
        for i in range(self.n):
            for k in range((self.m.p[i].n + NORM_BLOCK - 1) // NORM_BLOCK):
                self.m.block_param[self.m.p[i].block + k] = i

    def __dealloc__(self):
        free(self.dims)
        free(self.ndim)
        free(self.m.p)
        free(self.spans)
        free(self.m.order[0])
        free(self.m.order[1])
        free(self.m.partial)
        free(self.m.block_param)

    def bind(self, list states, list avgs, list buffers):
        """states[i]: parameter i's state arrays (in the rule's order), avgs[i]: its running
        average or None, each a writeable C-contiguous array of parameter i's shape and dtype;
        buffers: the (at most two) arrays they are views of, which no step argument may touch."""
        cdef int i, k
        cdef list arrays
        if len(states) != self.n or len(avgs) != self.n or len(buffers) > 2:
            raise ValueError("bind: one list of states and one average per parameter, at most "
                             "two buffers")
        for i in range(self.n):
            arrays = list(states[i]) + ([] if avgs[i] is None else [avgs[i]])
            if len(states[i]) != self.m.nstate:
                raise ValueError(f"bind: {self.names[i]} needs {self.m.nstate} state arrays")
            for a in arrays:
                if (not cnp.PyArray_CheckExact(a) or c_shape(a) != self.shapes[i]
                        or str(a.dtype) != self.dtypes[i] or not cnp.PyArray_IS_C_CONTIGUOUS(a)
                        or not cnp.PyArray_ISWRITEABLE(a)):
                    raise ValueError(f"bind: the state of {self.names[i]} must be writeable, "
                                     f"C-contiguous {self.dtypes[i]} arrays of shape {self.shapes[i]}")
        for b in buffers:
            if not cnp.PyArray_CheckExact(b) or not cnp.PyArray_IS_C_CONTIGUOUS(b):
                raise ValueError("bind: a buffer must be a C-contiguous array")
        self.keep = (states, avgs, buffers)
        self.nbuf = 0
        for b in buffers:
            if cnp.PyArray_NBYTES(<cnp.ndarray>b) > 0:
                self.buf_lo[self.nbuf] = cnp.PyArray_BYTES(<cnp.ndarray>b)
                self.buf_hi[self.nbuf] = self.buf_lo[self.nbuf] + cnp.PyArray_NBYTES(<cnp.ndarray>b)
                self.nbuf += 1
        for i in range(self.n):
            for k in range(self.m.nstate):
                self.m.p[i].s.a[2 + k] = cnp.PyArray_BYTES(<cnp.ndarray>states[i][k])
            self.m.p[i].avg.a[0] = (NULL if avgs[i] is None
                                  else cnp.PyArray_BYTES(<cnp.ndarray>avgs[i]))
        self.bound = True

    cdef str _name(self, int k):
        if k >= 2 * self.n:
            return "the optimizer's own state"
        return self.names[k] if k < self.n else self.gnames[k - self.n]

    cdef int _span(self, cnp.ndarray a, int who, int written, int* ns) noexcept:
        cdef Span* sp
        if cnp.PyArray_NBYTES(a) > 0:
            sp = &self.spans[ns[0]]
            sp.lo = cnp.PyArray_BYTES(a)
            sp.hi = sp.lo + cnp.PyArray_NBYTES(a)
            sp.who = who
            sp.written = written
            ns[0] += 1
        return 0

    cdef int _check(self, list params, list grads) except -1:
        """The parameters (and the gradients, unless None) against the step's contract, by
        C-level reads.  At construction the parameters set the shapes and dtypes."""
        cdef int i, typenum, ns = 0, m = 1 if grads is None else 2
        cdef cnp.npy_intp* dims = self.dims
        cdef PyObject* o[2]
        cdef tuple pair
        cdef str kind
        if len(params) != self.n or (grads is not None and len(grads) != self.n):
            raise ValueError(f"{self.fn}: expected {self.n} parameters and gradients")
        for i in range(self.n):
            o[0] = <PyObject*>params[i]
            pair = self.pairs[i]
            if grads is not None:
                o[1] = <PyObject*>grads[i]
            check_types(self.fn, pair, o, m)
            typenum = check_dtypes(self.fn, pair, o, m)
            if grads is not None:
                if (typenum == cnp.NPY_FLOAT64) != self.m.p[i].f64:
                    raise TypeError(f"{self.fn}: {self.names[i]} has dtype {dtype_name(params[i])} "
                                    f"but had {self.dtypes[i]} when the optimizer was made")
                if (cnp.PyArray_NDIM(<cnp.ndarray>o[0]) != self.ndim[i]
                        or memcmp(cnp.PyArray_DIMS(<cnp.ndarray>o[0]), dims,
                                  self.ndim[i] * sizeof(cnp.npy_intp)) != 0):
                    raise ValueError(f"{self.fn}: {self.names[i]} has shape {c_shape(params[i])} but "
                                     f"had shape {self.shapes[i]} when the optimizer was made")
                check_same_shape(self.fn, pair, o, 2)
                check_layout(self.fn, self.gnames[i], grads[i], False)
            check_layout(self.fn, self.names[i], params[i], True)
            check_writeable(self.fn, pair, o, 1, 0b1)
            self._span(<cnp.ndarray>o[0], i, 1, &ns)
            if grads is not None:
                self._span(<cnp.ndarray>o[1], self.n + i, 0, &ns)
                dims += self.ndim[i]
        for i in range(self.nbuf if grads is not None else 0):
            self.spans[ns].lo, self.spans[ns].hi = self.buf_lo[i], self.buf_hi[i]
            self.spans[ns].who, self.spans[ns].written = 2 * self.n, 1
            ns += 1
        # No parameter may share memory with another argument of the step; gradients may share
        # with each other (they are only read).  Sorted by start, an array overlaps an earlier
        # one iff it starts before the furthest end so far.
        qsort(self.spans, ns, sizeof(Span), _by_start)
        cdef char* end_any = NULL
        cdef char* end_written = NULL
        cdef int any_who = -1, written_who = -1
        cdef Span* sp
        for i in range(ns):
            sp = &self.spans[i]
            if sp.lo < end_written:
                self._overlap(written_who, sp.who)
            if sp.written and sp.lo < end_any:
                self._overlap(any_who, sp.who)
            if sp.hi > end_any:
                end_any, any_who = sp.hi, sp.who
            if sp.written and sp.hi > end_written:
                end_written, written_who = sp.hi, sp.who
        return 0

    cdef int _overlap(self, int a, int b) except -1:
        if a > b:
            a, b = b, a
        raise ValueError(f"{self.fn}: {self._name(a)} shares memory with "
                         f"{self._name(b)}; the step writes the parameters and the "
                         f"optimizer's state, so each must be a separate array")

    def step(self, list params, list grads, cnp.ndarray hyper, double t,
             double clip_norm):
        """Check, then update every parameter (and its state and average) in place.

        hyper: float64 (n, len(HYPER_COLUMNS)), the parameters' hyperparameters, already
        checked; t: the 1-based step; clip_norm > 0 clips (the global norm is returned, else
        None).  Raises FloatingPointError, writing nothing, when the clipped norm is not finite.
        """
        cdef int i, d
        cdef Param* q
        cdef Model* m = &self.m
        cdef const double* h
        cdef double norm = 0.0, total = 0.0, scale
        cdef int nt = num_threads()
        cdef Py_ssize_t size = self.m.total[0] + self.m.total[1]
        cdef Py_ssize_t norm_min = parallel_min(cnp.NPY_FLOAT32, PAR_NORM, PAR_NORM)
        cdef Py_ssize_t step_min = parallel_min(cnp.NPY_FLOAT32, self.par_min, self.par_min)
        if (cnp.PyArray_TYPE(hyper) != cnp.NPY_FLOAT64 or cnp.PyArray_NDIM(hyper) != 2
                or cnp.PyArray_DIMS(hyper)[0] != self.n or cnp.PyArray_DIMS(hyper)[1] != NCOL
                or not cnp.PyArray_IS_C_CONTIGUOUS(hyper)):
            raise ValueError(f"step: hyper must be a C-contiguous float64 (n, {NCOL}) table")
        if not self.bound:
            raise ValueError("step: bind() the optimizer's state first")
        if self.m.rule == RULE_ADAM and not t >= 1:
            raise ValueError(f"step: t must be >= 1 (the 1-based step), got {t}")
        self._check(params, grads)
        for i in range(self.n):             # exactly what was checked, from here on
            q = &self.m.p[i]
            h = <const double*>cnp.PyArray_DATA(hyper) + i * NCOL
            q.s.a[0] = cnp.PyArray_BYTES(<cnp.ndarray>params[i])
            q.s.a[1] = cnp.PyArray_BYTES(<cnp.ndarray>grads[i])
            if i > 0 and memcmp(h, h - NCOL, NCOL * sizeof(double)) == 0:
                q.s.h = self.m.p[i - 1].s.h     # the same group: derived already (pow for Adam)
                q.avg.h = self.m.p[i - 1].avg.h
                continue
            q.s.h.lr = h[0]
            q.s.h.mu = h[1]
            q.s.h.eps = h[2]
            q.s.h.decay = h[3]
            q.s.h.beta1 = h[4]
            q.s.h.beta2 = h[5]
            q.s.h.dampening = h[9]
            q.s.h.first = h[10]
            derive(&q.s.h, h[12] if h[12] > 0 else (t if self.m.rule == RULE_ADAM else 0))
            q.s.h.l2 = h[6]
            q.s.h.shrink = h[7]
            q.s.h.gscale = -1.0 if h[11] != 0 else 1.0
            q.avg.h.decay = h[8]
            derive(&q.avg.h, 0)
        for d in range(2):              # (the chunk size is a test knob: read it per step)
            m.chunk[d] = chunk_size(m.total[d], 8 if d else 4)
            m.nchunks[d] = (m.total[d] + m.chunk[d] - 1) // m.chunk[d]
        with nogil:
            if clip_norm > 0:
                if self.m.nblocks > 0:
                    _pool.run(_norm_chunk, m, m.nblocks, nt if size >= norm_min else 1)
                for i in range(m.nblocks):
                    total = total + m.partial[i]
                norm = sqrt(total)
                if isfinite(norm):
                    scale = min(1.0, clip_norm / (norm + 1e-6))
                    for i in range(self.n):
                        m.p[i].s.h.gscale = m.p[i].s.h.gscale * scale
            if (not clip_norm > 0 or isfinite(norm)) and m.nchunks[0] + m.nchunks[1] > 0:
                _pool.run(_model_chunk, m, m.nchunks[0] + m.nchunks[1],
                          nt if size >= step_min else 1)
        if clip_norm > 0 and not isfinite(norm):
            raise FloatingPointError(f"{self.fn}.step: the global norm of the gradients is {norm} "
                                     f"(a gradient holds inf or nan, or their squares overflow "
                                     f"double); nothing was updated")
        return norm if clip_norm > 0 else None


# ---------------------------------------------------------------- average_

ctypedef struct Average:
    char** src          # the K arrays
    double* w           # their normalised weights
    int k, f64
    char* out
    Py_ssize_t n, chunk


cdef void _average(floating* out, const Average* a, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef double acc[SUB]
    cdef const floating* src
    cdef double w
    cdef Py_ssize_t i, j, n
    cdef int k
    i = lo
    while i < hi:
        n = min(<Py_ssize_t>SUB, hi - i)
        src = <const floating*>a.src[0] + i
        w = a.w[0]
        for j in range(n):
            acc[j] = w * <double>src[j]
        for k in range(1, a.k):
            src = <const floating*>a.src[k] + i
            w = a.w[k]
            for j in range(n):
                acc[j] = acc[j] + w * <double>src[j]
        for j in range(n):
            out[i + j] = <floating>acc[j]
        i += n


cdef void _average_chunk(void* ctx, int64_t c) noexcept nogil:
    cdef Average* a = <Average*>ctx
    cdef Py_ssize_t lo = c * a.chunk, hi = min(a.n, lo + a.chunk)
    if a.f64:
        _average(<double*>a.out, a, lo, hi)
    else:
        _average(<float*>a.out, a, lo, hi)


def average_(out, arrays, weights=None):
    """The (weighted) mean of K same-shaped arrays, in one pass, into out:

        out = sum_k (w_k / sum(w)) * arrays[k]      (w_k = 1 when weights is None)

    accumulated per element in double, in the order of `arrays` (the first term w_0*a_0, then
    + w_k*a_k), and rounded to out's dtype once.  For checkpoint averaging and ensembles of
    parameter vectors.  arrays: a list or tuple of K >= 1 arrays; weights: K finite numbers
    >= 0 with a positive sum.  out (written) and every array share one shape and dtype, and out
    shares memory with none of them.  Returns None.
    """
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"average_: arrays must be a list or tuple of arrays, got "
                        f"{type(arrays).__name__}")
    arrays = list(arrays)
    cdef int k = len(arrays), i
    if k == 0:
        raise ValueError("average_: arrays is empty; give at least one array")
    # Scalars first: every weight as a C double (this may run user code) ...
    ws = _np.empty(k, dtype=_np.float64)
    cdef double[::1] w = ws
    cdef double total = 0.0
    if weights is None:
        w[:] = 1.0
    else:
        if not isinstance(weights, (list, tuple, _np.ndarray)):
            raise TypeError(f"average_: weights must be a list, tuple or array of {k} numbers, got "
                            f"{type(weights).__name__}")
        weights = list(weights)
        if len(weights) != k:
            raise ValueError(f"average_: weights has {len(weights)} entries but arrays has {k}")
        for i in range(k):
            w[i] = real("average_", f"weights[{i}]", weights[i], NONNEG)
    for i in range(k):
        total += w[i]
    if not (total > 0 and isfinite(total)):
        raise ValueError(f"average_: the weights must have a positive, finite sum, got {total}")
    for i in range(k):
        w[i] = w[i] / total
    # ... then the arrays, by C-level reads, then the kernel with exactly those.
    objs = [out] + arrays
    names = tuple(["out"] + [f"arrays[{i}]" for i in range(k)])
    cdef PyObject** o = <PyObject**>malloc((k + 1) * sizeof(PyObject*))
    cdef char** src = <char**>malloc(k * sizeof(char*))
    cdef Average a
    cdef int typenum
    try:
        if o == NULL or src == NULL:
            raise MemoryError()
        for i in range(k + 1):
            o[i] = <PyObject*>objs[i]
        typenum = check_arrays("average_", names, o, k + 1, 0b1)
        for i in range(k):
            src[i] = cnp.PyArray_BYTES(<cnp.ndarray>o[i + 1])
        a.src, a.w, a.k = src, &w[0], k
        a.f64 = typenum == cnp.NPY_FLOAT64
        a.out = cnp.PyArray_BYTES(<cnp.ndarray>o[0])
        a.n = cnp.PyArray_SIZE(<cnp.ndarray>o[0])
        a.chunk = chunk_size(a.n, 8 if a.f64 else 4)
        with nogil:
            if a.n > 0:
                _pool.run(_average_chunk, &a, (a.n + a.chunk - 1) // a.chunk,
                          num_threads() if a.n >= parallel_min(typenum, PAR_AVERAGE, PAR_AVERAGE) else 1)
    finally:
        free(o)
        free(src)


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
    cdef floating k = <floating>s.h.scale
    cdef Py_ssize_t i
    for i in range(lo, hi):
        a[i] = b[i] + k * c[i]


cdef void _scale_k(floating* x, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef floating k = <floating>s.h.scale
    cdef Py_ssize_t i
    for i in range(lo, hi):
        x[i] = k * x[i]


def _copy(dst, src):
    """Bandwidth probe: dst[...] = src (one read and one write stream)."""
    cdef PyObject* o[2]
    cdef Step s = new_step()
    o[0] = <PyObject*>dst; o[1] = <PyObject*>src
    launch(_copy_k[float], _copy_k[double], check_arrays("_copy", ("dst", "src"), o, 2, 0b1), o, 2, &s,
           PAR_SGD_32, PAR_SGD_64)


def _triad(a, b, c, *, s):
    """Bandwidth probe (STREAM triad): a[...] = b + s*c (two read streams, one write)."""
    cdef PyObject* o[3]
    cdef Step st = new_step()
    o[0] = <PyObject*>a; o[1] = <PyObject*>b; o[2] = <PyObject*>c
    st.h.scale = real("_triad", "s", s, NONNEG)
    cdef int typenum = check_arrays("_triad", ("a", "b", "c"), o, 3, 0b1)
    launch(_triad_k[float], _triad_k[double], typenum, o, 3, &st, PAR_SGD_32, PAR_SGD_64)


def _scale_(x, *, s):
    """Bandwidth probe: x *= s in place, the pure read-modify-write stream the updates make."""
    cdef PyObject* o[1]
    cdef Step st = new_step()
    o[0] = <PyObject*>x
    st.h.scale = real("_scale_", "s", s, NONNEG)
    cdef int typenum = check_arrays("_scale_", ("x",), o, 1, 0b1)
    launch(_scale_k[float], _scale_k[double], typenum, o, 1, &st, PAR_SGD_32, PAR_SGD_64)

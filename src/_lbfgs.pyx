"""The compiled core of lec6fast.optim.lbfgs: the two-loop recursion over the history ring and
the fused vector passes of an iteration, fused over float32/float64.

Every dot product accumulates in double, also for float32 vectors; vectors are stored in their
dtype.  These functions are private: lec6fast.optim._lbfgs allocates every buffer and validates
what the user's function returns before anything reaches them.  The checks here (dtype, C
layout, length) only keep a wrong call from reading out of bounds.

The history is two (k, n) C-contiguous buffers S and Y (k = m + 1: one spare row, which the
pass that accepts a step writes before the curvature test decides whether the pair is kept)
and rho (k,) float64 with rho[i] = 1 / (s_i'y_i).  The `count` live pairs end at row `newest`,
going back modulo k.
"""

cimport numpy as cnp
from cython cimport floating
from libc.math cimport fabs

cnp.import_array()

# No kernel here is split across the thread pool: they run serially, on the caller's thread
# (the dot products' order, hence every iterate, is then one fixed sequence on any machine).
# Built once, at the baseline level (lec6fast/_families.py's HELPERS): an iteration's vector
# passes are short next to its Python, so wider SIMD would buy nothing but wheel size.


cdef str dtype_name(object a):
    return a.dtype.str if a.dtype.byteorder not in "=|" else str(a.dtype)


cdef inline char* _data(str fn, str name, object a, int typenum, Py_ssize_t size) except NULL:
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{fn}: {name} has dtype {dtype_name(a)}, expected "
                        f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'float64'}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned")
    if size >= 0 and cnp.PyArray_SIZE(arr) != size:
        raise ValueError(f"{fn}: {name} has {cnp.PyArray_SIZE(arr)} elements, expected {size}")
    return cnp.PyArray_BYTES(arr)


cdef inline int _vec_type(str fn, object x) except -1:
    if not cnp.PyArray_Check(x):
        raise TypeError(f"{fn}: x must be a numpy.ndarray, got {type(x).__name__}")
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"{fn}: the vectors must be float32 or float64, got {dtype_name(x)}")
    return t


cdef inline char* _writeable(str fn, str name, object a, int typenum, Py_ssize_t size) except NULL:
    cdef char* p = _data(fn, name, a, typenum, size)
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a):
        raise ValueError(f"{fn}: {name} is read-only, but {fn} writes to it")
    return p


# ---------------------------------------------------------------- the two-loop recursion

cdef double _two_loop(const floating* S, const floating* Y, const double* rho, double* alpha,
                      Py_ssize_t k, Py_ssize_t newest, Py_ssize_t count, const floating* g,
                      floating* d, double gamma, Py_ssize_t n) noexcept nogil:
    """d = -H g, H the L-BFGS inverse Hessian of the live pairs with H0 = gamma*I; returns g'd.

    The recursion runs on d = -q directly (it is linear in q), so the signs of alpha and beta
    flip and no final negation pass is needed.  Each pass finishes one step of the recursion
    and accumulates the dot product the next step needs, so the history is read once per loop:
        loop 1, newest to oldest:  a_j = rho_j s_j'd;  d -= a_j y_j
        d *= gamma
        loop 2, oldest to newest:  b_j = rho_j y_j'd;  d += (a_j - b_j) s_j
    """
    cdef Py_ssize_t i, j, row, prev
    cdef double acc, coef
    cdef floating c, gam = <floating>gamma
    cdef const floating* s
    cdef const floating* y
    if count == 0:
        acc = 0.0
        for i in range(n):
            d[i] = -gam * g[i]
            acc += <double>g[i] * d[i]
        return acc
    # d = -g, with s_newest'd
    s = S + newest * n
    acc = 0.0
    for i in range(n):
        d[i] = -g[i]
        acc += <double>s[i] * d[i]
    alpha[newest] = rho[newest] * acc
    prev = newest
    for j in range(1, count):
        row = newest - j
        if row < 0:
            row += k
        c = <floating>alpha[prev]
        y = Y + prev * n
        s = S + row * n
        acc = 0.0
        for i in range(n):
            d[i] = d[i] - c * y[i]
            acc += <double>s[i] * d[i]
        alpha[row] = rho[row] * acc
        prev = row
    # prev is the oldest pair: finish loop 1 there, scale by gamma, start loop 2
    c = <floating>alpha[prev]
    y = Y + prev * n
    acc = 0.0
    for i in range(n):
        d[i] = gam * (d[i] - c * y[i])
        acc += <double>y[i] * d[i]
    for j in range(count - 1, 0, -1):      # from the oldest pair towards the newest
        row = prev + 1
        if row == k:
            row = 0
        c = <floating>(alpha[prev] - rho[prev] * acc)
        s = S + prev * n
        y = Y + row * n
        acc = 0.0
        for i in range(n):
            d[i] = d[i] + c * s[i]
            acc += <double>y[i] * d[i]
        prev = row
    c = <floating>(alpha[prev] - rho[prev] * acc)
    s = S + prev * n
    acc = 0.0
    for i in range(n):
        d[i] = d[i] + c * s[i]
        acc += <double>g[i] * d[i]
    return acc


def two_loop(S, Y, rho, alpha, Py_ssize_t newest, Py_ssize_t count, g, d, double gamma):
    """d = -H g by the two-loop recursion over the live pairs of the ring (see the module
    docstring); H0 = gamma*I.  Writes d (and alpha, float64 scratch of length k); returns g'd,
    accumulated in double."""
    cdef str fn = "two_loop"
    cdef int t = _vec_type(fn, g)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>g)
    cdef Py_ssize_t k = cnp.PyArray_DIM(<cnp.ndarray>S, 0) if cnp.PyArray_Check(S) and \
        cnp.PyArray_NDIM(<cnp.ndarray>S) == 2 else -1
    if k < 1:
        raise ValueError(f"{fn}: S must be a 2-d array of at least one row")
    cdef char* ps = _data(fn, "S", S, t, k * n)
    cdef char* py = _data(fn, "Y", Y, t, k * n)
    cdef char* pr = _data(fn, "rho", rho, cnp.NPY_FLOAT64, k)
    cdef char* pa = _writeable(fn, "alpha", alpha, cnp.NPY_FLOAT64, k)
    cdef char* pg = _data(fn, "g", g, t, n)
    cdef char* pd = _writeable(fn, "d", d, t, n)
    if not (0 <= count <= k - 1 and 0 <= newest < k):
        raise ValueError(f"{fn}: need 0 <= count < {k} and 0 <= newest < {k}, got count={count}, "
                         f"newest={newest}")
    if pd == pg:
        raise ValueError(f"{fn}: d and g must be separate arrays")
    cdef double gd
    with nogil:
        if t == cnp.NPY_FLOAT32:
            gd = _two_loop(<float*>ps, <float*>py, <double*>pr, <double*>pa, k, newest, count,
                           <float*>pg, <float*>pd, gamma, n)
        else:
            gd = _two_loop(<double*>ps, <double*>py, <double*>pr, <double*>pa, k, newest, count,
                           <double*>pg, <double*>pd, gamma, n)
    return gd


# ---------------------------------------------------------------- the line search's passes

cdef void _step_to(floating* xt, const floating* x, const floating* d, double a,
                   Py_ssize_t n) noexcept nogil:
    cdef floating c = <floating>a
    cdef Py_ssize_t i
    for i in range(n):
        xt[i] = x[i] + c * d[i]


def step_to(xt, x, d, double a):
    """xt = x + a*d (a rounded to the vectors' dtype)."""
    cdef str fn = "step_to"
    cdef int t = _vec_type(fn, x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef char* px = _data(fn, "x", x, t, n)
    cdef char* pd = _data(fn, "d", d, t, n)
    cdef char* pt = _writeable(fn, "xt", xt, t, n)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _step_to(<float*>pt, <float*>px, <float*>pd, a, n)
        else:
            _step_to(<double*>pt, <double*>px, <double*>pd, a, n)


cdef double _dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    cdef double acc = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        acc += <double>a[i] * b[i]
    return acc


def dot(a, b):
    """a'b accumulated in double.  Not finite when either holds a NaN or an infinity (the line
    search's test of a trial gradient: NaN*0 and inf*0 are NaN, inf - inf is NaN)."""
    cdef str fn = "dot"
    cdef int t = _vec_type(fn, a)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>a)
    cdef char* pa = _data(fn, "a", a, t, n)
    cdef char* pb = _data(fn, "b", b, t, n)
    cdef double r
    with nogil:
        if t == cnp.NPY_FLOAT32:
            r = _dot(<float*>pa, <float*>pb, n)
        else:
            r = _dot(<double*>pa, <double*>pb, n)
    return r


# ---------------------------------------------------------------- accepting a step

cdef void _accept(floating* s, floating* y, const floating* x, const floating* xt, floating* g,
                  const floating* gt, Py_ssize_t n, double* out) noexcept nogil:
    cdef double sy = 0.0, yy = 0.0, ginf = 0.0, a
    cdef floating si, yi
    cdef Py_ssize_t i
    for i in range(n):
        si = xt[i] - x[i]
        yi = gt[i] - g[i]
        s[i] = si
        y[i] = yi
        g[i] = gt[i]
        sy += <double>si * yi
        yy += <double>yi * yi
        a = fabs(<double>gt[i])
        if a > ginf:
            ginf = a
    out[0] = sy
    out[1] = yy
    out[2] = ginf


def accept(S, Y, Py_ssize_t row, x, xt, g, gt):
    """One pass: S[row] = xt - x, Y[row] = gt - g, g = gt.  Returns (s'y, y'y, max|gt|)."""
    cdef str fn = "accept"
    cdef int t = _vec_type(fn, x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef Py_ssize_t k = cnp.PyArray_DIM(<cnp.ndarray>S, 0) if cnp.PyArray_Check(S) and \
        cnp.PyArray_NDIM(<cnp.ndarray>S) == 2 else -1
    if not 0 <= row < k:
        raise ValueError(f"{fn}: row must index a row of the 2-d S, got {row}")
    cdef char* ps = _writeable(fn, "S", S, t, k * n)
    cdef char* py = _writeable(fn, "Y", Y, t, k * n)
    cdef char* px = _data(fn, "x", x, t, n)
    cdef char* pxt = _data(fn, "xt", xt, t, n)
    cdef char* pg = _writeable(fn, "g", g, t, n)
    cdef char* pgt = _data(fn, "gt", gt, t, n)
    cdef double out[3]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _accept(<float*>ps + row * n, <float*>py + row * n, <float*>px, <float*>pxt,
                    <float*>pg, <float*>pgt, n, out)
        else:
            _accept(<double*>ps + row * n, <double*>py + row * n, <double*>px, <double*>pxt,
                    <double*>pg, <double*>pgt, n, out)
    return out[0], out[1], out[2]


cdef void _load(floating* g, const floating* gt, Py_ssize_t n, double* out) noexcept nogil:
    cdef double gg = 0.0, ginf = 0.0, a
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = gt[i]
        gg += <double>gt[i] * gt[i]
        a = fabs(<double>gt[i])
        if a > ginf:
            ginf = a
    out[0] = gg
    out[1] = ginf


def load(g, gt):
    """g = gt; returns (g'g, max|g|) (g'g is not finite when gt holds a NaN or an infinity)."""
    cdef str fn = "load"
    cdef int t = _vec_type(fn, g)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>g)
    cdef char* pg = _writeable(fn, "g", g, t, n)
    cdef char* pgt = _data(fn, "gt", gt, t, n)
    cdef double out[2]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _load(<float*>pg, <float*>pgt, n, out)
        else:
            _load(<double*>pg, <double*>pgt, n, out)
    return out[0], out[1]

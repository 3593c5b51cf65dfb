# Shared by every kernel family (textually included): the array contract, hyperparameter
# parsing and the driver that runs a kernel serially or on the thread pool (src/_threads.h).
#
# The order of every public call: convert every scalar to a C value first (this may run user
# code: a __float__, an __index__, an int subclass's __lt__), then check every array with
# C-level reads only (type number, dimensions, strides, flags, data pointer), then launch with
# exactly what the checks saw.  No Python code of the caller's may run between the checks and
# the kernel: it could re-type, resize or freeze an array that was already checked.  Nothing
# here writes to a user array; the kernels are the only writers, and they run only after every
# check has passed.

cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.type cimport PyType_IsSubtype
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_Check
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.math cimport isfinite, pow
from libc.string cimport memcmp, memset
from libc.stdint cimport uint32_t, int64_t
from cython cimport floating
from numbers import Real as _Real, Integral as _Integral
import numpy as _np
import sys as _sys

cnp.import_array()

cdef extern from "_threads.h" nogil:
    ctypedef void (*lec6_chunk_fn)(void* ctx, int64_t chunk) noexcept nogil
    ctypedef struct lec6_pool:
        int (*run)(lec6_chunk_fn fn, void* ctx, int64_t nchunks, int threads) noexcept nogil
        int (*num_threads)() noexcept nogil
        int (*run_touching)(lec6_chunk_fn fn, void* ctx, int64_t nchunks, int threads) noexcept nogil
    enum: LEC6_MAX_CHUNKS

from lec6fast import _runtime
# The process's one pool, in lec6fast._runtime (every kernel module of every SIMD level uses it).
cdef const lec6_pool* _pool = <const lec6_pool*>PyCapsule_GetPointer(_runtime.POOL,
                                                                      "lec6fast._runtime.POOL")


# ---------------------------------------------------------------- the array contract

cdef inline bint shares_memory(PyObject* a, PyObject* b) noexcept:
    """Whether two C-contiguous arrays' byte ranges overlap (never, if either is empty)."""
    cdef char* p = cnp.PyArray_BYTES(<cnp.ndarray>a)
    cdef char* q = cnp.PyArray_BYTES(<cnp.ndarray>b)
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(<cnp.ndarray>a)
    cdef Py_ssize_t nb = cnp.PyArray_NBYTES(<cnp.ndarray>b)
    return na > 0 and nb > 0 and p < q + nb and q < p + na


cdef inline int check_layout(str fn, str name, object a, bint output) except -1:
    """C-contiguous and aligned, or ValueError; outputs are never copied, so say why."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
        raise ValueError(
            f"{fn}: {name} must be C-contiguous, got strides {a.strides} for shape {c_shape(a)}; "
            + (f"lec6fast never copies (a copy would lose the in-place update), pass "
               f"numpy.ascontiguousarray({name}) and keep using that array" if output else
               f"pass numpy.ascontiguousarray({name})"))
    if not cnp.PyArray_ISALIGNED(<cnp.ndarray>a):
        raise ValueError(f"{fn}: {name} is not aligned to its dtype ({a.dtype}); "
                         f"pass an aligned copy" + (" and keep using that array" if output else ""))
    return 0


cdef tuple c_shape(object a):
    """a's shape from its C-level dimensions (a subclass's `shape` property is not asked)."""
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return tuple([cnp.PyArray_DIMS(arr)[i] for i in range(cnp.PyArray_NDIM(arr))])


cdef inline str dtype_name(object a):
    """a's dtype as users write it, with the byte order when it is not the native one."""
    return a.dtype.str if a.dtype.byteorder not in "=|" else str(a.dtype)


cdef str torch_hint(object o, str name):
    if str(getattr(type(o), "__module__", "")).partition(".")[0] == "torch":
        return (f"; for a CPU torch tensor pass {name}.detach().numpy(), which shares its memory "
                f"(no copy: the update lands in the tensor)")
    return ""


# The steps of the contract, in the order they are checked: type, dtype, shape (by the
# caller: check_same_shape for element-wise calls), layout, writeability, overlap.

cdef bint is_masked_array(o):
    # No MaskedArray exists before numpy.ma is imported, so lec6fast never imports it (7.7 ms
    # of an import).  By the type's MRO, not isinstance: that would consult a subclass's
    # __class__, user code.
    ma = _sys.modules.get("numpy.ma")
    return ma is not None and PyType_IsSubtype(type(o), <type>ma.MaskedArray)


cdef int check_types(str fn, tuple names, PyObject** objs, int n) except -1:
    cdef int i
    for i in range(n):
        o = <object>objs[i]
        if not cnp.PyArray_Check(o):
            raise TypeError(f"{fn}: {names[i]} must be a numpy.ndarray of float32 or float64, "
                            f"got {type(o).__name__}{torch_hint(o, names[i])}")
        if not cnp.PyArray_CheckExact(o) and is_masked_array(o):
            raise TypeError(f"{fn}: {names[i]} is a numpy.ma.MaskedArray, whose mask lec6fast would "
                            f"ignore; pass a plain array (e.g. {names[i]}.data, updated in place)")
    return 0


cdef int check_dtypes(str fn, tuple names, PyObject** objs, int n) except -1:
    """objs[0] float32 or float64 in native byte order, the others the same; the type number."""
    cdef int i
    cdef cnp.ndarray x = <cnp.ndarray>objs[0]
    cdef int typenum = cnp.PyArray_TYPE(x)
    if (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64) or not cnp.PyArray_ISNOTSWAPPED(x):
        raise TypeError(f"{fn}: {names[0]} must have dtype float32 or float64 (native byte order), "
                        f"got {dtype_name(x)}")
    for i in range(1, n):
        a = <cnp.ndarray>objs[i]
        if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"{fn}: {names[i]} has dtype {dtype_name(a)} but {names[0]} has {x.dtype}")
    return typenum


cdef int check_same_shape(str fn, tuple names, PyObject** objs, int n) except -1:
    cdef int i
    cdef cnp.ndarray x = <cnp.ndarray>objs[0]
    cdef int nd = cnp.PyArray_NDIM(x)
    for i in range(1, n):
        a = <cnp.ndarray>objs[i]
        if cnp.PyArray_NDIM(a) != nd or (nd > 0 and memcmp(cnp.PyArray_DIMS(a), cnp.PyArray_DIMS(x),
                                                          nd * sizeof(cnp.npy_intp)) != 0):
            raise ValueError(f"{fn}: {names[i]} has shape {c_shape(a)} but {names[0]} has "
                             f"shape {c_shape(x)}")
    return 0


cdef int check_writeable(str fn, tuple names, PyObject** objs, int n, unsigned int outputs) except -1:
    cdef int i
    for i in range(n):
        if (outputs >> i) & 1 and not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>objs[i]):
            raise ValueError(f"{fn}: {names[i]} is read-only, but {fn} writes to it")
    return 0


cdef int check_overlaps(str fn, tuple names, PyObject** objs, int n, unsigned int outputs) except -1:
    """No output (bit i of outputs) shares memory with any other argument."""
    cdef int i, j
    for i in range(n):
        if not (outputs >> i) & 1:
            continue
        for j in range(n):
            if j == i or (j < i and (outputs >> j) & 1):
                continue        # pairs of outputs are checked once
            if shares_memory(objs[i], objs[j]):
                raise ValueError(f"{fn}: {names[i]} shares memory with {names[j]}; "
                                 f"{names[i]} is written by {fn} and must be a separate array")
    return 0


cdef int check_arrays(str fn, tuple names, PyObject** objs, int n, unsigned int outputs) except -1:
    """The array contract of an element-wise call: objs[0] (x) sets the dtype and shape; bit i
    of `outputs` marks objs[i] as written.  Returns the shared NumPy type number."""
    cdef int i
    check_types(fn, names, objs, n)
    cdef int typenum = check_dtypes(fn, names, objs, n)
    check_same_shape(fn, names, objs, n)
    for i in range(n):
        check_layout(fn, names[i], <object>objs[i], (outputs >> i) & 1)
    check_writeable(fn, names, objs, n, outputs)
    check_overlaps(fn, names, objs, n, outputs)
    return typenum


# ---------------------------------------------------------------- hyperparameters

cdef enum Range:
    NONNEG      # finite, >= 0
    POSITIVE    # finite, > 0
    UNIT        # in [0, 1)
    PROB        # in (0, 1]

cdef double real(str fn, str name, object value, Range rng) except? -1.0:
    """A hyperparameter as a C double: TypeError naming it when it is not a real number (bool is
    refused: True is an int, but never a meant learning rate), ValueError naming its allowed
    range and the value when it is outside."""
    cdef double v
    if PyFloat_Check(value):            # float and numpy.float64, the common case
        v = PyFloat_AS_DOUBLE(value)
    elif (PyLong_Check(value) or isinstance(value, _Real)) and not isinstance(value, bool):
        try:
            v = float(value)
        except OverflowError:
            v = float("inf")
    else:
        raise TypeError(f"{fn}: {name} must be a real number, got {value!r} ({type(value).__name__})")
    if rng == UNIT:
        if 0.0 <= v < 1.0:
            return v
        raise ValueError(f"{fn}: {name} must be in [0, 1), got {value!r}")
    if rng == PROB:
        if 0.0 < v <= 1.0:
            return v
        raise ValueError(f"{fn}: {name} must be in (0, 1], got {value!r}")
    if isfinite(v) and (v > 0.0 or (rng == NONNEG and v == 0.0)):
        return v
    raise ValueError(f"{fn}: {name} must be a finite number {'>= 0' if rng == NONNEG else '> 0'}, "
                     f"got {value!r}")


cdef double step_number(str fn, str name, object value) except? -1.0:
    """A 1-based step count t (an integer >= 1), as the double the bias correction needs."""
    if not (PyLong_Check(value) or isinstance(value, _Integral)) or isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be an integer >= 1 (the 1-based step number), "
                        f"got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{fn}: {name} must be an integer >= 1 (the 1-based step number), got {value!r}")
    try:
        return float(int(value))
    except OverflowError:
        return float("inf")             # beta**t underflows to 0, as it would at t = 10**400


cdef int flag(str fn, str name, object value) except -1:
    """A True/False switch (bool or numpy.bool_), or TypeError: a truthy "no" must not train."""
    if value is True or value is False or isinstance(value, _np.bool_):
        return 1 if value else 0
    raise TypeError(f"{fn}: {name} must be True or False, got {value!r}")


# ---------------------------------------------------------------- threads and the driver

# Each kernel has its own (float32, float64) element count from which its arrays are split
# across the threads: below it, the job's bookkeeping costs more than a second thread saves
# (and no thread is woken at all).  The values were measured on the 2-core development
# machine with the OpenMP driver that preceded the pool (whose jobs cost less, so they could
# come down); a cheap kernel (sgd_) needs 64K float32 elements, adam_ 16K.
cdef Py_ssize_t _forced_parallel_min = 0     # tests: > 0 overrides every kernel's threshold
cdef Py_ssize_t _forced_chunk = 0            # tests: > 0 overrides the chunk size (elements)

cdef enum:
    CHUNK_BYTES = 16384     # of the first array per chunk, at least: a few microseconds of work
    CHUNK_BYTES_MAX = 262144    # ... and at most, for large arrays (see chunk_size)
    CHUNKS_WANTED = 256     # chunks per call between the two: 2 or more each for up to 128 threads
    CHUNK_ALIGN = 256       # a multiple of src/_philox.h's LEC6_PHILOX_DRAWS


cdef inline Py_ssize_t parallel_min(int typenum, Py_ssize_t min32, Py_ssize_t min64) noexcept nogil:
    if _forced_parallel_min > 0:
        return _forced_parallel_min
    return min32 if typenum == cnp.NPY_FLOAT32 else min64


cdef inline int num_threads() noexcept nogil:
    return _pool.num_threads()


def _set_parallel_min(Py_ssize_t n):
    """Private, for the tests: from n >= 1 elements every kernel of this module runs on the
    pool (so small arrays can exercise it); n = 0 restores the measured thresholds."""
    global _forced_parallel_min
    _forced_parallel_min = max(n, 0)


def _get_parallel_min(name=None, dtype=None):
    """The threshold kernel `name` uses at `dtype`; without arguments, the forced one (0 if
    none is forced)."""
    if name is None:
        return _forced_parallel_min
    min32, min64 = _PARALLEL_MIN[name]
    return parallel_min(cnp.NPY_FLOAT32 if _np.dtype(dtype) == _np.float32 else cnp.NPY_FLOAT64,
                        min32, min64)


def _set_chunk(Py_ssize_t n):
    """Private, for the tests: element-wise chunks of n elements (rounded up to a multiple of
    256); n = 0 restores the default (see chunk_size)."""
    global _forced_chunk
    _forced_chunk = max(n, 0)


ctypedef struct Hyper:
    # A call's hyperparameters in double, by name; each kernel rounds what it uses to its dtype.
    # What the user gives:
    double lr, mu, eps, decay, beta1, beta2    # decay: RMSProp's decay_rate, or the EMA's decay
    double scale                               # dropout's 1/p (or 1), the probes' s
    # What lec6fast.optim adds around an update rule (new_step() sets the no-ops 1, 1, 0):
    double gscale                              # the gradient's factor (clipping)
    double shrink                              # x *= shrink first (decoupled weight decay)
    double l2                                  # dx + l2*x (L2 weight decay)
    # What lec6fast.torch adds (torch.optim's forms; 0 in every other call):
    double dampening                           # torch.optim.SGD's dampening
    double first                               # 1: the momentum buffer is new (torch's b = g)
    double t                                   # the 1-based step (0 where a rule has none)
    # What derive() computes from them, once per call:
    double neg_lr, neg_mu, one_plus_mu, one_minus_decay
    double one_minus_beta1, one_minus_beta2, corr1, corr2     # corr = 1 - beta**t


ctypedef struct Step:
    char* a[6]          # data pointers of the call's arrays, in signature order (a[0] is x)
    Hyper h
    uint32_t k[5]       # integer parameters (random-number key and nonce, threshold)


cdef inline Step new_step() noexcept nogil:
    """A Step with every field zero (a wrapper then sets what its kernel reads)."""
    cdef Step s
    memset(&s, 0, sizeof(Step))
    s.h.gscale = 1.0
    s.h.shrink = 1.0
    return s


cdef inline void derive(Hyper* h, double t) noexcept nogil:
    """The derived hyperparameters of every update rule, for the 1-based step t (Adam's bias
    correction; 0 where a rule has no t).  In double, as lec6fast.reference computes them."""
    h.neg_lr = -h.lr
    h.neg_mu = -h.mu
    h.one_plus_mu = 1.0 + h.mu
    h.one_minus_decay = 1.0 - h.decay
    h.one_minus_beta1 = 1.0 - h.beta1
    h.one_minus_beta2 = 1.0 - h.beta2
    h.t = t
    if t > 0:
        h.corr1 = 1.0 - pow(h.beta1, t)
        h.corr2 = 1.0 - pow(h.beta2, t)


ctypedef void (*kernel32)(float*, const Step*, Py_ssize_t, Py_ssize_t) noexcept nogil
ctypedef void (*kernel64)(double*, const Step*, Py_ssize_t, Py_ssize_t) noexcept nogil


cdef inline Py_ssize_t chunk_size(Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    # n / CHUNKS_WANTED elements, within CHUNK_BYTES..CHUNK_BYTES_MAX of the first array, a
    # multiple of 256 elements: dropout's chunks then start on a whole group of random draws and
    # a whole mask byte (a byte written by two threads would be a race), and each chunk's vector
    # loop starts on whole vectors.  Large arrays get large chunks: each chunk costs a claim
    # and a restart of the kernel's loop (for lec6fast.optim's step, of its parameter's
    # segment too), and with 16 KiB chunks a step over 52 arrays of 5.1M float32 elements on 2
    # threads took 6-31% longer than with chunks of 80-256 KiB.  The chunks depend on n only,
    # never on the thread count.  (A chunk's end may share a cache line with the next chunk's
    # start, NumPy aligning data to 16 bytes: false sharing on one line, not a race.)
    cdef Py_ssize_t c = min(max(n // CHUNKS_WANTED, CHUNK_BYTES // itemsize),
                            CHUNK_BYTES_MAX // itemsize)
    if _forced_chunk > 0:
        c = _forced_chunk
    if (n + c - 1) // c > LEC6_MAX_CHUNKS:
        c = (n + LEC6_MAX_CHUNKS - 1) // LEC6_MAX_CHUNKS
    return (c + CHUNK_ALIGN - 1) & ~(<Py_ssize_t>CHUNK_ALIGN - 1)


ctypedef struct Elementwise:
    void* kernel        # a kernel32 or kernel64
    char* x
    const Step* s
    Py_ssize_t n, chunk


cdef void _chunk32(void* ctx, int64_t c) noexcept nogil:
    cdef Elementwise* e = <Elementwise*>ctx
    cdef Py_ssize_t lo = c * e.chunk
    (<kernel32>e.kernel)(<float*>e.x, e.s, lo, min(e.n, lo + e.chunk))


cdef void _chunk64(void* ctx, int64_t c) noexcept nogil:
    cdef Elementwise* e = <Elementwise*>ctx
    cdef Py_ssize_t lo = c * e.chunk
    (<kernel64>e.kernel)(<double*>e.x, e.s, lo, min(e.n, lo + e.chunk))


cdef void run(void (*kernel)(floating*, const Step*, Py_ssize_t, Py_ssize_t) noexcept nogil,
              floating* x, const Step* s, Py_ssize_t n, Py_ssize_t par_min) noexcept nogil:
    """Apply an element-wise kernel to [0, n): serially below par_min elements, else in chunks
    on the pool."""
    cdef int nt = num_threads()
    cdef Elementwise e
    if nt <= 1 or n < par_min:
        kernel(x, s, 0, n)
        return
    e.kernel = <void*>kernel
    e.x = <char*>x
    e.s = s
    e.n = n
    e.chunk = chunk_size(n, sizeof(floating))
    _pool.run(_chunk32 if floating is float else _chunk64, &e, (n + e.chunk - 1) // e.chunk, nt)


cdef enum:
    # Elements from which an element-wise call releases the GIL.  Handing it over and taking
    # it back costs about 60 ns, a third of a call on 10 elements; below this size a call
    # takes about a microsecond at most, far inside the interpreter's switch interval.
    NOGIL_MIN = 4096


cdef inline void run_typed(kernel32 k32, kernel64 k64, int typenum, Step* s, Py_ssize_t size,
                           Py_ssize_t par_min) noexcept nogil:
    if typenum == cnp.NPY_FLOAT32:
        run(k32, <float*>s.a[0], s, size, par_min)
    else:
        run(k64, <double*>s.a[0], s, size, par_min)


cdef int launch(kernel32 k32, kernel64 k64, int typenum, PyObject** objs, int n, Step* s,
                Py_ssize_t min32, Py_ssize_t min64) except -1:
    """Point the step at the arrays and run the kernel, with the GIL released from NOGIL_MIN
    elements, split across the threads from min32 (float32) or min64 (float64) elements."""
    cdef int i
    cdef Py_ssize_t size = cnp.PyArray_SIZE(<cnp.ndarray>objs[0])
    cdef Py_ssize_t par_min = parallel_min(typenum, min32, min64)
    for i in range(n):
        s.a[i] = cnp.PyArray_BYTES(<cnp.ndarray>objs[i])
    if size < NOGIL_MIN:
        run_typed(k32, k64, typenum, s, size, par_min)
        return 0
    with nogil:
        run_typed(k32, k64, typenum, s, size, par_min)
    return 0

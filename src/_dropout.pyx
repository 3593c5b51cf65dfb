# Cython directives (boundscheck/wraparound off, cdivision on) are set in setup.py.
"""Dropout of CS231n lecture 6 as fused kernels (the public API re-exports these).

p is the probability of KEEPING a unit, as in the lecture.  Train mode draws the keep-mask and
applies it in the same pass that writes out, storing the mask as 1 bit per element.

Random numbers: Philox4x32-10 (src/_philox.h), keyed on each call by the low 32 bits of four
raw draws of the caller's numpy.random.Generator.  Element i uses one 32-bit word u_i of the
Philox stream (counter = i's block) and is kept iff u_i < p * 2**32, i.e. with probability
ceil(p * 2**32) / 2**32, within 2**-32 of p.  Because u_i depends only on (key, i), masks are
the same for every thread count, SIMD level and dtype.
"""

include "_common.pxi"

from libc.stdint cimport uint8_t, uint64_t
from libc.math cimport ceil
from libc.string cimport memcpy, memset
import operator
import numpy as np
from lec6fast._dropout_mask import DropoutMask

cdef extern from "_philox.h" nogil:
    enum: LEC6_PHILOX_DRAWS
    enum: LEC6_PHILOX_MASK_BYTES
    void lec6_philox_group(uint32_t* u, uint64_t group, const uint32_t* key, const uint32_t* nonce)
    void lec6_keep_bits(const uint32_t* u, uint32_t last, uint8_t* bits)
    void lec6_unpack_bits(const uint8_t* bits, uint32_t* w)
    void lec6_philox4x32_10(uint32_t* c, const uint32_t* key)

# The random numbers make dropout compute-bound on in-cache sizes: it pays to split sooner
# than the updates do (measured: about 0.4 ns per element on one AVX-512 core, against
# about a microsecond to fork the team).
cdef enum:
    PAR_DROPOUT = 8192
    PAR_DROPOUT_BACKWARD = 32768

_PARALLEL_MIN = {"dropout_forward": (PAR_DROPOUT, PAR_DROPOUT),
                 "dropout_backward": (PAR_DROPOUT_BACKWARD, PAR_DROPOUT_BACKWARD)}


cdef inline bint float32_exact(double scale) noexcept nogil:
    # x * scale rounded once to float32 equals the float32 product x * float32(scale) when
    # scale is itself a float32 number (p = 0.5, 0.25, 0.8, ...): the exact product of two
    # 24-bit significands fits in a double, so NumPy's double product is exact and both
    # round the same number.  That product skips the conversions to double and back.
    return <double>(<float>scale) == scale


cdef inline void apply_draws(const floating* x, floating* out, const uint32_t* u, Py_ssize_t m,
                             uint32_t last_kept, double scale) noexcept nogil:
    # out = x * (scale if kept else 0), as NumPy computes x * (U / p): in double, rounded
    # once; a dropped NaN stays NaN (NaN * 0), as in the reference.
    cdef Py_ssize_t j
    cdef float s32 = <float>scale, zero32 = 0
    if floating is float:
        if float32_exact(scale):
            for j in range(m):
                out[j] = x[j] * (s32 if u[j] <= last_kept else zero32)
            return
    for j in range(m):
        out[j] = <floating>(<double>x[j] * (scale if u[j] <= last_kept else 0.0))


cdef void _forward(floating* out, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # lo is a multiple of LEC6_PHILOX_DRAWS (see chunk_size), so [lo, hi) is whole groups of
    # draws plus, at the very end of the array, one partial group.
    cdef const floating* x = <const floating*>s.a[1]
    cdef uint8_t* bits = <uint8_t*>s.a[2]
    cdef double scale = s.h.scale
    cdef uint32_t last_kept = s.k[4]          # keep iff u <= last_kept
    cdef uint32_t u[LEC6_PHILOX_DRAWS]
    cdef uint8_t tail[LEC6_PHILOX_MASK_BYTES]
    cdef Py_ssize_t g, i0, m, D = LEC6_PHILOX_DRAWS
    for g in range(lo // D, (hi + D - 1) // D):
        lec6_philox_group(u, <uint64_t>g, &s.k[0], &s.k[2])
        i0 = g * D
        m = min(D, hi - i0)
        if m == D:                              # a constant trip count vectorizes best
            apply_draws(x + i0, out + i0, u, LEC6_PHILOX_DRAWS, last_kept, scale)
            lec6_keep_bits(u, last_kept, bits + i0 // 8)
        else:                                   # the array's last, partial group
            apply_draws(x + i0, out + i0, u, m, last_kept, scale)
            lec6_keep_bits(u, last_kept, tail)
            memcpy(bits + i0 // 8, tail, (m + 7) // 8)
            if m % 8:
                bits[i0 // 8 + m // 8] &= (1 << (m % 8)) - 1


cdef void _backward(floating* dx, const Step* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # dx = dout * (scale if kept else 0), the forward's arithmetic (apply_draws) with the
    # draws replaced by the unpacked mask; lo is a multiple of LEC6_PHILOX_DRAWS.
    cdef const floating* dout = <const floating*>s.a[1]
    cdef const uint8_t* bits = <const uint8_t*>s.a[2]
    cdef double scale = s.h.scale
    cdef uint32_t w[LEC6_PHILOX_DRAWS]
    cdef uint8_t tail[LEC6_PHILOX_MASK_BYTES]
    cdef Py_ssize_t g, i0, m, D = LEC6_PHILOX_DRAWS
    for g in range(lo // D, (hi + D - 1) // D):
        i0 = g * D
        m = min(D, hi - i0)
        if m == D:
            lec6_unpack_bits(bits + i0 // 8, w)
            apply_draws(dout + i0, dx + i0, w, LEC6_PHILOX_DRAWS, 0, scale)
        else:                                   # the array's last, partial group
            memset(tail, 0, LEC6_PHILOX_MASK_BYTES)
            memcpy(tail, bits + i0 // 8, (m + 7) // 8)
            lec6_unpack_bits(tail, w)
            apply_draws(dout + i0, dx + i0, w, m, 0, scale)


# ---------------------------------------------------------------- public wrappers

cdef int check_rng(object rng) except -1:
    """What numpy.random.default_rng accepts: a Generator, BitGenerator or SeedSequence, a
    non-negative int seed or a sequence of them, or None (checked in test mode too, where
    nothing is drawn)."""
    if (rng is None or isinstance(rng, (np.random.Generator, np.random.BitGenerator,
                                        np.random.SeedSequence))):
        return 0
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError(f"dropout_forward: rng must be a numpy.random.Generator, a seed or None, "
                        f"got {rng!r}")
    if isinstance(rng, (int, np.integer)):
        if rng < 0:
            raise ValueError(f"dropout_forward: rng as a seed must be a non-negative int, got {rng!r}")
        return 0
    try:
        np.random.SeedSequence(rng)     # what default_rng makes of any other seed
    except (TypeError, ValueError) as e:
        raise type(e)(f"dropout_forward: rng must be a numpy.random.Generator, a seed that "
                      f"numpy.random.default_rng accepts (a non-negative int or a sequence of "
                      f"them) or None, got {rng!r}: {e}") from None
    return 0


cdef int check_out(str fn, str src_name, object out, object src) except -1:
    """out: a writeable array shaped like src, which may be src's own memory (in place) but must
    not overlap it otherwise."""
    cdef PyObject* o[2]
    o[0] = <PyObject*>src; o[1] = <PyObject*>out
    if not cnp.PyArray_Check(out):
        raise TypeError(f"{fn}: out must be None or a numpy.ndarray of float32 or float64, "
                        f"got {type(out).__name__}{torch_hint(out, 'out')}")
    check_types(fn, (src_name, "out"), o, 2)
    check_dtypes(fn, (src_name, "out"), o, 2)
    check_same_shape(fn, (src_name, "out"), o, 2)
    check_layout(fn, "out", out, True)
    check_writeable(fn, ("out",), o + 1, 1, 0b1)
    if cnp.PyArray_BYTES(<cnp.ndarray>out) != cnp.PyArray_BYTES(<cnp.ndarray>src):
        check_overlaps(fn, (src_name, "out"), o, 2, 0b10)
    return 0


cdef int check_source_and_out(str fn, str name, object src, object out) except -1:
    """The arrays of a dropout call: src (x or dout) float32/float64, C-contiguous; out, if not
    None, see check_out.  C-level reads only.  Returns the type number."""
    cdef PyObject* o[1]
    o[0] = <PyObject*>src
    cdef int typenum = check_arrays(fn, (name,), o, 1, 0)
    if out is not None:
        check_out(fn, name, out, src)
    return typenum


cdef object new_like(object a, int typenum):
    """A new C-contiguous array of a's C-level dimensions (no Python-level call a subclass or
    __array_function__ could intercept)."""
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(<cnp.ndarray>a), cnp.PyArray_DIMS(<cnp.ndarray>a),
                             typenum, 0)


cdef object new_mask_bits(Py_ssize_t size):
    cdef cnp.npy_intp nbytes = (size + 7) // 8
    return cnp.PyArray_EMPTY(1, &nbytes, cnp.NPY_UINT8, 0)


def dropout_forward(x, *, p, rng=None, train=True, inverted=True, out=None):
    """Dropout; p is the probability of KEEPING a unit (PyTorch's p is 1 - this p).

    Train mode draws a keep-mask U (U_i = 1 with probability p) and, in the same pass, writes

        inverted (default):  out = x * U / p        (test time: out = x)
        vanilla:             out = x * U            (test time: out = x * p)

    returning (out, mask), where mask is a DropoutMask holding 1 bit per element for
    dropout_backward.  Test mode returns (x, None) for inverted dropout (no copy unless out is
    given) and (x * p, None) for vanilla.  out, if given, is written and returned; it may be x
    itself.  Arithmetic is in double, rounded once to x's dtype, as NumPy computes x * (U / p).

    rng: a numpy.random.Generator (each train-mode call takes four raw draws from its bit
    generator, rng.bit_generator.random_raw(4), whose low 32 bits make the Philox key and
    nonce), or what numpy.random.default_rng accepts: a BitGenerator, a SeedSequence, a
    non-negative int seed, or None for fresh entropy.  The mask depends only on those draws, so
    a seeded Generator gives the same masks on every run, machine, thread count and dtype.  The
    generator is Philox4x32-10; unit i is kept iff its 32-bit draw u_i < p * 2**32.

    Create one Generator and pass it on every step: an int seed passed on every step gives the
    same mask on every step (as numpy.random.default_rng(seed) would).
    """
    cdef PyObject* o[3]
    cdef Step s
    cdef int typenum
    cdef double keep_p = real("dropout_forward", "p", p, PROB)
    cdef bint training = flag("dropout_forward", "train", train)
    cdef bint inverse = flag("dropout_forward", "inverted", inverted)
    check_rng(rng)
    typenum = check_source_and_out("dropout_forward", "x", x, out)   # refuse before drawing
    if not training:
        if not inverse:
            return np.multiply(x, x.dtype.type(keep_p), out=out), None
        if out is None or cnp.PyArray_BYTES(<cnp.ndarray>out) == cnp.PyArray_BYTES(<cnp.ndarray>x):
            return (x if out is None else out), None
        np.copyto(out, x)
        return out, None

    # The Philox key (k[0], k[1]) and nonce (k[2], k[3]): the low 32 bits of four raw draws of
    # the caller's bit generator (every NumPy bit generator gives at least 32 random bits a
    # draw; random_raw costs a tenth of Generator.integers).  Drawing can run user code (a
    # subclassed generator), so the arrays are checked again afterwards, and the outputs are
    # allocated before that last check.
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    words = gen.bit_generator.random_raw(4)
    for i in range(4):
        s.k[i] = <uint32_t>(<uint64_t>words[i])
    if out is None:
        out = new_like(x, typenum)
    bits = new_mask_bits(cnp.PyArray_SIZE(<cnp.ndarray>x))
    typenum = check_source_and_out("dropout_forward", "x", x, out)
    if cnp.PyArray_DIMS(<cnp.ndarray>bits)[0] != (cnp.PyArray_SIZE(<cnp.ndarray>x) + 7) // 8:
        raise ValueError(f"dropout_forward: x changed size while its arguments were read "
                         f"(now shape {c_shape(x)})")
    # keep iff u < p * 2**32  <=>  u <= ceil(p * 2**32) - 1   (p * 2**32 is exact in double)
    s.k[4] = <uint32_t>(<uint64_t>ceil(keep_p * 4294967296.0) - 1)
    s.h.scale = 1.0 / keep_p if inverse else 1.0
    o[0] = <PyObject*>out; o[1] = <PyObject*>x; o[2] = <PyObject*>bits
    launch(_forward[float], _forward[double], typenum, o, 3, &s, PAR_DROPOUT, PAR_DROPOUT)
    bits.flags.writeable = False
    return out, DropoutMask(bits, c_shape(x), keep_p, inverse)


cdef tuple mask_shape(object shape):
    """A DropoutMask's shape as a tuple of exact ints (or ValueError)."""
    try:
        return tuple([int(operator.index(d)) for d in shape])
    except TypeError:
        raise ValueError(f"dropout_backward: mask.shape must be a tuple of ints, got {shape!r}") from None


cdef int check_mask(object dout, tuple shape, object bits, object out) except -1:
    """The packed mask against dout (and out, if not None), by C-level reads."""
    cdef Py_ssize_t want = (cnp.PyArray_SIZE(<cnp.ndarray>dout) + 7) // 8
    if shape != c_shape(dout):
        raise ValueError(f"dropout_backward: mask is for shape {shape} but dout has shape "
                         f"{c_shape(dout)}")
    if (not cnp.PyArray_CheckExact(bits) or cnp.PyArray_TYPE(<cnp.ndarray>bits) != cnp.NPY_UINT8
            or cnp.PyArray_NDIM(<cnp.ndarray>bits) != 1
            or cnp.PyArray_DIMS(<cnp.ndarray>bits)[0] != want
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>bits)):
        raise ValueError(f"dropout_backward: mask.bits is not the packed mask of a {shape} "
                         f"array: expected {want} contiguous uint8, got {type(bits).__name__} "
                         f"{getattr(bits, 'shape', '')} {getattr(bits, 'dtype', '')}")
    if out is not None and shares_memory(<PyObject*>out, <PyObject*>bits):
        raise ValueError("dropout_backward: out shares memory with mask.bits; out is written "
                         "by dropout_backward and must be a separate array")
    return 0


def dropout_backward(dout, mask, *, out=None):
    """Backward of dropout_forward:  dx = dout * U / p (inverted) or dout * U (vanilla),

    where U is the keep-mask of `mask` (the DropoutMask that dropout_forward returned).
    out, if given, is written and returned; it may be dout itself.  Returns dx.
    """
    cdef PyObject* o[3]
    cdef Step s
    if not PyType_IsSubtype(type(mask), <type>DropoutMask):
        raise TypeError(f"dropout_backward: mask must be the DropoutMask returned by "
                        f"lec6fast.dropout_forward, got {type(mask).__name__}")
    # Everything read from the mask first (its attributes are the user's to replace).
    bits = mask.bits
    cdef tuple shape = mask_shape(mask.shape)
    cdef double keep_p = real("dropout_backward", "mask.p", mask.p, PROB)
    cdef bint inverse = flag("dropout_backward", "mask.inverted", mask.inverted)
    cdef int typenum = check_source_and_out("dropout_backward", "dout", dout, out)
    check_mask(dout, shape, bits, out)
    if out is None:
        out = new_like(dout, typenum)
        typenum = check_source_and_out("dropout_backward", "dout", dout, out)
        check_mask(dout, shape, bits, out)
    s.h.scale = 1.0 / keep_p if inverse else 1.0
    o[0] = <PyObject*>out; o[1] = <PyObject*>dout; o[2] = <PyObject*>bits
    launch(_backward[float], _backward[double], typenum, o, 3, &s,
           PAR_DROPOUT_BACKWARD, PAR_DROPOUT_BACKWARD)
    return out


def _philox4x32_10(counter, key):
    """Private: one Philox4x32-10 block, for the known-answer tests."""
    cdef uint32_t c[4]
    cdef uint32_t k[2]
    for i in range(4):
        c[i] = counter[i]
    k[0] = key[0]; k[1] = key[1]
    lec6_philox4x32_10(c, k)
    return tuple(c[i] for i in range(4))


def _philox_group(group, key, nonce):
    """Private: the 256 words of one group as the dropout kernel sees them, for the tests."""
    cdef uint32_t u[LEC6_PHILOX_DRAWS]
    cdef uint32_t k[2]
    cdef uint32_t n[2]
    k[0] = key[0]; k[1] = key[1]; n[0] = nonce[0]; n[1] = nonce[1]
    lec6_philox_group(u, group, k, n)
    return np.array([u[i] for i in range(LEC6_PHILOX_DRAWS)], dtype=np.uint32)

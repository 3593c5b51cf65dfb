"""The fast update kernels against lec6fast.reference, the executable specification.

The kernels compute in the arrays' dtype, operation for operation as the reference does, so
they are expected to reproduce it bit for bit; the tolerance tests below hold them to a few
units of the dtype's precision and the bitwise tests to exact equality.
"""

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SIMD_TAILS = range(1, 71)               # every length that can leave a partial vector
SHAPES = [(), (0,), (1,), (3, 5, 7), (2, 1, 4), (0, 3), (4, 0, 2)]
THRESHOLD_OFFSETS = (-64, -63, -1, 0, 1, 63, 64)
LARGE = (1 << 20) + 7                   # >= 1M elements, not a multiple of any vector width


def run_both(kernel, shape, dtype, rng, steps, **hyper):
    """Run `steps` consecutive steps of the fast kernel and of the reference on identical data.

    Returns (fast arrays, reference arrays), two dicts name -> array.
    """
    fast = kernel.make(shape, dtype, rng)
    ref = {a: arr.copy() for a, arr in fast.items()}
    inputs = [np.asarray(kernel.init[kernel.input](rng, shape), dtype=dtype) for _ in range(steps)]
    with np.errstate(all="ignore"):
        kernel.steps(kernel.fast, fast, inputs, **hyper)
        kernel.steps(kernel.ref, ref, inputs, **hyper)
    return fast, ref


def hyper_without_t(kernel, **kw):
    h = kernel.hyper(**kw)
    h.pop("t", None)                    # kernel.steps supplies t = 1, 2, ...
    return h


# ---------------------------------------------------------------- the API

def test_same_signature_as_reference(kernel):
    """Arrays positional, hyperparameters keyword-only, defaults as in the reference."""
    fast, ref = inspect.signature(kernel.fast), inspect.signature(kernel.ref)
    assert fast == ref
    params = list(fast.parameters.values())
    assert [p.name for p in params[:len(kernel.arrays)]] == list(kernel.arrays)
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:len(kernel.arrays)])
    assert {p.name for p in params[len(kernel.arrays):]} == set(kernel.ranges)
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(kernel.arrays):])


# ---------------------------------------------------------------- against the reference, to tolerance

def test_simd_tail_lengths(kernel, dtype, rng, close):
    for n in SIMD_TAILS:
        fast, ref = run_both(kernel, (n,), dtype, rng, steps=3, **hyper_without_t(kernel))
        for a in kernel.arrays:
            close(fast[a], ref[a], dtype, f"{kernel.name} n={n} {a}")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes(kernel, dtype, rng, close, shape):
    fast, ref = run_both(kernel, shape, dtype, rng, steps=3, **hyper_without_t(kernel))
    for a in kernel.arrays:
        assert fast[a].shape == shape
        close(fast[a], ref[a], dtype, f"{kernel.name} {shape} {a}")


@pytest.mark.parametrize("offset", THRESHOLD_OFFSETS)
@pytest.mark.parametrize("threads", [1, 2])
def test_around_threading_threshold(kernel, dtype, rng, close, kernels_module, num_threads,
                                  offset, threads):
    num_threads(threads)
    n = kernels_module._get_parallel_min(kernel.name, dtype) + offset
    fast, ref = run_both(kernel, (n,), dtype, rng, steps=2, **hyper_without_t(kernel))
    for a in kernel.arrays:
        close(fast[a], ref[a], dtype, f"{kernel.name} n={n} threads={threads} {a}")


def test_large_array(kernel, dtype, rng, close):
    fast, ref = run_both(kernel, (LARGE,), dtype, rng, steps=2, **hyper_without_t(kernel))
    for a in kernel.arrays:
        close(fast[a], ref[a], dtype, f"{kernel.name} n={LARGE} {a}")


def test_edge_hyperparameters(kernel, dtype, rng, close):
    for edge in kernel.edges:
        for shape in [(1,), (17,), (70,), (1000,), (3, 5, 7)]:
            fast, ref = run_both(kernel, shape, dtype, rng, steps=5,
                                 **hyper_without_t(kernel, **edge))
            for a in kernel.arrays:
                close(fast[a], ref[a], dtype, f"{kernel.name} {edge} {shape} {a}")


def test_default_hyperparameters_are_the_documented_ones(kernel, dtype, rng, bits):
    """Omitting the optional hyperparameters is the same as passing the documented defaults."""
    defaults = kernel.defaults                   # lec6fast._rules' row (test_rules checks it)
    assert defaults or kernel.name == "sgd_"
    implicit = kernel.make((101,), dtype, rng)
    explicit = {a: arr.copy() for a, arr in implicit.items()}
    kernel.call(kernel.fast, implicit, **kernel.hyper(t=2))
    kernel.call(kernel.fast, explicit, **kernel.hyper(t=2, **defaults))
    for a in kernel.arrays:
        bits.assert_equal(implicit[a], explicit[a], f"{kernel.name} {a}")


def test_adam_steps_one_to_five_each_checked(dtype, rng, kernel_table, bits):
    """Adam's bias correction changes with t: compare after every one of steps t = 1..5."""
    k = kernel_table["adam_"]
    fast = k.make((257,), dtype, rng)
    ref = {a: arr.copy() for a, arr in fast.items()}
    for t in range(1, 6):
        g = np.asarray(rng.standard_normal(257), dtype=dtype)
        fast["dx"][...] = g
        ref["dx"][...] = g
        k.call(k.fast, fast, **k.hyper(t=t))
        k.call(k.ref, ref, **k.hyper(t=t))
        for a in k.arrays:
            bits.assert_equal(fast[a], ref[a], f"adam_ t={t} {a}")


def test_adam_huge_step_number(dtype, rng, kernel_table, bits):
    """Past t ~ 1e6 both corrections are exactly 1 in double; an int too large for a float
    (where the reference's float ** int overflows) must give that same result."""
    k = kernel_table["adam_"]
    a = k.make((50,), dtype, rng)
    b = {n: arr.copy() for n, arr in a.items()}
    k.call(k.fast, a, **k.hyper(t=10**6))
    k.call(k.fast, b, **k.hyper(t=10**400))
    for n in k.arrays:
        bits.assert_equal(a[n], b[n], f"adam_ {n}")


# ---------------------------------------------------------------- bit for bit

def test_bitwise_equal_to_reference(kernel, dtype, rng, bits, kernels_module):
    """Typical inputs, every SIMD tail length, both sides of the threading threshold, a large
    array and every edge hyperparameter set: exactly the reference's bits."""
    p = kernels_module._get_parallel_min(kernel.name, dtype)
    cases = [((n,), {}) for n in range(0, 71)]
    cases += [((), {}), ((3, 5, 7), {}), ((p - 1,), {}), ((p + 63,), {}), ((LARGE,), {})]
    cases += [((70,), edge) for edge in kernel.edges]
    for shape, edge in cases:
        fast, ref = run_both(kernel, shape, dtype, rng, steps=3, **hyper_without_t(kernel, **edge))
        for a in kernel.arrays:
            bits.assert_equal(fast[a], ref[a], f"{kernel.name} {shape} {edge} {a}")


def test_nonfinite_gradient_propagates_like_reference(kernel, dtype, rng, bits):
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=dtype)
    for n in (5, 67, 40_000):
        fast = kernel.make((n,), dtype, rng)
        ref = {a: arr.copy() for a, arr in fast.items()}
        inputs = []
        for step in range(3):
            g = np.asarray(kernel.init[kernel.input](rng, (n,)), dtype=dtype)
            where = rng.choice(n, size=min(n, 5 + n // 50), replace=False)
            g[where] = rng.choice(specials, size=where.size)
            inputs.append(g)
        with np.errstate(all="ignore"):
            kernel.steps(kernel.fast, fast, inputs, **hyper_without_t(kernel))
            kernel.steps(kernel.ref, ref, inputs, **hyper_without_t(kernel))
        assert any(np.isnan(fast[a]).any() for a in kernel.outputs), "test data had no effect"
        for a in kernel.arrays:
            bits.assert_equal_nan(fast[a], ref[a], f"{kernel.name} n={n} {a}")


def test_nonfinite_input_with_zero_coefficient(kernel, dtype, rng, bits):
    """0 * inf is NaN in IEEE arithmetic: lr = 0 (decay = 0 for ema_) must not be shortcut."""
    zero = {"lr": 0.0} if "lr" in kernel.ranges else {"decay": 0.0}
    fast = kernel.make((9,), dtype, rng)
    fast[kernel.input][:3] = [np.inf, -np.inf, np.nan]
    ref = {a: arr.copy() for a, arr in fast.items()}
    with np.errstate(all="ignore"):
        kernel.call(kernel.fast, fast, **kernel.hyper(**zero))
        kernel.call(kernel.ref, ref, **kernel.hyper(**zero))
    for a in kernel.arrays:
        bits.assert_equal_nan(fast[a], ref[a], f"{kernel.name} {a}")


# ---------------------------------------------------------------- property-based

def _hyper_strategy(kernel):
    ranges = {
        "nonneg": st.one_of(st.just(0.0), st.floats(1e-8, 10.0)),
        "positive": st.one_of(st.floats(1e-30, 1e-3), st.floats(1e-3, 1.0)),
        "unit": st.one_of(st.just(0.0), st.floats(0.0, 1.0, exclude_max=True),
                          st.just(0.999999)),
    }
    return st.fixed_dictionaries({name: ranges[r] for name, r in kernel.ranges.items()
                                  if r != "step"})


@st.composite
def update_cases(draw, kernels):
    kernel = kernels[draw(st.sampled_from(sorted(kernels)))]
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(st.one_of(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
                           st.tuples(st.integers(0, 300))))
    width = np.dtype(dtype).itemsize * 8
    signed = st.floats(-1e3, 1e3, width=width)
    nonneg = st.floats(0.0, 1e3, width=width)
    nonneg_state = {"cache"} | ({"v"} if kernel.name == "adam_" else set())
    arrays = {a: draw(hnp.arrays(dtype, shape, elements=nonneg if a in nonneg_state else signed))
              for a in kernel.arrays}
    steps = draw(st.integers(1, 3))
    inputs = [draw(hnp.arrays(dtype, shape, elements=signed)) for _ in range(steps)]
    hyper = draw(_hyper_strategy(kernel))
    t0 = draw(st.integers(0, 10_000)) if kernel.has_t else 0
    return kernel, arrays, inputs, hyper, t0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_matches_reference_bitwise(kernel_table, bits, data):
    kernel, fast, inputs, hyper, t0 = data.draw(update_cases(kernel_table))
    ref = {a: arr.copy() for a, arr in fast.items()}
    with np.errstate(all="ignore"):
        for k, g in enumerate(inputs, start=1):
            kw = dict(hyper, t=t0 + k) if kernel.has_t else hyper
            for arrays, fn in ((fast, kernel.fast), (ref, kernel.ref)):
                arrays[kernel.input][...] = g
                assert kernel.call(fn, arrays, **kw) is None
    for a in kernel.arrays:
        bits.assert_equal_nan(fast[a], ref[a], f"{kernel.name} {hyper} {a}")


# ---------------------------------------------------------------- hyperparameter types

def _values(kernel):
    """A typical, non-default value for each float hyperparameter of the kernel."""
    typical = {"nonneg": 0.0123, "positive": 3.3e-6, "unit": 0.8765}
    return {n: typical[r] for n, r in kernel.ranges.items() if r != "step"}


@pytest.mark.parametrize("kind", ["float32", "float64", "int64", "int"])
def test_numpy_scalar_hyperparameters(kernel, dtype, rng, bits, kind):
    """A NumPy scalar (or a Python int) is accepted wherever a Python float is and means the
    same number: same bits as the Python float, and as the reference given that float."""
    if kind in ("int64", "int"):
        name, value = ("lr", 2) if "lr" in kernel.ranges else ("decay", 0)
        given_ = {name: np.int64(value) if kind == "int64" else value}
        plain = {name: float(value)}
    else:
        scalar = getattr(np, kind)
        given_ = {n: scalar(v) for n, v in _values(kernel).items()}
        plain = {n: float(v) for n, v in given_.items()}      # the same number as a float
    arrays = kernel.make((77,), dtype, rng)
    twin = {a: arr.copy() for a, arr in arrays.items()}
    ref = {a: arr.copy() for a, arr in arrays.items()}
    kernel.call(kernel.fast, arrays, **kernel.hyper(t=3, **given_))
    kernel.call(kernel.fast, twin, **kernel.hyper(t=3, **plain))
    kernel.call(kernel.ref, ref, **kernel.hyper(t=3, **plain))
    for a in kernel.arrays:
        bits.assert_equal(arrays[a], twin[a], f"{kernel.name} {kind} vs float {a}")
        bits.assert_equal(arrays[a], ref[a], f"{kernel.name} {kind} vs reference {a}")


@pytest.mark.parametrize("t", [np.int64(3), np.int32(3), np.uint8(3), np.int16(3)],
                         ids=lambda t: type(t).__name__)
def test_numpy_integer_step_number(dtype, rng, kernel_table, bits, t):
    k = kernel_table["adam_"]
    a = k.make((33,), dtype, rng)
    b = {n: arr.copy() for n, arr in a.items()}
    k.call(k.fast, a, **k.hyper(t=t))
    k.call(k.fast, b, **k.hyper(t=3))
    for n in k.arrays:
        bits.assert_equal(a[n], b[n], f"adam_ t={t!r} {n}")


def test_python_float_and_numpy_float64_identical_bits(kernel, dtype, rng, bits):
    values = _values(kernel)
    a = kernel.make((129,), dtype, rng)
    b = {n: arr.copy() for n, arr in a.items()}
    kernel.call(kernel.fast, a, **kernel.hyper(t=2, **values))
    kernel.call(kernel.fast, b, **kernel.hyper(t=2, **{n: np.float64(v) for n, v in values.items()}))
    for n in kernel.arrays:
        bits.assert_equal(a[n], b[n], f"{kernel.name} {n}")


# ---------------------------------------------------------------- in place, dtype kept

def test_in_place_dtype_preserved_returns_none(kernel, dtype, rng, bits):
    arrays = kernel.make((3, 41), dtype, rng)
    ids = {a: id(arr) for a, arr in arrays.items()}
    pointers = {a: arr.__array_interface__["data"][0] for a, arr in arrays.items()}
    before = {a: bits.raw(arr) for a, arr in arrays.items()}
    result = kernel.call(kernel.fast, arrays, **kernel.hyper(t=1))
    assert result is None
    for a, arr in arrays.items():
        assert id(arr) == ids[a] and arr.__array_interface__["data"][0] == pointers[a]
        assert arr.dtype == dtype and arr.shape == (3, 41) and arr.flags.c_contiguous
        if a in kernel.outputs:
            assert bits.raw(arr) != before[a], f"{kernel.name}: {a} was not updated in place"
        else:
            assert bits.raw(arr) == before[a], f"{kernel.name}: {a} is an input but was written"


def test_float32_agrees_with_float64(kernel, rng):
    """The same data run in float32 and in float64 agree to float32 precision after 5 steps."""
    shape = (1000,)
    a32 = kernel.make(shape, np.float32, rng)
    a64 = {a: arr.astype(np.float64) for a, arr in a32.items()}
    inputs = [np.asarray(kernel.init[kernel.input](rng, shape), dtype=np.float32) for _ in range(5)]
    kernel.steps(kernel.fast, a32, inputs, **hyper_without_t(kernel))
    kernel.steps(kernel.fast, a64, [g.astype(np.float64) for g in inputs], **hyper_without_t(kernel))
    for a in kernel.arrays:
        assert a32[a].dtype == np.float32 and a64[a].dtype == np.float64
        scale = float(np.max(np.abs(a64[a])))
        np.testing.assert_allclose(a32[a], a64[a], rtol=2e-6, atol=2e-6 * scale,
                                   err_msg=f"{kernel.name} {a}")

"""Batch normalization: lec6fast.batchnorm_forward / batchnorm_backward against the lecture's
NumPy code in lec6fast.reference, a finite-difference gradient check, numerics, refusals, and
bit-identity over thread counts and SIMD levels."""

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lec6fast
from lec6fast import _dispatch
from lec6fast import reference as R
from conftest import Bits, normal

FAST = _dispatch.kernels("_batchnorm", _dispatch.level)
LEVELS = _dispatch.available_levels()
DTYPES = (np.float32, np.float64)

SHAPES_2D = [(1, 1), (1, 7), (9, 1), (8, 4), (13, 257), (64, 129), (300, 130)]
# 4-D shapes around the kernels' boundaries: H*W of at most 512 bytes takes column blocks
# (128 float32 / 64 float64 elements), longer runs take channel blocks of up to 16 channels.
SHAPES_4D = [(1, 1, 1, 1), (2, 3, 1, 1), (3, 5, 7, 9), (4, 3, 4, 4), (2, 17, 5, 3), (5, 2, 16, 16),
             (3, 4, 8, 16), (3, 4, 3, 43), (2, 3, 5, 13), (2, 40, 16, 16), (2, 20, 9, 17)]
SHAPES = SHAPES_2D + SHAPES_4D
# Train mode needs more than one value per feature (test_validation checks the refusal).
TRAIN_SHAPES = [s for s in SHAPES if np.prod(s) // s[1] > 1]


def make(shape, dtype, seed=0, loc=1.0, scale=3.0):
    """x, gamma, beta, running_mean, running_var, dout of one case."""
    rng = np.random.default_rng(seed)
    F = shape[1]
    x = normal(shape, dtype, rng, loc, scale)
    gamma = rng.uniform(0.5, 2.0, F).astype(dtype) * rng.choice([-1, 1], F).astype(dtype)
    beta = rng.standard_normal(F).astype(dtype)
    rm = rng.standard_normal(F).astype(dtype)
    rv = rng.uniform(0.1, 3.0, F).astype(dtype)
    dout = normal(shape, dtype, rng)
    return x, gamma, beta, rm, rv, dout


def up(*arrays):
    return [a.astype(np.float64) for a in arrays]


def close_to(fast, ref, dtype, *, loose=False):
    """fast (dtype) against ref: float32 results are the float64 math rounded once, so they sit
    within a float32 rounding of a float64 reference; loose=True for the float32 reference,
    which computes in float32."""
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    if dtype == np.float64:
        rtol, atol = 1e-10, 1e-11 * scale
    elif loose:
        rtol, atol = 1e-4, 1e-4 * scale
    else:
        rtol, atol = 5e-7, 1e-9 * scale
    assert fast.dtype == dtype
    np.testing.assert_allclose(fast.astype(np.float64), ref, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- against the reference

def check_train_against_reference(shape, dtype, momentum, eps, seed=0):
    """Train-mode forward (out, running statistics) and backward against the reference run
    in float64 on the same data."""
    x, gamma, beta, rm, rv, dout = make(shape, dtype, seed=seed)
    x64, g64, b64, rm64, rv64, d64 = up(x, gamma, beta, rm, rv, dout)
    out, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                            momentum=momentum, eps=eps)
    ref, rcache = R.batchnorm_forward(x64, g64, b64, running_mean=rm64, running_var=rv64,
                                      momentum=momentum, eps=eps)
    close_to(out, ref, dtype)
    close_to(rm, rm64, dtype)
    close_to(rv, rv64, dtype)
    for fast, r in zip(lec6fast.batchnorm_backward(dout, cache), R.batchnorm_backward(d64, rcache)):
        close_to(fast, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", TRAIN_SHAPES, ids=str)
@pytest.mark.parametrize("momentum, eps", [(0.9, 1e-5), (0.0, 1e-3), (0.5, 0.5), (0.999, 1e-12)])
def test_train_matches_float64_reference(dtype, shape, momentum, eps):
    check_train_against_reference(shape, dtype, momentum, eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", TRAIN_SHAPES, ids=str)
def test_train_matches_reference_in_its_dtype(dtype, shape):
    x, gamma, beta, rm, rv, dout = make(shape, dtype, seed=1)
    rm2, rv2 = rm.copy(), rv.copy()
    out, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    ref, rcache = R.batchnorm_forward(x, gamma, beta, running_mean=rm2, running_var=rv2)
    close_to(out, ref, dtype, loose=True)
    close_to(rm, rm2, dtype, loose=True)
    close_to(rv, rv2, dtype, loose=True)
    for fast, r in zip(lec6fast.batchnorm_backward(dout, cache), R.batchnorm_backward(dout, rcache)):
        assert fast.dtype == r.dtype == dtype
        close_to(fast, r, dtype, loose=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_test_mode_matches_reference_and_reads_running_stats_only(dtype, shape):
    x, gamma, beta, rm, rv, _ = make(shape, dtype, seed=2)
    before = [a.copy() for a in (x, gamma, beta, rm, rv)]
    out, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                            train=False, eps=1e-3)
    assert cache is None
    ref, _ = R.batchnorm_forward(*up(x, gamma, beta), running_mean=rm.astype(np.float64),
                                 running_var=rv.astype(np.float64), train=False, eps=1e-3)
    close_to(out, ref, dtype)
    for a, b in zip((x, gamma, beta, rm, rv), before):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_several_steps_update_running_stats_in_place(dtype):
    shape = (32, 10)
    _, gamma, beta, rm, rv, _ = make(shape, dtype)
    rm_id, rv_id = id(rm), id(rv)
    rm64, rv64 = up(rm, rv)
    for step in range(5):
        x = make(shape, dtype, seed=10 + step, loc=step)[0]
        lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv, momentum=0.8)
        R.batchnorm_forward(*up(x, gamma, beta), running_mean=rm64, running_var=rv64, momentum=0.8)
    assert id(rm) == rm_id and id(rv) == rv_id
    close_to(rm, rm64, dtype)
    close_to(rv, rv64, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 5), (3, 4, 5, 2)], ids=str)
def test_out_argument(dtype, shape):
    x, gamma, beta, rm, rv, _ = make(shape, dtype)
    kw = dict(running_mean=rm.copy(), running_var=rv.copy())
    expected, _ = lec6fast.batchnorm_forward(x, gamma, beta, **kw)
    out = np.full_like(x, np.nan)
    res, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm.copy(),
                                            running_var=rv.copy(), out=out)
    assert res is out and cache.x is x
    assert out.tobytes() == expected.tobytes()
    # test mode: a separate out, and out=x in place
    expected, _ = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                             train=False)
    res, _ = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                        train=False, out=out)
    assert res is out and out.tobytes() == expected.tobytes()
    res, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                            train=False, out=x)
    assert res is x and cache is None and x.tobytes() == expected.tobytes()


def test_test_mode_accepts_read_only_inputs_and_empty_batches():
    x, gamma, beta, rm, rv, _ = make((6, 3), np.float32)
    for a in (x, gamma, beta, rm, rv):
        a.flags.writeable = False
    out, _ = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv, train=False)
    assert out.shape == x.shape and out is not x
    for empty in (x[:0], np.zeros((2, 3, 0, 4), np.float32), np.zeros((0, 3, 2, 2), np.float32)):
        out, _ = lec6fast.batchnorm_forward(empty, gamma, beta, running_mean=rm, running_var=rv,
                                            train=False)
        assert out.shape == empty.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_spatial_size_one_is_the_2d_case(dtype):
    res2 = _run_all(FAST, (9, 300), dtype)
    res4 = _run_all(FAST, (9, 300, 1, 1), dtype)
    for a, b in zip(res2, res4):
        assert a.size == b.size and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_features(dtype):
    x = np.ones((4, 0), dtype)
    e = np.ones(0, dtype)
    out, cache = lec6fast.batchnorm_forward(x, e, e, running_mean=e.copy(), running_var=e.copy())
    assert out.shape == (4, 0) and cache.stats.shape == (3, 0)
    dx, dgamma, dbeta = lec6fast.batchnorm_backward(np.ones_like(x), cache)
    assert dx.shape == (4, 0) and dgamma.shape == dbeta.shape == (0,)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dims=st.one_of(st.tuples(st.integers(2, 40), st.integers(1, 300)),
                      st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9),
                                st.integers(1, 9)).filter(lambda d: d[0] * d[2] * d[3] > 1)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       momentum=st.floats(0.0, 0.999), eps=st.floats(1e-8, 1.0))
def test_property_matches_float64_reference(dims, dtype, seed, momentum, eps):
    check_train_against_reference(dims, dtype, momentum, eps, seed=seed)


# ---------------------------------------------------------------- gradients and the cache

@pytest.mark.parametrize("shape", [(5, 3), (2, 4), (3, 2, 2, 3), (1, 2, 3, 1)], ids=str)
def test_finite_difference_gradients(shape):
    x, gamma, beta, rm, rv, dout = make(shape, np.float64, seed=3)
    eps = 1e-5

    def loss(x, gamma, beta):
        out, _ = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm.copy(),
                                            running_var=rv.copy(), eps=eps)
        return float(np.sum(out * dout))

    _, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm.copy(),
                                          running_var=rv.copy(), eps=eps)
    grads = lec6fast.batchnorm_backward(dout, cache)
    args = [x, gamma, beta]
    for arg, grad in zip(args, grads):
        numeric = np.empty_like(arg)
        h = 1e-6
        for i in np.ndindex(arg.shape):
            saved = arg[i]
            arg[i] = saved + h
            plus = loss(*args)
            arg[i] = saved - h
            minus = loss(*args)
            arg[i] = saved
            numeric[i] = (plus - minus) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_cache_holds_x_by_reference_and_a_copy_of_gamma():
    x, gamma, beta, rm, rv, dout = make((16, 6), np.float32)
    _, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    assert cache.x is x
    assert cache.nbytes == 3 * 6 * 8
    assert cache.mean.dtype == cache.inv_std.dtype == cache.gamma.dtype == np.float64
    expected = lec6fast.batchnorm_backward(dout, cache)
    gamma0 = gamma.copy()
    gamma *= 10                         # an optimizer step between forward and backward
    for a, b in zip(lec6fast.batchnorm_backward(dout, cache), expected):
        assert a.tobytes() == b.tobytes()
    _, rcache = R.batchnorm_forward(*up(x, gamma0, beta), running_mean=rm.astype(np.float64),
                                    running_var=rv.astype(np.float64))
    for a, b in zip(expected, R.batchnorm_backward(dout.astype(np.float64), rcache)):
        close_to(a, b, np.float32)
    assert "BatchNormCache" in repr(cache)


# ---------------------------------------------------------------- numerics

@pytest.mark.parametrize("shape", [(512, 8), (16, 4, 8, 8)], ids=str)
def test_float32_far_from_zero(shape):
    x, gamma, beta, rm, rv, _ = make(shape, np.float32, seed=4, loc=1e4, scale=1.0)
    rv[...] = 123.0
    out, _ = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv, momentum=0.0)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    true_var = x.astype(np.float64).var(axis=axes)
    np.testing.assert_allclose(rv, true_var, rtol=3e-7)       # the variance to float32 precision
    np.testing.assert_allclose(rm, x.astype(np.float64).mean(axis=axes), rtol=1e-7)
    ref, _ = R.batchnorm_forward(*up(x, gamma, beta), running_mean=np.zeros(rm.shape),
                                 running_var=np.zeros(rv.shape))
    close_to(out, ref, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 3), (2, 3, 4, 5)], ids=str)
def test_zero_variance_feature_is_finite(dtype, shape):
    x, gamma, beta, rm, rv, dout = make(shape, dtype)
    x[:, 1] = dtype(0.1)                # feature 1 is constant over the batch
    out, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 1], beta[1], rtol=1e-6)
    for g in lec6fast.batchnorm_backward(dout, cache):
        assert np.isfinite(g).all()


# ---------------------------------------------------------------- refusals

def _args(shape=(8, 4), dtype=np.float32):
    x, gamma, beta, rm, rv, _ = make(shape, dtype)
    return dict(x=x, gamma=gamma, beta=beta, running_mean=rm, running_var=rv)


def _unaligned(shape, dtype):
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.zeros(n + 1, np.uint8)[1:].view(dtype).reshape(shape)


def _shared(n, *cuts, dtype=np.float32):
    buf = np.arange(n, dtype=dtype)
    return [buf[a:b] for a, b in cuts]


def _with(**changes):
    def mutate(a):
        for k, v in changes.items():
            a[k] = v(a) if callable(v) else v
        return a
    return mutate


def _overlapping_running_stats(a):
    a["running_mean"], a["running_var"] = _shared(6, (0, 4), (2, 6))
    return a


def _out_overlapping_x(a):
    buf = np.zeros(36, np.float32)
    a["x"], a["out"], a["train"] = buf[:32].reshape(8, 4), buf[4:36].reshape(8, 4), False
    return a


def _out_overlapping_gamma(a):
    buf = np.zeros(36, np.float32)
    a["out"], a["gamma"] = buf[:32].reshape(8, 4), buf[28:32]
    return a


REFUSALS = [
    # TypeError: what is passed
    (TypeError, "x must be a numpy.ndarray", _with(x=lambda a: a["x"].tolist())),
    (TypeError, "x must have dtype float32 or float64", _with(x=lambda a: a["x"].astype(np.int32))),
    (TypeError, "x must have dtype float32 or float64", _with(x=lambda a: a["x"].astype(np.float16))),
    (TypeError, "native byte order", _with(x=lambda a: a["x"].astype(">f4"))),
    (TypeError, "gamma has dtype float64 but x has float32",
     _with(gamma=lambda a: a["gamma"].astype(np.float64))),
    (TypeError, "beta must be a numpy.ndarray", _with(beta=[0.0] * 4)),
    (TypeError, "running_var has dtype float64", _with(running_var=np.ones(4))),
    (TypeError, "running_mean has dtype >f4", _with(running_mean=np.zeros(4, ">f4"))),
    (TypeError, "out has dtype float64", _with(out=np.zeros((8, 4)))),
    (TypeError, "out must be None or a numpy.ndarray", _with(out=[[0.0] * 4] * 8)),
    # ValueError: shapes
    (ValueError, r"x must be 2-D \(N, D\) or 4-D \(N, C, H, W\), got shape \(8,\)",
     _with(x=np.zeros(8, np.float32))),
    (ValueError, "x must be 2-D", _with(x=np.zeros((8, 4, 2), np.float32))),
    (ValueError, r"^batchnorm_forward: gamma has shape \(5,\) but x has 4 features \(shape \(8, 4\)\)$",
     _with(gamma=np.ones(5, np.float32))),
    (ValueError, r"gamma has shape \(1, 4\)", _with(gamma=np.ones((1, 4), np.float32))),
    (ValueError, r"beta has shape \(3,\)", _with(beta=np.ones(3, np.float32))),
    (ValueError, r"running_mean has shape \(5,\)", _with(running_mean=np.ones(5, np.float32))),
    (ValueError, r"running_var has shape \(0,\)", _with(running_var=np.ones(0, np.float32))),
    (ValueError, r"gamma has shape \(4,\) but x has 3 channels \(shape \(2, 3, 4, 4\)\)",
     _with(x=np.zeros((2, 3, 4, 4), np.float32))),
    (ValueError, r"out has shape \(4, 8\) but x has shape \(8, 4\)", _with(out=np.zeros((4, 8), np.float32))),
    # layout
    (ValueError, "x must be C-contiguous", _with(x=lambda a: np.asfortranarray(a["x"]))),
    (ValueError, "gamma must be C-contiguous", _with(gamma=np.ones(8, np.float32)[::2])),
    (ValueError, "out must be C-contiguous", _with(out=np.zeros((4, 8), np.float32).T)),
    (ValueError, "x is not aligned", _with(x=lambda a: _unaligned((8, 4), np.float32))),
    (ValueError, "running_var is not aligned", _with(running_var=lambda a: _unaligned((4,), np.float32))),
    # writeability
    (ValueError, "running_mean is read-only", _with(running_mean=lambda a: Bits.read_only(a["running_mean"]))),
    (ValueError, "running_var is read-only", _with(running_var=lambda a: Bits.read_only(a["running_var"]))),
    (ValueError, "out is read-only", _with(out=lambda a: Bits.read_only(np.zeros((8, 4), np.float32)))),
    (ValueError, "out is read-only",
     _with(out=lambda a: Bits.read_only(np.zeros((8, 4), np.float32)), train=False)),
    # overlap
    (ValueError, "running_mean shares memory with running_var",
     _with(running_var=lambda a: a["running_mean"])),
    (ValueError, "running_mean shares memory with running_var", _overlapping_running_stats),
    (ValueError, "running_mean shares memory with gamma", _with(running_mean=lambda a: a["gamma"])),
    (ValueError, "running_var shares memory with beta", _with(running_var=lambda a: a["beta"])),
    (ValueError, "running_mean shares memory with x", _with(running_mean=lambda a: a["x"][2])),
    (ValueError, "out shares memory with x, but in train mode", _with(out=lambda a: a["x"])),
    (ValueError, "out overlaps x without being x", _out_overlapping_x),
    (ValueError, "out shares memory with gamma", _out_overlapping_gamma),
    (ValueError, "out shares memory with running_mean",
     _with(out=lambda a: a["running_mean"].reshape(1, 4), x=np.zeros((1, 4), np.float32), train=False)),
    # batch size
    (ValueError, r"no samples .*\(N = 0\)", _with(x=np.zeros((0, 4), np.float32))),
    (ValueError, r"no samples .*\(N\*H\*W = 0\)", _with(x=np.zeros((2, 4, 0, 3), np.float32))),
    # hyperparameters
    *[(ValueError, r"momentum must be", _with(momentum=m)) for m in (1.0, -0.1, float("nan"))],
    *[(TypeError, r"momentum must be a real number", _with(momentum=m)) for m in ("0.9", None)],
    *[(ValueError, r"eps must be", _with(eps=e)) for e in (0.0, -1e-5, float("inf"), float("nan"))],
    (TypeError, r"eps must be a real number", _with(eps=None)),
]


@pytest.mark.parametrize("exc, match, mutate", REFUSALS)
def test_forward_refusals_change_nothing(exc, match, mutate):
    args = mutate(_args())
    arrays = [a for a in args.values() if isinstance(a, np.ndarray)]
    before = [a.tobytes() for a in arrays]
    with pytest.raises(exc, match=match):
        lec6fast.batchnorm_forward(args.pop("x"), args.pop("gamma"), args.pop("beta"), **args)
    assert [a.tobytes() for a in arrays] == before


def test_backward_refusals_change_nothing():
    x, gamma, beta, rm, rv, dout = make((8, 4), np.float32)
    _, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    _, ref_cache = R.batchnorm_forward(x, gamma, beta, running_mean=rm.copy(), running_var=rv.copy())
    arrays = [x, dout, cache.stats]
    before = [a.tobytes() for a in arrays]
    cases = [
        (TypeError, r"train=False", dout, None),
        (TypeError, r"cache must be the cache returned by batchnorm_forward .* got tuple", dout, ref_cache),
        (TypeError, r"dout has dtype float64 but x \(from the cache\) has float32", dout.astype(np.float64), cache),
        (TypeError, "native byte order|dout has dtype >f4", dout.astype(">f4"), cache),
        (TypeError, "dout must be a numpy.ndarray", dout.tolist(), cache),
        (ValueError, r"dout has shape \(4, 8\) but x \(from the cache\) has shape \(8, 4\)",
         np.zeros((4, 8), np.float32), cache),
        (ValueError, "dout must be C-contiguous", np.asfortranarray(dout), cache),
    ]
    for exc, match, d, c in cases:
        with pytest.raises(exc, match=match):
            lec6fast.batchnorm_backward(d, c)
    stats = cache.stats
    cache.stats = np.zeros((3, 5))
    with pytest.raises(ValueError, match="cache is inconsistent"):
        lec6fast.batchnorm_backward(dout, cache)
    cache.stats = stats
    assert [a.tobytes() for a in arrays] == before


# ---------------------------------------------------------------- same bits everywhere

INVARIANCE_SHAPES = [(3, 5), (64, 300), (7, 1000), (2, 3, 1, 1), (4, 9, 5, 7), (3, 6, 16, 16),
                     (2, 40, 16, 16), (3, 50, 3, 43)]


def _run_all(mod, shape, dtype):
    x, gamma, beta, rm, rv, dout = make(shape, dtype, seed=5)
    out, cache = mod.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    test_out, _ = mod.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv, train=False)
    return [out, rm, rv, cache.stats, test_out, *mod.batchnorm_backward(dout, cache)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", INVARIANCE_SHAPES, ids=str)
def test_same_bits_for_every_thread_count(dtype, shape):
    saved_threads, saved_min = lec6fast.get_num_threads(), FAST._get_parallel_min()
    try:
        FAST._set_parallel_min(1)           # small arrays through the pool too
        lec6fast.set_num_threads(1)
        serial = _run_all(FAST, shape, dtype)
        for n in (2, 3, 4):
            lec6fast.set_num_threads(n)
            assert Bits.all_same(_run_all(FAST, shape, dtype), serial)
    finally:
        lec6fast.set_num_threads(saved_threads)
        FAST._set_parallel_min(saved_min)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", INVARIANCE_SHAPES, ids=str)
def test_same_bits_on_every_simd_level(dtype, shape):
    base = _run_all(_dispatch.kernels("_batchnorm", "baseline"), shape, dtype)
    for level in LEVELS:
        assert Bits.all_same(_run_all(_dispatch.kernels("_batchnorm", level), shape, dtype), base)


def test_cache_is_accepted_across_levels():
    x, gamma, beta, rm, rv, dout = make((6, 200), np.float64)
    mods = [_dispatch.kernels("_batchnorm", level) for level in LEVELS]
    _, cache = mods[-1].batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
    expected = mods[-1].batchnorm_backward(dout, cache)
    for mod in mods:
        assert Bits.all_same(mod.batchnorm_backward(dout, cache), expected)


def test_concurrent_calls_from_python_threads():
    cases = [make((64, 500), np.float32, seed=s) for s in range(4)]

    def run(case):
        x, gamma, beta, rm, rv, dout = (a.copy() for a in case)
        res = []
        for _ in range(5):
            out, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv)
            res = [out, rm.copy(), *lec6fast.batchnorm_backward(dout, cache)]
        return res

    serial = [run(c) for c in cases]
    results = [None] * len(cases)

    def worker(i):
        results[i] = run(cases[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        assert Bits.all_same(got, want)


def test_train_must_be_a_bool():
    x = np.ones((4, 3), np.float32)
    g, b, rm, rv = (np.ones(3, np.float32) for _ in range(4))
    before = rm.tobytes() + rv.tobytes()
    with pytest.raises(TypeError, match="batchnorm_forward: train must be True or False, got 'no'"):
        lec6fast.batchnorm_forward(x, g, b, running_mean=rm, running_var=rv, train="no")
    assert rm.tobytes() + rv.tobytes() == before


def test_backward_of_an_empty_batch_is_zero():
    # Only reachable with a hand-made cache (the forward refuses N = 0 in train mode): sums over
    # no elements are 0, not whatever the memory held.
    from lec6fast import BatchNormCache
    x = np.empty((0, 3), np.float32)
    dx, dgamma, dbeta = lec6fast.batchnorm_backward(x, BatchNormCache(x, np.zeros((3, 3))))
    assert dx.shape == (0, 3) and dgamma.tolist() == [0, 0, 0] and dbeta.tolist() == [0, 0, 0]


def test_reference_backward_handles_zero_features():
    x = np.empty((4, 0))
    out, cache = R.batchnorm_forward(x, np.empty(0), np.empty(0), running_mean=np.empty(0),
                                     running_var=np.empty(0))
    dx, dgamma, dbeta = R.batchnorm_backward(x, cache)
    assert dx.shape == (4, 0) and dgamma.shape == dbeta.shape == (0,)


def _at_offset(shape, dtype, offset):
    """An array whose data starts `offset` bytes past a 64-byte boundary."""
    n, item = int(np.prod(shape)), np.dtype(dtype).itemsize
    buf = np.empty(n * item + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    return buf[start:start + n * item].view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(195, 512), (33, 260), (8, 3, 5, 5)], ids=str)
def test_same_bits_wherever_out_starts(dtype, shape):
    """Column blocks start where the written array's rows meet a cache line, so the blocks
    depend on out's address; the results must not (1 to 4 threads, every offset)."""
    x, gamma, beta, rm, rv, dout = make(shape, dtype, seed=9)
    saved_threads, saved_min = lec6fast.get_num_threads(), FAST._get_parallel_min()
    results = set()
    try:
        FAST._set_parallel_min(1)
        for threads in (1, 2, 4):
            lec6fast.set_num_threads(threads)
            for offset in range(0, 64, np.dtype(dtype).itemsize * 2):
                out = _at_offset(shape, dtype, offset)
                r = [rm.copy(), rv.copy()]
                _, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=r[0],
                                                      running_var=r[1], out=out)
                test_out = _at_offset(shape, dtype, offset)
                lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                           train=False, out=test_out)
                grads = lec6fast.batchnorm_backward(dout, cache)
                results.add(tuple(a.tobytes() for a in (out, *r, test_out, *grads)))
    finally:
        lec6fast.set_num_threads(saved_threads)
        FAST._set_parallel_min(saved_min)
    assert len(results) == 1

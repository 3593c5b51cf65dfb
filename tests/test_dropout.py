"""Dropout: the fast kernels against the lecture's formula, the mask's statistics, the RNG
contract (Philox4x32-10 keyed from the caller's Generator) and every refusal."""

import pickle

import numpy as np
import pytest

import lec6fast
from lec6fast import _dispatch
from lec6fast import reference as R
from conftest import Bits, normal

LEVELS = _dispatch.available_levels()
DTYPES = [np.float32, np.float64]
PAR_MIN = _dispatch.kernels("_dropout", _dispatch.level)._get_parallel_min("dropout_forward", "float32")
SHAPES = [(), (0,), (1,), (7,), (8,), (9,), (127,), (255,), (256,), (257,), (1000,), (3, 5, 7),
          (2, 0, 3), (PAR_MIN - 1,), (PAR_MIN + 129,), (1_000_003,)]


def data(shape, dtype, seed=0):
    return normal(shape, dtype, seed)


# ---------------------------------------------------------------- the specification: reference.dropout_keep

philox4x32_10 = R.philox4x32_10


def expected_keep(n, p, seed):
    """The documented mask (lec6fast.reference.dropout_keep) of a seed."""
    return R.dropout_keep((n,), p, seed)


# ---------------------------------------------------------------- the generator

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (), (1,), (255,), (257, 3), (4, 5, 67)])
@pytest.mark.parametrize("inverted", [True, False])
def test_the_reference_draws_the_same_mask_from_the_same_generator(dtype, shape, inverted):
    """The reference is the whole specification: the same seed or Generator gives the same
    mask, output and generator state in lec6fast and in lec6fast.reference."""
    x = data(shape, dtype)
    fast_gen, ref_gen = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(3):                                      # one Generator across calls
        out, mask = lec6fast.dropout_forward(x, p=0.6, rng=fast_gen, inverted=inverted)
        want, U = R.dropout_forward(x, p=0.6, rng=ref_gen, inverted=inverted)
        assert Bits.same(out, want)
        np.testing.assert_array_equal(mask.to_array(), U != 0)
    assert fast_gen.bit_generator.state == ref_gen.bit_generator.state
    out, mask = lec6fast.dropout_forward(x, p=0.6, rng=5)
    assert Bits.same(out, R.dropout_forward(x, p=0.6, rng=5)[0])




@pytest.mark.parametrize("level", LEVELS)
def test_philox_known_answers(level):
    # The Random123 known-answer vectors for Philox4x32-10 (counter, key -> output).
    mod = _dispatch.kernels("_dropout", level)
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, want in kat:
        assert mod._philox4x32_10(counter, key) == want
        assert tuple(int(w) for w in philox4x32_10(*counter, *key)) == want   # the NumPy twin too


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("group", [0, 1, 12345, 2**26 - 1, 2**57 + 3])
def test_vector_generator_matches_textbook_blocks(level, group):
    mod = _dispatch.kernels("_dropout", level)
    key, nonce = (0xDEADBEEF, 0x01234567), (0x89ABCDEF, 0xFFFFFFFF)
    u = mod._philox_group(group, key, nonce)
    for b in range(64):
        ctr = group * 64 + b
        want = mod._philox4x32_10((ctr & 0xFFFFFFFF, ctr >> 32, *nonce), key)
        assert tuple(int(u[64 * w + b]) for w in range(4)) == want


@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("n", [1, 255, 256, 1000, 70_001])
def test_mask_is_the_documented_function_of_the_seed(p, n):
    _, mask = lec6fast.dropout_forward(np.ones(n, np.float32), p=p, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(mask.to_array(), expected_keep(n, p, 7))


def test_generator_advances_by_four_raw_draws():
    g = np.random.default_rng(3)
    lec6fast.dropout_forward(np.ones(10), p=0.5, rng=g)
    twin = np.random.default_rng(3)
    twin.bit_generator.random_raw(4)
    assert g.bit_generator.state == twin.bit_generator.state


def test_32_bit_bit_generators_key_all_64_bits():
    # MT19937 draws 32 bits at a time: the key and nonce still get 64 random bits each.
    x = np.ones(100_000)
    m1 = lec6fast.dropout_forward(x, p=0.5, rng=np.random.Generator(np.random.MT19937(1)))[1]
    words = np.random.Generator(np.random.MT19937(1)).bit_generator.random_raw(4)
    assert all(0 < int(w) < 2**32 for w in words) and len(set(int(w) for w in words)) == 4
    assert abs(m1.to_array().mean() - 0.5) < 5 * 0.5 / np.sqrt(x.size)


@pytest.mark.parametrize("make", [lambda: np.random.SeedSequence(9), lambda: np.random.PCG64(9),
                                  lambda: np.random.Philox(9)])
def test_every_seed_numpy_accepts(make):
    want = lec6fast.dropout_forward(np.ones(3000), p=0.5, rng=np.random.default_rng(make()))[1]
    got = lec6fast.dropout_forward(np.ones(3000), p=0.5, rng=make())[1]
    assert got.bits.tobytes() == want.bits.tobytes()


def test_seeds_generators_and_none():
    x = np.ones(5000)
    m_seed = lec6fast.dropout_forward(x, p=0.5, rng=11)[1]
    m_gen = lec6fast.dropout_forward(x, p=0.5, rng=np.random.default_rng(11))[1]
    m_np_int = lec6fast.dropout_forward(x, p=0.5, rng=np.int64(11))[1]
    assert m_seed.bits.tobytes() == m_gen.bits.tobytes() == m_np_int.bits.tobytes()
    fresh = [lec6fast.dropout_forward(x, p=0.5)[1].bits.tobytes() for _ in range(2)]
    assert fresh[0] != fresh[1]          # fresh entropy: a repeat has probability 2**-5000


def test_consecutive_calls_differ_and_replay():
    x = np.ones(4096, np.float32)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    run1 = [lec6fast.dropout_forward(x, p=0.5, rng=g1)[1].bits.tobytes() for _ in range(3)]
    run2 = [lec6fast.dropout_forward(x, p=0.5, rng=g2)[1].bits.tobytes() for _ in range(3)]
    assert run1 == run2
    assert len(set(run1)) == 3


# ---------------------------------------------------------------- against the lecture's formula


# 1/0.37 and 1/0.9 are not float32 numbers (float32 results are double products rounded
# once); 1/0.5, 1/0.8 and 1/0.25 are, which takes the float32 path: the same bits either way.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("inverted", [True, False])
@pytest.mark.parametrize("p", [0.37, 0.9, 0.5, 0.8, 0.25, 1.0])
def test_forward_and_backward_match_the_reference(dtype, shape, inverted, p):
    x = data(shape, dtype)
    out, mask = lec6fast.dropout_forward(x, p=p, rng=1, inverted=inverted)
    assert out.dtype == dtype and out.shape == x.shape and out is not x
    assert mask.shape == x.shape and mask.p == p and mask.inverted == inverted
    # the lecture's x * U (U = keep / p inverted, keep vanilla), with this call's keep-mask
    assert Bits.same(out, R.dropout_backward(x, mask))
    dout = data(shape, dtype, seed=2)
    dx = lec6fast.dropout_backward(dout, mask)
    assert Bits.same(dx, R.dropout_backward(dout, mask))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_non_finite_values_propagate_like_the_reference(dtype, p):
    x = data(1000, dtype)
    x[::7] = np.nan
    x[1::11] = np.inf
    x[2::13] = -np.inf
    x[3::17] = 3e38 if dtype == np.float32 else 1e308       # overflows to inf when kept
    out, mask = lec6fast.dropout_forward(x, p=p, rng=2)
    with np.errstate(invalid="ignore", over="ignore"):      # inf * 0, 3e38 / p in the reference
        want = R.dropout_backward(x, mask)                   # NaN * 0 stays NaN, as in NumPy
        # NaN where the reference has NaN (sign and payload are not promised), all else exact
        for got in (out, lec6fast.dropout_backward(x, mask)):
            assert np.array_equal(np.isnan(got), np.isnan(want))
            assert np.isnan(want).any() and Bits.same(got[~np.isnan(want)], want[~np.isnan(want)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_and_out(dtype):
    x = data(3001, dtype)
    want, wmask = lec6fast.dropout_forward(x, p=0.6, rng=4)
    buf = np.empty_like(x)
    got, _ = lec6fast.dropout_forward(x, p=0.6, rng=4, out=buf)
    assert got is buf and Bits.same(got, want)
    y = x.copy()
    got, mask = lec6fast.dropout_forward(y, p=0.6, rng=4, out=y)
    assert got is y and Bits.same(y, want) and mask.bits.tobytes() == wmask.bits.tobytes()
    dout = data(3001, dtype, seed=9)
    want_dx = lec6fast.dropout_backward(dout, mask)
    got = lec6fast.dropout_backward(dout, mask, out=dout)
    assert got is dout and Bits.same(dout, want_dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_test_mode(dtype):
    x = data((4, 6), dtype)
    out, mask = lec6fast.dropout_forward(x, p=0.3, train=False)
    assert out is x and mask is None                           # inverted: identity, no copy
    buf = np.empty_like(x)
    out, _ = lec6fast.dropout_forward(x, p=0.3, train=False, out=buf)
    assert out is buf and Bits.same(buf, x)
    out, mask = lec6fast.dropout_forward(x, p=0.3, train=False, inverted=False)
    want, _ = R.dropout_forward(x, p=0.3, train=False, inverted=False)
    assert mask is None and Bits.same(out, want)               # vanilla: x * p
    y = x.copy()
    out, _ = lec6fast.dropout_forward(y, p=0.3, train=False, inverted=False, out=y)
    assert out is y and Bits.same(y, want)
    g = np.random.default_rng(0)
    state = g.bit_generator.state
    lec6fast.dropout_forward(x, p=0.3, train=False, rng=g)
    assert g.bit_generator.state == state                      # test mode draws nothing


def test_float32_and_float64_share_the_mask():
    x = data(50_001, np.float64)
    out64, m64 = lec6fast.dropout_forward(x, p=0.45, rng=8)
    out32, m32 = lec6fast.dropout_forward(x.astype(np.float32), p=0.45, rng=8)
    assert m32.bits.tobytes() == m64.bits.tobytes()
    np.testing.assert_allclose(out32, out64, rtol=2e-7, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_on_every_level_and_thread_count(dtype):
    x = data(200_003, dtype)
    dout = data(200_003, dtype, seed=1)
    results = set()
    saved_threads = lec6fast.get_num_threads()
    for level in LEVELS:
        mod = _dispatch.kernels("_dropout", level)
        saved = mod._get_parallel_min()
        try:
            for threads, par_min, chunk in [(1, saved, 0), (2, saved, 0), (2, 1, 0), (3, 1, 0),
                                            (4, 1, 0), (2, 1, 256), (3, 1, 768), (4, 1, 65536)]:
                lec6fast.set_num_threads(threads)
                mod._set_parallel_min(par_min)
                mod._set_chunk(chunk)
                out, mask = mod.dropout_forward(x, p=0.7, rng=6)
                dx = mod.dropout_backward(dout, mask)
                results.add((out.tobytes(), mask.bits.tobytes(), dx.tobytes()))
        finally:
            mod._set_parallel_min(saved)
            mod._set_chunk(0)
            lec6fast.set_num_threads(saved_threads)
    assert len(results) == 1


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 0.9, 0.99, 1.0])
def test_fraction_kept_and_mean(p):
    n = 1_000_000
    x = np.ones(n)
    out, mask = lec6fast.dropout_forward(x, p=p, rng=np.random.default_rng(int(p * 1000)))
    kept = mask.to_array().sum()
    sd = np.sqrt(n * p * (1 - p))
    assert abs(kept - n * p) <= 5 * sd + 1e-9, (kept, n * p, sd)
    if p == 1.0:
        assert kept == n and Bits.same(out, x)
    # inverted dropout preserves the mean: E[out] = x; sd of the sample mean is sqrt((1-p)/(p n))
    assert abs(out.mean() - 1.0) <= 5 * np.sqrt((1 - p) / (p * n)) + 1e-12


def chi2_independence(a, b):
    """Pearson's chi-square statistic of the 2x2 table of two boolean samples (1 dof)."""
    table = np.array([[np.sum(~a & ~b), np.sum(~a & b)], [np.sum(a & ~b), np.sum(a & b)]], float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return ((table - expected) ** 2 / expected).sum()


CHI2_1DOF_1E6 = 23.93      # P(chi2_1 > 23.93) = 1e-6: fixed seeds, so this cannot flake


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("lag", [1, 7, 8, 63, 64, 128, 192, 255, 256, 1024])
def test_neighbouring_elements_are_independent(p, lag):
    keep = lec6fast.dropout_forward(np.ones(400_000), p=p, rng=100 + lag)[1].to_array()
    assert chi2_independence(keep[:-lag], keep[lag:]) < CHI2_1DOF_1E6


def test_consecutive_calls_and_seeds_are_independent():
    x = np.ones(400_000)
    g = np.random.default_rng(21)
    a = lec6fast.dropout_forward(x, p=0.5, rng=g)[1].to_array()
    b = lec6fast.dropout_forward(x, p=0.5, rng=g)[1].to_array()
    c = lec6fast.dropout_forward(x, p=0.5, rng=22)[1].to_array()
    d = lec6fast.dropout_forward(x, p=0.5, rng=23)[1].to_array()
    for u, v in [(a, b), (a, c), (c, d)]:
        assert chi2_independence(u, v) < CHI2_1DOF_1E6


def test_mask_bytes_are_uniform():
    # at p = 0.5 every mask byte value is equally likely: chi-square over 256 cells (255 dof)
    bits = lec6fast.dropout_forward(np.ones(8 * 256 * 400), p=0.5, rng=31)[1].bits
    counts = np.bincount(bits, minlength=256)
    stat = ((counts - 400) ** 2 / 400).sum()
    assert stat < 370            # P(chi2_255 > 370) < 1e-5


# ---------------------------------------------------------------- the mask object


def test_mask_is_compact_and_well_behaved():
    x = np.ones((123, 45), np.float32)
    out, mask = lec6fast.dropout_forward(x, p=0.25, rng=0)
    assert isinstance(mask, lec6fast.DropoutMask)
    assert mask.nbytes == (x.size + 7) // 8 <= x.size / 8 + 1
    keep = mask.to_array()
    assert keep.dtype == np.bool_ and keep.shape == x.shape
    np.testing.assert_array_equal(out != 0, keep)
    assert not mask.bits.flags.writeable
    clone = pickle.loads(pickle.dumps(mask))
    assert Bits.same(lec6fast.dropout_backward(x, clone), lec6fast.dropout_backward(x, mask))
    assert "nbytes" in repr(mask)


# ---------------------------------------------------------------- refusals leave everything as it was


FORWARD_REFUSALS = [
    (TypeError, "x must be a numpy.ndarray", lambda x, o: ([1.0, 2.0], {})),
    (TypeError, "x must have dtype float32 or float64", lambda x, o: (x.astype(np.int64), {})),
    (TypeError, "x must have dtype float32 or float64", lambda x, o: (x.astype(np.float16), {})),
    (TypeError, "x must have dtype", lambda x, o: (x.astype(">f8"), {})),
    (ValueError, "x must be C-contiguous", lambda x, o: (x[:, ::2], {})),
    (ValueError, r"p must be in \(0, 1\], got 0", lambda x, o: (x, {"p": 0.0})),
    (ValueError, r"p must be in \(0, 1\], got 1.5", lambda x, o: (x, {"p": 1.5})),
    (ValueError, r"p must be in \(0, 1\], got -0.2", lambda x, o: (x, {"p": -0.2})),
    (ValueError, r"p must be in \(0, 1\], got nan", lambda x, o: (x, {"p": float("nan")})),
    (TypeError, "p must be a real number", lambda x, o: (x, {"p": "0.5"})),
    (TypeError, "out has dtype float32 but x has float64", lambda x, o: (x, {"out": o.astype(np.float32)})),
    (ValueError, r"out has shape \(6, 5\) but x has shape \(6, 4\)", lambda x, o: (x, {"out": np.empty((6, 5))})),
    (ValueError, "out is read-only", lambda x, o: (x, {"out": Bits.read_only(o)})),
    (ValueError, "out must be C-contiguous", lambda x, o: (x, {"out": np.empty((4, 6)).T})),
    (TypeError, "rng must be a numpy.random.Generator", lambda x, o: (x, {"rng": np.random.RandomState(0)})),
    (ValueError, "rng as a seed must be a non-negative int, got -1", lambda x, o: (x, {"rng": -1})),
    (TypeError, "rng must be a numpy.random.Generator", lambda x, o: (x, {"rng": "seed"})),
    (TypeError, "rng must be a numpy.random.Generator", lambda x, o: (x, {"rng": True})),
    (TypeError, "rng must be a numpy.random.Generator", lambda x, o: (x, {"rng": "x", "train": False})),
    (TypeError, "train must be True or False, got 'no'", lambda x, o: (x, {"train": "no"})),
    (TypeError, "inverted must be True or False, got 1", lambda x, o: (x, {"inverted": 1})),
    (TypeError, "p must be a real number, got True", lambda x, o: (x, {"p": True})),
    (TypeError, "out must be None or a numpy.ndarray", lambda x, o: (x, {"out": [0.0] * 24})),
    (TypeError, "x is a numpy.ma.MaskedArray", lambda x, o: (np.ma.masked_array(x, mask=x > 0), {})),
]


@pytest.mark.parametrize("exc, match, make", FORWARD_REFUSALS)
def test_forward_refusals_change_nothing(exc, match, make):
    x = data((6, 4), np.float64)
    o = np.full((6, 4), 3.0)
    arg, kw = make(x, o)
    kw = {"p": 0.5, "rng": np.random.default_rng(0), **kw}
    watched = [v for v in [arg, *kw.values()] if isinstance(v, np.ndarray)]
    before = Bits.snapshot(*watched)
    gen = kw["rng"] if isinstance(kw["rng"], np.random.Generator) else None
    state = gen.bit_generator.state if gen is not None else None
    with pytest.raises(exc, match=match):
        lec6fast.dropout_forward(arg, **kw)
    assert Bits.snapshot(*watched) == before
    if gen is not None:
        assert gen.bit_generator.state == state      # a refused call draws nothing


def test_out_over_exactly_x_is_in_place():
    x = data(1000, np.float64)
    want, _ = lec6fast.dropout_forward(x, p=0.4, rng=3)
    y = x.copy()
    got, _ = lec6fast.dropout_forward(y, p=0.4, rng=3, out=y[...])     # another view, same memory
    assert Bits.same(y, want) and Bits.same(got, want)


def test_backward_refuses_out_over_the_mask():
    x = data(1000, np.float32)
    _, mask = lec6fast.dropout_forward(x, p=0.5, rng=0)
    out = np.zeros(1000, np.float32)
    bits = out.view(np.uint8)[:125]
    bits[...] = mask.bits
    tampered = lec6fast.DropoutMask(bits, (1000,), 0.5, True)
    before = out.tobytes()
    with pytest.raises(ValueError, match="out shares memory with mask.bits"):
        lec6fast.dropout_backward(x, tampered, out=out)
    assert out.tobytes() == before


def test_forward_refuses_out_overlapping_x():
    buf = np.arange(20.0)
    x, out = buf[:-2], buf[2:]
    before = buf.tobytes()
    with pytest.raises(ValueError, match="out shares memory with x"):
        lec6fast.dropout_forward(x, p=0.5, rng=0, out=out)
    assert buf.tobytes() == before


def test_backward_refusals_change_nothing():
    x = data(100, np.float32)
    _, mask = lec6fast.dropout_forward(x, p=0.5, rng=0)
    dout = data(100, np.float32, seed=1)
    out = np.zeros(100, np.float32)
    before = Bits.snapshot(dout, out)
    cases = [
        (TypeError, "mask must be the DropoutMask", lambda: lec6fast.dropout_backward(dout, mask.to_array())),
        (TypeError, "mask must be the DropoutMask", lambda: lec6fast.dropout_backward(dout, None)),
        (ValueError, r"mask is for shape \(100,\) but dout has shape \(10, 10\)",
         lambda: lec6fast.dropout_backward(dout.reshape(10, 10), mask)),
        (TypeError, "dout must have dtype float32 or float64", lambda: lec6fast.dropout_backward(dout.astype(int), mask)),
        (TypeError, "dout must be a numpy.ndarray", lambda: lec6fast.dropout_backward(list(dout), mask)),
        (TypeError, "out has dtype float64 but dout has float32",
         lambda: lec6fast.dropout_backward(dout, mask, out=np.zeros(100))),
        (ValueError, "out is read-only", lambda: lec6fast.dropout_backward(dout, mask, out=Bits.read_only(out))),
        (ValueError, "mask.bits is not the packed mask",
         lambda: lec6fast.dropout_backward(dout, lec6fast.DropoutMask(mask.bits[:5], (100,), 0.5, True))),
        (ValueError, r"mask.p must be in \(0, 1\]",
         lambda: lec6fast.dropout_backward(dout, lec6fast.DropoutMask(mask.bits, (100,), 0.0, True), out=out)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
        assert Bits.snapshot(dout, out) == before

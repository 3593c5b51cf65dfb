"""What the update kernels accept and what they refuse (issue 2, "Inputs").

Every refusal is checked to leave every array bit for bit as it was: each test builds a call
that *would* change its outputs if it ran (random data, lr > 0), snapshots the raw bytes of
every array involved (and of any buffer they are views of), and compares after the error.
"""

import re

import numpy as np
import pytest

import lec6fast
from lec6fast import reference

SHAPE = (6,)


def refused(bits, exc, match, fn, args, hyper, watch=()):
    """fn(*args, **hyper) raises exc matching `match`, and no array (in args or watch) changed."""
    arrays = [a for a in (*args, *watch) if isinstance(a, np.ndarray)]
    before = bits.snapshot(*arrays)
    with pytest.raises(exc, match=match) as info:
        fn(*args, **hyper)
    assert bits.snapshot(*arrays) == before, f"{fn.__name__} wrote before refusing: {info.value}"
    return info.value


def args_of(kernel, arrays):
    return [arrays[a] for a in kernel.arrays]


def positions(kernel):
    return list(enumerate(kernel.arrays))


# ---------------------------------------------------------------- not an array, wrong dtype

@pytest.mark.parametrize("value", [[0.5] * 6, 0.5, None, (0.5,) * 6],
                         ids=["list", "scalar", "None", "tuple"])
def test_non_array_is_type_error(kernel, dtype, rng, bits, value):
    for i, name in positions(kernel):
        args = args_of(kernel, kernel.make(SHAPE, dtype, rng))
        args[i] = value
        refused(bits, TypeError, rf"^{kernel.name}: {name} must be a numpy\.ndarray .*got "
                                 rf"{type(value).__name__}", kernel.fast, args, kernel.hyper())


BAD_DTYPES = [np.int64, np.int32, np.float16, np.complex64, np.complex128, object, np.bool_,
              np.uint8]
if np.dtype(np.longdouble).itemsize not in (4, 8):      # a distinct extended type on this platform
    BAD_DTYPES.append(np.longdouble)


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_wrong_dtype_is_type_error(kernel, dtype, rng, bits, bad):
    for i, name in positions(kernel):
        arrays = kernel.make(SHAPE, dtype, rng)
        arrays[kernel.arrays[i]] = (10 * rng.standard_normal(SHAPE)).astype(bad)
        refused(bits, TypeError, rf"^{kernel.name}: {name} .*{re.escape(str(np.dtype(bad)))}",
                kernel.fast, args_of(kernel, arrays), kernel.hyper())


def test_mixed_float32_float64_is_type_error(kernel, dtype, rng, bits):
    other = np.float64 if dtype == np.float32 else np.float32
    o, d = np.dtype(other).name, np.dtype(dtype).name
    first = kernel.arrays[0]
    for i, name in positions(kernel):
        arrays = kernel.make(SHAPE, dtype, rng)
        arrays[name] = arrays[name].astype(other)
        if i == 0:      # x itself differs: the first other array is reported against it
            match = rf"^{kernel.name}: {kernel.arrays[1]} has dtype {d} but {first} has {o}$"
        else:
            match = rf"^{kernel.name}: {name} has dtype {o} but {first} has {d}$"
        refused(bits, TypeError, match, kernel.fast, args_of(kernel, arrays), kernel.hyper())


def test_message_example_from_issue(rng, bits, kernel_table):
    k = kernel_table["adam_"]
    arrays = k.make(SHAPE, np.float32, rng)
    arrays["m"] = arrays["m"].astype(np.float64)
    refused(bits, TypeError, r"^adam_: m has dtype float64 but x has float32$",
            k.fast, args_of(k, arrays), k.hyper())


def test_non_native_byte_order_is_type_error(kernel, dtype, rng, bits):
    swapped = np.dtype(dtype).newbyteorder()
    for i, name in positions(kernel):
        arrays = kernel.make(SHAPE, dtype, rng)
        arrays[name] = arrays[name].astype(swapped)
        assert arrays[name].dtype.str == swapped.str and not arrays[name].dtype.isnative
        refused(bits, TypeError, rf"^{kernel.name}: {name} .*{re.escape(swapped.str)}",
                kernel.fast, args_of(kernel, arrays), kernel.hyper())


# ---------------------------------------------------------------- shapes and layout

@pytest.mark.parametrize("x_shape, other", [((6,), (7,)), ((6,), (1, 6)), ((6,), (6, 1)),
                                            ((1,), ()), ((2, 3), (3, 2)), ((0,), (0, 3)),
                                            ((6,), (1,))], ids=str)
def test_mismatched_shapes_are_value_error(kernel, dtype, rng, bits, x_shape, other):
    for i, name in positions(kernel):
        for this, rest in ((other, x_shape), (x_shape, other)):
            arrays = kernel.make(rest, dtype, rng)
            arrays[name] = np.asarray(kernel.init[name](rng, this), dtype=dtype)
            reported = name if i else kernel.arrays[1]
            refused(bits, ValueError, rf"^{kernel.name}: {reported} has shape .* but "
                                      rf"{kernel.arrays[0]} has shape",
                    kernel.fast, args_of(kernel, arrays), kernel.hyper())


def _non_contiguous(kind, dtype, rng):
    """(array, its base buffer, shape) for a non-C-contiguous layout of the given kind."""
    if kind == "step-slice":
        base = rng.standard_normal(12).astype(dtype)
        return base[::2], base
    if kind == "reversed":
        base = rng.standard_normal(6).astype(dtype)
        return base[::-1], base
    if kind == "column-slice":
        base = rng.standard_normal((3, 5)).astype(dtype)
        return base[:, :4], base
    if kind == "transpose":
        base = rng.standard_normal((4, 3)).astype(dtype)
        return base.T, base
    if kind == "fortran":
        arr = np.asfortranarray(rng.standard_normal((3, 4)).astype(dtype))
        return arr, arr
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["step-slice", "reversed", "column-slice", "transpose", "fortran"])
def test_non_contiguous_is_value_error(kernel, dtype, rng, bits, kind):
    for i, name in positions(kernel):
        bad, base = _non_contiguous(kind, dtype, rng)
        assert not bad.flags.c_contiguous
        if name == "cache" or (kernel.name == "adam_" and name == "v"):
            np.abs(base, out=base)
        arrays = kernel.make(bad.shape, dtype, rng)
        arrays[name] = bad
        refused(bits, ValueError, rf"^{kernel.name}: {name} must be C-contiguous",
                kernel.fast, args_of(kernel, arrays), kernel.hyper(), watch=[base])


# ---------------------------------------------------------------- writeability

def test_read_only_output_is_value_error(kernel, dtype, rng, bits):
    for name in kernel.outputs:
        arrays = kernel.make(SHAPE, dtype, rng)
        arrays[name].flags.writeable = False
        refused(bits, ValueError, rf"^{kernel.name}: {name} is read-only",
                kernel.fast, args_of(kernel, arrays), kernel.hyper())


def test_output_backed_by_immutable_bytes_is_value_error(kernel, dtype, rng, bits):
    for name in kernel.outputs:
        arrays = kernel.make(SHAPE, dtype, rng)
        arrays[name] = np.frombuffer(arrays[name].tobytes(), dtype=dtype)
        refused(bits, ValueError, rf"^{kernel.name}: {name} is read-only",
                kernel.fast, args_of(kernel, arrays), kernel.hyper())


@pytest.mark.parametrize("how", ["flag", "frombuffer-bytes", "read-only-view"])
def test_read_only_input_is_accepted(kernel, dtype, rng, bits, how):
    """dx (x in ema_) is only read, so it may be read-only; the result equals the reference."""
    arrays = kernel.make((5, 7), dtype, rng)
    ref = {a: arr.copy() for a, arr in arrays.items()}
    inp = kernel.input
    if how == "flag":
        arrays[inp].flags.writeable = False
    elif how == "frombuffer-bytes":
        arrays[inp] = np.frombuffer(arrays[inp].tobytes(), dtype=dtype).reshape(5, 7)
    else:
        view = arrays[inp].view()
        view.flags.writeable = False
        arrays[inp] = view
    assert not arrays[inp].flags.writeable
    kernel.call(kernel.fast, arrays, **kernel.hyper())
    kernel.call(kernel.ref, ref, **kernel.hyper())
    for a in kernel.arrays:
        bits.assert_equal(arrays[a], ref[a], f"{kernel.name} {a}")


# ---------------------------------------------------------------- overlapping memory

def _pairs_with_an_output(kernel):
    names = kernel.arrays
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))
            if names[i] in kernel.outputs or names[j] in kernel.outputs]


def test_same_array_twice_is_value_error(kernel, dtype, rng, bits):
    pairs = _pairs_with_an_output(kernel)
    assert pairs
    for a, b in pairs:
        arrays = kernel.make(SHAPE, dtype, rng)
        np.abs(arrays[a], out=arrays[a])        # valid as cache / second moment too
        arrays[b] = arrays[a]
        refused(bits, ValueError, rf"^{kernel.name}: \w+ shares memory with \w+",
                kernel.fast, args_of(kernel, arrays), kernel.hyper())


@pytest.mark.parametrize("shift", [1, 5], ids=["by-one-element", "by-all-but-one"])
def test_overlapping_views_are_value_error(kernel, dtype, rng, bits, shift):
    n = 6
    for a, b in _pairs_with_an_output(kernel):
        for first, second in ((a, b), (b, a)):
            buf = np.abs(rng.standard_normal(n + shift)).astype(dtype)
            arrays = kernel.make((n,), dtype, rng)
            arrays[first], arrays[second] = buf[:n], buf[shift:shift + n]
            refused(bits, ValueError, rf"^{kernel.name}: \w+ shares memory with \w+",
                    kernel.fast, args_of(kernel, arrays), kernel.hyper(), watch=[buf])


def test_overlapping_2d_views_are_value_error(kernel, dtype, rng, bits):
    buf = np.abs(rng.standard_normal((5, 4))).astype(dtype)
    a, b = _pairs_with_an_output(kernel)[0]
    arrays = kernel.make((4, 4), dtype, rng)
    arrays[a], arrays[b] = buf[:4], buf[1:]
    refused(bits, ValueError, rf"^{kernel.name}: \w+ shares memory with \w+",
            kernel.fast, args_of(kernel, arrays), kernel.hyper(), watch=[buf])


def test_output_sharing_memory_with_read_only_input_is_value_error(kernel, dtype, rng, bits):
    """A read-only view of an output's memory is still that memory."""
    out = kernel.outputs[0]
    arrays = kernel.make(SHAPE, dtype, rng)
    view = arrays[out].view()
    view.flags.writeable = False
    arrays[kernel.input] = view
    refused(bits, ValueError, rf"^{kernel.name}: \w+ shares memory with \w+",
            kernel.fast, args_of(kernel, arrays), kernel.hyper())


def test_adjacent_views_of_one_buffer_are_accepted(kernel, dtype, rng, bits):
    """Views that touch but do not overlap are separate arrays."""
    n, k = 37, len(kernel.arrays)
    buf = np.empty(n * k, dtype=dtype)
    fresh = kernel.make((n,), dtype, rng)
    arrays = {}
    for i, a in enumerate(kernel.arrays):
        arrays[a] = buf[i * n:(i + 1) * n]
        arrays[a][...] = fresh[a]
    kernel.call(kernel.fast, arrays, **kernel.hyper())
    kernel.call(kernel.ref, fresh, **kernel.hyper())
    for a in kernel.arrays:
        bits.assert_equal(arrays[a], fresh[a], f"{kernel.name} {a}")


# ---------------------------------------------------------------- hyperparameters

BAD_VALUES = {          # numbers out of range: ValueError
    "nonneg": [-1.0, -1e-300, float("nan"), float("inf"), -float("inf"), np.float64(-0.5),
               np.float32("nan"), -1],
    "positive": [0.0, -0.0, -1e-7, float("nan"), float("inf"), np.float64(0.0), 0],
    "unit": [-0.1, 1.0, 1.5, float("nan"), float("inf"), -float("inf"), 1, np.float64(1.0),
             np.float32(-1e-3)],
    "step": [0, -1, np.int64(0), np.int64(-5)],
}
WRONG_TYPES = {         # not numbers of the kind asked for: TypeError
    "nonneg": ["0.1", None, 1j, True, np.array([0.1])],
    "positive": ["1e-7", None, True],
    "unit": ["0.9", None, False],
    "step": [1.5, 2.0, "3", None, np.float64(2.0), True],
}


@pytest.mark.parametrize("error,table", [(ValueError, BAD_VALUES), (TypeError, WRONG_TYPES)])
def test_bad_hyperparameters_are_refused(kernel, dtype, rng, bits, error, table):
    checked = 0
    for name, kind in kernel.ranges.items():
        for value in table[kind]:
            arrays = kernel.make(SHAPE, dtype, rng)
            err = refused(bits, error,
                          rf"^{kernel.name}: {name} .*got {re.escape(repr(value))}",
                          kernel.fast, args_of(kernel, arrays), kernel.hyper(**{name: value}))
            assert str(err).startswith(f"{kernel.name}: {name} ")
            checked += 1
    assert checked >= len(kernel.ranges) * 3


def test_edge_values_in_range_are_accepted(kernel, dtype, rng, bits):
    """The closed ends of every range: lr = 0, unit parameters = 0, smallest eps, t = 1."""
    edge = {"nonneg": 0.0, "positive": 5e-324, "unit": 0.0, "step": 1}
    for name, kind in kernel.ranges.items():
        arrays = kernel.make(SHAPE, dtype, rng)
        want = {a: arr.copy() for a, arr in arrays.items()}
        hyper = kernel.hyper(**{name: edge[kind]})
        with np.errstate(all="ignore"):
            assert kernel.call(kernel.fast, arrays, **hyper) is None
            kernel.call(kernel.ref, want, **hyper)
        for a in kernel.arrays:            # and computed what the reference computes there
            bits.assert_equal_nan(arrays[a], want[a], f"{kernel.name} {name}={edge[kind]} {a}")


def test_missing_and_positional_hyperparameters_are_type_error(kernel_table, rng, bits):
    k = kernel_table
    a = {n: k[n].make(SHAPE, np.float64, rng) for n in k}

    def args(n):
        return args_of(k[n], a[n])

    for name in [n for n in k if "lr" in k[n].ranges]:
        hyper = k[name].hyper(t=1)
        del hyper["lr"]
        refused(bits, TypeError, rf"^{name}\(\).*\blr\b", k[name].fast, args(name), hyper)
    refused(bits, TypeError, r"^adam_\(\).*\bt\b", k["adam_"].fast, args("adam_"),
            {"lr": 1e-3})
    positional = [("sgd_", [0.1]), ("momentum_", [0.1]), ("nesterov_", [0.1, 0.9]),
                  ("adagrad_", [0.1]), ("rmsprop_", [0.1]), ("adam_", [1, 1e-3]), ("ema_", [0.9])]
    for name, extra in positional:
        refused(bits, TypeError, "positional", k[name].fast, args(name) + extra, {})
        hyper = k[name].hyper(t=1)
        refused(bits, TypeError, "positional", k[name].fast, args(name) + extra[:1], hyper)
    refused(bits, TypeError, "unexpected keyword", k["sgd_"].fast, args("sgd_"),
            {"lr": 0.1, "mu": 0.9})
    refused(bits, TypeError, "positional", k["momentum_"].fast, args("momentum_")[:2], {"lr": 0.1})


# ---------------------------------------------------------------- other refusals

def test_unaligned_array_is_refused_without_writing(kernel, rng, bits):
    """A misaligned float64 view of a byte buffer: refused (ValueError), nothing written."""
    raw = np.zeros(8 * 6 + 1, dtype=np.uint8)
    for name in kernel.arrays:
        arrays = kernel.make(SHAPE, np.float64, rng)
        bad = raw[1:].view(np.float64)
        bad[...] = np.abs(arrays[name])
        assert not bad.flags.aligned
        arrays[name] = bad
        refused(bits, ValueError, rf"^{kernel.name}: {name} is not aligned",
                kernel.fast, args_of(kernel, arrays), kernel.hyper(), watch=[raw])


# ---------------------------------------------------------------- accepted inputs

def test_zero_dimensional_arrays(kernel, dtype, rng, bits):
    arrays = kernel.make((), dtype, rng)
    ref = {a: arr.copy() for a, arr in arrays.items()}
    for t in (1, 2, 3):
        kernel.call(kernel.fast, arrays, **kernel.hyper(t=t))
        kernel.call(kernel.ref, ref, **kernel.hyper(t=t))
    for a in kernel.arrays:
        assert arrays[a].shape == () and arrays[a].dtype == dtype
        bits.assert_equal(arrays[a], ref[a], f"{kernel.name} {a}")


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0, 2)], ids=str)
def test_empty_arrays_are_a_no_op(kernel, dtype, bits, shape):
    """Empty views into the middle of larger buffers: the call returns None, and not a byte of
    the buffers around them changes (an empty call must not touch memory next to its arrays)."""
    buffers = {a: np.full(64, -3.5, dtype=dtype) for a in kernel.arrays}
    arrays = {a: buf[32:32].reshape(shape) for a, buf in buffers.items()}
    before = bits.snapshot(*buffers.values())
    assert kernel.call(kernel.fast, arrays, **kernel.hyper()) is None
    for a in kernel.arrays:
        assert arrays[a].shape == shape and arrays[a].dtype == dtype
    assert bits.snapshot(*buffers.values()) == before


def test_empty_arrays_still_validated(kernel, bits):
    """An empty call is a no-op, but a refused one is still refused."""
    arrays = {a: np.empty((0,), dtype=np.float64) for a in kernel.arrays}
    arrays[kernel.arrays[1]] = np.empty((0,), dtype=np.float32)
    refused(bits, TypeError, kernel.name, kernel.fast, args_of(kernel, arrays), kernel.hyper())
    arrays[kernel.arrays[1]] = np.empty((0, 1), dtype=np.float64)
    refused(bits, ValueError, kernel.name, kernel.fast, args_of(kernel, arrays), kernel.hyper())
    arrays[kernel.arrays[1]] = np.empty((0,), dtype=np.float64)
    name, kind = next(iter(kernel.ranges.items()))
    hyper = kernel.hyper(**{name: 0 if kind == "step" else float("nan")})
    refused(bits, ValueError, kernel.name, kernel.fast, args_of(kernel, arrays), hyper)


class Tagged(np.ndarray):
    """A trivial ndarray subclass (same memory layout, extra attribute)."""

    tag = "tagged"


def test_ndarray_subclass_is_updated_in_place(kernel, dtype, rng, bits):
    arrays = kernel.make((4, 9), dtype, rng)
    ref = {a: arr.copy() for a, arr in arrays.items()}
    sub = {a: arr.view(Tagged) for a, arr in arrays.items()}
    kernel.call(kernel.fast, sub, **kernel.hyper())
    kernel.call(kernel.ref, ref, **kernel.hyper())
    for a in kernel.arrays:
        assert type(sub[a]) is Tagged
        bits.assert_equal(np.asarray(sub[a]), ref[a], f"{kernel.name} {a}")


def test_memmap_is_updated_in_place(kernel, dtype, rng, bits, tmp_path):
    arrays = kernel.make((257,), dtype, rng)
    ref = {a: arr.copy() for a, arr in arrays.items()}
    maps = {}
    for a, arr in arrays.items():
        maps[a] = np.memmap(tmp_path / f"{a}.bin", dtype=dtype, mode="w+", shape=arr.shape)
        maps[a][...] = arr
    kernel.call(kernel.fast, maps, **kernel.hyper())
    kernel.call(kernel.ref, ref, **kernel.hyper())
    for a in kernel.arrays:
        maps[a].flush()
        on_disk = np.fromfile(tmp_path / f"{a}.bin", dtype=dtype)
        bits.assert_equal(on_disk, ref[a], f"{kernel.name} {a} (memmap)")


def test_contiguous_views_are_accepted(kernel, dtype, rng, bits):
    """Offset slices, reshapes and (1, n) Fortran arrays are C-contiguous: accepted."""
    for make_view in (lambda b: b[3:3 + 12], lambda b: b[:12].reshape(3, 4),
                      lambda b: np.asfortranarray(b[:12].reshape(1, 12))):
        arrays, ref = {}, {}
        for a in kernel.arrays:
            base = np.abs(rng.standard_normal(20)).astype(dtype)
            arrays[a] = make_view(base)
            assert arrays[a].flags.c_contiguous
            ref[a] = arrays[a].copy()
        kernel.call(kernel.fast, arrays, **kernel.hyper())
        kernel.call(kernel.ref, ref, **kernel.hyper())
        for a in kernel.arrays:
            bits.assert_equal(arrays[a], ref[a], f"{kernel.name} {a}")


def test_masked_arrays_are_refused(kernel, dtype, rng, bits):
    """A MaskedArray's mask would be ignored (every element updated): refused, nothing written."""
    arrays = kernel.make(SHAPE, dtype, rng)
    for a in kernel.arrays:
        masked = dict(arrays)
        masked[a] = np.ma.masked_array(arrays[a], mask=np.zeros(SHAPE, bool))
        refused(bits, TypeError, rf"^{kernel.name}: {a} is a numpy.ma.MaskedArray",
                kernel.fast, args_of(kernel, masked), kernel.hyper())


# ---------------------------------------------------------------- rough edges a new user meets

def test_unbuilt_source_folder_says_what_shadows_what(tmp_path):
    """`import lec6fast` where a lec6fast/ folder of sources without compiled modules comes
    first on sys.path (the repository root, where the README's commands leave the user)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    src = Path(lec6fast.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "lec6fast", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    proc = subprocess.run([sys.executable, "-c", "import lec6fast"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "compiled kernels are missing" in proc.stderr
    assert "run from another folder" in proc.stderr and "build_ext --inplace" in proc.stderr


def test_a_torch_tensor_gets_told_how_to_pass_it():
    Tensor = type("Tensor", (), {"__module__": "torch"})
    Parameter = type("Parameter", (), {"__module__": "torch.nn.parameter"})
    x = np.zeros(4)
    for fake in (Tensor(), Parameter()):
        with pytest.raises(TypeError, match=r"dx must be a numpy\.ndarray .* got \w+; for a CPU torch "
                                            r"tensor pass dx\.detach\(\)\.numpy\(\)"):
            lec6fast.sgd_(x, fake, lr=0.1)
    with pytest.raises(TypeError, match=r"out\.detach\(\)\.numpy\(\)"):
        lec6fast.dropout_forward(x, p=0.5, out=Tensor())
    with pytest.raises(TypeError) as e:
        lec6fast.sgd_(x, [0.0] * 4, lr=0.1)
    assert "torch" not in str(e.value)


@pytest.mark.parametrize("shape, what", [((1, 5), "feature"), ((1, 3, 1, 1), "channel")])
def test_batchnorm_train_refuses_one_value_per_feature(shape, what):
    x = np.ones(shape)
    d = shape[1]
    kw = dict(running_mean=np.zeros(d), running_var=np.ones(d))
    with pytest.raises(ValueError, match=rf"expected more than 1 value per {what} when training"):
        lec6fast.batchnorm_forward(x, np.ones(d), np.zeros(d), **kw)
    assert np.all(kw["running_mean"] == 0) and np.all(kw["running_var"] == 1)
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        reference.batchnorm_forward(x, np.ones(d), np.zeros(d), **kw)
    out, cache = lec6fast.batchnorm_forward(x, np.ones(d), np.zeros(d), train=False, **kw)
    assert cache is None and out.shape == shape
    two = np.concatenate([x, 2 * x])                     # two values per feature: fine
    lec6fast.batchnorm_forward(two, np.ones(d), np.zeros(d), **kw)


@pytest.mark.parametrize("seed", [[1, 2, 3], (7,), np.array([5, 6], dtype=np.uint32)])
def test_dropout_takes_every_seed_default_rng_takes(seed):
    x = np.ones(1000)
    out, mask = lec6fast.dropout_forward(x, p=0.5, rng=seed)
    ref, ref_mask = lec6fast.dropout_forward(x, p=0.5, rng=np.random.default_rng(seed))
    assert out.tobytes() == ref.tobytes() and mask.bits.tobytes() == ref_mask.bits.tobytes()
    with pytest.raises(ValueError, match="rng must be .* a seed that numpy.random.default_rng accepts"):
        lec6fast.dropout_forward(x, p=0.5, rng=[-1])


def test_dropout_docstring_gives_the_one_generator_pattern():
    doc = lec6fast.dropout_forward.__doc__
    assert "Create one Generator and pass it on every step" in doc
    x = np.ones(4096)
    same = [lec6fast.dropout_forward(x, p=0.5, rng=3)[1].bits.tobytes() for _ in range(2)]
    assert same[0] == same[1]                     # what the docstring warns about
    rng = np.random.default_rng(3)
    differ = [lec6fast.dropout_forward(x, p=0.5, rng=rng)[1].bits.tobytes() for _ in range(2)]
    assert differ[0] != differ[1]


def test_two_memmaps_of_one_file_alias_unseen(tmp_path):
    """The documented limit of the overlap check: it compares addresses, and two maps of one
    file have different ones.  (The README says so; this records that it is still true.)"""
    path = tmp_path / "w.bin"
    np.zeros(1024).tofile(path)
    a = np.memmap(path, dtype=np.float64, mode="r+", shape=(1024,))
    b = np.memmap(path, dtype=np.float64, mode="r+", shape=(1024,))
    assert not np.shares_memory(a, b)
    lec6fast.momentum_(a, np.ones(1024), b, lr=0.5, mu=0.0)   # accepted: no check can see it
    a.flush()
    del a, b

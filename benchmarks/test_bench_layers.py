"""Dropout (forward allocating its output, forward into a preallocated out, backward into out)
at float32 and float64 and 1e3, 1e5 and 1.6e7 elements, and batch normalization forward +
backward at (256, 4096) and (64, 64, 32, 32): each group holds lec6fast, its NumPy reference
and, when torch imports, the closest torch CPU call (F.dropout, aten.native_dropout_backward,
F.batch_norm with autograd).  The cases come from lec6fast._bench's registry; run with
--lec6fast-threads=1 for the single-thread figures."""

import pytest

from lec6fast import _bench

IMPLS = ("lec6fast", "reference") + (("torch",) if _bench.import_torch() is not None else ())

CASES = [pytest.param(name, dtype, shape, impl,
                      id=f"{name}-{dtype}-{_bench.shape_label(shape)}-{impl}")
         for name, kernel in _bench.KERNELS.items() if kernel.family != "_updates"
         for dtype in _bench.DTYPES
         for shape in kernel.shapes_for(_bench.DEFAULT_SIZES)
         for impl in IMPLS if impl != "torch" or kernel.torch is not None]


@pytest.mark.parametrize("name, dtype, shape, impl", CASES)
def test_layer(run_call, arrays_for, name, dtype, shape, impl):
    kernel = _bench.KERNELS[name]
    arrays = arrays_for(kernel, dtype, shape)
    label, call = kernel.call_of(impl, arrays)
    run_call(call, kernel=kernel, dtype=dtype, shape=shape, impl=impl, label=label)

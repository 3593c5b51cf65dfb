"""Dropout (forward allocating its output, forward into a preallocated out, backward into out)
at float32 and float64 and 1e3, 1e5 and 1.6e7 elements, and batch normalization forward +
backward at (256, 4096) and (64, 64, 32, 32): each group holds lec6fast, its NumPy reference
and, when torch imports, the closest torch CPU call (F.dropout, aten.native_dropout_backward,
F.batch_norm with autograd).  The cases come from lec6fast.bench.cases' registry; run with
--lec6fast-threads=1 for the single-thread figures."""

import pytest

from lec6fast.bench import cases
from lec6fast.bench.torch_twins import import_torch

IMPLS = ("lec6fast", "reference") + (("torch",) if import_torch() is not None else ())

CASES = [pytest.param(name, dtype, shape, impl,
                      id=f"{name}-{dtype}-{cases.shape_label(shape)}-{impl}")
         for name, kernel in cases.KERNELS.items() if kernel.family != "_updates"
         for dtype in cases.DTYPES
         for shape in kernel.shapes_for(cases.DEFAULT_SIZES)
         for impl in IMPLS if impl != "torch" or kernel.torch is not None]


@pytest.mark.parametrize("name, dtype, shape, impl", CASES)
def test_layer(run_call, arrays_for, name, dtype, shape, impl):
    kernel = cases.KERNELS[name]
    arrays = arrays_for(kernel, dtype, shape)
    label, call = kernel.call_of(impl, arrays)
    run_call(call, kernel=kernel, dtype=dtype, shape=shape, impl=impl, label=label)

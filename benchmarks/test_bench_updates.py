"""The update kernels (sgd_, momentum_, nesterov_, adagrad_, rmsprop_, adam_, ema_) at float32
and float64 and 1e3, 1e5 and 1.6e7 elements, each group holding lec6fast, its NumPy reference
and, when torch imports, the closest torch CPU optimizer (fused where torch has it on the CPU,
else foreach; `extra_info["impl"]` says which)."""

import pytest

from lec6fast.bench import cases
from lec6fast.bench.torch_twins import import_torch

IMPLS = ("lec6fast", "reference") + (("torch",) if import_torch() is not None else ())

CASES = [pytest.param(name, dtype, n, impl, id=f"{name}-{dtype}-{cases.size_label(n)}-{impl}")
         for name, kernel in cases.KERNELS.items() if kernel.family == "_updates"
         for dtype in cases.DTYPES
         for n in cases.DEFAULT_SIZES
         for impl in IMPLS if impl != "torch" or kernel.torch is not None]


@pytest.mark.parametrize("name, dtype, n, impl", CASES)
def test_update(run_call, arrays_for, name, dtype, n, impl):
    kernel = cases.KERNELS[name]
    arrays = arrays_for(kernel, dtype, (n,))
    label, call = kernel.call_of(impl, arrays)
    run_call(call, kernel=kernel, dtype=dtype, shape=(n,), impl=impl, label=label)

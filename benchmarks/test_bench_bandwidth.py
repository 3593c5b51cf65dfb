"""Bandwidth probes of the kernel modules (same SIMD level, threads and driver as the kernels),
at the sizes and dtypes of the update benchmarks, so their GB/s can be read against these:
_copy (dst = src, 2 arrays moved), _triad (a = b + s*c, 3), _scale_ (x *= s in place, 2:
the pure read-modify-write stream of an in-place update)."""

import pytest

from lec6fast.bench import cases

CASES = [pytest.param(name, dtype, n, id=f"{name}-{dtype}-{cases.size_label(n)}")
         for dtype in cases.DTYPES for n in cases.DEFAULT_SIZES for name in cases.PROBES]


@pytest.mark.parametrize("name, dtype, n", CASES)
def test_bandwidth(run_call, arrays_for, name, dtype, n):
    probe = cases.PROBES[name]
    arrays = arrays_for(probe, dtype, (n,))
    run_call(probe.fast_call(arrays), kernel=probe, dtype=dtype, shape=(n,), impl="lec6fast")

"""The contention section: the kernels where users run them (lec6fast/_contention.py), each
case timed on one thread and on lec6fast's default thread count (or --lec6fast-threads), the
two in one group:

- matmul: ``a @ b`` (NumPy, 100x256 @ 256x128) then adam_, sgd_, dropout_forward or batch norm
  forward+backward, at 1e4, 1e5 and 1e6 elements;
- busy: every kernel at 1e5, 1e6 and 1.6e7 elements while another process spins on a core;
- torch: torch's pool used, then a NumPy multiply and dropout_backward at 1.6e7 (with torch);
- mlp: a training step of the 3-layer MLP on load_digits, also in plain NumPy.

`lec6fast bench --sections contention` times the same cases with the two thread counts'
batches interleaved, which gives steadier ratios on a shared machine.
"""

import math

import numpy as np
import pytest

import lec6fast
from lec6fast import _bench, _contention, reference

BATCH_TIME = 2e-3
THREADS = ("1 thread", "threads")


def _time(benchmark, fn, threads):
    saved = lec6fast.get_num_threads()
    if threads == "1 thread":
        lec6fast.set_num_threads(1)
    benchmark.extra_info["lec6fast threads"] = lec6fast.get_num_threads()
    try:
        if benchmark.disabled:
            benchmark.pedantic(fn)
            return
        call = _bench.Call(fn)
        iterations, t = _bench.calibrate(call, BATCH_TIME)
        rounds = max(benchmark._min_rounds, min(200, math.ceil(benchmark._max_time / t)))
        benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
    finally:
        lec6fast.set_num_threads(saved)


@pytest.fixture(scope="module")
def busy():
    with _contention.busy_process():
        yield


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("n", _contention.MATMUL_SIZES, ids=_bench.size_label)
@pytest.mark.parametrize("name", _contention.MATMUL_KERNELS)
def test_matmul_then_kernel(benchmark, name, n, threads):
    benchmark.group = f"contention: matmul then {name} n={_bench.size_label(n)}"
    _time(benchmark, _contention.matmul_then(_contention.kernel_call(name, n)), threads)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("n", (100_000, 1_000_000, 16_000_000), ids=_bench.size_label)
@pytest.mark.parametrize("name", _contention.KERNELS)
def test_next_to_a_busy_process(benchmark, busy, name, n, threads):
    benchmark.group = f"contention: busy neighbour, {name} n={_bench.size_label(n)}"
    _time(benchmark, _contention.kernel_call(name, n), threads)


@pytest.mark.parametrize("threads", THREADS)
def test_numpy_and_dropout_backward_after_torch(benchmark, threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(lec6fast.get_num_threads())
    t = torch.ones(1 << 22)
    for _ in range(20):
        (t * 2).sum()
    n = 16_000_000
    a = np.random.default_rng(0).random(n, dtype=np.float32)
    tmp, out = np.empty_like(a), np.empty_like(a)
    mask = lec6fast.dropout_forward(a, p=0.5, rng=0)[1]

    def step():
        np.multiply(a, 1.0001, out=tmp)
        lec6fast.dropout_backward(tmp, mask, out=out)
    benchmark.group = "contention: torch's pool used, NumPy multiply + dropout_backward n=1.6e7"
    _time(benchmark, step, threads)


@pytest.mark.parametrize("impl", THREADS + ("numpy",))
def test_mlp_training_step(benchmark, impl):
    benchmark.group = "contention: 3-layer MLP training step (load_digits)"
    model = _contention.MLP(reference if impl == "numpy" else lec6fast)
    _time(benchmark, model.step, "1 thread" if impl == "numpy" else impl)

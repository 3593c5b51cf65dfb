"""The contention section: the kernels where users run them (lec6fast/bench/contention.py), each
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

import numpy as np
import pytest

import lec6fast
from lec6fast import reference
from lec6fast.bench import contention
from lec6fast.bench.cases import size_label
from lec6fast.bench.timing import num_threads

THREADS = ("1 thread", "threads")


@pytest.fixture
def time_on(time_fn):
    """time_on(fn, threads) times fn() with lec6fast on one thread or on its setting."""
    def run(fn, threads):
        with num_threads(1 if threads == "1 thread" else None):
            time_fn(fn)
    return run


@pytest.fixture(scope="module")
def busy():
    with contention.busy_process():
        yield


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("n", contention.MATMUL_SIZES, ids=size_label)
@pytest.mark.parametrize("name", contention.MATMUL_KERNELS)
def test_matmul_then_kernel(benchmark, time_on, name, n, threads):
    benchmark.group = f"contention: matmul then {name} n={size_label(n)}"
    time_on(contention.matmul_then(contention.kernel_call(name, n)), threads)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("n", (100_000, 1_000_000, 16_000_000), ids=size_label)
@pytest.mark.parametrize("name", contention.KERNELS)
def test_next_to_a_busy_process(benchmark, time_on, busy, name, n, threads):
    benchmark.group = f"contention: busy neighbour, {name} n={size_label(n)}"
    time_on(contention.kernel_call(name, n), threads)


@pytest.mark.parametrize("threads", THREADS)
def test_numpy_and_dropout_backward_after_torch(benchmark, time_on, threads):
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
    time_on(step, threads)


@pytest.mark.parametrize("impl", THREADS + ("numpy",))
def test_mlp_training_step(benchmark, time_on, impl):
    benchmark.group = "contention: 3-layer MLP training step (load_digits)"
    model = contention.MLP(reference if impl == "numpy" else lec6fast)
    time_on(model.step, "1 thread" if impl == "numpy" else impl)

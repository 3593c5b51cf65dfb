"""pytest-benchmark suite of lec6fast (outside testpaths): `pytest benchmarks`.

The cases come from lec6fast.bench.cases, the registry `lec6fast bench` uses.  Each benchmark group
is one operation at one dtype and size: lec6fast, its NumPy reference (lec6fast.reference)
and, when torch imports, the closest torch CPU call; the `bandwidth` groups hold the probes
(_copy, _triad, _scale_).  extra_info holds the bytes one call moves per element and the GB/s,
and for lec6fast cases the GB/s of the kernel's bandwidth probe (Kernel.probe: the in-place
RMW stream _scale_ for the updates, _copy for the layers) timed right after the case
and the kernel's % of it; a summary at the end lists these with the speedups.

    pytest benchmarks                         # every case (a few minutes)
    pytest benchmarks -k "adam_ and float32"  # a subset
    pytest benchmarks --benchmark-disable     # every case run once, as CI does
    --lec6fast-threads N                      # threads for lec6fast and torch alike

Arrays are allocated outside the timed region and reused by every implementation of a group
(they update in place; values stay O(1) and finite, see lec6fast.bench.cases).  Timing: pedantic
mode, each round a batch of calls lasting >= 2 ms, rounds filling --benchmark-max-time
(at least --benchmark-min-rounds), one warm-up round.  Each case is timed on its own, so
ratios between cases carry the machine's drift between them; `lec6fast bench` times a
kernel's implementations and its bandwidth probe interleaved, which is steadier here.
"""

import math

import numpy as np
import pytest

import lec6fast
from lec6fast import _config
from lec6fast.bench import report
from lec6fast.bench.cases import PROBES, shape_label
from lec6fast.bench.timing import Call, calibrate, gbps, measure
from lec6fast.bench.torch_twins import import_torch

BATCH_TIME = 2e-3           # seconds: the shortest timed round
MAX_ROUNDS = 1000

_results = []               # (dtype, n, kernel, impl, median s, GB/s, probe GB/s or None)


def pytest_addoption(parser):
    parser.addoption("--lec6fast-threads", type=int, default=None, metavar="N",
                     help="threads for lec6fast and torch (default: lec6fast's default)")


def pytest_configure(config):
    n = config.getoption("--lec6fast-threads")
    if n is not None:
        lec6fast.set_num_threads(n)
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(lec6fast.get_num_threads())


def _torch_line():
    torch = import_torch()
    if torch is None:
        return "torch: not importable, torch cases left out"
    return f"torch: {torch.__version__}, {torch.get_num_threads()} threads"


def pytest_report_header(config):
    return _config.config_lines() + [_torch_line()]


def pytest_benchmark_update_machine_info(config, machine_info):
    torch = import_torch()
    machine_info["lec6fast"] = _config.config()
    machine_info["torch"] = None if torch is None else {"version": torch.__version__,
                                                        "num_threads": torch.get_num_threads()}


class _ArrayCache:
    """The arrays of the (kernel, dtype, shape) last asked for.  The implementations of a group
    run one after another on the same arrays; the previous group's arrays are freed before the
    next ones are allocated, so at most one case's arrays are alive."""

    def __init__(self):
        self.key = self.arrays = None

    def get(self, kernel, dtype, shape):
        key = (kernel.name, dtype, tuple(shape))
        if key != self.key:
            self.key = self.arrays = None
            self.arrays = kernel.make(tuple(shape), dtype, np.random.default_rng(0))
            self.key = key
        return self.arrays


@pytest.fixture(autouse=True)
def pool_threads(request):
    """The torch benchmarks run as importing lec6fast.torch sets lec6fast up (on torch's OpenMP
    threads); the others find lec6fast's own workers, whichever benchmark ran before."""
    if not request.module.__name__.startswith("test_bench_torch"):
        yield
        return
    from lec6fast.bench.torch_twins import lec6fast_torch
    with lec6fast_torch():
        yield


@pytest.fixture(scope="session")
def arrays_for():
    """arrays_for(kernel, dtype, shape) -> the kernel's arrays (see _ArrayCache)."""
    return _ArrayCache().get


def _pedantic(benchmark, call, max_rounds):
    """Time `call` (a lec6fast.bench.timing.Call) in pedantic mode: rounds of a batch of calls
    lasting >= BATCH_TIME, filling --benchmark-max-time.  False if timing is disabled."""
    fn = call.function()
    if benchmark.disabled:              # --benchmark-disable: one call, nothing timed
        benchmark.pedantic(fn)
        return False
    iterations, t = calibrate(call, BATCH_TIME)
    rounds = max(benchmark._min_rounds, min(max_rounds, math.ceil(benchmark._max_time / t)))
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
    return True


@pytest.fixture
def time_fn(benchmark):
    """time_fn(fn) times fn() (no arguments) in pedantic mode, at most 200 rounds, recording
    lec6fast's thread count: for the contention and model-step cases."""

    def run(fn):
        benchmark.extra_info["lec6fast threads"] = lec6fast.get_num_threads()
        _pedantic(benchmark, Call(fn), 200)

    return run


@pytest.fixture
def run_call(benchmark):
    """run_call(call, kernel=, dtype=, shape=, impl=, label=) times `call` (a
    lec6fast.bench.timing.Call) in pedantic mode in the group of (kernel, dtype, shape) and
    records its bytes and GB/s."""

    def run(call, *, kernel, dtype, shape, impl, label=None):
        n = math.prod(shape)
        where = shape_label(shape)
        bytes_per_element = kernel.bytes_per_element(dtype)
        benchmark.group = (f"bandwidth {dtype} n={where}" if kernel.name in PROBES
                           else f"{kernel.name} {dtype} n={where}")
        benchmark.extra_info.update(impl=label or impl, elements=n,
                                    bytes_per_element=bytes_per_element)
        if not _pedantic(benchmark, call, MAX_ROUNDS):
            return
        median = benchmark.stats.stats.median
        speed = gbps(bytes_per_element * n, median)
        benchmark.extra_info["GB/s"] = round(speed, 2)
        probe = None
        if impl == "lec6fast" and kernel.name not in PROBES:
            probe = _probe_gbps(kernel, shape, dtype)
            benchmark.extra_info[f"{kernel.probe} probe GB/s"] = round(probe, 2)
            benchmark.extra_info["% of probe"] = round(100 * speed / probe, 1)
        _results.append((dtype, where, kernel.name, impl, median, speed, probe))

    return run


def _probe_gbps(kernel, shape, dtype):
    """GB/s of the kernel's bandwidth probe at this shape and dtype, timed now: right after the
    kernel it is read against, since this machine's memory bandwidth drifts over minutes."""
    probe = PROBES[kernel.probe]
    arrays = probe.make(shape, dtype, np.random.default_rng(0))
    t = measure(probe.fast_call(arrays), batch_time=BATCH_TIME, budget=0.2)
    return gbps(probe.nbytes(shape, dtype), t.median)


def pytest_terminal_summary(terminalreporter):
    if not _results:
        return
    time = {(d, n, k, i): t for d, n, k, i, t, _, _ in _results}
    rows = []
    for d, n, k, i, t, g, probe in _results:
        if i != "lec6fast" or k in PROBES:
            continue
        ref = time.get((d, n, k, "reference"))
        tor = time.get((d, n, k, "torch"))
        rows.append([k, d, n, report.time(t), f"{g:.1f}", f"{probe:.1f}", f"{100 * g / probe:.0f}%",
                     report.ratio(ref / t) if ref else "-", report.ratio(tor / t) if tor else "-"])
    tr = terminalreporter
    tr.write_sep("-", "lec6fast: GB/s, % of the bandwidth probe timed right after, speedups")
    for line in report.table(rows, ["kernel", "dtype", "n", "lec6fast", "GB/s", "probe", "%",
                                    "vs reference", "vs torch"]):
        tr.write_line(line)

"""Threads, SIMD levels, the GIL, show_config(), and coexistence with PyTorch.

No test here measures time: on a shared 2-core machine only results are asserted.
"""

import io
import json
import os
import re
import sysconfig
import threading

import numpy as np
import pytest

import lec6fast
from lec6fast import _dispatch, _runtime

THREADS = _runtime.HAS_THREADS          # False in a build without threads


def data(kernel, shape, dtype, seed, steps=3):
    """Initial arrays and the per-step inputs, from a fixed seed."""
    rng = np.random.default_rng(seed)
    arrays = kernel.make(shape, dtype, rng)
    inputs = [np.asarray(kernel.init[kernel.input](rng, shape), dtype=dtype) for _ in range(steps)]
    return arrays, inputs


def hyper(kernel):
    h = kernel.hyper()
    h.pop("t", None)
    return h


def run(kernel, fn, shape, dtype, seed=0, steps=3):
    arrays, inputs = data(kernel, shape, dtype, seed, steps)
    kernel.steps(fn, arrays, inputs, **hyper(kernel))
    return arrays


# ---------------------------------------------------------------- thread setting

def test_set_and_get_num_threads(num_threads):
    for n in (1, 2, np.int64(3), 4, 1):
        assert num_threads(n) is None
        expected = int(n) if THREADS else 1
        assert lec6fast.get_num_threads() == expected
        assert _runtime.get_threads() == expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, "2", None, True, np.float64(2.0)],
                         ids=repr)
def test_set_num_threads_refuses_bad_values(num_threads, bad):
    num_threads(1)
    with pytest.raises(ValueError, match=rf"set_num_threads: n .*{re.escape(repr(bad))}"):
        lec6fast.set_num_threads(bad)
    assert lec6fast.get_num_threads() == 1


SHOW_THREADS = ("import json, lec6fast\n"
                "from lec6fast import _runtime\n"
                "print(json.dumps([lec6fast.get_num_threads(), _runtime.get_threads()]))\n")


FORKED_CHILD = """
import multiprocessing as mp
import numpy as np
import lec6fast
from lec6fast import reference

lec6fast.set_num_threads(2)
x = np.ones(1_000_000, np.float32)
lec6fast.sgd_(x, np.ones_like(x), lr=0.5)        # the parent's OpenMP team has run

def child(q):
    from lec6fast import _runtime
    y, g = np.linspace(-1, 1, 1_000_000, dtype=np.float32), np.full(1_000_000, 0.25, np.float32)
    want = y.copy()
    lec6fast.sgd_(y, g, lr=0.5)
    reference.sgd_(want, g, lr=0.5)
    lec6fast.set_num_threads(2)                  # threads again, in the child
    lec6fast.sgd_(y, g, lr=0.5)
    reference.sgd_(want, g, lr=0.5)
    q.put((y.tobytes() == want.tobytes(), lec6fast.get_num_threads(),
           _runtime.pool_stats()["workers"] >= (1 if _runtime.HAS_THREADS else 0)))

ctx = mp.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
p.join(60)
assert p.exitcode == 0, f"forked child did not finish (exit code {p.exitcode})"
print("ok", q.get(timeout=5))
lec6fast.sgd_(x, np.ones_like(x), lr=0.5)        # and the parent still runs on its threads
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_runs_its_kernels_on_threads_again(run_python):
    """The child of a process whose pool has run has none of its workers: it keeps the
    thread setting, starts its own workers on its first large call and never hangs."""
    out = run_python(FORKED_CHILD)
    assert out.stdout.strip().splitlines()[-1] == f"ok (True, {2 if THREADS else 1}, True)"


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.parametrize("var", ["OMP_NUM_THREADS", "LEC6FAST_NUM_THREADS"])
@pytest.mark.parametrize("env, expected", [("1", 1), ("3", 3), ("2,1", 2), (None, "cores"),
                                           ("", "cores"), ("abc", "cores"), ("0", "cores"),
                                           ("100000", "cap")])
def test_default_thread_count_from_the_environment(run_python, var, env, expected):
    if expected == "cores":
        expected = _cores()
    elif expected == "cap":
        expected = _dispatch.max_threads()
    if not THREADS:
        expected = 1
    out = run_python(SHOW_THREADS, env=None if env is None else {var: env})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [expected, expected]


def test_lec6fast_num_threads_wins_over_omp_num_threads(run_python):
    out = run_python(SHOW_THREADS, env={"OMP_NUM_THREADS": "3", "LEC6FAST_NUM_THREADS": "1"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1, 1]


# ---------------------------------------------------------------- thread-count invariance

@pytest.mark.parametrize("size", ["3x threshold", "2M"])
def test_thread_count_invariance_large(kernel, dtype, kernels_module, num_threads, size):
    """Arrays big enough to be split: 1, 2 and 3 threads give the same bits as the reference.
    At 2M elements the chunks are larger than the smallest (256 chunks of 32 or 64 KiB)."""
    n = 3 * kernels_module._get_parallel_min(kernel.name, dtype) + 17
    if size == "2M":
        n = (1 << 21) + 17
    results = {}
    for threads in (1, 2, 3, 4):
        num_threads(threads)
        results[threads] = run(kernel, kernel.fast, (n,), dtype)
    ref = run(kernel, kernel.ref, (n,), dtype)
    for threads in (2, 3, 4):
        for a in kernel.arrays:
            np.testing.assert_array_equal(results[threads][a].view(np.uint8),
                                          results[1][a].view(np.uint8),
                                          err_msg=f"{kernel.name} {threads} threads {a}")
    for a in kernel.arrays:
        np.testing.assert_array_equal(results[1][a].view(np.uint8), ref[a].view(np.uint8),
                                      err_msg=f"{kernel.name} vs reference {a}")


def test_thread_count_invariance_small_arrays_forced_parallel(kernel, dtype, bits, num_threads,
                                                              parallel_min, kernels_module):
    """With the threshold at 1 element and chunks of 256 elements, tiny and odd-sized arrays
    run on the pool (one, two, several chunks, so some threads get nothing) and must match."""
    lengths = (1, 2, 7, 31, 63, 64, 65, 100, 127, 128, 129, 191, 192, 193, 257)
    shapes = [(n,) for n in lengths] + [(), (3, 5, 7), (2, 1, 4), (0,)]
    num_threads(1)
    serial = {s: run(kernel, kernel.fast, s, dtype, seed=7, steps=2) for s in shapes}
    parallel_min(1)
    try:
        for threads, chunk in ((2, 0), (2, 256), (3, 256), (4, 256), (4, 512)):
            num_threads(threads)
            kernels_module._set_chunk(chunk)
            for s in shapes:
                got = run(kernel, kernel.fast, s, dtype, seed=7, steps=2)
                for a in kernel.arrays:
                    bits.assert_equal(got[a], serial[s][a],
                                      f"{kernel.name} {s} {threads} threads, chunk {chunk}: {a}")
    finally:
        kernels_module._set_chunk(0)


def test_parallel_min_fixture_restores(kernels_module):
    """The fixture's teardown (parallel_min_setter's exit) puts back what was there, also when
    the test body raises."""
    from conftest import parallel_min_setter
    before = kernels_module._get_parallel_min()
    with parallel_min_setter() as set_:
        set_(5)
        assert kernels_module._get_parallel_min() == 5
    assert kernels_module._get_parallel_min() == before
    with pytest.raises(RuntimeError):
        with parallel_min_setter() as set_:
            set_(7)
            raise RuntimeError
    assert kernels_module._get_parallel_min() == before


# ---------------------------------------------------------------- SIMD levels

def test_every_simd_level_bit_identical_to_baseline(kernel, dtype, bits, num_threads):
    levels = _dispatch.available_levels()
    assert levels[0] == "baseline" and _dispatch.level in levels
    base = getattr(_dispatch.kernels("_updates", "baseline"), kernel.name)
    p = _dispatch.kernels("_updates", "baseline")._get_parallel_min(kernel.name, dtype)
    shapes = [(n,) for n in range(0, 71)] + [(), (3, 5, 7), (p + 63,), (3 * p + 5,)]
    num_threads(2)
    for s in shapes:
        want = run(kernel, base, s, dtype, seed=3)
        for level in levels[1:]:
            fn = getattr(_dispatch.kernels("_updates", level), kernel.name)
            got = run(kernel, fn, s, dtype, seed=3)
            for a in kernel.arrays:
                bits.assert_equal(got[a], want[a], f"{kernel.name} {level} {s} {a}")


def test_every_simd_level_nonfinite_inputs(kernel, dtype, bits):
    levels = _dispatch.available_levels()
    base = getattr(_dispatch.kernels("_updates", "baseline"), kernel.name)
    rng = np.random.default_rng(11)
    arrays = kernel.make((203,), dtype, rng)
    arrays[kernel.input][::7] = np.array([np.nan, np.inf, -np.inf, 0.0], dtype=dtype)[
        np.arange(0, 203, 7) % 4]
    want = {a: arr.copy() for a, arr in arrays.items()}
    kernel.call(base, want, **kernel.hyper())
    for level in levels:
        got = {a: arr.copy() for a, arr in arrays.items()}
        kernel.call(getattr(_dispatch.kernels("_updates", level), kernel.name), got, **kernel.hyper())
        for a in kernel.arrays:
            bits.assert_equal_nan(got[a], want[a], f"{kernel.name} {level} {a}")


def test_public_functions_come_from_the_chosen_level(kernel_table):
    mod = _dispatch.kernels("_updates", _dispatch.level)
    for name in kernel_table:
        assert getattr(lec6fast, name) is getattr(mod, name)


SHOW_LEVEL = ("import json, lec6fast\n"
              "from lec6fast import _dispatch\n"
              "print(json.dumps([_dispatch.level, lec6fast.adam_.__module__, "
              "list(_dispatch.available_levels())]))\n")


def test_lec6fast_simd_env_selects_level(run_python):
    levels = list(_dispatch.available_levels())
    out = run_python(SHOW_LEVEL)
    level, module, avail = json.loads(out.stdout.strip().splitlines()[-1])
    assert avail == levels and level == levels[-1]
    for wanted in ["baseline"] + levels[1:]:
        out = run_python(SHOW_LEVEL, env={"LEC6FAST_SIMD": wanted})
        level, module, _ = json.loads(out.stdout.strip().splitlines()[-1])
        assert level == wanted
        assert module == ("lec6fast._updates" if wanted == "baseline" else f"lec6fast._updates_{wanted}")


def test_lec6fast_simd_env_rejects_unknown_level(run_python):
    out = run_python("import lec6fast\n", env={"LEC6FAST_SIMD": "sse9"}, check=False)
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "LEC6FAST_SIMD" in out.stderr


# ---------------------------------------------------------------- the GIL

def test_two_python_threads_concurrently_match_serial(kernel_table, num_threads):
    """Two threads each run every kernel for 3 steps on their own arrays, at the same time;
    the results are exactly those of running the same work serially."""
    num_threads(2)
    n = 200_003                                   # above the threading threshold
    jobs = {(seed, k.name, dt): data(k, (n,), dt, seed)
            for seed in (1, 2) for k in kernel_table.values() for dt in (np.float32, np.float64)}

    def work(seed, out, barrier=None):
        try:
            if barrier is not None:
                barrier.wait(timeout=60)
            for (s, name, dt), (arrays, inputs) in jobs.items():
                if s == seed:
                    k = kernel_table[name]
                    mine = {a: arr.copy() for a, arr in arrays.items()}
                    k.steps(k.fast, mine, inputs, **hyper(k))
                    out[(name, dt)] = mine
        except BaseException as e:      # surfaced by the main thread
            out["error"] = e

    serial = [{}, {}]
    work(1, serial[0])
    work(2, serial[1])
    concurrent = [{}, {}]
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=work, args=(i + 1, concurrent[i], barrier)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    for i in range(2):
        assert "error" not in concurrent[i], concurrent[i].get("error")
        assert concurrent[i].keys() == serial[i].keys()
        for key, arrays in serial[i].items():
            for a, arr in arrays.items():
                assert concurrent[i][key][a].tobytes() == arr.tobytes(), (i, key, a)


BIG = 1 << 24       # 16M elements


@pytest.mark.parametrize("name", ["sgd_", "adam_", "ema_", "rmsprop_"])
def test_gil_released_during_a_call(kernel_table, num_threads, name):
    """Another Python thread runs *while* a 16M-element update is in progress.

    All elements start equal and every call moves each of them the same way, so outside a call
    the array is uniform.  The watcher reads element 0 and then the last element; with one
    kernel thread element 0 is written first and the last element last, so seeing element 0
    already moved by a call the last element has not seen yet means the call was running for
    the whole time between the two reads, during which the watcher was executing Python code:
    impossible unless the call released the GIL.  No clock is involved.
    """
    k = kernel_table[name]
    num_threads(1)                        # serial loop: index 0 first, index n-1 last
    arrays = {a: np.zeros(BIG, dtype=np.float32) for a in k.arrays}
    arrays[k.input][...] = 1.0
    hyper = dict(k.required, lr=1.0) if "lr" in k.ranges else dict(k.required)
    probe = {a: np.zeros(1, np.float32) for a in k.arrays}
    probe[k.input][...] = 1.0
    k.call(k.fast, probe, **k.hyper(**hyper))
    direction = np.sign(probe[k.arrays[0]][0])     # which way one call moves the output
    assert direction != 0
    out = arrays[k.arrays[0]]
    seen, loops = [], [0]
    started, done = threading.Event(), threading.Event()

    def watch():
        started.set()
        while not done.is_set():
            first = out[0]
            last = out[-1]
            loops[0] += 1
            if direction * (first - last) > 0:
                seen.append((first, last))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert started.wait(timeout=60)
    try:
        for t in range(1, 41):
            kw = k.hyper(t=t, **hyper)
            k.call(k.fast, arrays, **kw)
            if seen:
                break
    finally:
        done.set()
        watcher.join(timeout=60)
    assert loops[0] > 0
    assert seen, f"{name}: the watcher thread never ran during a call ({loops[0]} loops)"
    # the calls themselves were right: the array is uniform again
    assert np.all(out == out[0])


# ---------------------------------------------------------------- show_config

def test_show_config(capsys, num_threads):
    num_threads(1)
    lec6fast.show_config()
    text = capsys.readouterr().out
    assert lec6fast.__version__ in text
    assert _dispatch.level in text
    assert re.search(r"threads\s*:\s*1 of at most \d+, " + ("lec6fast pool" if THREADS else "none"),
                     text), text
    num_threads(2)
    buf = io.StringIO()
    lec6fast.show_config(file=buf)
    assert re.search(rf"threads\s*:\s*{2 if THREADS else 1}\b", buf.getvalue()), buf.getvalue()
    assert capsys.readouterr().out == ""


def test_config_dict(num_threads):
    from lec6fast._config import config
    num_threads(1)
    c = config()
    assert c["lec6fast"] == lec6fast.__version__
    assert c["simd_level"] == _dispatch.level
    assert c["built_simd_levels"] == list(_dispatch.available_levels())
    assert c["num_threads"] == 1
    assert c["max_threads"] == _dispatch.max_threads()
    assert set(c["pool"]) == {"workers", "jobs", "worker_chunks", "late", "team", "team_jobs"}


# ---------------------------------------------------------------- PyTorch in the same process

TORCH_FIRST = """
import torch                                    # torch and its OpenMP runtime load first
import math
import numpy as np
import lec6fast
from lec6fast import reference

torch.set_num_threads(2)
a = torch.randn(4_000_000)
s1 = float((a * 2).sum())                       # torch's thread pool has run
lec6fast.set_num_threads(2)
assert lec6fast.get_num_threads() == (2 if lec6fast._runtime.HAS_THREADS else 1)
rng = np.random.default_rng(5)
n = 3_000_001
for dt in (np.float32, np.float64):
    arrs = [rng.standard_normal(n).astype(dt) for _ in range(3)] + [rng.uniform(0, 1e-2, n).astype(dt)]
    ref = [a.copy() for a in arrs]
    for t in (1, 2, 3):
        lec6fast.adam_(*arrs, t=t, lr=1e-3)
        reference.adam_(*ref, t=t, lr=1e-3)
        lec6fast.rmsprop_(arrs[0], arrs[1], arrs[3], lr=1e-3)
        reference.rmsprop_(ref[0], ref[1], ref[3], lr=1e-3)
    for f, r in zip(arrs, ref):
        assert f.tobytes() == r.tobytes(), dt
s2 = float((a * 2).sum())                       # and torch still works afterwards
assert math.isclose(s1, s2, rel_tol=1e-5, abs_tol=1e-2), (s1, s2)
print("ok", torch.__version__)
"""


def test_torch_imported_first(run_python):
    pytest.importorskip("torch")
    out = run_python(TORCH_FIRST)
    assert out.stdout.strip().splitlines()[-1].startswith("ok")


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded interpreter (CI's 3.14t job)")
def test_a_free_threaded_interpreter_keeps_the_gil_off(run_python):
    """Every compiled module declares that it runs without the GIL: importing lec6fast (and
    running a kernel on the pool) must not turn the GIL back on, which CPython does, with a
    RuntimeWarning, for a module that does not declare it."""
    code = ("import sys, warnings; warnings.simplefilter('error')\n"
            "import numpy as np, lec6fast, lec6fast.optim, lec6fast.cs231n\n"
            "from lec6fast import _dispatch\n"
            "for family in _dispatch.FAMILIES:\n"
            "    for level in _dispatch.available_levels():\n"
            "        _dispatch.kernels(family, level)\n"
            "x = np.zeros(1 << 20, np.float32); lec6fast.sgd_(x, np.ones_like(x), lr=1.0)\n"
            "print(sys._is_gil_enabled())\n")
    assert run_python(code).stdout.strip() == "False"


def test_importing_lec6fast_leaves_numpy_ma_unimported(run_python):
    """The masked-array check looks numpy.ma up only when an ndarray subclass comes (no
    MaskedArray exists before numpy.ma is imported): its import is 10% of lec6fast's."""
    code = ("import sys, numpy as np, lec6fast, lec6fast.optim, lec6fast.cs231n\n"
            "x = np.zeros(8, np.float32); lec6fast.sgd_(x, np.ones_like(x), lr=1.0)\n"
            "class Sub(np.ndarray): pass\n"
            "lec6fast.sgd_(x.view(Sub), np.ones_like(x), lr=1.0)\n"
            "print('numpy.ma' in sys.modules)\n")
    assert run_python(code).stdout.strip() == "False"

"""lec6fast's kernels on torch's OpenMP threads (lec6fast/torch/_threads.py, src/_threads.h):
what importing lec6fast.torch switches on, and the pool's promises kept on torch's team: the
same bits for every thread count, a call that completes on its caller when the team's threads
take no chunk, a stalled team thread judged late, no call returning before a chunk that one of
lec6fast's own workers took, the caller's floating-point mode applied to the team's threads
and theirs given back, a call of more threads than torch's on lec6fast's workers, and a forked
child back on lec6fast's workers for good.

As in test_threads.py, nothing here measures time except the pool's own late test."""

import multiprocessing
import os
import textwrap
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lec6fast                       # noqa: E402
import lec6fast.torch as lt          # noqa: E402
from lec6fast import _runtime        # noqa: E402
from conftest import Bits            # noqa: E402
from test_threads import every_kernel_call   # noqa: E402

OPENMP = lt._threads.torch_openmp_parallel()[0] != 0
pytestmark = pytest.mark.skipif(not (OPENMP and _runtime.HAS_THREADS),
                                reason="needs threads, and torch on a GOMP-compatible OpenMP")


@pytest.fixture
def threads(num_threads):
    """threads(n): n threads for lec6fast and torch alike, on torch's threads (the
    pool_threads fixture puts this module there); torch's count restored afterwards."""
    assert _runtime.pool_stats()["team"]
    saved = torch.get_num_threads()

    def set_(n):
        num_threads(n)
        torch.set_num_threads(n)
    yield set_
    torch.set_num_threads(saved)


def test_importing_lec6fast_torch_puts_the_kernels_on_torchs_threads(run_python):
    out = run_python(textwrap.dedent("""
        import lec6fast
        from lec6fast import _runtime
        before = _runtime.pool_stats()["team"]
        import lec6fast.torch as lt
        after = _runtime.pool_stats()["team"]
        off = lt.use_torch_threads(False), _runtime.pool_stats()["team"]
        on = lt.use_torch_threads(), _runtime.pool_stats()["team"]
        print(before, after, off, on)
    """))
    assert out.stdout.split() == ["False", "True", "(False,", "False)", "(True,", "True)"]


def test_the_same_bits_on_torchs_threads_as_on_lec6fasts_workers(threads):
    calls = every_kernel_call()
    threads(1)
    serial = {name: call() for name, call in calls}
    for nt in (2, 3, 4):
        threads(nt)
        before = _runtime.pool_stats()
        for on in (True, False, True):
            lt.use_torch_threads(on)
            for name, call in calls:
                assert Bits.all_same(call(), serial[name]), (name, nt, on)
        assert _runtime.pool_stats()["jobs"] > before["jobs"]


def test_calls_complete_on_the_caller_while_torchs_threads_take_no_chunk(threads):
    calls = every_kernel_call()
    threads(1)
    serial = {name: call() for name, call in calls}
    threads(2)
    before = _runtime.pool_stats()
    _runtime._hold_workers(True)            # (a held team thread returns at once)
    try:
        for name, call in calls:
            assert Bits.all_same(call(), serial[name]), name
        during = _runtime.pool_stats()
    finally:
        _runtime._hold_workers(False)
    assert during["worker_chunks"] == before["worker_chunks"]
    assert during["jobs"] > before["jobs"]
    for _ in range(20):                     # released: torch's threads take part
        _runtime._test_job(256)
    assert _runtime.pool_stats()["worker_chunks"] > during["worker_chunks"]
    assert _runtime.pool_stats()["workers"] == before["workers"]    # none of lec6fast's own


def test_a_call_of_more_threads_than_torchs_runs_on_lec6fasts_workers(threads):
    threads(2)
    before = _runtime.pool_stats()
    assert _runtime._test_job(64) == [1] * 64
    assert _runtime.pool_stats()["team_jobs"] == before["team_jobs"] + 1
    torch.set_num_threads(1)                # (as torch's DataLoader sets its workers)
    for _ in range(20):
        assert _runtime._test_job(256) == [1] * 256
    after = _runtime.pool_stats()
    assert after["team_jobs"] == before["team_jobs"] + 1
    assert after["jobs"] > before["jobs"] + 1 and after["workers"] >= 1     # (on the workers)


def test_no_call_returns_before_a_chunk_that_one_of_lec6fasts_workers_took(threads):
    """lec6fast's own workers, still spinning when the team takes over, may claim chunks of a
    team job: the caller waits for them as for the team's (each chunk ran once on return)."""
    threads(2)
    spin = _runtime._get_spin_us()
    lt.use_torch_threads(False)
    _runtime._set_spin_us(1e6)              # the workers spin for a second after a job
    try:
        assert _runtime._test_job(64) == [1] * 64
        lt.use_torch_threads(True)
        _runtime._delay_workers(20_000)     # the first chunk a worker or team thread takes: 20 ms
        for _ in range(10):
            assert _runtime._test_job(64, touching=True) == [1] * 64
    finally:
        _runtime._delay_workers(0)
        _runtime._set_spin_us(*spin)
        lt.use_torch_threads(True)
        _runtime._forget_late()


def test_a_team_thread_stalled_in_its_chunk_makes_the_job_late(threads):
    """A team thread that stalls in its chunk holds the caller at the team's closing barrier:
    the job is late, and the next calls run on the caller alone.  Every chunk runs once."""
    threads(2)
    _runtime._test_job(64)
    _runtime._forget_late()
    late = _runtime.pool_stats()["late"]
    _runtime._delay_workers(50_000)         # a team thread sleeps 50 ms in its first chunk
    try:
        for _ in range(50):
            assert _runtime._test_job(64) == [1] * 64
            if _runtime.pool_stats()["late"] > late:
                break
        assert _runtime.pool_stats()["late"] == late + 1
        assert _runtime._serial_until_ns() > _runtime._now_ns()
        was = _runtime.pool_stats()
        assert _runtime._test_job(64) == [1] * 64
        now = _runtime.pool_stats()
        assert now["jobs"] == was["jobs"] and now["worker_chunks"] == was["worker_chunks"]
    finally:
        _runtime._delay_workers(0)
        _runtime._forget_late()


def test_torchs_threads_run_under_the_callers_floating_point_mode_and_get_theirs_back(threads):
    if _runtime._flush_denormals(False) is None:
        pytest.skip("no flush-to-zero mode on this CPU")
    threads(2)
    n = 1 << 21
    x, dx = np.full(n, 2e-38, np.float32), np.full(n, 1.5e-38, np.float32)
    denormal = np.float32(2e-38) - np.float32(1.5e-38)
    assert 0 < denormal < np.finfo(np.float32).tiny
    time.sleep(0.01)                        # lec6fast's workers asleep: only team threads take part
    before = _runtime.pool_stats()["worker_chunks"]
    for _ in range(20):                     # until a team thread took part
        _runtime._forget_late()             # (waking torch's sleeping threads may be late)
        _runtime._flush_denormals(True)
        try:
            y = x.copy()
            lec6fast.sgd_(y, dx, lr=1.0)
        finally:
            _runtime._flush_denormals(False)
        assert np.all(y == 0), "a chunk ran without the caller's flush-to-zero"
        if _runtime.pool_stats()["worker_chunks"] > before:
            break
    assert _runtime.pool_stats()["worker_chunks"] > before
    # torch's own parallel subtraction on its team: a thread left flushing would give zeros
    # (read here, on the caller: a comparison on that thread would not see a denormal either)
    a, b = torch.from_numpy(x), torch.from_numpy(dx)
    for _ in range(5):
        assert np.all((a - b).numpy() == denormal)


def _child_step(queue):
    x, g = np.zeros(300_001, np.float32), np.ones(300_001, np.float32)
    lec6fast.sgd_(x, g, lr=1.0)
    team = _runtime.pool_stats()["team"]
    again = lt.use_torch_threads()          # refused: libgomp would hang here
    lec6fast.sgd_(x, g, lr=1.0)
    queue.put((team, again, _runtime.pool_stats()["team"], bool(np.all(x == -2.0))))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_runs_on_lec6fasts_own_workers_for_good(threads):
    threads(2)
    _runtime._test_job(64)                  # the parent's team has run
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=60) == (False, False, False, True)
    finally:
        child.join(timeout=60)
        if child.exitcode is None:
            child.kill()
    assert child.exitcode == 0
    assert _runtime.pool_stats()["team"]

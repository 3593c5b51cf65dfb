"""The timing engine: bound calls, batches timed with time.perf_counter, thread counts.

`measure`: a warm-up call, then the call runs in batches sized so that a batch takes at least
`batch_time` seconds, each batch timed with time.perf_counter (through timeit, garbage
collector off).  The result is the median, over repeats, of the per-call time of each batch.
A time budget caps the number of repeats of slow calls (never below `min_repeat`), and the
result says when it did.  `measure_together` times several calls with their batches
interleaved, so that they are compared under the same conditions; `interleaved` does the same
for plain functions, each on its own lec6fast thread count.  `num_threads` sets lec6fast's
(and torch's) thread count for the duration of a run and restores it after.
"""

import contextlib
import math
import statistics
import time
import timeit
from dataclasses import dataclass

import lec6fast

NOISY = 0.25                # a timing whose batches spread over more than this much of its median


# ---------------------------------------------------------------- bound calls

class Call:
    """fn(*args, **kwargs) with its arguments bound.

    It is timed through generated source `fn(a0, a1, name=k_name)`, so a measurement carries
    exactly the per-call overhead of user code, without the argument packing of
    functools.partial or fn(*args, **kwargs) (about 65 ns per call here, against ~145 ns for
    a whole adam_ call at 10 elements).
    """

    def __init__(self, fn, *args, **kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def _source(self):
        names = [f"a{i}" for i in range(len(self.args))] + [f"{k}=k_{k}" for k in self.kwargs]
        return f"fn({', '.join(names)})"

    def _namespace(self):
        ns = {"fn": self.fn}
        ns.update((f"a{i}", a) for i, a in enumerate(self.args))
        ns.update((f"k_{k}", v) for k, v in self.kwargs.items())
        return ns

    def timer(self):
        """A timeit.Timer (time.perf_counter) whose statement is this call."""
        return timeit.Timer(self._source(), globals=self._namespace())

    def function(self):
        """This call as a function of no arguments (for pytest-benchmark's pedantic mode)."""
        ns = self._namespace()
        exec(f"def call():\n    return {self._source()}\n", ns)
        return ns["call"]

    def __call__(self):
        return self.fn(*self.args, **self.kwargs)


# ---------------------------------------------------------------- thread counts

@contextlib.contextmanager
def num_threads(n=None, torch=None):
    """lec6fast on n threads (None: its current count) and, if given the torch module, torch on
    as many, for the duration; both are restored after.  Yields the count lec6fast uses (n
    capped at lec6fast.max_threads())."""
    saved = lec6fast.get_num_threads()
    saved_torch = torch.get_num_threads() if torch else None
    try:
        if n is not None:
            lec6fast.set_num_threads(n)
        n = lec6fast.get_num_threads()
        if torch:
            torch.set_num_threads(n)
        yield n
    finally:
        lec6fast.set_num_threads(saved)
        if torch:
            torch.set_num_threads(saved_torch)


def thread_count(n=None):
    """The thread count lec6fast runs on when set to n (capped at lec6fast.max_threads());
    None: its current setting."""
    with num_threads(n) as count:
        return count


# ---------------------------------------------------------------- timing

@dataclass
class Timing:
    median: float               # seconds per call: median over repeats
    times: list                 # seconds per call, one entry per repeat
    batch: int                  # calls per timed batch
    budget_limited: bool        # fewer repeats than asked, because of the time budget

    @property
    def noisy(self):
        """The batches spread (max - min) over more than NOISY of the median: the machine was
        busy while this was timed."""
        return len(self.times) > 1 and (max(self.times) - min(self.times)) > NOISY * self.median

    def as_dict(self):
        return {"median_s": self.median, "min_s": min(self.times), "times_s": self.times,
                "batch": self.batch, "repeats": len(self.times),
                "budget_limited": self.budget_limited, "noisy": self.noisy}


def calibrate(call, batch_time=2e-3):
    """Warm `call` up, then find a batch size whose run takes >= batch_time seconds.
    Returns (calls per batch, seconds that batch took)."""
    timer = call.timer()
    t = timer.timeit(1)             # warm-up: first touch, caches, lazily allocated state
    batch = 1
    while t < batch_time:
        want = math.ceil(batch * 1.25 * batch_time / max(t, 1e-9))
        batch = min(batch * 10, max(batch * 2, want))
        t = timer.timeit(batch)
    return batch, t


def measure(call, *, repeat=7, min_repeat=3, batch_time=2e-3, budget=0.5):
    """Median seconds per call of `call`: warm-up and calibration (see `calibrate`), then
    `repeat` timed batches, or as many as fit in `budget` seconds but at least `min_repeat`."""
    return measure_together([call], repeat=repeat, min_repeat=min_repeat,
                            batch_time=batch_time, budget=budget)[0]


def measure_together(calls, *, repeat=7, min_repeat=3, batch_time=2e-3, budget=0.5):
    """`measure` for several calls over the same stretch of time: each is calibrated, then
    their batches run in turn (round robin) until each has its repeats.  What the machine is
    doing meanwhile (other processes; its memory bandwidth, seen here to drift several-fold
    within a minute) then weighs on all of them alike, so their ratios are meaningful."""
    plans = []
    for call in calls:
        batch, t = calibrate(call, batch_time)
        plans.append((call.timer(), batch, min(repeat, max(min_repeat, int(budget / t)))))
    times = [[] for _ in plans]
    for r in range(max(reps for _, _, reps in plans)):
        for ts, (timer, batch, reps) in zip(times, plans):
            if r < reps:
                ts.append(timer.timeit(batch) / batch)
    return [Timing(statistics.median(ts), ts, batch, reps < repeat)
            for ts, (_, batch, reps) in zip(times, plans)]


def _per_call(fn, batch):
    t0 = time.perf_counter()
    for _ in range(batch):
        fn()
    return (time.perf_counter() - t0) / batch


def interleaved(fns, *, threads, repeat=15, batch_time=0.02, warmup=3, settle=0.0):
    """Median seconds per call of each fn(), each run with lec6fast on threads[i] threads;
    their batches alternate, so every fn sees the same stretch of the machine's time.  settle:
    seconds to sleep (untimed) before each batch, so that threads one fn left spinning (torch's
    OpenMP pool spins after its calls) are asleep before the next fn's batch starts."""
    saved = lec6fast.get_num_threads()
    try:
        batches = []
        for fn, nt in zip(fns, threads):
            lec6fast.set_num_threads(nt)
            for _ in range(warmup):
                fn()
            t = _per_call(fn, 1)
            batches.append(max(1, min(10_000, int(batch_time / max(t, 1e-9)))))
        times = [[] for _ in fns]
        for _ in range(repeat):
            for ts, fn, nt, b in zip(times, fns, threads, batches):
                lec6fast.set_num_threads(nt)
                if settle:
                    time.sleep(settle)
                ts.append(_per_call(fn, b))
        return [statistics.median(ts) for ts in times]
    finally:
        lec6fast.set_num_threads(saved)


def gbps(nbytes, seconds):
    return nbytes / seconds / 1e9


"""Timing engine and kernel registry behind `lec6fast bench` and the benchmarks/ suite.

A `Kernel` holds everything a benchmark needs to know about one operation: how to allocate
its arrays, the lec6fast call, the NumPy reference call (lec6fast.reference, same name and
signature), the closest PyTorch CPU call if there is one, and the bytes one call moves per
element.  `KERNELS` lists the operations and `PROBES` the bandwidth probes; the command and
the pytest-benchmark suite both read their cases from here, so a new operation is one entry.

Timing (`measure`): a warm-up call, then the call runs in batches sized so that a batch
takes at least `batch_time` seconds, each batch timed with time.perf_counter (through
timeit, garbage collector off).  The result is the median, over repeats, of the per-call
time of each batch.  A time budget caps the number of repeats of slow calls (never below
`min_repeat`), and the result says when it did.  `measure_together` times several calls
with their batches interleaved, so that they are compared under the same conditions.
"""

import math
import statistics
import timeit
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import lec6fast
from . import _config, _dispatch, reference

DTYPES = ("float32", "float64")
DEFAULT_SIZES = (1_000, 100_000, 16_000_000)

# Hyperparameters of every benchmark call.  lr is small so that the thousands of in-place
# steps a benchmark makes on the same arrays keep every value O(1) and finite.
LR = 1e-5
STEP = 10                   # adam_'s t: a constant step number (the cost does not depend on it)


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


def gbps(nbytes, seconds):
    return nbytes / seconds / 1e9


# ---------------------------------------------------------------- torch (optional)

_torch = None


def import_torch():
    """The torch module, or None when it is not installed or fails to import."""
    global _torch
    if _torch is None:
        try:
            import torch
        except Exception:           # not installed, or a broken install: benchmark without it
            torch = False
        _torch = torch
    return _torch or None


def _torch_optimizer(cls_name, label, arrays, **options):
    """One step of torch.optim.<cls_name> on a parameter sharing x's memory, with dx's memory as
    its gradient: fused=True where this torch implements it on the CPU for this optimizer,
    else foreach=True (tried, not assumed).  Returns (label, Call); the first step, which
    allocates the optimizer's state, has been taken."""
    torch = import_torch()
    cls = getattr(torch.optim, cls_name)
    param = torch.nn.Parameter(torch.from_numpy(arrays[0]))
    param.grad = torch.from_numpy(arrays[1])
    errors = []
    for impl in ("fused", "foreach"):
        try:
            opt = cls([param], **options, **{impl: True})
            opt.step()              # unsupported fused paths may raise only here
        except (TypeError, ValueError, RuntimeError) as e:
            errors.append(f"{impl}: {e}")
            continue
        return f"{cls_name}({label}{impl})", Call(opt.step)
    raise RuntimeError(f"torch.optim.{cls_name}: no usable implementation ({'; '.join(errors)})")


def _torch_lerp(arrays, h):
    # torch.optim has no parameter averaging; torch's EMA helpers (swa_utils) use lerp_,
    # x_avg += (1 - decay) * (x - x_avg), the same average written the other way round.
    torch = import_torch()
    avg, x = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])
    return "Tensor.lerp_", Call(avg.lerp_, x, 1.0 - h["decay"])


# ---------------------------------------------------------------- the registry

def streams(k):
    """bytes_per_element for a kernel that moves k whole arrays (each element read once or
    written once) of the dtype's itemsize."""
    return lambda dtype: k * np.dtype(dtype).itemsize


@dataclass(frozen=True)
class Fill:
    """Values uniform in [lo, hi), times a random sign if random_sign."""
    lo: float
    hi: float
    random_sign: bool = False


# O(1) values: squares and running averages stay far from zero, so no denormals appear
# however many steps a benchmark takes on the same arrays.
SIGNED = Fill(-1.0, 1.0)                    # parameters, first moments
GRADIENT = Fill(0.5, 1.5, random_sign=True)
POSITIVE = Fill(0.5, 1.5)                   # caches, second moments (must be >= 0)
SMALL = Fill(-1e-3, 1e-3)                   # velocities


def uniform_arrays(*fills):
    """make() for one array per Fill."""
    def make(shape, dtype, rng):
        out = []
        for f in fills:
            a = rng.random(shape, dtype=np.dtype(dtype))
            a *= f.hi - f.lo
            a += f.lo
            if f.random_sign:
                np.negative(a, out=a, where=rng.random(shape, dtype=np.float32) < 0.5)
            out.append(a)
        return tuple(out)
    return make


@dataclass(frozen=True)
class Kernel:
    """One benchmarked operation.

    make(shape, dtype, rng) -> arrays; fast(*arrays, **hyper) is the lec6fast call and
    reference(*arrays, **hyper) the NumPy one; torch(arrays, hyper) -> (label, Call) builds the
    closest PyTorch CPU call on the same memory (only called when torch imports);
    bytes_per_element(dtype) is what one call moves per element, each array element read
    once or written once.  `shapes` fixes the shapes a kernel runs at (else 1-D arrays of
    each requested size); `family` is the kernel module (src/<family>.pyx) it comes from;
    `probe` the bandwidth probe its GB/s is read against (the in-place RMW stream for the
    updates, copy for the out-of-place layers).
    """
    name: str
    make: Callable
    fast: Callable
    bytes_per_element: Callable
    reference: Optional[Callable] = None
    hyper: dict = field(default_factory=dict)
    torch: Optional[Callable] = None
    shapes: Optional[tuple] = None
    family: str = "_updates"
    probe: str = "_scale_"

    def shapes_for(self, sizes):
        return self.shapes if self.shapes is not None else tuple((int(n),) for n in sizes)

    def fast_call(self, arrays):
        return Call(self.fast, *arrays, **self.hyper)

    def reference_call(self, arrays):
        return None if self.reference is None else Call(self.reference, *arrays, **self.hyper)

    def torch_call(self, arrays):
        """(label, Call) for the closest torch operation, or None (no torch, or no counterpart)."""
        if self.torch is None or import_torch() is None:
            return None
        return self.torch(arrays, self.hyper)

    def call_of(self, impl, arrays):
        """(label, Call) of impl = "lec6fast", "reference" or "torch" (label None but for torch)."""
        if impl == "lec6fast":
            return None, self.fast_call(arrays)
        if impl == "reference":
            return None, self.reference_call(arrays)
        return self.torch_call(arrays)

    def nbytes(self, shape, dtype):
        return self.bytes_per_element(dtype) * math.prod(shape)


def _update(name, make, moved, torch=None, **hyper):
    return Kernel(name=name, make=make, fast=getattr(lec6fast, name),
                  reference=getattr(reference, name), bytes_per_element=streams(moved),
                  hyper=hyper, torch=torch)


# Every operation `lec6fast bench` and benchmarks/ time, each with its reference.
KERNELS = {k.name: k for k in (
    _update("sgd_", uniform_arrays(SIGNED, GRADIENT), 3,
            lambda a, h: _torch_optimizer("SGD", "", a, lr=h["lr"]),
            lr=LR),
    _update("momentum_", uniform_arrays(SIGNED, GRADIENT, SMALL), 5,
            lambda a, h: _torch_optimizer("SGD", "momentum, ", a, lr=h["lr"], momentum=h["mu"]),
            lr=LR, mu=0.9),
    _update("nesterov_", uniform_arrays(SIGNED, GRADIENT, SMALL), 5,
            lambda a, h: _torch_optimizer("SGD", "nesterov, ", a, lr=h["lr"], momentum=h["mu"],
                                          nesterov=True),
            lr=LR, mu=0.9),
    _update("adagrad_", uniform_arrays(SIGNED, GRADIENT, POSITIVE), 5,
            lambda a, h: _torch_optimizer("Adagrad", "", a, lr=h["lr"], eps=h["eps"]),
            lr=LR, eps=1e-7),
    _update("rmsprop_", uniform_arrays(SIGNED, GRADIENT, POSITIVE), 5,
            lambda a, h: _torch_optimizer("RMSprop", "", a, lr=h["lr"], alpha=h["decay_rate"],
                                          eps=h["eps"]),
            lr=LR, decay_rate=0.99, eps=1e-7),
    _update("adam_", uniform_arrays(SIGNED, GRADIENT, SIGNED, POSITIVE), 7,
            lambda a, h: _torch_optimizer("Adam", "", a, lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                                          eps=h["eps"]),
            t=STEP, lr=LR, beta1=0.9, beta2=0.999, eps=1e-7),
    _update("ema_", uniform_arrays(SIGNED, SIGNED), 3, _torch_lerp, decay=0.995),
)}


# ---------------------------------------------------------------- issue 3: dropout, batch norm

KEEP = 0.5                  # dropout's keep probability in the benchmarks


def _dropout_arrays(shape, dtype, rng):
    x, out = uniform_arrays(SIGNED, SIGNED)(shape, dtype, rng)
    return x, out


def lecture_dropout_forward(x, *, p, rng=None, out=None):
    """The lecture's dropout as users write it, U = (rng.random(shape) < p) / p: what the
    benchmarks time as dropout's NumPy baseline.  lec6fast.reference.dropout_forward computes
    the same distribution from lec6fast's documented Philox stream, in NumPy integer
    arithmetic many times slower than this; it is the tests' specification, not a baseline."""
    U = (np.random.default_rng(rng).random(x.shape) < p) / p
    res = x * U
    if out is None:
        return res.astype(x.dtype, copy=False), U
    out[...] = res
    return out, U


def _dropout_backward_arrays(shape, dtype, rng):
    dout, out = uniform_arrays(SIGNED, SIGNED)(shape, dtype, rng)
    _, mask = lec6fast.dropout_forward(dout, p=KEEP, rng=0)
    U = mask.to_array() / KEEP                                   # the lecture's float mask
    return dout, mask, U, out


def _torch_dropout(arrays, h):
    torch = import_torch()
    return "F.dropout", Call(torch.nn.functional.dropout, torch.from_numpy(arrays[0]),
                             1.0 - h["p"], True)


def _torch_dropout_backward(arrays, h):
    # The op torch's autograd runs for dropout's backward, with a mask of torch's own layout.
    torch = import_torch()
    dout = torch.from_numpy(arrays[0])
    _, mask = torch.native_dropout(dout, 1.0 - KEEP, True)
    return "aten.native_dropout_backward", Call(torch.ops.aten.native_dropout_backward,
                                                dout, mask, 1.0 / KEEP)


def _batchnorm_arrays(shape, dtype, rng):
    x, dout = uniform_arrays(SIGNED, SIGNED)(shape, dtype, rng)
    gamma, beta = uniform_arrays(POSITIVE, SIGNED)((shape[1],), dtype, rng)
    return x, gamma, beta, np.zeros(shape[1], dtype), np.ones(shape[1], dtype), dout


def _forward_backward(forward, backward):
    def step(x, gamma, beta, running_mean, running_var, dout):
        _, cache = forward(x, gamma, beta, running_mean=running_mean, running_var=running_var)
        return backward(dout, cache)
    return step


def _torch_batchnorm(arrays, h):
    torch = import_torch()
    x, gamma, beta = (torch.from_numpy(a).requires_grad_(True) for a in arrays[:3])
    running_mean, running_var, dout = (torch.from_numpy(a) for a in arrays[3:])

    def step():
        out = torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta,
                                             training=True, momentum=0.1, eps=1e-5)
        return torch.autograd.grad(out, (x, gamma, beta), dout)
    return "F.batch_norm + autograd", Call(step)


KERNELS.update((k.name, k) for k in (
    # The default call: out allocated, as the reference and torch allocate theirs.
    Kernel("dropout_forward", _dropout_arrays,
           lambda x, out, **h: lec6fast.dropout_forward(x, **h),
           lambda dt: 2 * np.dtype(dt).itemsize + 1 / 8,
           reference=lambda x, out, **h: lecture_dropout_forward(x, **h),
           hyper=dict(p=KEEP, rng=np.random.default_rng(0)), torch=_torch_dropout,
           family="_dropout", probe="_copy"),
    # The same into a preallocated out (no page faults on fresh memory): the kernel itself.
    Kernel("dropout_forward(out=)", _dropout_arrays,
           lambda x, out, **h: lec6fast.dropout_forward(x, out=out, **h),
           lambda dt: 2 * np.dtype(dt).itemsize + 1 / 8,
           reference=lambda x, out, **h: lecture_dropout_forward(x, out=out, **h),
           hyper=dict(p=KEEP, rng=np.random.default_rng(0)), family="_dropout", probe="_copy"),
    Kernel("dropout_backward(out=)", _dropout_backward_arrays,
           lambda dout, mask, U, out: lec6fast.dropout_backward(dout, mask, out=out),
           lambda dt: 2 * np.dtype(dt).itemsize + 1 / 8,
           reference=lambda dout, mask, U, out: reference.dropout_backward(dout, U, out=out),
           torch=_torch_dropout_backward, family="_dropout", probe="_copy"),
    # Forward + backward in train mode.  Bytes: x and out (forward), dout, x and dx (backward):
    # what each pass over a block of features moves when the block's other passes hit cache.
    Kernel("batchnorm_fwd+bwd", _batchnorm_arrays,
           _forward_backward(lec6fast.batchnorm_forward, lec6fast.batchnorm_backward),
           streams(5), reference=_forward_backward(reference.batchnorm_forward,
                                                   reference.batchnorm_backward),
           torch=_torch_batchnorm, shapes=((256, 4096), (64, 64, 32, 32)),
           family="_batchnorm", probe="_copy"),
))


def _probe(name, arrays, moved, **hyper):
    module = _dispatch.kernels("_updates", _dispatch.level)
    return Kernel(name=name, make=uniform_arrays(*[SIGNED] * arrays), fast=getattr(module, name),
                  bytes_per_element=streams(moved), hyper=hyper)


# The bandwidth probes of the kernel modules (same SIMD level, threads and driver as the
# kernels).  _scale_ (x *= s in place, s = 1 keeps values as they are) is the pure
# read-modify-write stream an update makes: the "RMW bandwidth" kernels are read against.
PROBES = {p.name: p for p in (
    _probe("_copy", 2, 2),
    _probe("_triad", 3, 3, s=0.5),
    _probe("_scale_", 1, 2, s=1.0),
)}
PROBE_LABELS = {"_scale_": "RMW", "_copy": "copy", "_triad": "triad"}    # their one name in output
NOISY = 0.25                # a timing whose batches spread over more than this fraction of its median


# ---------------------------------------------------------------- a whole comparison

def size_label(n):
    """1000 -> '1e3', 16000000 -> '1.6e7', 12345 -> '12345'."""
    e = len(str(n)) - 1
    if n < 1000 or n % 10 ** (e - 2):       # small, or more than 3 significant digits
        return str(n)
    return f"{n / 10**e:g}e{e}"


def shape_label(shape):
    return size_label(shape[0]) if len(shape) == 1 else "x".join(map(str, shape))


def run(kernels, dtypes, sizes, *, threads=None, use_torch=True, repeat=7, min_repeat=3,
        batch_time=2e-3, budget=0.5, progress=None, seed=0):
    """Time every kernel at every dtype and shape against its reference and torch, plus the
    bandwidth probes at the same shapes.  Returns a JSON-ready dict (see `lec6fast bench --json`).

    Each kernel's implementations are timed together (`measure_together`) with the bandwidth
    probe its GB/s is read against (Kernel.probe); the probes table comes from its own joint
    timing at the start of each dtype and shape.  progress(done, total, what) is called
    before each step.
    """
    kernels = [KERNELS[k] if isinstance(k, str) else k for k in kernels]
    torch = import_torch() if use_torch else None
    old_threads = lec6fast.get_num_threads()
    if threads is not None:
        lec6fast.set_num_threads(threads)
    threads = lec6fast.get_num_threads()
    old_torch_threads = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(threads)
    opts = dict(repeat=repeat, min_repeat=min_repeat, batch_time=batch_time, budget=budget)
    rng = np.random.default_rng(seed)

    blocks = []                     # (dtype, shape, kernels at that shape)
    for dtype in dtypes:
        shapes = {}
        for k in kernels:
            for shape in k.shapes_for(sizes):
                shapes.setdefault(tuple(shape), []).append(k)
        blocks += [(dtype, shape, ks) for shape, ks in shapes.items()]
    total = sum(1 + len(ks) for _, _, ks in blocks)
    done = 0

    def step(what):
        nonlocal done
        if progress:
            progress(done, total, what)
        done += 1

    out = {"config": _config.config(),
           "torch": {"version": torch.__version__, "num_threads": torch.get_num_threads()} if torch else None,
           "settings": dict(opts, threads=threads, seed=seed),
           "probes": [], "results": []}
    try:
        for dtype, shape, ks in blocks:
            where = f"{dtype} n={shape_label(shape)}"
            step(f"{where}: bandwidth probes")
            arrays = [p.make(shape, dtype, rng) for p in PROBES.values()]
            timings = measure_together([p.fast_call(a) for p, a in zip(PROBES.values(), arrays)], **opts)
            del arrays
            for p, t in zip(PROBES.values(), timings):
                out["probes"].append({"probe": p.name, "dtype": dtype, "shape": list(shape),
                                      "bytes_per_element": p.bytes_per_element(dtype),
                                      "gbps": gbps(p.nbytes(shape, dtype), t.median), **t.as_dict()})
            for k in ks:
                torch_label, torch_call, torch_error = None, None, None
                impls = "lec6fast, reference"
                arrays = k.make(shape, dtype, rng)
                calls = [k.fast_call(arrays), k.reference_call(arrays)]
                if torch and k.torch:
                    try:
                        torch_label, torch_call = k.torch_call(arrays)
                    except RuntimeError as e:   # this torch has no usable implementation
                        torch_error = str(e)
                    else:
                        calls.append(torch_call)
                        impls += ", torch"
                step(f"{where}: {k.name} ({impls}, {PROBE_LABELS[k.probe]} probe)")
                probe_kernel = PROBES[k.probe]
                probe_arrays = probe_kernel.make(shape, dtype, rng)
                calls.append(probe_kernel.fast_call(probe_arrays))
                fast, ref, *rest = measure_together(calls, **opts)
                del arrays, probe_arrays, calls, torch_call
                probe = rest.pop()
                fast_gbps = gbps(k.nbytes(shape, dtype), fast.median)
                probe_gbps = gbps(probe_kernel.nbytes(shape, dtype), probe.median)
                row = {"kernel": k.name, "dtype": dtype, "shape": list(shape),
                       "bytes_per_element": k.bytes_per_element(dtype),
                       "lec6fast": dict(fast.as_dict(), gbps=fast_gbps),
                       "reference": ref.as_dict(), "torch": None,
                       "probe": dict(probe.as_dict(), name=k.probe, gbps=probe_gbps),
                       "speedup_vs_reference": ref.median / fast.median,
                       "bandwidth_fraction": fast_gbps / probe_gbps,
                       "speedup_vs_torch": None, "torch_error": torch_error}
                if rest:
                    row["torch"] = dict(rest[0].as_dict(), label=torch_label)
                    row["speedup_vs_torch"] = rest[0].median / fast.median
                out["results"].append(row)
    finally:
        lec6fast.set_num_threads(old_threads)
        if torch:
            torch.set_num_threads(old_torch_threads)
    if progress:
        progress(total, total, "done")
    return out

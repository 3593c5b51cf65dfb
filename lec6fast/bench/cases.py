"""The benchmark cases: every operation `lec6fast bench` and the benchmarks/ suite time.

A `Kernel` holds everything a benchmark needs to know about one operation: how to allocate
its arrays, the lec6fast call, the NumPy reference call (lec6fast.reference, same name and
signature), the closest PyTorch CPU call if there is one (lec6fast.bench.torch_twins), and the
bytes one call moves per element.  `KERNELS` lists the operations and `PROBES` the bandwidth
probes; the command and the pytest-benchmark suite both read their cases from here.

The update rules' cases are built from lec6fast._rules.RULES: a row's kernel, its arrays (x,
dx and its state), the bytes it moves (rule.streams arrays) and its hyperparameters' defaults,
with lr = LR and t = STEP.  Adding a rule row adds its case; `FILLS` and
torch_twins.UPDATES give it its values and its torch twin, where it has them.
"""

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import lec6fast
from lec6fast import _dispatch, _rules, reference
from lec6fast.bench import torch_twins
from lec6fast.bench.timing import Call

DTYPES = ("float32", "float64")
DEFAULT_SIZES = (1_000, 100_000, 16_000_000)

# Hyperparameters of every benchmark call.  lr is small so that the thousands of in-place
# steps a benchmark makes on the same arrays keep every value O(1) and finite.
LR = 1e-5
STEP = 10                   # t, for the rules that take it (the cost does not depend on it)


def streams(k):
    """bytes_per_element for a kernel that moves k whole arrays (each element read once or
    written once) of the dtype's itemsize."""
    return lambda dtype: k * np.dtype(dtype).itemsize


# ---------------------------------------------------------------- values

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

# The arrays of each update kernel, in its argument order.  A rule not listed gets x, dx and
# POSITIVE state arrays (right for caches and second moments, harmless for the others).
FILLS = {
    "sgd_": (SIGNED, GRADIENT),
    "momentum_": (SIGNED, GRADIENT, SMALL),
    "nesterov_": (SIGNED, GRADIENT, SMALL),
    "adagrad_": (SIGNED, GRADIENT, POSITIVE),
    "rmsprop_": (SIGNED, GRADIENT, POSITIVE),
    "adam_": (SIGNED, GRADIENT, SIGNED, POSITIVE),
    "ema_": (SIGNED, SIGNED),                   # (x_avg, x)
}


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


# ---------------------------------------------------------------- a case

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
        if self.torch is None or torch_twins.import_torch() is None:
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


# ---------------------------------------------------------------- the update rules

def update_case(rule):
    """The case of a row of lec6fast._rules.RULES."""
    hyper = {"t": STEP} if rule.needs_t else {}
    hyper.update((h.name, LR if h.name == "lr" else h.default) for h in rule.hypers)
    fills = FILLS.get(rule.kernel, (SIGNED, GRADIENT) + (POSITIVE,) * len(rule.state))
    return Kernel(name=rule.kernel, make=uniform_arrays(*fills),
                  fast=getattr(lec6fast, rule.kernel), reference=getattr(reference, rule.kernel),
                  bytes_per_element=streams(rule.streams), hyper=hyper,
                  torch=torch_twins.UPDATES.get(rule.kernel))


# Every operation `lec6fast bench` and benchmarks/ time, each with its reference.
KERNELS = {rule.kernel: update_case(rule) for rule in _rules.RULES.values()}


# ---------------------------------------------------------------- dropout, batch norm

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


def _batchnorm_arrays(shape, dtype, rng):
    x, dout = uniform_arrays(SIGNED, SIGNED)(shape, dtype, rng)
    gamma, beta = uniform_arrays(POSITIVE, SIGNED)((shape[1],), dtype, rng)
    return x, gamma, beta, np.zeros(shape[1], dtype), np.ones(shape[1], dtype), dout


def _forward_backward(forward, backward):
    def step(x, gamma, beta, running_mean, running_var, dout):
        _, cache = forward(x, gamma, beta, running_mean=running_mean, running_var=running_var)
        return backward(dout, cache)
    return step


def _dropout_bytes(dtype):
    return 2 * np.dtype(dtype).itemsize + 1 / 8                  # x and out, and the 1-bit mask


KERNELS.update((k.name, k) for k in (
    # The default call: out allocated, as the reference and torch allocate theirs.
    Kernel("dropout_forward", _dropout_arrays,
           lambda x, out, **h: lec6fast.dropout_forward(x, **h), _dropout_bytes,
           reference=lambda x, out, **h: lecture_dropout_forward(x, **h),
           hyper=dict(p=KEEP, rng=np.random.default_rng(0)), torch=torch_twins.dropout,
           family="_dropout", probe="_copy"),
    # The same into a preallocated out (no page faults on fresh memory): the kernel itself.
    Kernel("dropout_forward(out=)", _dropout_arrays,
           lambda x, out, **h: lec6fast.dropout_forward(x, out=out, **h), _dropout_bytes,
           reference=lambda x, out, **h: lecture_dropout_forward(x, out=out, **h),
           hyper=dict(p=KEEP, rng=np.random.default_rng(0)), family="_dropout", probe="_copy"),
    Kernel("dropout_backward(out=)", _dropout_backward_arrays,
           lambda dout, mask, U, out: lec6fast.dropout_backward(dout, mask, out=out),
           _dropout_bytes,
           reference=lambda dout, mask, U, out: reference.dropout_backward(dout, U, out=out),
           torch=lambda arrays, h: torch_twins.dropout_backward(arrays, KEEP),
           family="_dropout", probe="_copy"),
    # Forward + backward in train mode.  Bytes: x and out (forward), dout, x and dx (backward):
    # what each pass over a block of features moves when the block's other passes hit cache.
    Kernel("batchnorm_fwd+bwd", _batchnorm_arrays,
           _forward_backward(lec6fast.batchnorm_forward, lec6fast.batchnorm_backward),
           streams(5), reference=_forward_backward(reference.batchnorm_forward,
                                                   reference.batchnorm_backward),
           torch=torch_twins.batchnorm, shapes=((256, 4096), (64, 64, 32, 32)),
           family="_batchnorm", probe="_copy"),
))


# ---------------------------------------------------------------- bandwidth probes

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


# ---------------------------------------------------------------- labels

def size_label(n):
    """1000 -> '1e3', 16000000 -> '1.6e7', 12345 -> '12345'."""
    e = len(str(n)) - 1
    if n < 1000 or n % 10 ** (e - 2):       # small, or more than 3 significant digits
        return str(n)
    return f"{n / 10**e:g}e{e}"


def shape_label(shape):
    return size_label(shape[0]) if len(shape) == 1 else "x".join(map(str, shape))

"""Hostile objects: scalars whose __float__/__index__/__lt__ change arrays that were already
passed, ndarray subclasses whose Python attributes lie, __array_function__ overrides, masks
and caches whose attributes were replaced.  Each must raise TypeError/ValueError or compute
the right result; never crash, never write out of bounds or into a read-only array.

Every case runs in a fresh interpreter (run_python), so a crash fails its test instead of
killing the run.  The kernels' order that makes this hold: every scalar converted first, then
every array checked by C-level reads, then the kernel run with exactly what was checked.
"""

import pytest

PRELUDE = """
import numbers, operator, sys
import numpy as np
import lec6fast
from lec6fast import reference as R

class Real:
    '''A numbers.Real that runs `hook` when converted.'''
    def __init__(self, value, hook):
        self.value, self.hook = value, hook
    def __float__(self):
        self.hook()
        return float(self.value)
    def __repr__(self):
        return f"Real({self.value})"
numbers.Real.register(Real)

class Step(int):
    '''An int subclass whose comparisons run `hook`.'''
    hook = None
    def __lt__(self, other):
        type(self).hook()
        return int(self) < other
    def __ge__(self, other):
        type(self).hook()
        return int(self) >= other

def retype(*arrays, to=np.float32):
    def hook():
        for a in arrays:
            a.dtype = to
    return hook

def freeze(*arrays):
    def hook():
        for a in arrays:
            a.flags.writeable = False
    return hook

def outcome(fn):
    try:
        fn()
    except (TypeError, ValueError) as e:
        return type(e).__name__
    return "ok"

class Liar(np.ndarray):
    '''Python-level attributes that lie about the array.'''
    size = property(lambda self: 1)
    shape = property(lambda self: (1,))
    ndim = property(lambda self: 1)
    dtype = property(lambda self: np.dtype(np.int8))
    strides = property(lambda self: (1,))
    nbytes = property(lambda self: 1)
    def __array_function__(self, func, types, args, kwargs):
        return np.zeros(1, np.float64)              # e.g. a tiny np.empty_like
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return np.zeros(1, np.float64)

def plain(a):
    return np.asarray(a).view(np.ndarray).copy()
"""

N = 1 << 18


def check(run_python, body):
    out = run_python(PRELUDE + body)
    return out.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------- scalars that run code

def test_int_subclass_t_retypes_every_array_first(run_python):
    """The issue's SIGSEGV: t's __lt__ re-types the four arrays (2**18 float64 -> 2**19 float32).
    t is converted before the arrays are checked, so the kernel sees the new, consistent
    arrays and updates all 2**19 float32 elements as the reference does."""
    assert check(run_python, f"""
a = [np.linspace(-1, 1, {N}) for _ in range(4)]
a[3][:] = 0.25
ref = [x.copy().view(np.float32) for x in a]
Step.hook = staticmethod(retype(*a))
lec6fast.adam_(*a, t=Step(1), lr=0.1)
R.adam_(*ref, t=1, lr=0.1)
assert a[0].dtype == np.float32 and a[0].size == {2 * N}
assert all(x.tobytes() == y.tobytes() for x, y in zip(a, ref))
print("ok")
""") == "ok"


@pytest.mark.parametrize("call", [
    "lec6fast.sgd_(x, g, lr=Real(0.1, HOOK))",
    "lec6fast.momentum_(x, g, v, lr=Real(0.1, HOOK))",
    "lec6fast.adam_(x, g, v, w, t=1, lr=0.1, beta1=Real(0.9, HOOK))",
    "lec6fast.rmsprop_(x, g, w, lr=0.1, eps=Real(1e-7, HOOK))",
    "lec6fast.ema_(x, g, decay=Real(0.9, HOOK))",
])
@pytest.mark.parametrize("hook, expected", [("retype(x)", "TypeError"),
                                            ("freeze(x)", "ValueError"),
                                            ("retype(x, g, v, w)", "ok")])
def test_float_hooks_run_before_the_arrays_are_checked(run_python, call, hook, expected):
    """A __float__ that re-types x alone (now float32 against float64: TypeError), freezes x
    (read-only output: ValueError, nothing written) or re-types every array (consistent: the
    update runs on what the arrays now are)."""
    got = check(run_python, f"""
x, g, v, w = (np.linspace(0.5, 1, {N}) for _ in range(4))
before = x.copy()
HOOK = {hook}
res = outcome(lambda: {call})
if res == "ValueError":
    assert x.tobytes() == before.tobytes(), "a refused call wrote to x"
print(res)
""")
    assert got == expected


def test_batchnorm_momentum_hook(run_python):
    assert check(run_python, """
x = np.random.default_rng(0).standard_normal((256, 64))
gamma, beta, rm, rv = np.ones(64), np.zeros(64), np.zeros(64), np.ones(64)
print(outcome(lambda: lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                                 momentum=Real(0.9, retype(x)))))
""") == "TypeError"


def test_dropout_rng_hook_retypes_x_first(run_python):
    """rng's __lt__ re-types x before x is checked: the mask covers the new 2*N elements."""
    assert check(run_python, f"""
x = np.linspace(-1, 1, {N})
want = x.copy().view(np.float32)
Step.hook = staticmethod(retype(x))
out, mask = lec6fast.dropout_forward(x, p=0.5, rng=Step(7))
ref, ref_mask = lec6fast.dropout_forward(want, p=0.5, rng=7)
assert out.shape == ({2 * N},) and mask.shape == ({2 * N},) and mask.nbytes == {2 * N // 8}
assert out.tobytes() == ref.tobytes() and mask.bits.tobytes() == ref_mask.bits.tobytes()
print("ok")
""") == "ok"


def test_dropout_backward_mask_p_hook(run_python):
    """mask.p replaced by a number whose __float__ re-types dout: dout is checked after, and
    no longer matches the mask's shape."""
    assert check(run_python, f"""
d = np.ones({N})
_, mask = lec6fast.dropout_forward(d, p=0.5, rng=1)
mask.p = Real(0.5, retype(d))
print(outcome(lambda: lec6fast.dropout_backward(d, mask)))
""") == "ValueError"


# ---------------------------------------------------------------- subclasses that lie

@pytest.mark.parametrize("call, reference", [
    ("lec6fast.sgd_(x, g, lr=0.5)", "R.sgd_(px, pg, lr=0.5)"),
    ("lec6fast.adam_(x, g, m, v, t=2, lr=0.5)", "R.adam_(px, pg, pm, pv, t=2, lr=0.5)"),
])
def test_lying_subclasses_in_the_updates(run_python, call, reference):
    assert check(run_python, f"""
rng = np.random.default_rng(3)
arrays = [rng.uniform(0.5, 1.5, {N}) for _ in range(4)]
px, pg, pm, pv = (a.copy() for a in arrays)
x, g, m, v = (a.view(Liar) for a in arrays)
{call}
{reference}
assert plain(x).tobytes() == px.tobytes() and plain(m).tobytes() == pm.tobytes()
print("ok")
""") == "ok"


def test_lying_subclass_in_dropout(run_python):
    """Sizes come from the C level: a `size` of 1 does not shrink the mask, and an
    __array_function__ that returns a 1-element array does not become the output."""
    assert check(run_python, f"""
base = np.linspace(-1, 1, {N + 3})
x = base.view(Liar)
out, mask = lec6fast.dropout_forward(x, p=0.3, rng=5)
ref, ref_mask = lec6fast.dropout_forward(base, p=0.3, rng=5)
assert type(out) is np.ndarray and out.tobytes() == ref.tobytes()
assert mask.shape == ({N + 3},) and mask.bits.tobytes() == ref_mask.bits.tobytes()
dx = lec6fast.dropout_backward(x, mask)
assert type(dx) is np.ndarray and dx.tobytes() == lec6fast.dropout_backward(base, mask).tobytes()
print("ok")
""") == "ok"


def test_lying_subclass_in_batchnorm(run_python):
    assert check(run_python, """
rng = np.random.default_rng(4)
base = rng.standard_normal((64, 96))
params = [np.ones(96), np.zeros(96)]
out1, c1 = lec6fast.batchnorm_forward(base.view(Liar), *params, running_mean=np.zeros(96),
                                      running_var=np.ones(96))
out2, c2 = lec6fast.batchnorm_forward(base, *params, running_mean=np.zeros(96), running_var=np.ones(96))
assert out1.tobytes() == out2.tobytes()
g1 = lec6fast.batchnorm_backward(base.view(Liar), c1)
g2 = lec6fast.batchnorm_backward(base, c2)
assert all(a.tobytes() == b.tobytes() for a, b in zip(g1, g2))
print("ok")
""") == "ok"


# ---------------------------------------------------------------- masks and caches handed back

@pytest.mark.parametrize("mutation, expected", [
    ("mask.bits = np.zeros(1, np.uint8)", "ValueError"),
    ("mask.bits = mask.bits.view(Liar)", "ValueError"),
    ("mask.bits = np.zeros(mask.nbytes, np.uint16)", "ValueError"),
    ("mask.shape = (1,)", "ValueError"),
    ("mask.shape = ('a', 'b')", "ValueError"),
    ("mask.p = 2.0", "ValueError"),
    ("mask.inverted = 'yes'", "TypeError"),
    ("mask.p = Real(0.5, freeze(d))", "ok"),           # dout is only read
])
def test_replaced_mask_attributes(run_python, mutation, expected):
    assert check(run_python, f"""
d = np.ones({N})
_, mask = lec6fast.dropout_forward(d, p=0.5, rng=1)
{mutation}
print(outcome(lambda: lec6fast.dropout_backward(d, mask)))
""") == expected


@pytest.mark.parametrize("mutation, expected", [
    ("cache.stats = cache.stats.view(Liar)", "ValueError"),
    ("cache.stats = np.zeros((3, 2))", "ValueError"),
    ("cache.stats = np.zeros((2, 96))", "ValueError"),
    ("cache.x = cache.x[:, :10].copy()", "ValueError"),
    ("cache.x = cache.x.astype(np.float32)", "TypeError"),
    ("cache.x = 'x'", "TypeError"),
])
def test_replaced_cache_attributes(run_python, mutation, expected):
    assert check(run_python, f"""
x = np.random.default_rng(0).standard_normal((64, 96))
_, cache = lec6fast.batchnorm_forward(x, np.ones(96), np.zeros(96), running_mean=np.zeros(96),
                                      running_var=np.ones(96))
{mutation}
print(outcome(lambda: lec6fast.batchnorm_backward(x, cache)))
""") == expected


# ---------------------------------------------------------------- fuzz

FUZZ = """
import random
random.seed(SEED)
MUTATIONS = [
    lambda arrs: retype(*arrs),
    lambda arrs: retype(*arrs[:1]),
    lambda arrs: retype(*arrs, to=np.float64),
    lambda arrs: freeze(*arrs),
    lambda arrs: freeze(*arrs[1:]),
    lambda arrs: (lambda: [setattr(a, "shape", (2, -1)) for a in arrs]),
    lambda arrs: (lambda: [setattr(a, "shape", (-1,)) for a in arrs[:1]]),
    lambda arrs: (lambda: None),
]

def case(i):
    dt = random.choice([np.float32, np.float64])
    n = random.choice([2, 64, 1000, 1 << 16, (1 << 16) + 6])
    arrs = [np.random.default_rng(i + k).uniform(0.5, 1.5, n).astype(dt) for k in range(6)]
    views = [a.view(Liar) if random.random() < 0.3 else a for a in arrs]
    hook = random.choice(MUTATIONS)(arrs)
    x, g, m, v, b2, b3 = views
    kind = random.randrange(7)
    if kind == 0:
        return lambda: lec6fast.sgd_(x, g, lr=Real(0.1, hook))
    if kind == 1:
        Step.hook = staticmethod(hook)
        return lambda: lec6fast.adam_(x, g, m, v, t=Step(3), lr=0.1)
    if kind == 2:
        return lambda: lec6fast.nesterov_(x, g, v, lr=0.1, mu=Real(0.5, hook))
    if kind == 3:
        Step.hook = staticmethod(hook)
        return lambda: lec6fast.dropout_forward(x, p=0.5, rng=Step(1), out=g if random.random() < 0.5 else None)
    if kind == 4:
        _, mask = lec6fast.dropout_forward(arrs[0].copy(), p=0.5, rng=2)
        mask.p = Real(0.5, hook)
        return lambda: lec6fast.dropout_backward(g, mask, out=m if random.random() < 0.5 else None)
    x2 = arrs[0][: (n // 2) * 2].reshape(2, -1) if n > 1 else arrs[0].reshape(1, 1)
    d = x2.shape[1]
    gamma, beta, rm, rv = np.ones(d, dt), np.zeros(d, dt), np.zeros(d, dt), np.ones(d, dt)
    hook = random.choice(MUTATIONS)([x2, gamma, rm])
    if kind == 5:
        return lambda: lec6fast.batchnorm_forward(x2, gamma, beta, running_mean=rm, running_var=rv,
                                                  momentum=Real(0.9, hook))
    _, cache = lec6fast.batchnorm_forward(x2.copy(), gamma, beta, running_mean=rm.copy(),
                                          running_var=rv.copy())
    return lambda: lec6fast.batchnorm_backward(x2, cache) if hook() is None else None

seen = {}
for i in range(COUNT):
    res = outcome(case(i))
    seen[res] = seen.get(res, 0) + 1
print(sorted(seen.items()))
"""


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_hostile_scalars_and_subclasses(run_python, seed):
    """Random kernels x hostile hooks (re-type, freeze, reshape some or all arrays) x lying
    subclasses: every call raises TypeError/ValueError or returns; the process never dies."""
    out = check(run_python, FUZZ.replace("SEED", str(seed)).replace("COUNT", "150"))
    outcomes = dict(eval(out))
    assert set(outcomes) <= {"ok", "TypeError", "ValueError"} and sum(outcomes.values()) == 150

"""Shared fixtures for the lec6fast tests.

The tests are meant to exercise the *installed* package (the wheel), not the source
checkout: the guard below aborts the session if `lec6fast` would be imported from the
`lec6fast/` directory next to `tests/`, unless LEC6FAST_TEST_SOURCE_TREE=1 says that an
in-place build is being tested on purpose.

Test modules get everything through fixtures (no helper module to import):
  kernel    -- a `Kernel` description of one update (parametrized over all seven)
  dtype     -- numpy.float32 / numpy.float64 (parametrized)
  rng       -- a seeded numpy Generator
  bits      -- helpers comparing arrays bit for bit and snapshotting their bytes
  (and `from conftest import Bits, normal`: the same helpers, and the one array generator)
  kernels_module, parallel_min, num_threads, run_python -- runtime helpers
"""

import contextlib
import importlib.util
import os
import runpy
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
SOURCE_PACKAGE = TESTS_DIR.parent / "lec6fast"
SOURCE_TREE_ENV = "LEC6FAST_TEST_SOURCE_TREE"


def _guard_against_source_tree():
    spec = importlib.util.find_spec("lec6fast")
    if spec is None or spec.origin is None:
        pytest.exit("lec6fast is not importable: tests run against the installed package: "
                    "pip install the wheel, or set LEC6FAST_TEST_SOURCE_TREE=1 for an in-place build",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    found = Path(spec.origin).resolve().parent
    if found == SOURCE_PACKAGE and os.environ.get(SOURCE_TREE_ENV) != "1":
        pytest.exit(f"lec6fast would be imported from the source checkout ({found}): tests run "
                    f"against the installed package: pip install the wheel, or set "
                    f"{SOURCE_TREE_ENV}=1 for an in-place build",
                    returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_configure(config):
    # Before any test module imports lec6fast, so a source-tree import never happens by accident.
    _guard_against_source_tree()


def pytest_report_header(config):
    import lec6fast
    from lec6fast import _dispatch
    return (f"lec6fast {lec6fast.__version__} from {Path(lec6fast.__file__).parent}; "
            f"SIMD {_dispatch.level} (available {', '.join(_dispatch.available_levels())}); "
            f"threads {lec6fast.get_num_threads()}")


# ---------------------------------------------------------------- the seven updates

def normal(shape, dtype, rng=0, loc=0.0, scale=1.0):
    """The tests' one array generator: loc + scale * standard normal draws of `shape` as an
    ndarray of `dtype` (a 0-d array for shape ()); rng: a numpy Generator or a seed."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return np.asarray(loc + scale * rng.standard_normal(shape), dtype=dtype)


def _normal(scale=1.0):
    return lambda rng, shape: normal(shape, np.float64, rng, scale=scale)


def _uniform(high):
    return lambda rng, shape: rng.uniform(0.0, high, shape)


@dataclass(frozen=True)
class Kernel:
    """What a test needs to know about one update: its arguments and their roles.

    From the rule's row of lec6fast._rules (the one description of every rule):
    arrays   -- positional array arguments, in signature order
    outputs  -- the arrays updated in place (the others are read only)
    ranges   -- each hyperparameter and its allowed range: "nonneg" (>= 0), "positive" (> 0),
                "unit" ([0, 1)), "step" (an integer >= 1)
    defaults -- the optional hyperparameters' documented defaults
    The tests' own data:
    init     -- per array, how to draw typical initial values (as float64)
    required -- keyword arguments a call cannot do without (lr; t is added per step)
    edges    -- hyperparameter sets at the edges of their ranges
    """

    name: str
    arrays: tuple
    outputs: tuple
    init: dict
    required: dict
    ranges: dict
    edges: tuple = field(default=())
    defaults: dict = field(default_factory=dict)

    @property
    def input(self):
        """The array that carries new data each step (dx, or the current x for ema_)."""
        return self.arrays[1]

    @property
    def has_t(self):
        return "t" in self.ranges

    @property
    def fast(self):
        import lec6fast
        return getattr(lec6fast, self.name)

    @property
    def ref(self):
        from lec6fast import reference
        return getattr(reference, self.name)

    def make(self, shape, dtype, rng):
        """A dict name -> array of `shape` and `dtype` with typical values."""
        return {a: np.asarray(self.init[a](rng, shape), dtype=dtype) for a in self.arrays}

    def hyper(self, t=1, **kw):
        """Keyword arguments for one call: the required ones (t for adam_), overridden by kw."""
        out = dict(self.required)
        if self.has_t:
            out["t"] = t
        out.update(kw)
        return out

    def call(self, fn, arrays, **hyper):
        return fn(*[arrays[a] for a in self.arrays], **hyper)

    def steps(self, fn, arrays, inputs, **hyper):
        """Consecutive steps: step k (1-based) writes inputs[k-1] into the input array and
        calls fn with t=k (adam_) and the other hyperparameters."""
        for k, data in enumerate(inputs, start=1):
            arrays[self.input][...] = data
            kw = dict(hyper)
            if self.has_t:
                kw["t"] = k
            self.call(fn, arrays, **kw)


# The tests' data per rule (typical values, required arguments, range edges); everything else
# comes from the rule's row in lec6fast._rules.
TEST_DATA = {
    "sgd": dict(init={"dx": _normal()}, required={"lr": 1e-2},
                edges=({"lr": 0.0}, {"lr": 1e3}, {"lr": 1e-30})),
    "momentum": dict(init={"v": _normal(0.1)}, required={"lr": 1e-2},
                     edges=({"lr": 0.0}, {"mu": 0.0}, {"mu": 0.999999}, {"mu": 0.5, "lr": 1.0})),
    "nesterov": dict(init={"v": _normal(0.1)}, required={"lr": 1e-2},
                     edges=({"lr": 0.0}, {"mu": 0.0}, {"mu": 0.999999}, {"mu": 0.5, "lr": 1.0})),
    "adagrad": dict(init={"cache": _uniform(1.0)}, required={"lr": 1e-2},
                    edges=({"lr": 0.0}, {"eps": 1e-30}, {"eps": 1.0}, {"lr": 1.0, "eps": 1e-3})),
    "rmsprop": dict(init={"cache": _uniform(1.0)}, required={"lr": 1e-2},
                    edges=({"lr": 0.0}, {"decay_rate": 0.0}, {"decay_rate": 0.999999},
                           {"eps": 1e-30}, {"eps": 1.0})),
    "adam": dict(init={"m": _normal(0.1), "v": _uniform(0.01)}, required={"lr": 1e-3},
                 edges=({"lr": 0.0}, {"beta1": 0.0}, {"beta2": 0.0}, {"beta1": 0.999999},
                        {"beta2": 0.999999}, {"beta1": 0.0, "beta2": 0.999999}, {"eps": 1e-30},
                        {"eps": 1.0})),
    "ema": dict(init={}, required={}, edges=({"decay": 0.0}, {"decay": 0.999999}, {"decay": 0.5})),
}


def _kernel(rule):
    data = TEST_DATA[rule.name]
    ranges = {"t": "step"} if rule.needs_t else {}
    ranges.update((h.name, h.range) for h in rule.hypers)
    init = {a: _normal() for a in rule.arrays}
    init.update(data["init"])
    return Kernel(rule.kernel, rule.arrays, rule.outputs, init=init, required=data["required"],
                  ranges=ranges, edges=data["edges"],
                  defaults={h.name: h.default for h in rule.hypers if h.default is not None})


def _rules():
    """lec6fast._rules.RULES, read from the file without importing the package, so that the
    source-tree guard (pytest_configure) still decides first where lec6fast comes from."""
    spec = importlib.util.find_spec("lec6fast")
    path = Path(spec.submodule_search_locations[0], "_rules.py")
    return runpy.run_path(str(path))["RULES"]


KERNELS = {rule.kernel: _kernel(rule) for rule in _rules().values()}

DTYPES = (np.float32, np.float64)


@pytest.fixture(scope="session", params=list(KERNELS), ids=list(KERNELS))
def kernel(request):
    return KERNELS[request.param]


@pytest.fixture(scope="session")
def kernel_table():
    """All seven Kernel descriptions, by name."""
    return KERNELS


@pytest.fixture(scope="session", params=DTYPES, ids=[d.__name__ for d in DTYPES])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# ---------------------------------------------------------------- bit-level comparisons

class Bits:
    """Comparisons at the level of bits: the update kernels reproduce the reference exactly."""

    @staticmethod
    def raw(a):
        """The array's bytes in C order (any layout, NaN-safe: compares bits, not values)."""
        return np.ascontiguousarray(a).tobytes()

    @staticmethod
    def uint(a):
        a = np.asarray(a)
        return a.view({4: np.uint32, 8: np.uint64}[a.dtype.itemsize])

    @classmethod
    def assert_equal(cls, fast, ref, what=""):
        """Same dtype, shape and bit pattern (so signed zeros, infinities and NaN payloads too)."""
        fast, ref = np.asarray(fast), np.asarray(ref)
        assert fast.dtype == ref.dtype, f"{what}: dtype {fast.dtype} != {ref.dtype}"
        assert fast.shape == ref.shape, f"{what}: shape {fast.shape} != {ref.shape}"
        diff = cls.uint(fast) != cls.uint(ref)
        if diff.any():
            idx = np.argwhere(diff)[:5] if fast.ndim else [()]
            detail = ", ".join(f"{tuple(i)}: {fast[tuple(i)]!r} vs {ref[tuple(i)]!r}" for i in idx)
            pytest.fail(f"{what}: {int(diff.sum())} of {diff.size} elements differ in bits ({detail})")

    @classmethod
    def assert_equal_nan(cls, fast, ref, what=""):
        """NaN in exactly the same places; every other element bit-identical (a NaN's sign and
        payload are not specified by IEEE 754 and are not compared)."""
        fast, ref = np.asarray(fast), np.asarray(ref)
        assert fast.dtype == ref.dtype and fast.shape == ref.shape, what
        nan_f, nan_r = np.isnan(fast), np.isnan(ref)
        assert np.array_equal(nan_f, nan_r), f"{what}: NaN positions differ"
        keep = ~nan_f
        cls.assert_equal(fast[keep], ref[keep], what)

    @classmethod
    def snapshot(cls, *objs):
        """Bytes of every array among objs (anything else is recorded by repr)."""
        return [cls.raw(o) if isinstance(o, np.ndarray) else repr(o) for o in objs]

    @staticmethod
    def same(a, b):
        """Same dtype, shape and bytes (a bool, for assert and for conditions)."""
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()

    @classmethod
    def all_same(cls, xs, ys):
        """Two sequences of arrays, pairwise the same (dtype, shape, bytes)."""
        return len(xs) == len(ys) and all(cls.same(x, y) for x, y in zip(xs, ys))

    @staticmethod
    def read_only(a):
        """a, made read-only (a view of the same memory)."""
        a = a.view()
        a.flags.writeable = False
        return a


@pytest.fixture(scope="session")
def bits():
    return Bits


def assert_close(fast, ref, dtype, what="", ulps=8):
    """Agreement to a few units of the dtype's precision, relative to the array's scale."""
    eps = np.finfo(dtype).eps
    scale = float(np.max(np.abs(ref))) if np.size(ref) else 0.0
    np.testing.assert_allclose(fast, ref, rtol=ulps * eps, atol=ulps * eps * scale, err_msg=what)


@pytest.fixture(scope="session")
def close():
    return assert_close


# ---------------------------------------------------------------- runtime helpers

@pytest.fixture(scope="session")
def kernels_module():
    """The kernel module that lec6fast's public functions come from (the chosen SIMD level)."""
    from lec6fast import _dispatch
    return _dispatch.kernels("_updates", _dispatch.level)


@contextlib.contextmanager
def parallel_min_setter():
    """Yields set_(n), which sets the threading threshold of every loaded _updates module;
    the thresholds they had are restored on exit."""
    from lec6fast import _dispatch
    mods = [_dispatch.kernels("_updates", lv) for lv in _dispatch.available_levels()]
    saved = [m._get_parallel_min() for m in mods]

    def set_(n):
        for m in mods:
            m._set_parallel_min(n)

    try:
        yield set_
    finally:
        for m, n in zip(mods, saved):
            m._set_parallel_min(n)


@pytest.fixture
def parallel_min():
    """Set the threading threshold of every loaded kernel module; restored afterwards."""
    with parallel_min_setter() as set_:
        yield set_


@pytest.fixture(autouse=True)
def pool_threads(request):
    """Where the pool runs its jobs: once any test module has imported lec6fast.torch, on
    torch's OpenMP threads (its default) in the test_torch_* modules, and on lec6fast's own
    workers everywhere else, so that the pool's tests keep testing the workers."""
    if "lec6fast.torch" not in sys.modules:
        yield
        return
    from lec6fast import _runtime
    lt = sys.modules["lec6fast.torch"]
    was = _runtime.pool_stats()["team"]
    lt.use_torch_threads(request.module.__name__.startswith("test_torch"))
    yield
    lt.use_torch_threads(was)


@pytest.fixture
def num_threads():
    """lec6fast.set_num_threads, with the previous setting restored afterwards; a serial period
    left by an earlier test's late job is ended first, so multi-thread runs really use threads."""
    import lec6fast
    from lec6fast import _runtime
    saved = lec6fast.get_num_threads()
    _runtime._forget_late()
    yield lec6fast.set_num_threads
    lec6fast.set_num_threads(saved)
    _runtime._forget_late()


@pytest.fixture
def run_python(tmp_path):
    """Run Python code in a fresh interpreter (outside the source tree) and return its stdout.

    The child imports the same lec6fast as this process; LEC6FAST_SIMD and OMP_NUM_THREADS are
    unset unless given in `env`.
    """
    import lec6fast
    pkg = str(Path(lec6fast.__file__).resolve().parent)

    def run(code, env=None, check=True):
        e = {k: v for k, v in os.environ.items() if k not in ("LEC6FAST_SIMD", "OMP_NUM_THREADS")}
        if os.environ.get(SOURCE_TREE_ENV) == "1":
            e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(pkg).parent),
                                                            e.get("PYTHONPATH")]))
        e.update(env or {})
        # Checked last, so `code` decides what is imported first (e.g. torch before lec6fast).
        epilogue = ("\nimport os as _os, lec6fast as _l\n"
                    f"assert _os.path.dirname(_os.path.realpath(_l.__file__)) == {pkg!r}, _l.__file__\n")
        proc = subprocess.run([sys.executable, "-c", code + epilogue], env=e, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            pytest.fail(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run

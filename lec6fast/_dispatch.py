"""Pick the kernel build for this CPU, and hold the thread setting of the pool every kernel uses.

setup.py compiles each kernel family once per SIMD level (lec6fast._updates is the baseline,
lec6fast._updates_avx2 and lec6fast._updates_avx512 the wider ones).  At import the best level
that both the CPU supports and the wheel contains is chosen; LEC6FAST_SIMD=baseline|avx2|avx512
asks for a lower one (a level the CPU cannot run is never chosen).
"""

import atexit
import importlib
import importlib.util
import os
import warnings

from . import _runtime
from ._families import FAMILIES                   # src/<family>.pyx, each built per level

LEVELS = ("baseline", "avx2", "avx512")          # least to most capable
THREADS_PER_CORE = 4        # the cap: this many threads per core the process may use

_loaded = {}                                      # (family, level) -> module


def _module_name(family, level):
    return f"lec6fast.{family}" if level == "baseline" else f"lec6fast.{family}_{level}"


def available_levels():
    """Levels that this CPU can run and this build contains (every family), least to most
    capable."""
    return tuple(level for level in _runtime.cpu_simd_levels()
                 if all(importlib.util.find_spec(_module_name(f, level)) for f in FAMILIES))


def _chosen_level():
    levels = available_levels()
    wanted = os.environ.get("LEC6FAST_SIMD", "").strip().lower()
    if wanted:
        if wanted not in LEVELS:
            raise ImportError(f"LEC6FAST_SIMD={wanted!r}: expected one of {', '.join(LEVELS)}")
        if wanted in levels:
            return wanted
        # asked for more than the CPU or build offers: use the best there is
    return levels[-1]


def kernels(family, level):
    """The kernel module of `family` built for `level` (imported once)."""
    key = (family, level)
    mod = _loaded.get(key)
    if mod is None:
        if level not in _runtime.cpu_simd_levels():
            raise ImportError(f"this CPU cannot run the {level} kernels")
        mod = importlib.import_module(_module_name(family, level))
        _loaded[key] = mod
    return mod


def cores():
    """The cores this process may use."""
    if hasattr(os, "process_cpu_count"):
        n = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:
        n = os.cpu_count()
    return max(1, n or 1)


def max_threads():
    """The most threads the kernels use: THREADS_PER_CORE per core this process may use (more
    only fight over the cores), within the pool's ceiling; 1 in a build without threads."""
    if not _runtime.HAS_THREADS:
        return 1
    return min(THREADS_PER_CORE * cores(), _runtime.MAX_THREADS)


def default_num_threads():
    """LEC6FAST_NUM_THREADS, else OMP_NUM_THREADS (its first entry), if set to a positive
    integer; else the cores this process may use.  Capped at max_threads()."""
    for var in ("LEC6FAST_NUM_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(var, "").split(",")[0].strip()
        if env.isdigit() and int(env) > 0:
            return min(int(env), max_threads())
    return min(cores(), max_threads())


def set_num_threads(n):
    """Use up to n threads (n >= 1) for arrays large enough to split.  Results are
    bit-identical for every n.  A count above max_threads() is capped there, with a
    RuntimeWarning; in a build without threads the kernels stay serial."""
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    n = n.__index__()
    if n < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    cap = max_threads()
    if n > cap:
        if _runtime.HAS_THREADS:
            warnings.warn(f"set_num_threads({n}): using {cap} threads, the most lec6fast uses "
                          f"here ({THREADS_PER_CORE} per core this process may use, "
                          f"{cores()} cores)", RuntimeWarning, stacklevel=2)
        n = cap
    _runtime.set_threads(n)


def get_num_threads():
    """The number of threads large calls are split across (1 if the build has no threads)."""
    return _runtime.get_threads()


# Join the workers before the interpreter goes away (a forked child re-creates its own pool on
# its first large call: see src/_threads.h).
atexit.register(_runtime.shutdown)
_runtime.set_threads(default_num_threads())

level = _chosen_level()

"""Pick the kernel build for this CPU, and keep the thread setting of every loaded kernel module.

setup.py compiles each kernel family once per SIMD level (lec6fast._updates is the baseline,
lec6fast._updates_avx2 and lec6fast._updates_avx512 the wider ones).  At import the best level
that both the CPU supports and the wheel contains is chosen; LEC6FAST_SIMD=baseline|avx2|avx512
asks for a lower one (a level the CPU cannot run is never chosen).
"""

import importlib
import importlib.util
import os

from . import _runtime

LEVELS = ("baseline", "avx2", "avx512")          # least to most capable
FAMILIES = ("_updates", "_dropout", "_batchnorm")  # src/<family>.pyx, each built per level
MAX_THREADS = 2**31 - 1                           # what the kernels' C int holds

_loaded = {}                                      # (family, level) -> module
_num_threads = None


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
    """The kernel module of `family` built for `level` (imported once, threads set)."""
    key = (family, level)
    mod = _loaded.get(key)
    if mod is None:
        if level not in _runtime.cpu_simd_levels():
            raise ImportError(f"this CPU cannot run the {level} kernels")
        mod = importlib.import_module(_module_name(family, level))
        mod._set_num_threads(get_num_threads())
        _loaded[key] = mod
    return mod


def default_num_threads():
    """OMP_NUM_THREADS if set to a positive integer, else the cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "process_cpu_count"):
        n = os.process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:
        n = os.cpu_count()
    return max(1, n or 1)


def set_num_threads(n):
    """Use up to n threads (n >= 1) for arrays large enough to split.  Results are
    bit-identical for every n.  Without OpenMP in the build the kernels stay serial."""
    global _num_threads
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    n = n.__index__()
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be an integer in [1, {MAX_THREADS}], got {n!r}")
    _num_threads = n
    for mod in _loaded.values():
        mod._set_num_threads(n)


def _serial_after_fork():
    # GNU libgomp's thread pool does not survive fork(): a child that enters a parallel region
    # after its parent used one deadlocks (multiprocessing's default start method on Linux,
    # DataLoader workers).  A forked child therefore runs the kernels on one thread; it can
    # call set_num_threads() again if it knows its OpenMP runtime copes.
    global _num_threads
    _num_threads = 1
    for mod in _loaded.values():
        mod._set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_serial_after_fork)


def get_num_threads():
    """The number of threads large updates are split across (1 if the build is serial)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = default_num_threads()
    return _num_threads if _runtime.openmp_version() else 1


level = _chosen_level()

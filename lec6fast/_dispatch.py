"""Pick the kernel build for this CPU, and keep the thread setting of every loaded kernel module.

setup.py compiles each kernel family once per SIMD level (lec6fast._updates is the baseline,
lec6fast._updates_avx2 and lec6fast._updates_avx512 the wider ones).  At import the best level
that both the CPU supports and the wheel contains is chosen; LEC6FAST_SIMD=baseline|avx2|avx512
asks for a lower one (a level the CPU cannot run is never chosen).
"""

import importlib
import os

from . import _runtime

LEVELS = ("baseline", "avx2", "avx512")          # least to most capable

_loaded = {}                                      # (family, level) -> module
_num_threads = None


def _module_name(family, level):
    return f"lec6fast.{family}" if level == "baseline" else f"lec6fast.{family}_{level}"


def available_levels(family="_updates"):
    """Levels that this CPU can run and this build contains, least to most capable."""
    out = []
    for level in _runtime.cpu_simd_levels():
        try:
            kernels(family, level)
        except ImportError:
            continue
        out.append(level)
    return tuple(out)


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
    if n < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    _num_threads = n
    for mod in _loaded.values():
        mod._set_num_threads(n)


def get_num_threads():
    """The number of threads large updates are split across (1 if the build is serial)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = default_num_threads()
    return _num_threads if _runtime.openmp_version() else 1


level = _chosen_level()

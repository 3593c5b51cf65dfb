"""What show_config() and `lec6fast bench` report about this build and machine."""

import platform
import sys

import numpy as np

from . import _dispatch, _runtime
from ._version import __version__


def config():
    return {
        "lec6fast": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_simd_levels": list(_runtime.cpu_simd_levels()),
        "built_simd_levels": list(_dispatch.available_levels()),
        "simd_level": _dispatch.level,
        "threads": ("none (serial build)" if not _runtime.HAS_THREADS else
                    "lec6fast pool on torch's OpenMP threads" if _runtime.pool_stats()["team"]
                    else "lec6fast pool"),
        "num_threads": _dispatch.get_num_threads(),
        "max_threads": _dispatch.max_threads(),
        "pool": _runtime.pool_stats(),
        "parallel_min_elements": parallel_thresholds(),
    }


def parallel_thresholds():
    """{kernel: {dtype: elements from which its arrays are split across the threads}}."""
    out = {}
    for family in _dispatch.FAMILIES:
        mod = _dispatch.kernels(family, _dispatch.level)
        for name in mod._PARALLEL_MIN:
            if not name.startswith("_"):
                out[name] = {dt: mod._get_parallel_min(name, dt) for dt in ("float32", "float64")}
    return out


def config_lines():
    c = config()
    sizes = [n for per_dtype in c["parallel_min_elements"].values() for n in per_dtype.values()]
    return [
        f"lec6fast {c['lec6fast']}  (python {c['python']}, numpy {c['numpy']}, {c['machine']})",
        f"  SIMD level in use : {c['simd_level']}",
        f"                      (CPU supports {', '.join(c['cpu_simd_levels'])}; "
        f"this build has {', '.join(c['built_simd_levels'])})",
        f"  threads           : {c['num_threads']} of at most {c['max_threads']}, {c['threads']} "
        f"({c['pool']['workers']} workers started, {c['pool']['late']} calls late)",
        f"                      arrays split from {min(sizes)} to {max(sizes)} elements on, "
        f"by kernel and dtype",
    ]

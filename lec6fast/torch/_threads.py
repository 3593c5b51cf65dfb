"""lec6fast's kernels on torch's own OpenMP threads, in a process that imports lec6fast.torch.

torch runs its CPU operators on an OpenMP team whose threads spin for milliseconds after each
parallel region.  lec6fast's own workers would then share the cores with them: right after a
backward pass, an optimizer step on two threads ran slower than on one.  So lec6fast.torch hands
lec6fast's pool torch's OpenMP runtime (its GOMP_parallel, omp_get_thread_num and
omp_get_max_threads, which GNU libgomp and LLVM libomp both export): every lec6fast job of no
more threads than torch's team has then runs on that team, whose spinning threads take it
at once, as torch's own fused optimizers do.  The chunks, and so the results, are the same; the
pool still judges late jobs and runs the following ones serially (src/_threads.h).

Found only where torch's parallel backend is OpenMP and its runtime is loaded from torch's own
folders (Linux and macOS wheels); anywhere else lec6fast keeps its workers.  So does a fork()
child of a process that had imported lec6fast: GNU libgomp cannot run a parallel region in a
child whose parent used it (torch's DataLoader sets its workers to one thread for that reason,
and a call of lec6fast's on more threads than torch's then runs on lec6fast's workers too).  As
with torch's own operators, a kernel called from another Python thread runs on that thread's
OpenMP team, which the runtime creates for it and keeps while the thread lives.
"""

import ctypes
import glob
import os

import torch

from .. import _runtime

_LIBRARIES = ("libgomp*.so*", "libomp*.so*", "libiomp5*.so*", "libomp*.dylib", "libiomp5*.dylib")


def torch_openmp_parallel():
    """The addresses of GOMP_parallel, omp_get_thread_num and omp_get_max_threads in the OpenMP
    runtime torch has loaded, and its path; or (0, 0, 0, None)."""
    none = 0, 0, 0, None
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return none
    nolink = getattr(os, "RTLD_NOLOAD", None)
    if nolink is None:                  # (Windows: torch's OpenMP is MSVC's, without GOMP_*)
        return none
    root = os.path.dirname(torch.__file__)
    folders = [os.path.join(root, "lib"), root + ".libs"]
    for folder in folders:
        for pattern in _LIBRARIES:
            for path in sorted(glob.glob(os.path.join(folder, pattern))):
                try:                    # only if already loaded: never a second runtime
                    lib = ctypes.CDLL(path, mode=nolink | os.RTLD_LAZY)
                    fns = lib.GOMP_parallel, lib.omp_get_thread_num, lib.omp_get_max_threads
                except (OSError, AttributeError):
                    continue
                address = [ctypes.cast(f, ctypes.c_void_p).value or 0 for f in fns]
                if all(address):
                    return (*address, path)
    return none


def use_torch_threads(on=True):
    """Run lec6fast's kernels on torch's OpenMP threads (the default once lec6fast.torch is
    imported) or, with on=False, on lec6fast's own workers.  lec6fast.set_num_threads still
    sets how many threads a kernel uses; a call that needs more than torch has
    (torch.get_num_threads()) runs on lec6fast's workers.  Returns whether kernels now run on
    torch's threads (never in a fork() child of a process that had imported lec6fast)."""
    found = torch_openmp_parallel() if on else (0, 0, 0, None)
    return _runtime._set_team(*found[:3])

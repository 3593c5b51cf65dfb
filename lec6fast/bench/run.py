"""The kernels section: every case of lec6fast.bench.cases against its reference and torch.

`run` times them (lec6fast.bench.timing) and returns the JSON-ready dict `lec6fast bench --json`
prints; lec6fast.bench.report turns it into tables.
"""

import numpy as np

from lec6fast import _config
from lec6fast.bench.cases import KERNELS, PROBE_LABELS, PROBES, shape_label
from lec6fast.bench.timing import gbps, measure_together, num_threads
from lec6fast.bench.torch_twins import import_torch


def config(threads=None):
    """lec6fast._config.config() with lec6fast on `threads` threads (None: as it is)."""
    with num_threads(threads):
        return _config.config()


def run(kernels, dtypes, sizes, *, threads=None, use_torch=True, repeat=7, min_repeat=3,
        batch_time=2e-3, budget=0.5, progress=None, seed=0):
    """Time every kernel at every dtype and shape against its reference and torch, plus the
    bandwidth probes at the same shapes, with lec6fast and torch on `threads` threads (None:
    lec6fast's setting), both restored after.  Returns a JSON-ready dict (see
    `lec6fast bench --json`).

    Each kernel's implementations are timed together (`measure_together`) with the bandwidth
    probe its GB/s is read against (Kernel.probe); the probes table comes from its own joint
    timing at the start of each dtype and shape.  progress(done, total, what) is called
    before each step.
    """
    kernels = [KERNELS[k] if isinstance(k, str) else k for k in kernels]
    torch = import_torch() if use_torch else None
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

    with num_threads(threads, torch) as threads:
        out = {"config": _config.config(),
               "torch": ({"version": torch.__version__, "num_threads": torch.get_num_threads()}
                         if torch else None),
               "settings": dict(opts, threads=threads, seed=seed),
               "probes": [], "results": []}
        for dtype, shape, ks in blocks:
            where = f"{dtype} n={shape_label(shape)}"
            step(f"{where}: bandwidth probes")
            arrays = [p.make(shape, dtype, rng) for p in PROBES.values()]
            timings = measure_together([p.fast_call(a) for p, a in zip(PROBES.values(), arrays)],
                                       **opts)
            del arrays
            for p, t in zip(PROBES.values(), timings):
                out["probes"].append({"probe": p.name, "dtype": dtype, "shape": list(shape),
                                      "bytes_per_element": p.bytes_per_element(dtype),
                                      "gbps": gbps(p.nbytes(shape, dtype), t.median),
                                      **t.as_dict()})
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
    if progress:
        progress(total, total, "done")
    return out

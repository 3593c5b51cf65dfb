"""The benchmarks' tables: one table printer, and the lines of each section of `lec6fast bench`.

`table` lays rows out in aligned columns (or Markdown); `time` and `ratio` format their
figures.  `header`, `kernels`, `contention` and `model` turn what lec6fast.bench.run,
.contention and .model return into lines of text, for `lec6fast bench`, for
`python -m lec6fast.bench.contention` (Markdown) and, through `table`, for the summary of the
pytest-benchmark suite (benchmarks/conftest.py).  Nothing here prints but `Progress`.
"""

import sys
import textwrap
import time as _time

from lec6fast import _config
from lec6fast.bench.cases import KERNELS, PROBE_LABELS, shape_label, size_label
from lec6fast.bench.timing import NOISY, num_threads, thread_count
from lec6fast.bench.torch_twins import import_torch


# ---------------------------------------------------------------- figures

def _encodable(*texts):
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        for t in texts:
            t.encode(enc)
        return True
    except UnicodeEncodeError:
        return False


MU = "µs" if _encodable("µ×†") else "us"
TIMES = "×" if MU == "µs" else "x"
MARK = "†" if MU == "µs" else "*"           # fewer repeats than asked (the time budget)
NOISY_MARK = "~"                             # a noisy timing (timing.NOISY)


def time(s):
    """Seconds with 3 significant digits in ns, µs, ms or s."""
    for unit, scale in (("ns", 1e9), (MU, 1e6), ("ms", 1e3)):
        v = s * scale
        if v < 999.5:
            return f"{v:.3g} {unit}" if v >= 1 else f"{v:.2f} {unit}"
    return f"{s:.3g} s"


def ratio(x):
    """A speedup: 3 significant digits and ×."""
    return f"{x:.0f}{TIMES}" if x >= 99.5 else f"{x:.3g}{TIMES}"


def _timing(t):
    """A Timing.as_dict(): its median, marked when budget-limited or noisy."""
    return (time(t["median_s"]) + (MARK if t["budget_limited"] else " ")
            + (NOISY_MARK if t.get("noisy") else " "))


# ---------------------------------------------------------------- text

def table(rows, header, markdown=False):
    """Lines of `rows` under `header`: right-aligned columns, the first left-aligned; or a
    Markdown table."""
    if markdown:
        return ["| " + " | ".join(map(str, r)) + " |"
                for r in [header, ["---"] * len(header)] + rows]
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in rows]


def _under(rows, header, markdown=False):
    """`table` below a paragraph: indented, or in Markdown after a blank line."""
    if markdown:
        return [""] + table(rows, header, markdown=True)
    return ["  " + line for line in table(rows, header)]


def wrap(text, width=100):
    return textwrap.wrap(text, width=width, subsequent_indent="  ")


class Progress:
    """Progress on stderr: one line rewritten in place on a terminal, a line per step otherwise;
    progress(done, total, what)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = _time.perf_counter()
        self.width = 0

    def __call__(self, done, total, what):
        elapsed = _time.perf_counter() - self.start
        line = f"[{done:>{len(str(total))}}/{total}] {elapsed:6.1f} s  {what}"
        if self.tty:
            pad = max(0, self.width - len(line))
            self.width = len(line)
            end = "\n" if done == total else ""
            self.stream.write("\r" + line + " " * pad + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# ---------------------------------------------------------------- the sections

def header(*, threads=None, use_torch=True, repeat, min_repeat, budget, batch_time):
    """The build and machine with lec6fast on `threads` threads (None: its setting), torch,
    and how the kernels are timed."""
    with num_threads(threads) as nt:
        lines = _config.config_lines()
    torch = import_torch() if use_torch else None
    if torch is not None:
        lines.append(f"  torch             : {torch.__version__}  (set to the same thread count, "
                     f"{nt})")
    elif not use_torch:
        lines.append("  torch             : not used (--no-torch)")
    else:
        lines.append("  torch             : not installed (install torch to add a torch column)")
    lines.append(f"  timing            : median of {repeat} batches of calls, each batch "
                 f">= {time(batch_time)};")
    lines.append(f"                      slow calls: at least {min_repeat} batches within "
                 f"{budget:g} s;")
    lines.append("                      a kernel's lec6fast, reference, torch and probe batches "
                 "run interleaved")
    return lines


def kernels(result):
    """The bandwidth probes' table, then a table per dtype of every kernel against its reference
    (and torch), from lec6fast.bench.run.run's result."""
    settings = result["settings"]
    lines = [""]
    have_torch = result["torch"] is not None and any(r["torch"] for r in result["results"])

    probes = {}
    for p in result["probes"]:
        probes.setdefault((p["dtype"], tuple(p["shape"])), {})[p["probe"]] = p
    rows = [[dtype, shape_label(shape), f"{ps['_copy']['gbps']:.1f}",
             f"{ps['_triad']['gbps']:.1f}", f"{ps['_scale_']['gbps']:.1f}"]
            for (dtype, shape), ps in probes.items()]
    lines.append("Bandwidth probes (GB/s, lec6fast threads, this run):")
    lines.append("  copy dst = src, triad a = b + s*c, RMW x *= s in place")
    lines += _under(rows, ["dtype", "n", "copy", "triad", "RMW"])

    labels = {}
    order = {k: i for i, k in enumerate(KERNELS)}
    for dtype in dict.fromkeys(r["dtype"] for r in result["results"]):
        rows = []
        for r in sorted((r for r in result["results"] if r["dtype"] == dtype),
                        key=lambda r: (order.get(r["kernel"], len(order)), r["shape"])):
            row = [r["kernel"], shape_label(r["shape"]), _timing(r["lec6fast"]),
                   _timing(r["reference"]), ratio(r["speedup_vs_reference"]),
                   f"{r['lec6fast']['gbps']:.1f}",
                   f"{100 * r['bandwidth_fraction']:.0f}% {PROBE_LABELS[r['probe']['name']]}"]
            if have_torch:
                if r["torch"]:
                    labels[r["kernel"]] = r["torch"]["label"]
                    row += [_timing(r["torch"]), ratio(r["speedup_vs_torch"])]
                else:
                    row += ["-", "-"]
            rows.append(row)
        columns = ["kernel", "n", "lec6fast", "reference", "speedup", "GB/s", "% of probe"]
        if have_torch:
            columns += ["torch", "vs torch"]
        lines += ["", f"{dtype}  (speedup = reference / lec6fast"
                      + ("; vs torch = torch / lec6fast)" if have_torch else ")")]
        lines += _under(rows, columns)

    lines.append("")
    if labels:
        lines += wrap("torch: " + ", ".join(f"{k} = {v}" for k, v in labels.items()))
    timings = [t for r in result["results"] for t in (r["lec6fast"], r["reference"], r["torch"])
               if t]
    if any(t["budget_limited"] for t in timings):
        lines += wrap(f"{MARK} fewer repeats: median of {settings['min_repeat']}-"
                      f"{settings['repeat'] - 1} batches, cut by the {settings['budget']:g} s "
                      "budget per measurement (slow calls; see --budget, --json for every batch)")
    if any(t.get("noisy") for t in timings):
        lines += wrap(f"{NOISY_MARK} noisy: its batches spread over more than {NOISY:.0%} of the "
                      "median (the machine was busy); trust it less, or run again")
    lines += wrap("% of probe = the kernel's GB/s / the GB/s of the bandwidth probe timed "
                  "alongside (RMW for the in-place updates, copy for the layers). Above 100%: the "
                  "arrays sit in cache, where the kernel's one pass beats the probe's; only "
                  "arrays larger than the caches measure memory bandwidth.")
    lines += wrap(f"GB/s counts each array read once or written once (adam_ moves 7 arrays per "
                  f"element); wall time {result['wall_time_s']:.1f} s")
    return lines


def contention(rows, threads=None, markdown=False):
    """The contention section (lec6fast.bench.contention.run's rows), run with lec6fast on
    `threads` threads (None: its setting)."""
    lines = [""] + wrap(
        f"Contention: lec6fast on 1 thread and on {thread_count(threads)}, batches "
        "interleaved; ratio = threads / 1 thread (below 1 is faster). matmul: a @ b (100x256 @ "
        "256x128, NumPy) then the kernel; busy: the kernel while another process spins on a "
        "core; idle: the kernel alone; torch: torch's pool used, then a NumPy multiply and "
        "dropout_backward; mlp: a training step, also in plain NumPy (lec6fast.reference).")
    cells = [[r["scenario"], r["case"] if r["scenario"] != "mlp" else "mlp training step",
              size_label(r["n"]), time(r["one_thread_s"]), time(r["threads_s"]),
              f"{r['ratio']:.2f}", time(r["numpy_s"]) if "numpy_s" in r else "-",
              ratio(r["speedup_vs_numpy"]) if "speedup_vs_numpy" in r else "-"]
             for r in rows]
    lines += _under(cells, ["scenario", "case", "n", "1 thread", "threads", "ratio", "NumPy",
                            "vs NumPy"], markdown)
    mlp = [wrap(f"mlp: {r['case']}") for r in rows if r["scenario"] == "mlp"]
    return lines + ([""] if markdown and mlp else []) + [line for m in mlp for line in m]


def model(rows, markdown=False):
    """The model-step section (lec6fast.bench.model.run's rows)."""
    lines = [""] + wrap(
        "Model step: lec6fast.optim.Adam stepping whole models (float32); batches interleaved; "
        "ratio = this row's time / the time of the row named in 'against' (above 1: slower "
        "than it). Adam moves 28 bytes per parameter; the RMW probe (x *= 1) in brackets. "
        "The last rows: the default thread count against one thread where users run.")
    cells = [[r["case"], r["label"], time(r["seconds"]), r.get("against", "-"),
              f"{r['ratio']:.2f}" if "ratio" in r else "-",
              (f"{r['gbps']:.1f}" + (f" ({r['probe_gbps']:.1f})" if "probe_gbps" in r else ""))
              if "gbps" in r else "-"] for r in rows]
    return lines + _under(cells, ["model", "what", "time", "against", "ratio", "GB/s (RMW)"],
                          markdown)


def torch_layers(rows, markdown=False):
    """The torch-layers section (lec6fast.bench.torch_layers.run's rows; None: no torch)."""
    if rows is None:
        return ["", "Torch layers: skipped (torch is not installed, or --no-torch)"]
    lines = [""] + wrap(
        f"Torch layers: lec6fast.torch's layers against torch.nn's, float32, training: one "
        f"forward + backward (input and parameter gradients), batches interleaved, both on "
        f"{rows[0]['threads'] if rows else '-'} threads; ratio = lec6fast / torch (below 1 is "
        f"faster). Saved mask: the bytes dropout keeps for its backward.")
    cells = [[r["case"], "x".join(map(str, r["shape"])), time(r["seconds"]),
              time(r["against_s"]), f"{r['ratio']:.2f}",
              f"{r['mask_bytes']:,} / {r['against_mask_bytes']:,}" if "mask_bytes" in r else "-"]
             for r in rows]
    return lines + _under(cells, ["layer", "shape", "lec6fast.torch", "torch.nn", "ratio",
                                  "saved mask (lt / nn)"], markdown)


def lbfgs(rows, markdown=False):
    """The lbfgs section (lec6fast.bench.lbfgs.run's rows)."""
    lines = [""] + wrap(
        "L-BFGS: lec6fast.optim.lbfgs against scipy's L-BFGS-B and torch.optim.LBFGS "
        "(strong_wolfe), float64, gtol=1e-5, m=10; 'solver' = wall time minus the time inside "
        "the objective; ratio = that solver time / lec6fast's, from the same interleaved rounds "
        "(medians). scipy's time includes its BLAS calls: set OPENBLAS_NUM_THREADS=1 to see it "
        "without the BLAS thread pool (which costs it much on a busy machine).")
    cells = [[r["problem"], r["solver"], str(r["nit"]), str(r["nfev"]), f"{r['f']:.6g}",
              f"{r['gnorm']:.1e}", time(r["wall_s"]), time(r["solver_s"]),
              f"{r['ratio']:.2f}" if "ratio" in r else "-"] for r in rows]
    return lines + _under(cells, ["problem", "solver", "nit", "nfev", "final f", "max abs g",
                                  "wall", "solver", "ratio"], markdown)


def torch_model(rows, markdown=False):
    """The torch-model section (lec6fast.bench.torch_model.run's rows; None: torch is absent)."""
    if rows is None:
        return [""] + wrap("torch-model: skipped (PyTorch is not installed; "
                           "pip install torch --index-url https://download.pytorch.org/whl/cpu)")
    lines = [""] + wrap(
        f"torch-model: the full optimizer.step() of a PyTorch model ({rows[0]['case']}, 12 "
        "Linear+LayerNorm blocks), lec6fast.torch against torch.optim on the same threads; "
        "batches interleaved; ratio = this row's time / the lt row's (above 1: lec6fast.torch is "
        "that many times faster). torch's CPU default is its for-loop implementation. The last "
        "rows time Adam's step alone inside a training loop (zero_grad, forward and backward of "
        "a batch of 64, step), where torch's OpenMP threads have just worked; lec6fast.torch "
        "runs on them there, and once more on lec6fast's own workers.")
    cells = [[r["rule"], r["label"], time(r["seconds"]), r.get("against", "-"),
              f"{r['ratio']:.2f}" if "ratio" in r else "-"] for r in rows]
    return lines + _under(cells, ["rule", "what", "time", "against", "ratio"], markdown)

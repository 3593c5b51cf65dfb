"""The `lec6fast` command (also `python -m lec6fast`).

    lec6fast bench    time the kernels against the NumPy reference (and PyTorch, if installed)
    lec6fast config   print the build and machine configuration (lec6fast.show_config())
"""

import argparse
import json
import math
import os
import sys
import time

import lec6fast
from . import _bench, _config, _contention
from .bench import model as model_bench


MAX_SIZE = 10**10           # elements: 40 GB per float32 array, far past this machine's memory


def _size(text):
    """'1e3', '16000000', '1_000' or '1.6e7' -> a positive int element count."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
        if not f.is_integer():
            raise argparse.ArgumentTypeError(f"not a whole number of elements: {text!r}") from None
        value = int(f)
    if not 1 <= value <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"sizes must be from 1 to {MAX_SIZE:.0e} elements, "
                                         f"got {text!r}")
    return value


def _sizes(text):
    return [_size(s.strip()) for s in text.split(",") if s.strip()]


def _kernels(text):
    names = []
    for s in text.split(","):
        s = s.strip()
        if not s:
            continue
        name = s if s in _bench.KERNELS else s + "_"
        if name not in _bench.KERNELS:
            raise argparse.ArgumentTypeError(
                f"unknown kernel {s!r}; choose from {', '.join(_bench.KERNELS)}")
        names.append(name)
    return names


def _positive(cast, what):
    """An argparse type: cast(text) > 0, or a message naming what was expected."""
    def parse(text):
        try:
            x = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not (x > 0 and math.isfinite(x)):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
        return x
    return parse


_positive_int = _positive(int, "an integer")
_positive_float = _positive(float, "a number")


SECTIONS = ("kernels", "contention", "model")


def _choices(allowed):
    def parse(text):
        picked = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in picked if t not in allowed]
        if bad or not picked:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
        return picked
    return parse


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lec6fast", description="Fused in-place Cython kernels of CS231n lecture 6.")
    parser.add_argument("--version", action="version", version=f"lec6fast {lec6fast.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "bench", help="time the kernels against the NumPy reference (and PyTorch, if installed)",
        description="Time every kernel on generated data against its NumPy reference "
                    "(lec6fast.reference) and, when PyTorch is importable, the closest torch CPU "
                    "optimizer; read GB/s against bandwidth probes measured in the same run. "
                    "Each figure is the median over repeats of the per-call time of a batch of "
                    "calls lasting at least --batch-time; slow calls get fewer repeats, within "
                    "--budget seconds per measurement (marked in the table).")
    b.add_argument("--dtype", choices=("float32", "float64", "both"), default="float32",
                   help="array dtype (default: float32)")
    b.add_argument("--sizes", type=_sizes, default=list(_bench.DEFAULT_SIZES), metavar="N,N,...",
                   help="element counts, e.g. 1e3,1e5,1.6e7 (the default)")
    b.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads for lec6fast and torch (default: lec6fast's default, "
                        f"{lec6fast.get_num_threads()} here)")
    b.add_argument("--kernels", type=_kernels, default=list(_bench.KERNELS), metavar="K,K,...",
                   help=f"subset of {','.join(_bench.KERNELS)} (default: all)")
    b.add_argument("--repeat", type=_positive_int, default=7, metavar="N",
                   help="timed batches per measurement (default: 7)")
    b.add_argument("--min-repeat", type=_positive_int, default=3, metavar="N",
                   help="fewest batches a slow call gets (default: 3)")
    b.add_argument("--budget", type=_positive_float, default=0.5, metavar="SECONDS",
                   help="time budget per measurement, which cuts repeats of slow calls down to "
                        "--min-repeat (default: 0.5)")
    b.add_argument("--batch-time", type=_positive_float, default=2e-3, metavar="SECONDS",
                   help="shortest timed batch; fast calls are repeated to fill it (default: 0.002)")
    b.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    b.add_argument("--sections", type=_choices(SECTIONS), default=list(SECTIONS), metavar="S,S",
                   help="kernels (each kernel against its reference, torch and the bandwidth "
                        "probes) and/or contention (1 thread against the default thread count "
                        "where users run: after a NumPy matmul, next to a busy process, idle, "
                        "with torch's pool in the process, a whole MLP training step) and/or "
                        "model (lec6fast.optim stepping whole models against one kernel call, "
                        "torch.optim.Adam and the NumPy reference; see lec6fast/bench/model.py); "
                        "default: all three")
    b.add_argument("--scenarios", type=_choices(_contention.SCENARIOS),
                   default=list(_contention.SCENARIOS), metavar="S,S,...",
                   help=f"contention scenarios, a subset of {','.join(_contention.SCENARIOS)} "
                        "(default: all; their sizes are fixed, see lec6fast/_contention.py)")
    b.add_argument("--json", action="store_true",
                   help="print the results as JSON on stdout instead of the table")
    b.add_argument("--quiet", action="store_true", help="no progress on stderr")

    sub.add_parser("config", help="print the build and machine configuration")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        try:
            return bench(args)
        except BrokenPipeError:
            # `lec6fast bench --json | head`: the reader left; exit quietly, as Unix tools do
            # (stdout is pointed at devnull so that the interpreter's final flush is quiet too).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    if args.command == "config":
        lec6fast.show_config()
        return 0
    parser.print_help()
    return 2


# ---------------------------------------------------------------- bench

class Progress:
    """Progress on stderr: one line rewritten in place on a terminal, a line per step otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()
        self.width = 0

    def __call__(self, done, total, what):
        elapsed = time.perf_counter() - self.start
        line = f"[{done:>{len(str(total))}}/{total}] {elapsed:6.1f} s  {what}"
        if self.tty:
            pad = max(0, self.width - len(line))
            self.width = len(line)
            end = "\n" if done == total else ""
            self.stream.write("\r" + line + " " * pad + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def bench(args):
    if args.threads is not None:
        lec6fast.set_num_threads(args.threads)
    dtypes = list(_bench.DTYPES) if args.dtype == "both" else [args.dtype]
    torch_note = None
    if args.no_torch:
        torch_note = "not used (--no-torch)"
    elif _bench.import_torch() is None:
        torch_note = "not installed (install torch to add a torch column)"
    out = sys.stdout
    if not args.json:
        print("\n".join(_header(args, torch_note)), file=out, flush=True)
    t0 = time.perf_counter()
    progress = None if args.quiet else Progress()
    if "kernels" in args.sections:
        result = _bench.run(args.kernels, dtypes, args.sizes, use_torch=not args.no_torch,
                            repeat=args.repeat, min_repeat=args.min_repeat,
                            batch_time=args.batch_time, budget=args.budget, progress=progress)
    else:
        result = {"config": _config.config(), "results": []}
    if "contention" in args.sections:
        scenarios = [s for s in args.scenarios if s != "torch" or not args.no_torch]
        step = None if args.quiet else (lambda what: print(f"contention: {what}", file=sys.stderr))
        result["contention"] = _contention.run(scenarios, repeat=max(3, 2 * args.repeat + 1),
                                               batch_time=10 * args.batch_time, progress=step)
    if "model" in args.sections:
        step = None if args.quiet else (lambda what: print(what, file=sys.stderr))
        result["model"] = model_bench.run(use_torch=not args.no_torch,
                                          repeat=max(3, 2 * args.repeat + 1),
                                          batch_time=10 * args.batch_time, progress=step)
    result["wall_time_s"] = time.perf_counter() - t0
    if args.json:
        json.dump(result, out, indent=2)
        out.write("\n")
    else:
        lines = _report(result, args) if "kernels" in args.sections else [""]
        if "contention" in args.sections:
            lines += _contention_report(result["contention"])
        if "model" in args.sections:
            lines += _model_report(result["model"])
        print("\n".join(lines), file=out)
    return 0


def _contention_report(rows):
    lines = [""] + _wrap(
        f"Contention: lec6fast on 1 thread and on {lec6fast.get_num_threads()}, batches "
        "interleaved; ratio = threads / 1 thread (below 1 is faster). matmul: a @ b (100x256 @ "
        "256x128, NumPy) then the kernel; busy: the kernel while another process spins on a "
        "core; idle: the kernel alone; torch: torch's pool used, then a NumPy multiply and "
        "dropout_backward; mlp: a training step, also in plain NumPy (lec6fast.reference).")
    table = [[r["scenario"], r["case"] if r["scenario"] != "mlp" else "mlp training step",
              _bench.size_label(r["n"]), _time(r["one_thread_s"]), _time(r["threads_s"]),
              f"{r['ratio']:.2f}", _time(r["numpy_s"]) if "numpy_s" in r else "-",
              _ratio(r["speedup_vs_numpy"]) if "speedup_vs_numpy" in r else "-"]
             for r in rows]
    lines += ["  " + l for l in _table(table, ["scenario", "case", "n", "1 thread", "threads",
                                                "ratio", "NumPy", "vs NumPy"])]
    for r in rows:
        if r["scenario"] == "mlp":
            lines += _wrap(f"mlp: {r['case']}")
    return lines


def _model_report(rows):
    lines = [""] + _wrap(
        "Model step: lec6fast.optim.Adam stepping whole models (float32); batches interleaved; "
        "ratio = this row's time / the time of the row named in 'against' (above 1: slower "
        "than it). Adam moves 28 bytes per parameter; the RMW probe (x *= 1) in brackets. "
        "The last rows: the default thread count against one thread where users run.")
    table = [[r["case"], r["label"], _time(r["seconds"]), r.get("against", "-"),
              f"{r['ratio']:.2f}" if "ratio" in r else "-",
              (f"{r['gbps']:.1f}" + (f" ({r['probe_gbps']:.1f})" if "probe_gbps" in r else ""))
              if "gbps" in r else "-"] for r in rows]
    return lines + ["  " + l for l in _table(table, ["model", "what", "time", "against", "ratio",
                                                      "GB/s (RMW)"])]


def _header(args, torch_note):
    from ._config import config_lines
    lines = config_lines()
    torch = _bench.import_torch() if torch_note is None else None
    if torch is not None:
        lines.append(f"  torch             : {torch.__version__}  (set to the same thread count, "
                     f"{lec6fast.get_num_threads()})")
    else:
        lines.append(f"  torch             : {torch_note}")
    lines.append(f"  timing            : median of {args.repeat} batches of calls, each batch "
                 f">= {_time(args.batch_time)};")
    lines.append(f"                      slow calls: at least {args.min_repeat} batches within "
                 f"{args.budget:g} s;")
    lines.append("                      a kernel's lec6fast, reference, torch and probe batches "
                 "run interleaved")
    return lines


def _encodable(*texts):
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        for t in texts:
            t.encode(enc)
        return True
    except UnicodeEncodeError:
        return False


_MU = "µs" if _encodable("µ×†") else "us"
_TIMES = "×" if _MU == "µs" else "x"
_MARK = "†" if _MU == "µs" else "*"
_NOISY = "~"


def _time(s):
    for unit, scale in (("ns", 1e9), (_MU, 1e6), ("ms", 1e3)):
        v = s * scale
        if v < 999.5:
            return f"{v:.3g} {unit}" if v >= 1 else f"{v:.2f} {unit}"
    return f"{s:.3g} s"


def _ratio(x):
    return f"{x:.0f}{_TIMES}" if x >= 99.5 else f"{x:.3g}{_TIMES}"


def _timing(t):
    return (_time(t["median_s"]) + (_MARK if t["budget_limited"] else " ")
            + (_NOISY if t.get("noisy") else " "))


def _table(rows, header):
    """Right-aligned columns, the first left-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in rows]


def _report(result, args):
    lines = [""]
    have_torch = result["torch"] is not None and any(r["torch"] for r in result["results"])

    probes = {}
    for p in result["probes"]:
        probes.setdefault((p["dtype"], tuple(p["shape"])), {})[p["probe"]] = p
    rows = [[dtype, _bench.shape_label(shape), f"{ps['_copy']['gbps']:.1f}",
             f"{ps['_triad']['gbps']:.1f}", f"{ps['_scale_']['gbps']:.1f}"]
            for (dtype, shape), ps in probes.items()]
    lines.append("Bandwidth probes (GB/s, lec6fast threads, this run):")
    lines.append("  copy dst = src, triad a = b + s*c, RMW x *= s in place")
    lines += ["  " + l for l in _table(rows, ["dtype", "n", "copy", "triad", "RMW"])]

    labels = {}
    order = {k: i for i, k in enumerate(_bench.KERNELS)}
    for dtype in dict.fromkeys(r["dtype"] for r in result["results"]):
        rows = []
        for r in sorted((r for r in result["results"] if r["dtype"] == dtype),
                        key=lambda r: (order.get(r["kernel"], len(order)), r["shape"])):
            row = [r["kernel"], _bench.shape_label(r["shape"]), _timing(r["lec6fast"]),
                   _timing(r["reference"]), _ratio(r["speedup_vs_reference"]),
                   f"{r['lec6fast']['gbps']:.1f}",
                   f"{100 * r['bandwidth_fraction']:.0f}% {_bench.PROBE_LABELS[r['probe']['name']]}"]
            if have_torch:
                if r["torch"]:
                    labels[r["kernel"]] = r["torch"]["label"]
                    row += [_timing(r["torch"]), _ratio(r["speedup_vs_torch"])]
                else:
                    row += ["-", "-"]
            rows.append(row)
        header = ["kernel", "n", "lec6fast", "reference", "speedup", "GB/s", "% of probe"]
        if have_torch:
            header += ["torch", "vs torch"]
        lines += ["", f"{dtype}  (speedup = reference / lec6fast"
                      + ("; vs torch = torch / lec6fast)" if have_torch else ")")]
        lines += ["  " + l for l in _table(rows, header)]

    lines.append("")
    if labels:
        lines += _wrap("torch: " + ", ".join(f"{k} = {v}" for k, v in labels.items()))
    timings = [t for r in result["results"] for t in (r["lec6fast"], r["reference"], r["torch"]) if t]
    if any(t["budget_limited"] for t in timings):
        lines += _wrap(f"{_MARK} fewer repeats: median of {args.min_repeat}-{args.repeat - 1} "
                       f"batches, cut by the {args.budget:g} s budget per measurement (slow calls; "
                       "see --budget, --json for every batch)")
    if any(t.get("noisy") for t in timings):
        lines += _wrap(f"{_NOISY} noisy: its batches spread over more than "
                       f"{_bench.NOISY:.0%} of the median (the machine was busy); trust it less, "
                       "or run again")
    lines += _wrap("% of probe = the kernel's GB/s / the GB/s of the bandwidth probe timed "
                   "alongside (RMW for the in-place updates, copy for the layers). Above 100%: the "
                   "arrays sit in cache, where the kernel's one pass beats the probe's; only "
                   "arrays larger than the caches measure memory bandwidth.")
    lines += _wrap(f"GB/s counts each array read once or written once (adam_ moves 7 arrays per "
                   f"element); wall time {result['wall_time_s']:.1f} s")
    return lines


def _wrap(text, width=100):
    import textwrap
    return textwrap.wrap(text, width=width, subsequent_indent="  ")

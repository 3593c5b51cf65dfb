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
from .bench import cases, contention, lbfgs, model, report, run, torch_layers, torch_model
from .bench.timing import thread_count


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
        name = s if s in cases.KERNELS else s + "_"
        if name not in cases.KERNELS:
            raise argparse.ArgumentTypeError(
                f"unknown kernel {s!r}; choose from {', '.join(cases.KERNELS)}")
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


SECTIONS = ("kernels", "contention", "model", "torch-model", "torch-layers", "lbfgs")


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
    b.add_argument("--sizes", type=_sizes, default=list(cases.DEFAULT_SIZES), metavar="N,N,...",
                   help="element counts, e.g. 1e3,1e5,1.6e7 (the default)")
    b.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads for lec6fast and torch (default: lec6fast's default, "
                        f"{lec6fast.get_num_threads()} here)")
    b.add_argument("--kernels", type=_kernels, default=list(cases.KERNELS), metavar="K,K,...",
                   help=f"subset of {','.join(cases.KERNELS)} (default: all)")
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
                        "torch.optim.Adam and the NumPy reference; see lec6fast/bench/model.py) "
                        "and/or torch-model (lec6fast.torch's optimizers against torch.optim's "
                        "on a 100-tensor, 10M-parameter PyTorch model; skipped without torch; "
                        "see lec6fast/bench/torch_model.py) "
                        "and/or torch-layers (lec6fast.torch's Dropout and BatchNorm1d/2d against "
                        "torch.nn's, forward + backward; skipped without torch or with "
                        "--no-torch) "
                        "and/or lbfgs (lec6fast.optim.lbfgs against scipy's L-BFGS-B and "
                        "torch.optim.LBFGS per problem: iterations, evaluations, final f, "
                        "gradient norm, wall and solver time; see lec6fast/bench/lbfgs.py); "
                        "default: all six")
    b.add_argument("--scenarios", type=_choices(contention.SCENARIOS),
                   default=list(contention.SCENARIOS), metavar="S,S,...",
                   help=f"contention scenarios, a subset of {','.join(contention.SCENARIOS)} "
                        "(default: all; their sizes are fixed, see lec6fast/bench/contention.py)")
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

def bench(args):
    """Run the sections asked for, with lec6fast (and torch) on args.threads threads; print
    their tables (lec6fast.bench.report) or, with --json, what they return."""
    dtypes = list(cases.DTYPES) if args.dtype == "both" else [args.dtype]
    # --threads capped at lec6fast.max_threads() once (with its warning), for every section
    threads = None if args.threads is None else thread_count(args.threads)
    out = sys.stdout
    if not args.json:
        print("\n".join(report.header(threads=threads, use_torch=not args.no_torch,
                                      repeat=args.repeat, min_repeat=args.min_repeat,
                                      budget=args.budget, batch_time=args.batch_time)),
              file=out, flush=True)
    t0 = time.perf_counter()
    progress = None if args.quiet else report.Progress()
    step = None if args.quiet else (lambda what: print(what, file=sys.stderr))
    if "kernels" in args.sections:
        result = run.run(args.kernels, dtypes, args.sizes, threads=threads,
                         use_torch=not args.no_torch, repeat=args.repeat,
                         min_repeat=args.min_repeat, batch_time=args.batch_time,
                         budget=args.budget, progress=progress)
    else:
        result = {"config": run.config(threads), "results": []}
    if "contention" in args.sections:
        scenarios = [s for s in args.scenarios if s != "torch" or not args.no_torch]
        result["contention"] = contention.run(
            scenarios, threads=threads, repeat=max(3, 2 * args.repeat + 1),
            batch_time=10 * args.batch_time,
            progress=step and (lambda what: step(f"contention: {what}")))
    if "model" in args.sections:
        result["model"] = model.run(threads=threads, use_torch=not args.no_torch,
                                    repeat=max(3, 2 * args.repeat + 1),
                                    batch_time=10 * args.batch_time, progress=step)
    if "torch-model" in args.sections:
        result["torch_model"] = (None if args.no_torch else
                                 torch_model.run(threads=threads, repeat=max(3, args.repeat),
                                                 batch_time=25 * args.batch_time, progress=step))
    if "torch-layers" in args.sections:
        result["torch_layers"] = None if args.no_torch else torch_layers.run(
            threads=threads, repeat=max(3, 2 * args.repeat + 1),
            batch_time=10 * args.batch_time, progress=step)
    if "lbfgs" in args.sections:
        result["lbfgs"] = lbfgs.run(repeat=max(3, args.repeat // 2 + 1),
                                    use_torch=not args.no_torch, progress=step)
    result["wall_time_s"] = time.perf_counter() - t0
    if args.json:
        json.dump(result, out, indent=2)
        out.write("\n")
    else:
        lines = report.kernels(result) if "kernels" in args.sections else [""]
        if "contention" in args.sections:
            lines += report.contention(result["contention"], threads=threads)
        if "model" in args.sections:
            lines += report.model(result["model"])
        if "torch-model" in args.sections:
            lines += report.torch_model(result["torch_model"])
        if "torch-layers" in args.sections:
            lines += report.torch_layers(result["torch_layers"])
        if "lbfgs" in args.sections:
            lines += report.lbfgs(result["lbfgs"])
        print("\n".join(lines), file=out)
    return 0

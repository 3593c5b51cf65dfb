"""The torch-model section: lec6fast.torch's optimizers against torch.optim's on a PyTorch model.

The model (float32): 12 transformer-shaped blocks, each nn.Linear(320, 1280), nn.Linear(1280,
320) and two nn.LayerNorm(320), then a LayerNorm and an nn.Linear(320, 320) head: 100 parameter
tensors, 9.95M parameters.  Each optimizer steps its own copy of the model with fixed random
gradients; every variant of one rule is timed with its batches interleaved (the full
optimizer.step(), hooks and all), lec6fast and torch on the same number of threads.  torch's
CPU default is its for-loop implementation (foreach is CUDA's default); foreach=True and
fused=True are timed where torch has them (no fused RMSprop).  Where users run: the Adam
variants once more next to a busy process (another process spinning on one of the cores), and
Adam's step inside a training loop (training_loop): after the forward and backward passes, when
torch's OpenMP threads have just worked and still spin.  There lec6fast.torch runs on torch's
threads (lec6fast.torch.use_torch_threads); it is timed on lec6fast's own workers too.
"""

import contextlib
import statistics
import time

from lec6fast import _runtime
from lec6fast.bench.contention import busy_process
from lec6fast.bench.timing import interleaved, num_threads, thread_count
from lec6fast.bench.torch_twins import import_torch, lec6fast_torch

WIDTH, BLOCKS = 320, 12
RULES = (   # (torch.optim class, keyword arguments, whether torch has fused=True on CPU)
    ("Adam", dict(lr=1e-3), True),
    ("SGD", dict(lr=1e-3, momentum=0.9), True),
    ("Adagrad", dict(lr=1e-3), True),
    ("RMSprop", dict(lr=1e-3), False),
)


def build(torch, seed=0):
    """The benchmark's model, with fixed random gradients on every parameter."""
    nn = torch.nn
    torch.manual_seed(seed)
    layers = []
    for _ in range(BLOCKS):
        layers += [nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH),
                   nn.LayerNorm(WIDTH)]
    m = nn.Sequential(*layers, nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH))
    for p in m.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    return m


def variants(torch, lt, name, kw, fused):
    """[(label, step function)] of rule `name`: lec6fast.torch's, torch's default, foreach, fused."""
    out = [(f"lt.{name}", getattr(lt, name)(build(torch).parameters(), **kw).step)]
    impls = [("default", {}), ("foreach=True", {"foreach": True})]
    if fused:
        impls.append(("fused=True", {"fused": True}))
    for label, extra in impls:
        out.append((f"torch {name} ({label})",
                    getattr(torch.optim, name)(build(torch).parameters(), **kw, **extra).step))
    return out


def loop_variants(torch, lt):
    """[(label, optimizer class, keyword arguments, lec6fast on torch's threads)] of the
    training-loop case."""
    return [("lt.Adam", lt.Adam, {}, True),
            ("lt.Adam on lec6fast's own workers", lt.Adam, {}, False),
            ("torch Adam (fused=True)", torch.optim.Adam, {"fused": True}, True),
            ("torch Adam (default)", torch.optim.Adam, {}, True)]


def training_step(torch, cls, kw, batch=64, seed=1):
    """(prepare, step) of a training loop on the benchmark's model with optimizer cls(**kw):
    prepare() runs zero_grad and the forward and backward passes of a batch, step() the
    optimizer's step."""
    m = build(torch)
    opt = cls(m.parameters(), lr=1e-3, **kw)
    x = torch.randn(batch, WIDTH, generator=torch.Generator().manual_seed(seed))

    def prepare():
        opt.zero_grad()
        m(x).square().mean().backward()
    return prepare, opt.step


def _timed_step(prepare, step):
    prepare()
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def training_loop(torch, lt, *, rounds=7, iterations=10, warmup=3):
    """[(label, median seconds of the step)] of Adam's step inside a training loop, each variant
    of loop_variants on a model of its own; rounds of `iterations` iterations alternate between
    the variants."""
    variants = [(label, training_step(torch, cls, kw), on)
                for label, cls, kw, on in loop_variants(torch, lt)]
    steps = {label: [] for label, _, _ in variants}
    was = _runtime.pool_stats()["team"]
    try:
        for r in range(rounds + 1):
            for label, iteration, on in variants:
                lt.use_torch_threads(on)
                times = [_timed_step(*iteration) for _ in range(iterations if r else warmup)]
                if r:
                    steps[label] += times
    finally:
        lt.use_torch_threads(was)
    return [(label, statistics.median(ts)) for label, ts in steps.items()]


def run(*, threads=None, repeat=9, batch_time=0.05, progress=None):
    """Rows {case, n, label, seconds, [against, against_s, ratio]} (ratio: this row's time /
    lt.<rule>'s, so above 1 means lec6fast.torch is that much faster); None without torch."""
    torch = import_torch()
    if torch is None:
        return None
    with lec6fast_torch() as lt:
        return _run(torch, lt, thread_count(threads), repeat, batch_time, progress)


def _run(torch, lt, nt, repeat, batch_time, progress):
    torch.set_num_threads(nt)
    m = build(torch)
    tensors = len(list(m.parameters()))
    n = sum(p.numel() for p in m.parameters())
    del m
    case = f"{tensors} tensors, {n / 1e6:.2f}M float32"
    rows = []
    mixes = [(name, kw, fused, "") for name, kw, fused in RULES]
    mixes.append(RULES[0] + (", next to a busy process",))
    for name, kw, fused, where in mixes:
        vs = variants(torch, lt, name, kw, fused)
        if progress:
            progress(f"torch-model: {case}{where}: " + ", ".join(label for label, _ in vs))
        with busy_process() if where else contextlib.nullcontext():
            times = interleaved([f for _, f in vs], threads=[nt] * len(vs), repeat=repeat,
                                batch_time=batch_time, settle=0.01)
        what = f"{name}({', '.join(f'{k}={v}' for k, v in kw.items())}){where}"
        rows.append(dict(case=case, rule=what, n=n, label=vs[0][0], seconds=times[0]))
        for (label, _), t in zip(vs[1:], times[1:]):
            rows.append(dict(case=case, rule=what, n=n, label=label, seconds=t,
                             against=vs[0][0], against_s=times[0], ratio=t / times[0]))
        del vs
    what = "Adam(lr=0.001), step in a training loop (after forward+backward)"
    if progress:
        progress(f"torch-model: {case}: {what}")
    with num_threads(nt):
        steps = training_loop(torch, lt)
    (first, t_first), others = steps[0], steps[1:]
    rows.append(dict(case=case, rule=what, n=n, label=first, seconds=t_first))
    for label, t in others:
        rows.append(dict(case=case, rule=what, n=n, label=label, seconds=t, against=first,
                         against_s=t_first, ratio=t / t_first))
    return rows

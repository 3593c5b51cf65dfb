"""The model step: lec6fast.optim stepping whole models, against what users would use instead.

Models (float32):
- ``cnn52``: 52 arrays, 5.1M parameters, shaped like a small CNN (13 layers: weight, bias and a
  batch norm's gamma and beta each; biases of 64 elements up to a 1000x1000 weight).
- ``cs231n``: the assignments' three-layer net, 6 arrays, ~100K parameters.
- ``flat16M``: one 16M-element array, for the cost of the running average and clipping.

Each comparison is timed with its batches interleaved (lec6fast.bench.timing.interleaved), so all
sides see the same stretch of this shared machine.  Bytes moved by an Adam step: 28 per float32
parameter (x, m, v read and written, dx read); GB/s is read against the read-modify-write probe
(x *= 1) on the same number of elements, in the same run.  torch.optim.Adam (fused=True and
foreach=True) steps the same arrays (torch.from_numpy) where torch is installed, on as many
threads as lec6fast; DeepSpeed's DeepSpeedCPUAdam too, where deepspeed is installed.
"""

import contextlib
import sys

import numpy as np

import lec6fast
from lec6fast import _dispatch, optim, reference
from lec6fast.bench.contention import busy_process
from lec6fast.bench.timing import interleaved, thread_count

ADAM_BYTES = 28             # per float32 parameter
LAYERS = [                  # (weight shape, output channels) of the cnn52 model
    ((64, 3, 3, 3), 64), ((64, 64, 3, 3), 64), ((64, 64), 64), ((128, 64, 3, 3), 128),
    ((128, 128, 3, 3), 128), ((256, 128, 3, 3), 256), ((256, 256, 3, 3), 256),
    ((256, 256, 3, 3), 256), ((256, 256, 3, 3), 256), ((1000, 1000), 1000),
    ((1000, 1000), 1000), ((512, 1000), 512), ((256, 1000), 256),
]
MODELS = ("cnn52", "cs231n", "flat16M")


def model(name, seed=0):
    """{name: float32 array} of the model `name`."""
    rng = np.random.default_rng(seed)
    if name == "cnn52":
        shapes = {}
        for i, (w, c) in enumerate(LAYERS):
            shapes.update({f"W{i}": w, f"b{i}": (c,), f"gamma{i}": (c,), f"beta{i}": (c,)})
    elif name == "cs231n":
        shapes = {"W1": (3072, 32), "b1": (32,), "W2": (32, 32), "b2": (32,), "W3": (32, 10),
                  "b3": (10,)}
    elif name == "flat16M":
        shapes = {"x": (16_000_000,)}
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    return {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}


def gradients(params, seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, v.shape).astype(np.float32) for k, v in params.items()}


def _size(params):
    return sum(v.size for v in params.values())


def _tensors(torch, params, grads):
    """torch Parameters sharing params' memory, their .grad sharing grads'."""
    ts = []
    for k, v in params.items():
        p = torch.nn.Parameter(torch.from_numpy(v))
        p.grad = torch.from_numpy(grads[k])
        ts.append(p)
    return ts


def _torch_adam(params, grads, impl, threads):
    """A step of torch.optim.Adam(impl=True) on tensors sharing params' and grads' memory."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(_tensors(torch, params, grads), lr=1e-3, eps=1e-7, **{impl: True})
    opt.step()
    return opt.step


def _deepspeed_adam(params, grads):
    """A step of DeepSpeed's DeepSpeedCPUAdam (its AVX C++ Adam) on the same arrays, where
    deepspeed is installed (its op is compiled on first use).  deepspeed logs to stdout (its
    logger's handler binds the stream at import): it is pointed at stderr here, so that
    `lec6fast bench --json` stays JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        try:
            import torch
            from deepspeed.ops.adam import DeepSpeedCPUAdam
        except Exception:
            return None
        try:
            opt = DeepSpeedCPUAdam(_tensors(torch, params, grads), lr=1e-3, eps=1e-7,
                                   adamw_mode=False)
            opt.step()
        except Exception:
            return None
    return opt.step


def _row(rows, case, n, label, seconds, against=None, against_s=None, nbytes=None, probe_s=None,
         **extra):
    row = dict(case=case, n=n, label=label, seconds=seconds, **extra)
    if against_s is not None:
        row.update(against=against, against_s=against_s, ratio=seconds / against_s)
    if nbytes is not None:
        row["gbps"] = nbytes / seconds / 1e9
        if probe_s is not None:
            row["probe_gbps"] = 2 * 4 * n / probe_s / 1e9
    rows.append(row)


def run(*, threads=None, use_torch=True, repeat=15, batch_time=0.02, progress=None):
    """Rows {case, n, label, seconds, [against, against_s, ratio], [gbps, probe_gbps]}; a ratio
    is this row's time / the time of `against`, from the same interleaved measurement."""
    nt = thread_count(threads)
    opts = dict(repeat=repeat, batch_time=batch_time)
    rows = []
    note = progress or (lambda what: None)

    # 1. A model of 52 arrays, 5.1M parameters, against one adam_ on as many elements, torch's
    #    Adam on the same 52 arrays, and the NumPy reference.
    p = model("cnn52")
    n = _size(p)
    g = gradients(p)
    opt = optim.Adam(p, 1e-3)
    opt.step(g)
    flat = {k: np.concatenate([a.ravel() for a in d.values()]) for k, d in (("x", p), ("g", g))}
    m, v = np.zeros_like(flat["x"]), np.zeros_like(flat["x"])
    probe = _dispatch.kernels("_updates", _dispatch.level)
    one_call = lambda: lec6fast.adam_(flat["x"], flat["g"], m, v, t=10, lr=1e-3)  # noqa: E731
    rmw = lambda: probe._scale_(flat["x"], s=1.0)                                 # noqa: E731
    step = lambda: opt.step(g)                                                    # noqa: E731
    fns, labels = [step, one_call, rmw], ["optim.Adam.step", "adam_ (one 5.1M array)", "probe"]
    if use_torch:
        for impl in ("fused", "foreach"):
            f = _torch_adam(model("cnn52"), g, impl, nt)
            if f is not None:
                fns.append(f)
                labels.append(f"torch Adam({impl}=True)")
        f = _deepspeed_adam(model("cnn52"), g)
        if f is not None:
            fns.append(f)
            labels.append("DeepSpeedCPUAdam")
    note(f"model: cnn52 ({len(p)} arrays, {n} parameters): " + ", ".join(labels))
    # (settle: torch's OpenMP threads spin after its step; each batch starts once they sleep)
    times = interleaved(fns, threads=[nt] * len(fns), settle=0.01, **opts)
    t_step, t_one, t_probe = times[:3]
    case = f"cnn52: {len(p)} arrays, {n / 1e6:.1f}M float32"
    _row(rows, case, n, "optim.Adam.step", t_step, "adam_ (one 5.1M array)", t_one,
         nbytes=ADAM_BYTES * n, probe_s=t_probe)
    _row(rows, case, n, "adam_ (one 5.1M array)", t_one, nbytes=ADAM_BYTES * n, probe_s=t_probe)
    for label, t in zip(labels[3:], times[3:]):
        _row(rows, case, n, label, t, "optim.Adam.step", t_step, nbytes=ADAM_BYTES * n,
             probe_s=t_probe)

    # 2. The CS231n three-layer net against the lecture's loop (lec6fast.reference.Adam).
    p, q = model("cs231n"), model("cs231n")
    n = _size(p)
    g = gradients(p)
    fast, slow = optim.Adam(p, 1e-3), reference.Adam(q, 1e-3)
    note(f"model: cs231n ({len(p)} arrays, {n} parameters) against the NumPy reference")
    t_fast, t_ref = interleaved([lambda: fast.step(g), lambda: slow.step(g)], threads=[nt, nt],
                                **opts)
    case = f"cs231n: {len(p)} arrays, {n / 1e3:.0f}K float32"
    _row(rows, case, n, "reference.Adam.step (NumPy)", t_ref, "optim.Adam.step", t_fast)
    _row(rows, case, n, "optim.Adam.step", t_fast, nbytes=ADAM_BYTES * n)

    # 3. What the running average and clipping cost on 16M parameters.
    p = model("flat16M")
    n = _size(p)
    g = gradients(p)
    plain = optim.Adam(p, 1e-3)
    ema = optim.Adam(model("flat16M"), 1e-3, ema_decay=0.995)
    clip = optim.Adam(model("flat16M"), 1e-3, clip_norm=1.0)
    avg = p["x"].copy()
    separate = lambda: (plain.step(g), lec6fast.ema_(avg, p["x"], decay=0.995))  # noqa: E731
    note("model: flat16M, Adam against Adam + EMA, Adam + clip, Adam then ema_")
    t_plain, t_ema, t_clip, t_sep = interleaved(
        [lambda: plain.step(g), lambda: ema.step(g), lambda: clip.step(g), separate],
        threads=[nt] * 4, **opts)
    case = f"flat16M: 1 array, {n / 1e6:.0f}M float32"
    _row(rows, case, n, "optim.Adam.step", t_plain, nbytes=ADAM_BYTES * n)
    _row(rows, case, n, "Adam(ema_decay=0.995)", t_ema, "optim.Adam.step", t_plain,
         nbytes=36 * n, bytes_ratio=36 / 28)
    _row(rows, case, n, "Adam(clip_norm=1.0)", t_clip, "optim.Adam.step", t_plain,
         nbytes=32 * n, bytes_ratio=32 / 28)
    _row(rows, case, n, "Adam step, then ema_", t_sep, "optim.Adam.step", t_plain,
         nbytes=40 * n, bytes_ratio=40 / 28)

    # 4. Where users run: threads against one thread, after a NumPy matmul and next to a busy
    #    process (the thread trap of the threads issue).
    rng = np.random.default_rng(2)
    a = rng.standard_normal((100, 256), dtype=np.float32)
    b = rng.standard_normal((256, 128), dtype=np.float32)
    p = model("cs231n")
    g = gradients(p)
    opt = optim.Adam(p, 1e-3)

    def matmul_step():
        a @ b
        opt.step(g)
    note("model: cs231n, a @ b then the step, 1 thread against the default")
    one, many = interleaved([matmul_step, matmul_step], threads=[1, nt], **opts)
    _row(rows, "matmul (100x256 @ 256x128) then optim.Adam.step, cs231n", _size(p),
         f"{nt} threads", many, "1 thread", one)
    p = model("cnn52")
    g = gradients(p)
    opt = optim.Adam(p, 1e-3)
    note("model: cnn52 next to a busy process, and idle, 1 thread against the default")
    with busy_process():
        one, many = interleaved([lambda: opt.step(g)] * 2, threads=[1, nt], **opts)
    _row(rows, "next to a busy process: optim.Adam.step, cnn52", _size(p), f"{nt} threads", many,
         "1 thread", one)
    one, many = interleaved([lambda: opt.step(g)] * 2, threads=[1, nt], **opts)
    _row(rows, "idle: optim.Adam.step, cnn52", _size(p), f"{nt} threads", many, "1 thread", one)
    return rows


if __name__ == "__main__":
    from lec6fast.bench import report
    with contextlib.suppress(KeyboardInterrupt):
        print("\n".join(report.model(run(progress=print), markdown=True)))

"""The kernels where users run them: next to NumPy's BLAS, a busy process, PyTorch's pool.

A kernel that is fast alone can be many times slower inside a training loop, when its threads
wait for cores that NumPy's OpenBLAS threads, PyTorch's OpenMP pool or another process hold.
Each scenario here times the same work with lec6fast on its default thread count and on one
thread, batches interleaved (so both see the same machine), and reports the ratio:

- ``matmul``: ``a @ b`` (100x256 @ 256x128, OpenBLAS) then one kernel call, repeated: the
  update/dropout/batch-norm step of a NumPy training loop.
- ``busy``: one kernel call while another process spins on a core (`while True: pass`).
- ``idle``: one kernel call on an idle machine (the speed-up threads should bring).
- ``torch``: PyTorch imported and its intra-op pool used, then a NumPy multiply and
  ``dropout_backward`` alternating (skipped without torch).
- ``mlp``: a whole training step of a 3-layer MLP with batch norm and dropout on scikit-learn's
  ``load_digits`` (random data of the same shapes without scikit-learn), in lec6fast and in plain
  NumPy (lec6fast.reference, the lecture's code).

Only lec6fast's public API is used, so the same code measures any version of it.
"""

import contextlib
import multiprocessing
import time

import numpy as np

import lec6fast
from lec6fast import _runtime, reference
from lec6fast.bench.cases import lecture_dropout_forward
from lec6fast.bench.timing import interleaved, thread_count

SCENARIOS = ("matmul", "busy", "idle", "torch", "mlp")


# ---------------------------------------------------------------- kernels at a size

def kernel_call(name, n, dtype=np.float32, seed=0):
    """A call of kernel `name` on arrays of about n elements, as a function of no arguments."""
    rng = np.random.default_rng(seed)
    if name == "batchnorm":
        d = 512 if n >= 512 * 32 else 64
        shape = (max(1, n // d), d)
    else:
        shape = (n,)

    def arr(lo=-1.0, hi=1.0):
        return rng.uniform(lo, hi, shape).astype(dtype)

    x, g = arr(), arr()
    if name == "sgd_":
        return lambda: lec6fast.sgd_(x, g, lr=1e-5)
    if name in ("momentum_", "nesterov_"):
        f, v = getattr(lec6fast, name), arr(-1e-3, 1e-3)
        return lambda: f(x, g, v, lr=1e-5)
    if name in ("adagrad_", "rmsprop_"):
        f, c = getattr(lec6fast, name), arr(0.5, 1.5)
        return lambda: f(x, g, c, lr=1e-5)
    if name == "adam_":
        m, v = arr(), arr(0.5, 1.5)
        return lambda: lec6fast.adam_(x, g, m, v, t=10, lr=1e-5)
    if name == "ema_":
        return lambda: lec6fast.ema_(x, g, decay=0.99)
    if name == "dropout_forward":
        out, gen = np.empty_like(x), np.random.default_rng(seed)
        return lambda: lec6fast.dropout_forward(x, p=0.5, rng=gen, out=out)
    if name == "dropout_backward":
        out, mask = np.empty_like(x), lec6fast.dropout_forward(x, p=0.5, rng=seed)[1]
        return lambda: lec6fast.dropout_backward(g, mask, out=out)
    if name == "batchnorm":
        d = shape[1]
        gamma, beta = np.ones(d, dtype), np.zeros(d, dtype)
        rm, rv = np.zeros(d, dtype), np.ones(d, dtype)
        out = np.empty_like(x)

        def step():
            _, cache = lec6fast.batchnorm_forward(x, gamma, beta, running_mean=rm,
                                                  running_var=rv, out=out)
            lec6fast.batchnorm_backward(g, cache)
        return step
    raise KeyError(name)


KERNELS = ("sgd_", "momentum_", "nesterov_", "adagrad_", "rmsprop_", "adam_", "ema_",
           "dropout_forward", "dropout_backward", "batchnorm")
MATMUL_KERNELS = ("adam_", "sgd_", "dropout_forward", "batchnorm")
MATMUL_SIZES = (10_000, 100_000, 1_000_000)


def matmul_then(call, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((100, 256), dtype=np.float32)
    b = rng.standard_normal((256, 128), dtype=np.float32)

    def step():
        a @ b
        call()
    return step


# ---------------------------------------------------------------- a busy neighbour

def _spin(stop):
    while not stop.is_set():
        pass


@contextlib.contextmanager
def busy_process():
    """Another process spinning on a core for the duration; on exit, a pause of twice the
    longest serial period the pool starts after late jobs (_runtime.SERIAL_PERIOD_MAX): the
    period ends, and so does the window after it in which a late job would double it again, so
    what is measured next sees a machine that has been idle, not the busy process's aftermath."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_spin, args=(stop,), daemon=True)
    proc.start()
    time.sleep(0.3)                 # let it start spinning
    try:
        yield
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        time.sleep(2 * _runtime.SERIAL_PERIOD_MAX)


# ---------------------------------------------------------------- the MLP

def digits(dtype=np.float32):
    """scikit-learn's load_digits (1797 x 64, 10 classes), scaled to [0, 1]; random data of the
    same shapes when scikit-learn is not installed.  Returns (X, y, source)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(0)
        return (rng.random((1797, 64)).astype(dtype), rng.integers(0, 10, 1797),
                "random data of load_digits' shapes (scikit-learn not installed)")
    d = load_digits()
    return (d.data / 16.0).astype(dtype), d.target, "sklearn.datasets.load_digits"


class MLP:
    """affine - batchnorm - relu - dropout, twice, then affine - softmax, trained with Adam:
    the CS231n FullyConnectedNet.  `lib` is lec6fast or lec6fast.reference (plain NumPy)."""

    def __init__(self, lib, hidden=512, batch=200, keep=0.5, dtype=np.float32, seed=0):
        self.lib, self.batch, self.keep, self.dtype = lib, batch, keep, dtype
        # Plain NumPy draws the lecture's mask (rng.random < p), as users write it; the
        # reference's Philox twin of lec6fast's mask is a specification, not a baseline.
        self.dropout_forward = (lib.dropout_forward if lib is lec6fast
                                else lecture_dropout_forward)
        self.X, self.y, self.source = digits(dtype)
        rng = np.random.default_rng(seed)
        dims = [self.X.shape[1], hidden, hidden, 10]
        self.params = {}
        for i in range(3):
            self.params[f"W{i}"] = (rng.standard_normal((dims[i], dims[i + 1]))
                                    * np.sqrt(2.0 / dims[i])).astype(dtype)
            self.params[f"b{i}"] = np.zeros(dims[i + 1], dtype)
        for i in range(2):
            self.params[f"gamma{i}"] = np.ones(hidden, dtype)
            self.params[f"beta{i}"] = np.zeros(hidden, dtype)
        self.bn = [dict(running_mean=np.zeros(hidden, dtype), running_var=np.ones(hidden, dtype))
                   for _ in range(2)]
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.t = 0
        self.rng = np.random.default_rng(seed + 1)

    def step(self):
        lib, P = self.lib, self.params
        idx = self.rng.integers(0, len(self.X), self.batch)
        h, y = self.X[idx], self.y[idx]
        caches = []
        for i in range(2):
            a = h @ P[f"W{i}"] + P[f"b{i}"]
            bn, bn_cache = lib.batchnorm_forward(a, P[f"gamma{i}"], P[f"beta{i}"], **self.bn[i])
            r = np.maximum(bn, 0)
            d, mask = self.dropout_forward(r, p=self.keep, rng=self.rng)
            caches.append((h, bn_cache, r, mask))
            h = d
        scores = h @ P["W2"] + P["b2"]
        scores -= scores.max(axis=1, keepdims=True)
        prob = np.exp(scores)
        prob /= prob.sum(axis=1, keepdims=True)
        loss = -np.log(prob[np.arange(len(y)), y]).mean()
        dscores = prob
        dscores[np.arange(len(y)), y] -= 1
        dscores /= len(y)
        grads = {"W2": h.T @ dscores, "b2": dscores.sum(axis=0)}
        dh = dscores @ P["W2"].T
        for i in (1, 0):
            h_in, bn_cache, r, mask = caches[i]
            dr = lib.dropout_backward(dh, mask)
            dbn = dr * (r > 0)
            da, grads[f"gamma{i}"], grads[f"beta{i}"] = lib.batchnorm_backward(dbn, bn_cache)
            grads[f"W{i}"] = h_in.T @ da
            grads[f"b{i}"] = da.sum(axis=0)
            dh = da @ P[f"W{i}"].T
        self.t += 1
        for k, p in P.items():
            lib.adam_(p, grads[k].astype(self.dtype, copy=False), self.m[k], self.v[k],
                      t=self.t, lr=1e-3)
        return float(loss)


# ---------------------------------------------------------------- the scenarios

def run(scenarios=SCENARIOS, *, threads=None, repeat=15, batch_time=0.02, progress=None):
    """Rows {scenario, case, n, one_thread_s, threads_s, ratio, ...}: ratio = time on `threads`
    (default: lec6fast's setting) / time on one thread; below 1 is faster."""
    nt = thread_count(threads)
    opts = dict(repeat=repeat, batch_time=batch_time)
    rows = []
    note = progress or (lambda what: None)

    def pair(scenario, case, n, fn, **extra):
        note(f"{scenario}: {case} n={n}")
        one, many = interleaved([fn, fn], threads=[1, nt], **opts)
        rows.append(dict(scenario=scenario, case=case, n=n, threads=nt, one_thread_s=one,
                         threads_s=many, ratio=many / one, **extra))

    if "matmul" in scenarios:
        for name in MATMUL_KERNELS:
            for n in MATMUL_SIZES:
                pair("matmul", name, n, matmul_then(kernel_call(name, n)))
    if "busy" in scenarios:
        with busy_process():
            for name in KERNELS:
                for n in (100_000, 1_000_000, 16_000_000):
                    pair("busy", name, n, kernel_call(name, n))
    if "idle" in scenarios:
        for name in KERNELS:
            for n in (100_000, 1_000_000, 16_000_000):
                pair("idle", name, n, kernel_call(name, n))
    if "torch" in scenarios:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            torch.set_num_threads(nt)
            t = torch.ones(1 << 22)
            for _ in range(20):
                (t * 2).sum()           # torch's OpenMP pool is up and has run
            n = 16_000_000
            rng = np.random.default_rng(0)
            a = rng.random(n, dtype=np.float32)
            tmp = np.empty_like(a)
            mask = lec6fast.dropout_forward(a, p=0.5, rng=0)[1]
            out = np.empty_like(a)

            def step():
                np.multiply(a, 1.0001, out=tmp)
                lec6fast.dropout_backward(tmp, mask, out=out)
            pair("torch", "numpy multiply + dropout_backward", n, step,
                 torch=torch.__version__)
    if "mlp" in scenarios:
        fast, ref = MLP(lec6fast), MLP(reference)
        note("mlp: training step, lec6fast on 1 and on default threads, NumPy")
        one, many, numpy_s = interleaved([fast.step, fast.step, ref.step], threads=[1, nt, 1],
                                         **opts)
        rows.append(dict(scenario="mlp", case=f"3-layer MLP, batch {fast.batch}, hidden "
                         f"{fast.params['W1'].shape[0]}, batch norm + dropout + Adam ({fast.source})",
                         n=fast.batch, threads=nt, one_thread_s=one, threads_s=many, ratio=many / one,
                         numpy_s=numpy_s, speedup_vs_numpy=numpy_s / many))
    return rows


if __name__ == "__main__":
    # python -m lec6fast.bench.contention [scenario ...]: a Markdown table, from any installed
    # lec6fast (only its public API is used), e.g. to compare two builds.
    import sys
    from lec6fast.bench import report
    picked = tuple(sys.argv[1:]) or SCENARIOS
    rows = run(picked, progress=lambda w: print(w, file=sys.stderr))
    print("\n".join(report.contention(rows, markdown=True)))

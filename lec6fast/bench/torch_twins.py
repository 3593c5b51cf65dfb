"""The closest PyTorch CPU call to each benchmarked operation, on the same memory.

Every builder takes the case's arrays (and its hyperparameters) and returns (label, Call): the
label names the torch call in the output, the Call (lec6fast.bench.timing.Call) runs it on
tensors made with torch.from_numpy, so torch reads and writes the arrays lec6fast does.  torch
is optional: `import_torch` returns None when it does not import, and it is only imported
inside functions (tests/test_architecture.py).  `UPDATES` maps an update kernel to its twin;
lec6fast.bench.cases gives the layers theirs.
"""

import contextlib

from lec6fast.bench.timing import Call

_torch = None


def import_torch():
    """The torch module, or None when it is not installed or fails to import."""
    global _torch
    if _torch is None:
        try:
            import torch
        except Exception:           # not installed, or a broken install: benchmark without it
            torch = False
        _torch = torch
    return _torch or None


@contextlib.contextmanager
def lec6fast_torch():
    """lec6fast.torch (None where torch is absent) for a torch section of the benchmarks, which
    runs the way importing it sets lec6fast up, on torch's OpenMP threads; the sections after it
    (NumPy's users) find the pool as it was before."""
    from lec6fast import _runtime
    was = _runtime.pool_stats()["team"]
    if import_torch() is None:
        yield None
        return
    import lec6fast.torch as lt
    lt.use_torch_threads(True)
    try:
        yield lt
    finally:
        lt.use_torch_threads(was)


# ---------------------------------------------------------------- the update rules

def optimizer(cls_name, label, arrays, **options):
    """One step of torch.optim.<cls_name> on a parameter sharing x's memory, with dx's memory as
    its gradient: fused=True where this torch implements it on the CPU for this optimizer,
    else foreach=True (tried, not assumed).  Returns (label, Call); the first step, which
    allocates the optimizer's state, has been taken."""
    torch = import_torch()
    cls = getattr(torch.optim, cls_name)
    param = torch.nn.Parameter(torch.from_numpy(arrays[0]))
    param.grad = torch.from_numpy(arrays[1])
    errors = []
    for impl in ("fused", "foreach"):
        try:
            opt = cls([param], **options, **{impl: True})
            opt.step()              # unsupported fused paths may raise only here
        except (TypeError, ValueError, RuntimeError) as e:
            errors.append(f"{impl}: {e}")
            continue
        return f"{cls_name}({label}{impl})", Call(opt.step)
    raise RuntimeError(f"torch.optim.{cls_name}: no usable implementation ({'; '.join(errors)})")


def lerp(arrays, h):
    # torch.optim has no parameter averaging; torch's EMA helpers (swa_utils) use lerp_,
    # x_avg += (1 - decay) * (x - x_avg), the same average written the other way round.
    torch = import_torch()
    avg, x = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])
    return "Tensor.lerp_", Call(avg.lerp_, x, 1.0 - h["decay"])


# {kernel: its twin(arrays, hyper)}, for the kernels of lec6fast._rules.RULES
UPDATES = {
    "sgd_": lambda a, h: optimizer("SGD", "", a, lr=h["lr"]),
    "momentum_": lambda a, h: optimizer("SGD", "momentum, ", a, lr=h["lr"], momentum=h["mu"]),
    "nesterov_": lambda a, h: optimizer("SGD", "nesterov, ", a, lr=h["lr"], momentum=h["mu"],
                                        nesterov=True),
    "adagrad_": lambda a, h: optimizer("Adagrad", "", a, lr=h["lr"], eps=h["eps"]),
    "rmsprop_": lambda a, h: optimizer("RMSprop", "", a, lr=h["lr"], alpha=h["decay_rate"],
                                       eps=h["eps"]),
    "adam_": lambda a, h: optimizer("Adam", "", a, lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                                    eps=h["eps"]),
    "ema_": lerp,
}


# ---------------------------------------------------------------- dropout, batch norm

def dropout(arrays, h):
    torch = import_torch()
    return "F.dropout", Call(torch.nn.functional.dropout, torch.from_numpy(arrays[0]),
                             1.0 - h["p"], True)


def dropout_backward(arrays, keep):
    # The op torch's autograd runs for dropout's backward, with a mask of torch's own layout.
    torch = import_torch()
    dout = torch.from_numpy(arrays[0])
    _, mask = torch.native_dropout(dout, 1.0 - keep, True)
    return "aten.native_dropout_backward", Call(torch.ops.aten.native_dropout_backward,
                                                dout, mask, 1.0 / keep)


def batchnorm(arrays, h):
    torch = import_torch()
    x, gamma, beta = (torch.from_numpy(a).requires_grad_(True) for a in arrays[:3])
    running_mean, running_var, dout = (torch.from_numpy(a) for a in arrays[3:])

    def step():
        out = torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta,
                                             training=True, momentum=0.1, eps=1e-5)
        return torch.autograd.grad(out, (x, gamma, beta), dout)
    return "F.batch_norm + autograd", Call(step)

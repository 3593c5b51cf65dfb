"""The torch layers: lec6fast.torch's Dropout and BatchNorm1d/2d against torch.nn's, training.

Each case times one forward and backward (torch.autograd.grad of the output with a fixed
upstream gradient, so nothing accumulates) of lec6fast's layer and of torch.nn's on the same
float32 tensor, their batches interleaved (lec6fast.bench.timing.interleaved), torch on as many
threads as lec6fast.  The dropout rows also give the bytes each layer keeps for its backward:
lec6fast's 1-bit DropoutMask, torch's saved mask tensor.  torch is optional: `run` returns None
without it (and imports it, and lec6fast.torch, only inside functions).
"""

import contextlib
import math

from lec6fast.bench.timing import interleaved, num_threads
from lec6fast.bench.torch_twins import lec6fast_torch

# (name, layer, input shape): training-sized float32 tensors
CASES = [
    ("Dropout(p=0.5)", "Dropout", (256, 4096)),
    ("Dropout(p=0.5)", "Dropout", (64, 64, 32, 32)),
    ("BatchNorm1d", "BatchNorm1d", (256, 4096)),
    ("BatchNorm1d (N, C, L)", "BatchNorm1d", (64, 128, 256)),
    ("BatchNorm2d", "BatchNorm2d", (64, 64, 32, 32)),
]


def _import():
    try:
        import torch
        import lec6fast.torch as lt
    except Exception:               # not installed, or a broken install
        return None, None
    return torch, lt


def _saved_bytes(torch, out):
    """Bytes of the tensors out's grad_fn saved for the backward (torch's layers)."""
    total = 0
    for name in dir(out.grad_fn):
        value = getattr(out.grad_fn, name) if name.startswith("_saved_") else None
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
    return total


def calls(kind, shape):
    """{"lec6fast.torch": fn, "torch.nn": fn}: one forward + backward of each layer (training,
    float32) on the same random input of `shape`; None without torch."""
    torch, lt = _import()
    if torch is None:
        return None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    dout = torch.randn(shape, generator=gen)
    if kind == "Dropout":
        ours, theirs = lt.Dropout(0.5), torch.nn.Dropout(0.5)
    else:
        ours, theirs = getattr(lt, kind)(shape[1]), getattr(torch.nn, kind)(shape[1])

    def fwd_bwd(layer):
        inputs = (x,) + tuple(layer.parameters())
        return lambda: torch.autograd.grad(layer(x), inputs, dout)
    result = {"lec6fast.torch": fwd_bwd(ours), "torch.nn": fwd_bwd(theirs)}
    if kind == "Dropout":
        result["mask_bytes"] = ours(x).grad_fn.mask.nbytes
        result["against_mask_bytes"] = _saved_bytes(torch, theirs(x))
    return result


def run(*, threads=None, repeat=15, batch_time=0.02, progress=None):
    """Rows {case, shape, n, label, seconds, against, against_s, ratio, [mask_bytes]}, the ratio
    being lec6fast's time / torch's from the same interleaved measurement; None without torch."""
    torch, lt = _import()
    if torch is None:
        return None
    note = progress or (lambda what: None)
    rows = []
    with lec6fast_torch(), num_threads(threads, torch) as nt:
        for name, kind, shape in CASES:
            case = calls(kind, shape)
            note(f"torch-layers: {name} {shape}, lec6fast.torch against torch.nn on {nt} threads")
            t_ours, t_theirs = interleaved([case["lec6fast.torch"], case["torch.nn"]],
                                           threads=[nt, nt], repeat=repeat,
                                           batch_time=batch_time, settle=0.01)
            row = dict(case=name, shape=shape, n=math.prod(shape), threads=nt,
                       label=f"lt.{kind}", seconds=t_ours, against=f"nn.{kind}",
                       against_s=t_theirs, ratio=t_ours / t_theirs)
            if kind == "Dropout":
                row.update(mask_bytes=case["mask_bytes"],
                           against_mask_bytes=case["against_mask_bytes"])
            rows.append(row)
    return rows


if __name__ == "__main__":
    from lec6fast.bench import report
    with contextlib.suppress(KeyboardInterrupt):
        result = run(progress=print)
        print("\n".join(report.torch_layers(result, markdown=True)))

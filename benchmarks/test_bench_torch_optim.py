"""lec6fast.torch's optimizers against torch.optim's (lec6fast/bench/torch_model.py's model: 100
tensors, 9.95M float32 parameters in 12 Linear+LayerNorm blocks): one full optimizer.step() of
lt.<rule> and of torch.optim.<rule> (default, foreach=True, fused=True where torch has it on
CPU), on the same thread count.  Skipped without torch.

`lec6fast bench --sections torch-model` times the same steps with their batches interleaved,
which gives steadier ratios on a shared machine.
"""

import pytest

from lec6fast.bench import torch_model as tm
from lec6fast.bench.torch_twins import import_torch

torch = import_torch()
pytestmark = pytest.mark.skipif(torch is None, reason="torch is not installed")

CASES = [(name, kw, label) for name, kw, fused in tm.RULES
         for label in ["lt", "default", "foreach=True"] + ["fused=True"] * fused]


@pytest.mark.parametrize("name,kw,label", CASES, ids=[f"{n}-{lb}" for n, _, lb in CASES])
def test_torch_model_step(benchmark, time_fn, name, kw, label):
    import lec6fast.torch as lt
    benchmark.group = f"torch-model: {name} step (100 tensors, 9.95M float32)"
    m = tm.build(torch)
    if label == "lt":
        opt = getattr(lt, name)(m.parameters(), **kw)
    else:
        extra = {} if label == "default" else {label.split("=")[0]: True}
        opt = getattr(torch.optim, name)(m.parameters(), **kw, **extra)
    before = [p.detach().clone() for p in m.parameters()]
    time_fn(opt.step)
    assert all(not torch.equal(p, q) for p, q in zip(m.parameters(), before))


@pytest.mark.parametrize("variant", range(4), ids=["lt", "lt-own-workers", "fused=True", "default"])
def test_torch_model_step_in_a_training_loop(benchmark, variant):
    """Adam's step alone, each round after zero_grad, forward and backward of a batch (untimed),
    where torch's OpenMP threads have just worked: lec6fast.torch on them (its default), on
    lec6fast's own workers, torch's fused and default Adam (the pool_threads fixture restores
    where lec6fast's kernels run)."""
    import lec6fast.torch as lt
    label, cls, kw, on = tm.loop_variants(torch, lt)[variant]
    benchmark.group = "torch-model: Adam step in a training loop (100 tensors, 9.95M float32)"
    benchmark.extra_info["variant"] = label
    prepare, step = tm.training_step(torch, cls, kw)
    lt.use_torch_threads(on)
    benchmark.pedantic(step, setup=prepare, rounds=20, warmup_rounds=2)

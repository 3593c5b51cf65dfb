"""The model-step section (lec6fast/bench/model.py): lec6fast.optim stepping whole models.

- cnn52 (52 float32 arrays, 5.1M parameters): optim.Adam.step, one adam_ call over as many
  elements, torch.optim.Adam(fused=True) and (foreach=True) when torch imports, DeepSpeed's
  DeepSpeedCPUAdam when deepspeed imports;
- cs231n (the 3-layer net, 6 arrays, ~100K parameters): optim.Adam.step and the NumPy
  reference (lec6fast.reference.Adam);
- flat16M (one 16M array): Adam, Adam with ema_decay, with clip_norm, and Adam then ema_.

`lec6fast bench --sections model` times the same cases with their batches interleaved (and
lets torch's spinning threads sleep between batches), which gives steadier ratios here.
"""

import importlib.util

import numpy as np
import pytest

import lec6fast
from lec6fast import optim, reference
from lec6fast.bench import model as mb
from lec6fast.bench.torch_twins import import_torch


def _cnn52(impl):
    p = mb.model("cnn52")
    g = mb.gradients(p)
    if impl == "optim.Adam.step":
        opt = optim.Adam(p, 1e-3)
        return lambda: opt.step(g)
    if impl == "adam_ (one array)":
        x, dx = (np.concatenate([a.ravel() for a in d.values()]) for d in (p, g))
        m, v = np.zeros_like(x), np.zeros_like(x)
        return lambda: lec6fast.adam_(x, dx, m, v, t=10, lr=1e-3)
    if impl == "DeepSpeedCPUAdam":
        return mb._deepspeed_adam(p, g)
    return mb._torch_adam(p, g, impl.split("(")[1].split("=")[0], lec6fast.get_num_threads())


CNN52 = ["optim.Adam.step", "adam_ (one array)"]
if import_torch() is not None:
    CNN52 += ["torch Adam(fused=True)", "torch Adam(foreach=True)"]
    if importlib.util.find_spec("deepspeed") is not None:
        CNN52 += ["DeepSpeedCPUAdam"]


@pytest.mark.parametrize("impl", CNN52)
def test_cnn52_adam_step(benchmark, time_fn, impl):
    benchmark.group = "model: cnn52 (52 arrays, 5.1M float32), one Adam step"
    fn = _cnn52(impl)
    assert fn is not None, impl
    benchmark.extra_info["bytes"] = mb.ADAM_BYTES * 5_108_976
    time_fn(fn)


@pytest.mark.parametrize("impl", ["optim.Adam.step", "reference.Adam.step"])
def test_cs231n_adam_step(benchmark, time_fn, impl):
    benchmark.group = "model: cs231n (6 arrays, 100K float32), one Adam step"
    p = mb.model("cs231n")
    g = mb.gradients(p)
    opt = (optim if impl.startswith("optim") else reference).Adam(p, 1e-3)
    time_fn(lambda: opt.step(g))


FLAT = {"Adam": {}, "Adam + EMA": {"ema_decay": 0.995}, "Adam + clip": {"clip_norm": 1.0},
        "Adam, then ema_": None}


@pytest.mark.parametrize("case", list(FLAT))
def test_flat16m_extras(benchmark, time_fn, case):
    benchmark.group = "model: flat16M (one 16M float32 array): what EMA and clipping cost"
    p = mb.model("flat16M")
    g = mb.gradients(p)
    opt = optim.Adam(p, 1e-3, **(FLAT[case] or {}))
    if FLAT[case] is None:
        avg = p["x"].copy()
        time_fn(lambda: (opt.step(g), lec6fast.ema_(avg, p["x"], decay=0.995)))
    else:
        time_fn(lambda: opt.step(g))

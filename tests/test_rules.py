"""lec6fast._rules, the one table of the update rules, against what it describes: the kernels'
and the references' signatures, the optimizers' signatures and state, the benchmarks' bytes."""

import inspect

import numpy as np
import pytest

import lec6fast
from lec6fast import optim, reference
from lec6fast._rules import OPTIMIZERS, RULES


def keywords(fn):
    """(positional names, {keyword-only name: default or None})."""
    sig = inspect.signature(fn)
    pos = [p.name for p in sig.parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    kw = {p.name: (None if p.default is p.empty else p.default)
          for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY}
    return pos, kw


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("module", [lec6fast, reference], ids=["fast", "reference"])
def test_each_kernel_has_the_signature_of_its_row(module, name):
    rule = RULES[name]
    pos, kw = keywords(getattr(module, rule.kernel))
    assert pos[0] in ("x", "x_avg") and pos[2:] == list(rule.state) or rule.name == "ema"
    expected = {h.name: (None if h.name == "lr" else h.default) for h in rule.hypers}
    if rule.needs_t:
        expected = {"t": None, **expected}
    assert kw == expected
    assert list(kw) == list(expected)                       # the same order, too


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_takes_its_rows_hyperparameters(name):
    rule = OPTIMIZERS[name]
    for cls in (getattr(optim, name), getattr(reference, name)):
        params = inspect.signature(cls).parameters
        names = [h.name for h in rule.hypers]
        assert [p for p in params if p in names] == names, cls
        want = rule.hyper("lr").default
        assert params["lr"].default == (params["lr"].empty if want is None else want)
    opt = getattr(optim, name)([np.ones(3, np.float32)], 0.1)
    assert list(opt.state_dict()["state"]) == list(rule.state)
    assert opt.param_groups[0].keys() - {"params", "weight_decay", "decoupled_weight_decay"} == \
        {h.name for h in rule.hypers}
    assert opt.rule is rule
    for h in rule.hypers[1:]:
        assert opt.param_groups[0][h.name] == h.default
        torch_opt = getattr(optim, name)([np.ones(3)], 0.1, convention="torch")
        assert torch_opt.param_groups[0][h.name] == (h.torch_default or h.default)


def test_streams_are_the_arrays_a_kernel_reads_and_writes():
    for rule in RULES.values():
        arrays = 2 + len(rule.state)                        # x (and x_avg), dx (or x), state
        written = 1 + len(rule.state)
        assert rule.streams == arrays + written, rule.name


def test_every_public_kernel_has_a_row():
    updates = {n for n in lec6fast.__all__
               if n.endswith("_") and not n.startswith("_") and n != "average_"}
    assert updates == {r.kernel for r in RULES.values()}

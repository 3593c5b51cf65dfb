"""lec6fast.optim against lec6fast.reference's optimizers, bit for bit, and its contract:
structures, groups, schedules, weight decay, clipping, the running average, threads, refusals,
save and resume."""

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import lec6fast
from lec6fast import optim, reference, schedules
from lec6fast._rules import OPTIMIZERS

from conftest import Bits, normal, parallel_min_setter

NAMES = sorted(OPTIMIZERS)
# Shapes around the kernels' vector widths, the sub-blocks (512), the norm's blocks (4096) and
# the chunks (4096 float32 / 2048 float64 elements); empty and 0-d arrays.
SHAPES = [(), (0,), (1,), (7,), (33, 17), (513,), (3, 4, 5), (4097,), (2, 0, 3), (9000,)]
OPTIONS = {
    "plain": {},
    "l2": {"weight_decay": 0.05},
    "decoupled": {"weight_decay": 0.05, "decoupled_weight_decay": True},
    "clip": {"clip_norm": 0.5},
    "ema": {"ema_decay": 0.9},
    "all": {"clip_norm": 4.0, "weight_decay": 1e-3, "ema_decay": 0.99},
    "torch": {"convention": "torch", "weight_decay": 0.01},
}


def make(dtype, shapes=SHAPES, seed=0):
    rng = np.random.default_rng(seed)
    return {f"p{i}": normal(s, dtype, rng) for i, s in enumerate(shapes)}


def grads_like(params, rng, scale=1.0):
    return {k: normal(v.shape, v.dtype, rng, scale=scale) for k, v in params.items()}


def hyper(name):
    """A schedule on lr (and on mu for the momentum rules): both change every step."""
    kw = {}
    if name in ("Momentum", "Nesterov"):
        kw["mu"] = schedules.linear(0.5, 0.99, steps=6)
    return schedules.exponential_decay(0.05, k=0.1), kw


def as_structure(params, kind):
    """params (a dict) as a dict, a list, or two groups (the second with its own lr and decay)."""
    keys = list(params)
    if kind == "dict":
        return params, lambda g: g
    if kind == "list":
        return [params[k] for k in keys], lambda g: [g[k] for k in keys]
    half = len(keys) // 2
    groups = [{"params": {k: params[k] for k in keys[:half]}},
              {"params": [params[k] for k in keys[half:]], "lr": 0.02, "weight_decay": 0.0}]
    return groups, lambda g: [{k: g[k] for k in keys[:half]}, [g[k] for k in keys[half:]]]


def pair(name, structure, dtype, options, shapes=SHAPES):
    """(fast optimizer, reference optimizer, fast params, reference params, grads mapper)."""
    pf, pr = make(dtype, shapes), make(dtype, shapes)
    lr, kw = hyper(name)
    kw.update(options)
    sf, to = as_structure(pf, structure)
    sr, _ = as_structure(pr, structure)
    return getattr(optim, name)(sf, lr, **kw), getattr(reference, name)(sr, lr, **kw), pf, pr, to


def assert_same(fast, ref, pf, pr, what=""):
    for k in pf:
        Bits.assert_equal(pf[k], pr[k], f"{what} {k}")
    sd = fast.state_dict()
    for j, name in enumerate(fast.rule.state):
        for i, a in enumerate(sd["state"][name]):
            Bits.assert_equal(a, ref.state[i][j], f"{what} state {name}[{i}]")
    if ref.ema is not None:
        for i, a in enumerate(sd["ema"]):
            Bits.assert_equal(a, ref.ema[i], f"{what} ema[{i}]")
    assert fast.last_grad_norm == ref.last_grad_norm
    assert fast.t == ref.t


# ---------------------------------------------------------------- fast == reference

@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("structure", ["dict", "list", "groups"])
@pytest.mark.parametrize("name", NAMES)
def test_steps_match_the_reference_bit_for_bit(name, structure, option, dtype):
    fast, ref, pf, pr, to = pair(name, structure, dtype, OPTIONS[option])
    rng = np.random.default_rng(1)
    for step in range(12):
        g = grads_like(pf, rng, scale=3.0 if step % 3 == 0 else 0.3)
        fast.step(to(g))
        ref.step(to(g))
    assert_same(fast, ref, pf, pr, f"{name}/{structure}/{option}")


@pytest.mark.parametrize("name", NAMES)
def test_mixed_float32_and_float64_in_one_optimizer(name):
    rng = np.random.default_rng(2)
    shapes = [(5000,), (7,), (3000,), (), (4097,)]
    pf = {f"p{i}": rng.standard_normal(s).astype(np.float32 if i % 2 else np.float64)
          for i, s in enumerate(shapes)}
    pr = {k: v.copy() for k, v in pf.items()}
    lr, kw = hyper(name)
    fast = getattr(optim, name)(pf, lr, clip_norm=1.0, ema_decay=0.9, **kw)
    ref = getattr(reference, name)(pr, lr, clip_norm=1.0, ema_decay=0.9, **kw)
    for _ in range(6):
        g = grads_like(pf, rng)
        fast.step(g)
        ref.step(g)
    assert_same(fast, ref, pf, pr)
    assert {v.dtype for v in pf.values()} == {np.dtype(np.float32), np.dtype(np.float64)}


@pytest.mark.parametrize("name", NAMES)
def test_the_same_bits_on_every_thread_count_and_chunking(name, num_threads, kernels_module):
    """Whole steps, with clipping and the running average, on 1-4 threads with the pool forced
    on from the first element and with forced chunk sizes: the bits of the serial step."""
    shapes = [(64,)] * 5 + [(3000,), (70000,), (5,), (20000,)]
    results = []
    with parallel_min_setter() as set_min:
        for threads, forced, chunk in [(1, 0, 0), (2, 1, 0), (3, 1, 256), (4, 1, 4096), (2, 0, 0)]:
            num_threads(threads)
            set_min(forced)
            kernels_module._set_chunk(chunk)
            try:
                p = make(np.float32, shapes, seed=3)
                lr, kw = hyper(name)
                opt = getattr(optim, name)(p, lr, clip_norm=2.0, ema_decay=0.95,
                                           weight_decay=1e-2, **kw)
                rng = np.random.default_rng(4)
                for _ in range(4):
                    opt.step(grads_like(p, rng))
                results.append((opt.last_grad_norm, [v.tobytes() for v in p.values()],
                                [a.tobytes() for a in opt.ema_params.values()]))
            finally:
                kernels_module._set_chunk(0)
    assert all(r == results[0] for r in results[1:])


def test_the_global_norm_is_the_references_and_close_to_the_true_norm(dtype):
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(s).astype(dtype) for s in [(4097,), (), (0,), (10000,), (3,)]]
    p = [np.zeros_like(g) for g in grads]
    opt = optim.SGD(p, 0.0, clip_norm=1.0)
    opt.step(grads)
    assert opt.last_grad_norm == reference.global_norm(grads)
    true = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    assert opt.last_grad_norm == pytest.approx(true, rel=1e-13)


def test_clipping_scales_the_gradient_as_torch_clip_grad_norm_does():
    """SGD with lr = 1 and clip_norm = c moves x by -g * min(1, c / (norm + 1e-6))."""
    g = np.full(100, 3.0)
    for c, scale in [(1.0, 1.0 / (30.0 + 1e-6)), (100.0, 1.0)]:
        x = np.zeros(100)
        opt = optim.SGD([x], 1.0, clip_norm=c)
        opt.step([g])
        assert opt.last_grad_norm == 30.0
        Bits.assert_equal(x, -(g * scale))


def test_nan_propagates_without_clipping_and_is_refused_with_it():
    x = np.ones(10, np.float32)
    optim.Adam([x]).step([np.full(10, np.nan, np.float32)])
    assert np.isnan(x).all()
    x = np.ones(10, np.float32)
    opt = optim.Adam([x], clip_norm=1.0, ema_decay=0.9)
    before = Bits.snapshot(x, *opt.state_dict()["state"]["m"])
    with pytest.raises(FloatingPointError, match="not finite|inf or nan"):
        opt.step([np.array([np.inf] + [1.0] * 9, np.float32)])
    assert Bits.snapshot(x, *opt.state_dict()["state"]["m"]) == before and opt.t == 0


# ---------------------------------------------------------------- hypothesis: random models

@st.composite
def models(draw):
    n = draw(st.integers(1, 6))
    shapes = [tuple(draw(st.lists(st.integers(0, 40), max_size=3))) for _ in range(n)]
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    name = draw(st.sampled_from(NAMES))
    opts = dict(weight_decay=draw(st.sampled_from([0.0, 1e-4, 0.5])),
                decoupled_weight_decay=draw(st.booleans()),
                clip_norm=draw(st.sampled_from([None, 1e-3, 1.0, 1e6])),
                ema_decay=draw(st.sampled_from([None, 0.0, 0.5, 0.999])),
                convention=draw(st.sampled_from(["lecture", "torch"])))
    lr = draw(st.sampled_from([0.0, 1e-4, 0.1, 10.0]))
    return name, shapes, dtype, lr, opts, draw(st.integers(1, 5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_random_models_match_the_reference(model):
    name, shapes, dtype, lr, opts, steps = model
    pf, pr = make(dtype, shapes), make(dtype, shapes)
    fast = getattr(optim, name)(pf, lr, **opts)
    ref = getattr(reference, name)(pr, lr, **opts)
    rng = np.random.default_rng(6)
    for _ in range(steps):
        g = grads_like(pf, rng)
        fast.step(g)
        ref.step(g)
    assert_same(fast, ref, pf, pr)


# ---------------------------------------------------------------- the API

def test_params_are_updated_in_place_and_t_and_lr_follow_the_steps():
    p = {"W": np.ones((3, 2)), "b": np.zeros(2)}
    ids = {k: id(v) for k, v in p.items()}
    opt = optim.SGD(p, schedules.step_decay(1.0, factor=0.5, every=2))
    assert opt.t == 0 and opt.lr == 1.0
    for t, lr in [(1, 1.0), (2, 1.0), (3, 0.5)]:
        before = p["W"].copy()
        opt.step({"W": np.ones((3, 2)), "b": np.ones(2)})
        assert opt.t == t and opt.lr == lr
        Bits.assert_equal(p["W"], before - lr)
    assert {k: id(v) for k, v in p.items()} == ids


def test_a_changed_group_lr_is_used_from_the_next_step():
    w, b = np.ones(4), np.ones(2)
    opt = optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.0}], 1.0)
    opt.step([[np.ones(4)], [np.ones(2)]])
    assert (w == 0).all() and (b == 1).all()
    opt.param_groups[1]["lr"] = 0.5
    opt.step([[np.ones(4)], [np.ones(2)]])
    assert (w == -1).all() and (b == 0.5).all()
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\] must be a finite number >= 0"):
        opt.step([[np.ones(4)], [np.ones(2)]])
    assert opt.t == 2 and (w == -1).all()


def test_groups_of_dicts_take_one_flat_grads_dict():
    p = {"W": np.ones(3), "b": np.ones(2)}
    opt = optim.SGD([{"params": {"W": p["W"]}}, {"params": {"b": p["b"]}, "lr": 0.0}], 1.0)
    opt.step({"b": np.ones(2), "W": np.ones(3)})
    assert (p["W"] == 0).all() and (p["b"] == 1).all()


def test_ema_params_mirror_the_structure_and_are_read_only():
    p = [np.ones(3), np.zeros(2)]
    opt = optim.Momentum(p, 0.1, ema_decay=0.5)
    Bits.assert_equal(opt.ema_params[0], np.ones(3))         # initialised to the params
    opt.step([np.ones(3), np.ones(2)])
    avg = opt.ema_params
    assert isinstance(avg, list) and len(avg) == 2
    Bits.assert_equal(avg[1], 0.5 * np.zeros(2) + 0.5 * p[1])
    with pytest.raises(ValueError, match="read-only"):
        avg[0][0] = 1.0
    assert optim.SGD([np.ones(1)], 0.1).ema_params is None


def test_the_torch_convention_changes_the_defaults():
    assert optim.Adam([np.ones(1)]).param_groups[0]["eps"] == 1e-7
    assert optim.Adam([np.ones(1)], convention="torch").param_groups[0]["eps"] == 1e-8
    assert optim.AdaGrad([np.ones(1)], 0.1, convention="torch").param_groups[0]["eps"] == 1e-10
    assert optim.Adam([np.ones(1)], eps=1e-3, convention="torch").param_groups[0]["eps"] == 1e-3


def test_the_optimizers_are_the_rules_of_the_table():
    for name, rule in OPTIMIZERS.items():
        opt = getattr(optim, name)([np.ones(2)], 0.1)
        assert set(opt.param_groups[0]) == ({h.name for h in rule.hypers}
                                            | {"weight_decay", "decoupled_weight_decay", "params"})
        assert len(opt.state_dict()["state"]) == len(rule.state)


# ---------------------------------------------------------------- refusals change nothing

def refusals():
    """(what, how to make the step, the error, its message): each on a fresh Adam with EMA."""
    f32 = np.float32
    return [
        ("missing key", lambda p: {"W": np.ones((3, 4), f32)}, ValueError, "grads lacks 'b'"),
        ("extra key", lambda p: {"W": np.ones((3, 4), f32), "b": np.ones(4, f32), "c": 1},
         ValueError, "'c', which is not a parameter"),
        ("wrong dtype", lambda p: {"W": np.ones((3, 4)), "b": np.ones(4, f32)}, TypeError,
         r"grads\['W'\] has dtype float64 but params\['W'\] has float32"),
        ("wrong shape", lambda p: {"W": np.ones((4, 3), f32), "b": np.ones(4, f32)}, ValueError,
         r"grads\['W'\] has shape \(4, 3\) but params\['W'\] has shape \(3, 4\)"),
        ("not an array", lambda p: {"W": [[1.0] * 4] * 3, "b": np.ones(4, f32)}, TypeError,
         r"grads\['W'\] must be a numpy.ndarray"),
        ("strided", lambda p: {"W": np.ones((3, 8), f32)[:, ::2], "b": np.ones(4, f32)},
         ValueError, r"grads\['W'\] must be C-contiguous"),
        ("aliasing", lambda p: {"W": p["W"], "b": np.ones(4, f32)}, ValueError,
         r"params\['W'\] shares memory with grads\['W'\]"),
        ("aliasing another", lambda p: {"W": np.ones((3, 4), f32), "b": p["W"][0]}, ValueError,
         r"params\['W'\] shares memory with grads\['b'\]"),
        ("not a dict", lambda p: [np.ones((3, 4), f32), np.ones(4, f32)], TypeError,
         "grads must be a dict"),
        ("nan with clipping", lambda p: {"W": np.full((3, 4), np.nan, f32), "b": np.ones(4, f32)},
         FloatingPointError, "inf or nan"),
    ]


@pytest.mark.parametrize("what,grads,error,message", refusals(), ids=[r[0] for r in refusals()])
def test_a_refused_step_changes_nothing(what, grads, error, message):
    p = make(np.float32, [(3, 4), (4,)])
    p = {"W": p["p0"], "b": p["p1"]}
    opt = optim.Adam(p, clip_norm=1.0, ema_decay=0.9)
    opt.step({"W": np.ones((3, 4), np.float32), "b": np.ones(4, np.float32)})

    def snapshot():
        sd = opt.state_dict()
        return (Bits.snapshot(*p.values(), *sd["state"]["m"], *sd["state"]["v"], *sd["ema"]),
                opt.t, opt.last_grad_norm)

    before = snapshot()
    with pytest.raises(error, match=message):
        opt.step(grads(p))
    assert snapshot() == before


def test_parameters_changed_behind_the_optimizers_back_are_refused():
    W = np.ones((4, 3), np.float32)
    opt = optim.SGD({"W": W}, 0.1)
    W.shape = (3, 4)
    with pytest.raises(ValueError, match=r"params\['W'\] has shape \(3, 4\) but had shape \(4, 3\)"):
        opt.step({"W": np.ones((3, 4), np.float32)})
    W.shape = (4, 3)
    W.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W'\] is read-only"):
        opt.step({"W": np.ones((4, 3), np.float32)})
    assert opt.t == 0 and (W == 1).all()


@pytest.mark.parametrize("params,error,message", [
    ([], ValueError, "params is empty"),
    ([np.ones(3, np.int64)], TypeError, r"params\[0\] must have dtype float32 or float64"),
    ([np.ones(3)[::2]], ValueError, r"params\[0\] must be C-contiguous"),
    ({"a": np.ones(4), "b": None}, TypeError, r"params\['b'\] must be a numpy.ndarray"),
    ("W", TypeError, "params must be a dict"),
    ([{"params": [np.ones(2)], "clip_norm": 1.0}], ValueError, "apply to the whole step"),
    ([{"params": [np.ones(2)], "momentum": 0.9}], ValueError, "sets 'momentum'"),
])
def test_bad_params_are_refused_at_construction(params, error, message):
    with pytest.raises(error, match=message):
        optim.SGD(params, 0.1)


def test_parameters_that_share_memory_are_refused():
    buf = np.ones(10)
    with pytest.raises(ValueError, match=r"params\[0\] shares memory with params\[1\]"):
        optim.SGD([buf[:6], buf[4:]], 0.1)
    optim.SGD([buf[:5], buf[5:]], 0.1)                      # adjacent is fine


@pytest.mark.parametrize("kw,message", [
    (dict(lr=-1.0), "lr must be a finite number >= 0"),
    (dict(lr=float("nan")), "lr must be a finite number >= 0"),
    (dict(beta1=1.0), r"beta1 must be in \[0, 1\)"),
    (dict(eps=0.0), "eps must be a finite number > 0"),
    (dict(clip_norm=0.0), "clip_norm must be a finite number > 0"),
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
    (dict(weight_decay=-0.1), "weight_decay must be a finite number >= 0"),
    (dict(lr=lambda t: -1.0), "lr must be a finite number >= 0"),
    (dict(convention="keras"), "convention must be 'lecture' or 'torch'"),
])
def test_bad_hyperparameters_are_refused_at_construction(kw, message):
    with pytest.raises(ValueError, match=message):
        optim.Adam([np.ones(3)], **kw)


def test_a_schedule_that_goes_bad_refuses_that_step_only():
    x = np.ones(3)
    opt = optim.SGD([x], lambda t: 0.1 if t < 3 else float("nan"))
    opt.step([np.ones(3)])
    opt.step([np.ones(3)])
    before = x.copy()
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got nan"):
        opt.step([np.ones(3)])
    assert opt.t == 2 and Bits.same(x, before)


def test_a_hostile_float_runs_before_the_checks():
    """A __float__ that reshapes the gradient runs while the scalars are converted: the checks
    then see the new shape and refuse it."""
    x, g = np.ones(6, np.float32), np.ones(6, np.float32)

    class Hostile:
        def __float__(self):
            g.shape = (2, 3)
            return 0.1

    import numbers
    numbers.Real.register(Hostile)
    opt = optim.SGD([x], 0.1)
    opt.param_groups[0]["lr"] = Hostile()
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(2, 3\)"):
        opt.step([g])
    assert (x == 1).all() and opt.t == 0


# ---------------------------------------------------------------- save and resume

def test_state_dict_round_trip_is_bit_exact(tmp_path):
    p = make(np.float32, [(300,), (7,)])
    q = {k: v.copy() for k, v in p.items()}
    kw = dict(clip_norm=1.0, ema_decay=0.9, weight_decay=1e-3)
    a = optim.Adam(p, schedules.cosine_decay(1e-2, total=20), **kw)
    b = optim.Adam(q, schedules.cosine_decay(1e-2, total=20), **kw)
    rng = np.random.default_rng(7)
    gs = [grads_like(p, rng) for _ in range(10)]
    for g in gs[:5]:
        a.step(g)
        b.step(g)
    a.save(tmp_path / "ck.npz")
    pc = {k: np.zeros_like(v) for k, v in p.items()}        # load() restores the parameters too
    c = optim.Adam(pc, schedules.cosine_decay(1e-2, total=20), **kw)
    c.load(tmp_path / "ck.npz")
    for g in gs[5:]:
        b.step(g)
        c.step(g)
    assert c.t == b.t == 10
    for k in p:
        Bits.assert_equal(pc[k], q[k], k)
    Bits.assert_equal(c.ema_params["p0"], b.ema_params["p0"])
    assert pickle.loads(pickle.dumps(a.state_dict()))["t"] == 5    # plain data


def test_resume_in_a_fresh_process_is_bit_exact(run_python, tmp_path):
    code = """
import os, sys, numpy as np
from lec6fast import optim, schedules
mode, path = os.environ["MODE"], os.environ["CHECKPOINT"]
rng = np.random.default_rng(0)
p = {"W": rng.standard_normal((64, 32)).astype(np.float32), "b": np.zeros(32, np.float32)}
if mode == "second":                   # a fresh model: load() restores the parameters
    p = {k: np.full_like(v, np.nan) for k, v in p.items()}
opt = optim.Adam(p, schedules.step_decay(1e-2, every=30), ema_decay=0.99, clip_norm=5.0)
grads = [{k: np.random.default_rng(i).standard_normal(v.shape).astype(v.dtype) for k, v in p.items()}
         for i in range(100)]
if mode == "whole":
    for g in grads: opt.step(g)
elif mode == "first":
    for g in grads[:50]: opt.step(g)
    opt.save(path)
    sys.exit(0)
else:
    opt.load(path)
    for g in grads[50:]: opt.step(g)
import hashlib
digest = hashlib.sha256(b"".join(a.tobytes() for a in [*p.values(), *opt.ema_params.values()]
                                 + opt.state_dict()["state"]["m"] + opt.state_dict()["state"]["v"]))
print(opt.t, opt.last_grad_norm, digest.hexdigest())
"""
    path = str(tmp_path / "ck.npz")
    whole = run_python(code, env={"MODE": "whole", "CHECKPOINT": path}).stdout
    run_python(code, env={"MODE": "first", "CHECKPOINT": path})
    resumed = run_python(code, env={"MODE": "second", "CHECKPOINT": path}).stdout
    assert whole.split()[0] == "100" and whole == resumed


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    p = [np.ones(10)]
    opt = optim.Momentum(p, 0.1)
    path = tmp_path / "ck.npz"
    opt.save(path)
    good = path.read_bytes()
    opt.step([np.ones(10)])

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        opt.save(path)
    assert path.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["ck.npz"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "empty"])
def test_a_damaged_checkpoint_is_refused_and_changes_nothing(tmp_path, damage):
    p = [np.ones(10, np.float32)]
    opt = optim.Adam(p)
    opt.step([np.ones(10, np.float32)])
    path = tmp_path / "ck.npz"
    opt.save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip" * 100)
    elif damage == "foreign":
        np.savez(path, a=np.ones(3))
    else:
        path.write_bytes(b"")
    before = Bits.snapshot(*p, *opt.state_dict()["state"]["m"])
    with pytest.raises(ValueError, match="not a readable lec6fast optimizer checkpoint"):
        opt.load(path)
    assert Bits.snapshot(*p, *opt.state_dict()["state"]["m"]) == before and opt.t == 1


@pytest.mark.parametrize("other,message", [
    (lambda: optim.Momentum([np.ones(10, np.float32)], 0.1), "optimizer is 'Momentum'"),
    (lambda: optim.Adam([np.ones(11, np.float32)]), "shapes"),
    (lambda: optim.Adam([np.ones(10)]), "dtypes"),
    (lambda: optim.Adam([np.ones(10, np.float32), np.ones(1, np.float32)]), "names"),
    (lambda: optim.Adam([np.ones(10, np.float32)], ema_decay=0.9), "ema_decay"),
    (lambda: optim.Adam([np.ones(10, np.float32)], clip_norm=1.0), "clip_norm"),
    (lambda: optim.Adam([np.ones(10, np.float32)], convention="torch"), "convention"),
])
def test_a_state_dict_of_another_optimizer_is_refused(other, message):
    target = optim.Adam([np.ones(10, np.float32)], lr=0.5)
    target.step([np.ones(10, np.float32)])
    source = other()
    source.step([np.ones(s.shape, s.dtype) for s in source._params])
    before = target.state_dict()
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(source.state_dict())
    after = target.state_dict()
    assert after["t"] == before["t"] and after["param_groups"] == before["param_groups"]
    assert Bits.all_same(after["state"]["m"], before["state"]["m"])


def test_loading_restores_saved_hyperparameters_and_keeps_schedules():
    a = optim.SGD([np.ones(2)], schedules.linear(1.0, 0.0, steps=4), weight_decay=0.3)
    b = optim.SGD([np.ones(2)], 0.5)
    with pytest.raises(ValueError, match="was a schedule when it was saved"):
        b.load_state_dict(a.state_dict())
    c = optim.SGD([np.ones(2)], schedules.linear(1.0, 0.0, steps=4))
    c.load_state_dict(a.state_dict())
    assert c.param_groups[0]["weight_decay"] == 0.3 and callable(c.param_groups[0]["lr"])


# ---------------------------------------------------------------- average_

@pytest.mark.parametrize("k", [1, 2, 3, 9])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (513,), (40000,)])
def test_average_matches_the_reference(k, shape, dtype, num_threads):
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(shape).astype(dtype) for _ in range(k)]
    for weights in (None, list(rng.random(k) + 0.1)):
        for threads in (1, 2):
            num_threads(threads)
            out, ref = np.empty(shape, dtype), np.empty(shape, dtype)
            lec6fast.average_(out, arrays, weights)
            reference.average_(ref, arrays, weights)
            Bits.assert_equal(out, ref)


@pytest.mark.parametrize("call,error,message", [
    (lambda o, a: lec6fast.average_(o, a[0]), TypeError, "arrays must be a list or tuple"),
    (lambda o, a: lec6fast.average_(o, []), ValueError, "arrays is empty"),
    (lambda o, a: lec6fast.average_(o, [a[0], o]), ValueError, r"out shares memory with arrays\[1\]"),
    (lambda o, a: lec6fast.average_(o, [a[0], np.ones(4)]), ValueError, r"arrays\[1\] has shape"),
    (lambda o, a: lec6fast.average_(o, [a[0].astype(np.float32)]), TypeError, r"arrays\[0\] has dtype"),
    (lambda o, a: lec6fast.average_(o, a, [1.0]), ValueError, "weights has 1 entries but arrays has 2"),
    (lambda o, a: lec6fast.average_(o, a, [1.0, -1.0]), ValueError, r"weights\[1\] must be"),
    (lambda o, a: lec6fast.average_(o, a, [0.0, 0.0]), ValueError, "positive, finite sum"),
    (lambda o, a: lec6fast.average_(Bits.read_only(o), a), ValueError, "out is read-only"),
])
def test_average_refuses_bad_input_and_writes_nothing(call, error, message):
    out = np.full(3, 7.0)
    arrays = [np.ones(3), np.zeros(3)]
    with pytest.raises(error, match=message):
        call(out, arrays)
    assert (out == 7.0).all()


# ---------------------------------------------------------------- convention="torch" vs torch

def torch_twin(torch, name, params, lr, options):
    """The torch.optim optimizer lec6fast.optim's convention="torch" equals."""
    wd = options.get("weight_decay", 0.0)
    decoupled = options.get("decoupled_weight_decay", False)
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name in ("Momentum", "Nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd,
                               nesterov=name == "Nesterov")
    if name == "AdaGrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == "RMSProp":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, weight_decay=wd)
    if decoupled:
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd)


TORCH_CASES = [(name, option) for name in NAMES for option in ("plain", "l2", "clip", "decoupled")
               if option != "decoupled" or name == "Adam"]      # torch: AdamW only
TORCH_OPTIONS = {"plain": {}, "l2": {"weight_decay": 0.1}, "clip": {"clip_norm": 0.3},
                 "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True}}


@pytest.mark.parametrize("name,option", TORCH_CASES)
def test_the_torch_convention_is_torch_optim(name, option):
    """Against torch.optim itself, with an lr that changes every step (torch: LambdaLR), in
    float64.  Momentum and Nesterov take torch's buffer form, which the lecture's differs from
    exactly when lr changes; the other rules differ from torch only in rounding."""
    torch = pytest.importorskip("torch")
    options = TORCH_OPTIONS[option]
    rng = np.random.default_rng(9)
    shapes = [(50, 20), (20,), (7,)]
    ours = [rng.standard_normal(s) for s in shapes]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in ours]
    factor = lambda e: 0.9 ** e + 0.1 * (e % 3)      # noqa: E731 - lr changes every step
    opt = getattr(optim, name)(ours, lambda t: 0.05 * factor(t - 1), convention="torch", **options)
    topt = torch_twin(torch, name, theirs, 0.05, options)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, factor)
    for _ in range(15):
        gs = [rng.standard_normal(s) for s in shapes]
        for p, g in zip(theirs, gs):
            p.grad = torch.tensor(g)
        if "clip_norm" in options:
            norm = torch.nn.utils.clip_grad_norm_(theirs, options["clip_norm"])
        topt.step()
        sched.step()
        opt.step(gs)
        if "clip_norm" in options:
            assert opt.last_grad_norm == pytest.approx(float(norm), rel=1e-13)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-11, atol=1e-13)


def test_the_lecture_and_torch_momentum_differ_when_lr_changes():
    """The reason convention exists: with a constant lr the two forms give the same x (up to
    rounding); with a changing lr they do not."""
    def run(convention, lr):
        x = np.zeros(1)
        opt = optim.Momentum([x], lr, convention=convention)
        for _ in range(5):
            opt.step([np.ones(1)])
        return x[0]

    assert run("lecture", 0.1) == pytest.approx(run("torch", 0.1), rel=1e-14)
    changing = schedules.step_decay(0.1, factor=0.1, every=2)
    assert abs(run("lecture", changing) - run("torch", changing)) > 1e-3


# ---------------------------------------------------------------- editing the optimizer

@pytest.mark.parametrize("edit,message", [
    (lambda o: o.param_groups.pop(), "param_groups must stay a list of 2 groups"),
    (lambda o: o.param_groups.append({"params": (), "lr": 0.1}), "must stay a list of 2 groups"),
    (lambda o: o.param_groups[0].update(momentum=0.9), r"param_groups\[0\] has an unknown entry"),
    (lambda o: o.param_groups[1].pop("weight_decay"), r"param_groups\[1\] has no entry"),
    (lambda o: o.param_groups[0].update(params=[np.ones(4)]), r"param_groups\[0\]\['params'\] changed"),
])
def test_edits_that_change_the_groups_are_refused(edit, message):
    W, b = np.ones(4), np.ones(3)
    opt = optim.SGD([{"params": {"W": W}}, {"params": {"b": b}, "lr": 0.5}], lr=0.1)
    edit(opt)
    with pytest.raises(ValueError, match=message):
        opt.step({"W": np.ones(4), "b": np.ones(3)})
    assert (W == 1).all() and (b == 1).all() and opt.t == 0


def test_setting_lr_sets_every_group_and_is_checked():
    opt = optim.SGD([{"params": [np.ones(2)]}, {"params": [np.ones(2)], "lr": 0.5}], 0.1)
    opt.lr = 0.2
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.2] and opt.lr == 0.2
    with pytest.raises(ValueError, match=r"lr'\] must be a finite number >= 0"):
        opt.lr = -1.0
    assert opt.lr == 0.2
    with pytest.raises(ValueError, match="t must be an integer >= 0"):
        opt.t = -1


def test_gradients_in_the_optimizers_own_state_are_refused():
    a, b = np.ones(100), np.ones(100)
    opt = optim.SGD([a, b], 0.1, ema_decay=0.5)
    avg = opt.ema_params
    with pytest.raises(ValueError, match=r"grads\[\d\] shares memory with the optimizer's own state"):
        opt.step([avg[1], avg[0]])
    with pytest.raises(ValueError, match="cannot set WRITEABLE flag"):
        avg[0].flags.writeable = True
    assert (a == 1).all() and opt.t == 0


def test_one_step_at_a_time():
    opt = optim.SGD([np.ones(3)], 0.1)
    opt._busy.acquire()                 # as if another thread were inside step()
    try:
        with pytest.raises(RuntimeError, match="one optimizer does one thing at a time"):
            opt.step([np.ones(3)])
        with pytest.raises(RuntimeError, match="one optimizer does one thing at a time"):
            opt.load_state_dict(opt.state_dict())
    finally:
        opt._busy.release()
    opt.step([np.ones(3)])
    assert opt.t == 1


@pytest.mark.parametrize("damage,message", [
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "lr must be a finite number >= 0"),
    (lambda sd: sd["param_groups"][0].update(decoupled_weight_decay="yes"), "must be True or False"),
    (lambda sd: sd.update(last_grad_norm="abc"), "last_grad_norm must be a number"),
    (lambda sd: sd.update(t=-3), "t must be an integer >= 0"),
    (lambda sd: sd["state"]["m"].pop(), "number of arrays"),
    (lambda sd: sd["state"]["v"].__setitem__(0, np.ones(3)), r"state\['v'\]\[0\]"),
])
def test_a_bad_state_dict_is_refused_before_anything_is_restored(damage, message):
    p = [np.ones(4, np.float32), np.ones(2, np.float32)]
    src = optim.Adam([x.copy() for x in p], ema_decay=0.9)
    for _ in range(3):
        src.step([np.full(4, 0.5, np.float32), np.full(2, 0.5, np.float32)])
    dst = optim.Adam(p, ema_decay=0.9)
    dst.step([np.ones(4, np.float32), np.ones(2, np.float32)])
    before = dst.state_dict()
    sd = src.state_dict()
    damage(sd)
    with pytest.raises((ValueError, TypeError), match=message):
        dst.load_state_dict(sd)
    after = dst.state_dict()
    assert after["t"] == 1 and after["param_groups"] == before["param_groups"]
    for key in ("m", "v"):
        assert Bits.all_same(after["state"][key], before["state"][key])
    assert Bits.all_same(after["ema"], before["ema"])
    dst.step([np.ones(4, np.float32), np.ones(2, np.float32)])     # still usable


def test_load_into_read_only_parameters_is_refused_before_anything_is_restored(tmp_path):
    p = [np.ones(4), np.ones(2)]
    opt = optim.Momentum(p, 0.1)
    opt.step([np.ones(4), np.ones(2)])
    opt.save(tmp_path / "ck.npz")
    q = [np.zeros(4), np.zeros(2)]
    other = optim.Momentum(q, 0.1)
    q[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] is read-only"):
        other.load(tmp_path / "ck.npz")
    assert (q[0] == 0).all() and other.t == 0


def test_numpy_scalars_as_hyperparameters_save_and_match_the_reference(tmp_path):
    kw = dict(weight_decay=np.float32(0.3), decoupled_weight_decay=np.True_)
    x, y = np.linspace(-1, 1, 1000), np.linspace(-1, 1, 1000)
    fast = optim.Adam([x], np.float32(0.1), **kw)
    ref = reference.Adam([y], np.float32(0.1), **kw)
    fast.step([np.ones(1000)])
    ref.step([np.ones(1000)])
    Bits.assert_equal(x, y)
    fast.save(tmp_path / "ck.npz")
    assert fast.state_dict()["param_groups"][0]["weight_decay"] == float(np.float32(0.3))


def test_average_sums_many_weights_in_order():
    arrays, weights = [np.ones(1)] * 10, [0.1] * 10
    out, ref = np.empty(1), np.empty(1)
    lec6fast.average_(out, arrays, weights)
    reference.average_(ref, arrays, weights)
    Bits.assert_equal(out, ref)


def test_after_a_refused_step_the_next_one_matches_the_reference():
    """A caught FloatingPointError (skipping a bad batch) changes t in neither."""
    p, q = [np.ones(4, np.float32)], [np.ones(4, np.float32)]
    fast, ref = optim.Adam(p, 0.1, clip_norm=1.0), reference.Adam(q, 0.1, clip_norm=1.0)
    for opt in (fast, ref):
        with pytest.raises(FloatingPointError):
            opt.step([np.array([np.nan, 0, 0, 0], np.float32)])
        opt.step([np.ones(4, np.float32)])
    assert fast.t == ref.t == 1
    Bits.assert_equal(p[0], q[0])

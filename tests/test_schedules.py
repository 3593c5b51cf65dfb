"""lec6fast.schedules: each schedule against its formula (t is the 1-based step about to be
taken) and against the torch / Keras schedule it equals, where one exists."""

import math

import numpy as np
import pytest

from lec6fast import optim, schedules

T = range(1, 200)


@pytest.mark.parametrize("schedule,formula", [
    (schedules.step_decay(0.1, every=7), lambda t: 0.1 * 0.5 ** ((t - 1) // 7)),
    (schedules.step_decay(0.1, factor=0.1, every=1), lambda t: 0.1 * 0.1 ** (t - 1)),
    (schedules.exponential_decay(0.1, k=0.01), lambda t: 0.1 * math.exp(-0.01 * t)),
    (schedules.inverse_time_decay(0.1, k=0.5), lambda t: 0.1 / (1 + 0.5 * t)),
    (schedules.cosine_decay(0.1, total=50, final=0.01),
     lambda t: 0.01 + 0.09 * (1 + math.cos(math.pi * min(t - 1, 50) / 50)) / 2),
    (schedules.linear_warmup(0.1, steps=10), lambda t: 0.1 * min(1.0, t / 10)),
    (schedules.linear_warmup(schedules.inverse_time_decay(0.1, k=0.5), steps=10),
     lambda t: 0.1 / (1 + 0.5 * t) * min(1.0, t / 10)),
    (schedules.piecewise_constant([10, 20], [1.0, 0.5, 0.1]),
     lambda t: 1.0 if t - 1 <= 10 else (0.5 if t - 1 <= 20 else 0.1)),
    (schedules.linear(0.5, 0.99, steps=100), lambda t: 0.5 + 0.49 * min(t - 1, 100) / 100),
])
def test_each_schedule_is_its_formula(schedule, formula):
    for t in T:
        assert schedule(t) == pytest.approx(formula(t), rel=1e-15, abs=0), t


def test_the_ends_of_the_schedules():
    assert schedules.step_decay(1.0, every=3)(1) == 1.0 and schedules.step_decay(1.0, every=3)(4) == 0.5
    assert schedules.cosine_decay(1.0, total=10)(1) == 1.0
    assert schedules.cosine_decay(1.0, total=10, final=0.2)(11) == 0.2
    assert schedules.cosine_decay(1.0, total=10, final=0.2)(500) == 0.2
    assert schedules.linear(0.5, 0.99, steps=4)(1) == 0.5 and schedules.linear(0.5, 0.99, steps=4)(5) == 0.99
    assert repr(schedules.step_decay(0.1, every=7)) == "schedules.step_decay(0.1, factor=0.5, every=7)"


def keras_inverse_time_decay(lr0, decay_steps, decay_rate, step):
    """tf.keras.optimizers.schedules.InverseTimeDecay (staircase=False), as documented."""
    return lr0 / (1 + decay_rate * step / decay_steps)


def keras_piecewise_constant(boundaries, values, step):
    """tf.keras.optimizers.schedules.PiecewiseConstantDecay, as documented: values[0] while
    step <= boundaries[0], values[i] while boundaries[i-1] < step <= boundaries[i]."""
    for b, v in zip(boundaries, values):
        if step <= b:
            return v
    return values[-1]


def test_keras_equivalents():
    inv = schedules.inverse_time_decay(0.1, k=0.3)
    pw = schedules.piecewise_constant([5, 9], [1.0, 0.5, 0.25])
    for t in T:
        assert inv(t) == pytest.approx(keras_inverse_time_decay(0.1, 1, 0.3, t), rel=1e-15)
        assert pw(t) == keras_piecewise_constant([5, 9], [1.0, 0.5, 0.25], t - 1)


@pytest.mark.parametrize("make_ours,make_torch", [
    (lambda: schedules.exponential_decay(0.1, k=0.05),
     lambda torch, opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(-0.05))),
    (lambda: schedules.step_decay(0.1, factor=0.3, every=4),
     lambda torch, opt: torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.3)),
    (lambda: schedules.cosine_decay(0.1, total=30, final=0.001),
     lambda torch, opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30, eta_min=0.001)),
])
def test_torch_equivalents(make_ours, make_torch):
    torch = pytest.importorskip("torch")
    ours = make_ours()
    # torch's initial lr is the one of our first step (for ExponentialLR: lr0 * exp(-k))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=ours(1))
    sched = make_torch(torch, opt)
    # torch's lr during optimizer step t (its scheduler stepped after each); up to the end of the
    # cosine, after which torch's CosineAnnealingLR rises again and ours stays at `final`
    for t in range(1, 32):
        assert opt.param_groups[0]["lr"] == pytest.approx(ours(t), rel=1e-12, abs=1e-15), t
        opt.step()
        sched.step()


@pytest.mark.parametrize("call,error,message", [
    (lambda: schedules.step_decay(0.1, every=0), ValueError, "every must be an integer >= 1"),
    (lambda: schedules.step_decay(-0.1, every=2), ValueError, "lr0 must be a finite number >= 0"),
    (lambda: schedules.exponential_decay(0.1, k=float("nan")), ValueError, "k must be a finite"),
    (lambda: schedules.exponential_decay("0.1", k=1), TypeError, "lr0 must be a real number"),
    (lambda: schedules.cosine_decay(0.1, total=2.5), TypeError, "total must be an integer"),
    (lambda: schedules.piecewise_constant([3, 2], [1, 2, 3]), ValueError, "boundaries must increase"),
    (lambda: schedules.piecewise_constant([3], [1]), ValueError, "expected len"),
    (lambda: schedules.linear_warmup(0.1, steps=True), TypeError, "steps must be an integer"),
])
def test_bad_parameters_are_refused_when_the_schedule_is_made(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_optimizer_calls_a_schedule_once_per_step_with_the_step_about_to_be_taken():
    seen = []

    def lr(t):
        seen.append(t)
        return 0.1

    opt = optim.SGD([np.ones(3)], lr)
    seen.clear()                        # (the optimizer checks the hyperparameters when made)
    for _ in range(3):
        opt.step([np.ones(3)])
    assert seen == [1, 2, 3]


def test_momentum_follows_a_schedule_as_the_lecture_anneals_it():
    """mu from schedules.linear: the lecture's v = mu*v - lr*dx with mu(t)."""
    x, v_ref = np.zeros(1), np.zeros(1)
    mu = schedules.linear(0.5, 0.9, steps=4)
    opt = optim.Momentum([x], 1.0, mu=mu)
    x_ref = np.zeros(1)
    for t in range(1, 7):
        opt.step([np.ones(1)])
        v_ref[...] = mu(t) * v_ref - 1.0
        x_ref += v_ref
        assert x[0] == x_ref[0]

"""Learning-rate (and momentum) schedules: plain callables t -> value.

t is the 1-based number of the step about to be taken: lec6fast.optim calls the schedule once
per step, before the update, with t = opt.t + 1 (t = 1 on the first step), and uses the value in
double precision.  Any callable t -> float works the same way; these are the lecture's three
decays and the ones users expect.  Each returns a plain function (nothing to step or reset),
with its parameters checked when it is made.

    step_decay(lr0, factor=0.5, every)   lr0 * factor**((t - 1) // every)
    exponential_decay(lr0, k)            lr0 * exp(-k*t)
    inverse_time_decay(lr0, k)           lr0 / (1 + k*t)
    cosine_decay(lr0, total, final=0)    final + (lr0 - final) * (1 + cos(pi * min(t-1, total)/total)) / 2
    linear_warmup(schedule, steps)       schedule(t) * min(1, t/steps)
    piecewise_constant(boundaries, values)   values[i] while boundaries[i-1] < t - 1 <= boundaries[i]
    linear(start, end, steps)            start + (end - start) * min(t - 1, steps)/steps
"""

import math
import numbers

__all__ = ["step_decay", "exponential_decay", "inverse_time_decay", "cosine_decay",
           "linear_warmup", "piecewise_constant", "linear"]


def _number(fn, name, value, *, positive=False, nonneg=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0) or (nonneg and v < 0):
        want = "> 0" if positive else (">= 0" if nonneg else "")
        raise ValueError(f"{fn}: {name} must be a finite number {want}, got {value!r}".replace("  ", " "))
    return v


def _steps(fn, name, value, least=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an integer >= {least} (a number of steps), "
                        f"got {value!r}")
    if value < least:
        raise ValueError(f"{fn}: {name} must be an integer >= {least} (a number of steps), "
                         f"got {value!r}")
    return int(value)


class _Schedule:
    """A schedule: call it with t (the 1-based step about to be taken)."""

    __slots__ = ("_f", "_text")

    def __init__(self, f, text):
        self._f, self._text = f, text

    def __call__(self, t):
        return self._f(t)

    def __repr__(self):
        return f"schedules.{self._text}"


def step_decay(lr0, *, factor=0.5, every):
    """The lecture's step decay, lr0 * factor**((t - 1) // every): lr0 for steps 1..every, then
    lr0*factor, ...  ("halve it every few epochs": every = steps_per_epoch * k).  torch:
    StepLR(step_size=every, gamma=factor) stepped once per optimizer step."""
    lr0 = _number("step_decay", "lr0", lr0, nonneg=True)
    factor = _number("step_decay", "factor", factor, nonneg=True)
    every = _steps("step_decay", "every", every)
    return _Schedule(lambda t: lr0 * factor ** ((t - 1) // every),
                     f"step_decay({lr0!r}, factor={factor!r}, every={every})")


def exponential_decay(lr0, *, k):
    """The lecture's exponential decay, lr0 * exp(-k*t).  torch: ExponentialLR(gamma=exp(-k)) on
    lr0*exp(-k) (torch's first step uses its initial lr, here t = 1 already decays once)."""
    lr0 = _number("exponential_decay", "lr0", lr0, nonneg=True)
    k = _number("exponential_decay", "k", k, nonneg=True)
    return _Schedule(lambda t: lr0 * math.exp(-k * t), f"exponential_decay({lr0!r}, k={k!r})")


def inverse_time_decay(lr0, *, k):
    """The lecture's 1/t decay, lr0 / (1 + k*t).  Keras: InverseTimeDecay(lr0, decay_steps=1,
    decay_rate=k) at step t."""
    lr0 = _number("inverse_time_decay", "lr0", lr0, nonneg=True)
    k = _number("inverse_time_decay", "k", k, nonneg=True)
    return _Schedule(lambda t: lr0 / (1.0 + k * t), f"inverse_time_decay({lr0!r}, k={k!r})")


def cosine_decay(lr0, *, total, final=0.0):
    """Cosine annealing from lr0 (t = 1) to final (t = total + 1 and after):
    final + (lr0 - final) * (1 + cos(pi * min(t - 1, total) / total)) / 2.  torch:
    CosineAnnealingLR(T_max=total, eta_min=final), whose epoch e is t - 1 here, up to t =
    total + 1 (after that torch's rises again; this one stays at final)."""
    lr0 = _number("cosine_decay", "lr0", lr0, nonneg=True)
    final = _number("cosine_decay", "final", final, nonneg=True)
    total = _steps("cosine_decay", "total", total)
    return _Schedule(
        lambda t: final + (lr0 - final) * (1.0 + math.cos(math.pi * min(t - 1, total) / total)) / 2.0,
        f"cosine_decay({lr0!r}, total={total}, final={final!r})")


def linear_warmup(schedule_or_value, *, steps):
    """Ramp up linearly over the first `steps` steps: value(t) * min(1, t / steps), where
    value is the schedule given (or the constant)."""
    steps = _steps("linear_warmup", "steps", steps)
    if callable(schedule_or_value):
        inner = schedule_or_value
        return _Schedule(lambda t: inner(t) * min(1.0, t / steps),
                         f"linear_warmup({inner!r}, steps={steps})")
    v = _number("linear_warmup", "schedule_or_value", schedule_or_value, nonneg=True)
    return _Schedule(lambda t: v * min(1.0, t / steps), f"linear_warmup({v!r}, steps={steps})")


def piecewise_constant(boundaries, values):
    """values[0] while t - 1 <= boundaries[0], values[i] while boundaries[i-1] < t - 1 <=
    boundaries[i], values[-1] after the last boundary (len(values) == len(boundaries) + 1;
    boundaries increase).  Keras's PiecewiseConstantDecay(boundaries, values), whose step
    counts from 0, is this at step t - 1."""
    boundaries = [_steps("piecewise_constant", "boundaries[i]", b, least=0) for b in boundaries]
    values = [_number("piecewise_constant", "values[i]", v) for v in values]
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"piecewise_constant: expected len(boundaries) + 1 = {len(boundaries) + 1} "
                         f"values, got {len(values)}")
    if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
        raise ValueError(f"piecewise_constant: boundaries must increase, got {boundaries}")

    def f(t):
        for b, v in zip(boundaries, values):
            if t - 1 <= b:
                return v
        return values[-1]
    return _Schedule(f, f"piecewise_constant({boundaries}, {values})")


def linear(start, end, *, steps):
    """From start (t = 1) to end (t = steps + 1 and after), linearly:
    start + (end - start) * min(t - 1, steps) / steps.  The lecture anneals momentum this way:
    mu = schedules.linear(0.5, 0.99, steps=...)."""
    start = _number("linear", "start", start)
    end = _number("linear", "end", end)
    steps = _steps("linear", "steps", steps)
    return _Schedule(lambda t: start + (end - start) * min(t - 1, steps) / steps,
                     f"linear({start!r}, {end!r}, steps={steps})")

"""lec6fast.check_grad: an analytic gradient against centered finite differences."""

import math
import numbers

import numpy as np


def check_grad(f, x, analytic_grad, *, h=1e-5, num_checks=None, rng=None):
    """The largest relative error between analytic_grad and centered differences of f at x.

    f(x) returns the value (a real number; a function returning (value, gradient), as
    lec6fast.optim.lbfgs takes, works too: its value is used).  x: a float32 or float64 array
    (left as it was: every coordinate is restored after its two evaluations).  analytic_grad:
    the gradient at x (an array of x's shape), or a callable x -> gradient (or -> (value,
    gradient)).  For each checked coordinate i:

        numeric_i = (f(x + h e_i) - f(x - h e_i)) / (2 h)
        rel_i = |a_i - numeric_i| / max(|a_i|, |numeric_i|)      (0 when both are 0)

    as CS231n's rel_error / grad_check_sparse report it.  num_checks=None checks every
    coordinate; an integer checks that many drawn at random (with replacement, as
    grad_check_sparse does) from rng (a numpy Generator or a seed).

    Usual reading in float64 with h=1e-5: above 1e-2 the gradient is probably wrong; 1e-4 to
    1e-2 is suspicious (fine near kinks: ReLU, max, hinge); below 1e-7, correct.  In float32
    the differences themselves carry errors of about eps32*|f|/h: compute f in float64 to
    check a float32 gradient, or expect 1e-3 at best.  Most L-BFGS failures are wrong
    gradients: check yours before calling lec6fast.optim.lbfgs.
    """
    fn = "check_grad"
    if not callable(f):
        raise TypeError(f"{fn}: f must be callable, got {type(f).__name__}")
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: x must be a numpy.ndarray of float32 or float64, got "
                        f"{type(x).__name__}" + (f" of {x.dtype}" if isinstance(x, np.ndarray)
                                                 else ""))
    if not x.flags.writeable:
        raise ValueError(f"{fn}: x is read-only; check_grad moves one coordinate at a time in "
                         f"place (and restores it): pass a writeable copy")
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not (h > 0 and math.isfinite(h)):
        raise ValueError(f"{fn}: h must be a finite number > 0, got {h!r}")
    a = analytic_grad(x) if callable(analytic_grad) else analytic_grad
    if isinstance(a, tuple) and len(a) == 2:
        a = a[1]
    if not isinstance(a, np.ndarray) or a.shape != x.shape:
        raise ValueError(f"{fn}: analytic_grad must be an array of x's shape {x.shape}, got "
                         f"{getattr(a, 'shape', type(a).__name__)}")
    a = np.asarray(a, dtype=np.float64)

    def value(point):
        out = f(point)
        if isinstance(out, tuple):
            out = out[0]
        return float(out)

    if num_checks is None:
        coords = np.arange(x.size)
    else:
        if isinstance(num_checks, bool) or not isinstance(num_checks, numbers.Integral) \
                or num_checks < 1:
            raise ValueError(f"{fn}: num_checks must be None or an integer >= 1, got "
                             f"{num_checks!r}")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        coords = gen.integers(0, x.size, int(num_checks)) if x.size else np.arange(0)
    flat = x.reshape(-1)                     # a view (x is checked writeable; may copy if not
    if not np.shares_memory(flat, x):        # contiguous, so then go through x's indices)
        flat = None
    worst = 0.0
    for i in coords:
        idx = np.unravel_index(i, x.shape) if flat is None else i
        target = x if flat is None else flat
        old = target[idx]
        target[idx] = old + h
        up = float(target[idx])             # the steps as x's dtype rounds them
        fp = value(x)
        target[idx] = old - h
        down = float(target[idx])
        fm = value(x)
        target[idx] = old
        num = (fp - fm) / (up - down)
        ai = a.reshape(-1)[i]
        denom = max(abs(ai), abs(num))
        rel = 0.0 if denom == 0.0 else abs(ai - num) / denom
        if math.isnan(rel):
            return math.nan
        worst = max(worst, rel)
    return worst

"""L-BFGS for full-batch problems: lec6fast.optim.lbfgs (functional) and lec6fast.optim.LBFGS
(stateful, over a model's parameters), on the compiled two-loop recursion (src/_lbfgs.pyx)."""

import math

import numpy as np

from .. import _lbfgs
from ._linesearch import more_thuente
from ._structure import Structure


EPS = np.finfo(np.float64).eps
STPMAX = 1e10               # the line search's largest step (L-BFGS-B's, without bounds)

MESSAGES = {
    "gtol": "CONVERGENCE: NORM OF GRADIENT <= GTOL",
    "ftol": "CONVERGENCE: REL_REDUCTION_OF_F <= FTOL",
    "maxiter": "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
    "maxfun": "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
    "callback": "STOP: THE CALLBACK RETURNED TRUE",
    "linesearch": ("ABNORMAL: THE LINE SEARCH FOUND NO ACCEPTABLE STEP ALONG STEEPEST DESCENT "
                   "(check the gradient with lec6fast.check_grad; or the objective is not finite "
                   "near x)"),
}
STATUS = {"gtol": 0, "ftol": 0, "maxiter": 1, "maxfun": 1, "callback": 3, "linesearch": 2}


class OptimizeResult(dict):
    """The result of lbfgs and newton, with scipy.optimize.OptimizeResult's field names, read as
    attributes: x, fun, grad (also as jac), nit, nfev, success, status, message, and history
    (a dict of arrays, one entry per iterate x_0, x_1, ...: "f" the value, "gnorm" the gradient's
    max-norm)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

    def __repr__(self):
        keys = ("message", "success", "status", "fun", "nit", "nfev")
        return "OptimizeResult(" + ", ".join(f"{k}={self[k]!r}" for k in keys if k in self) + ")"


# ---------------------------------------------------------------- arguments

def _integer(fn, name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{fn}: {name} must be >= {low}, got {value}")
    return int(value)


def _real(fn, name, value, low=0.0, high=math.inf, strict=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not (v > low if strict else v >= low) or not v <= high or math.isnan(v):
        raise ValueError(f"{fn}: {name} must be in {'(' if strict else '['}{low}, {high}], "
                         f"got {value!r}")
    return v


def start_point(fn, x0):
    """x0 as a float32/float64 ndarray (not modified): TypeError otherwise."""
    if not isinstance(x0, np.ndarray):
        raise TypeError(f"{fn}: x0 must be a numpy.ndarray of float32 or float64, got "
                        f"{type(x0).__name__}")
    if x0.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: x0 must have dtype float32 or float64, got {x0.dtype}")
    if x0.size == 0:
        raise ValueError(f"{fn}: x0 is empty (shape {x0.shape}); there is nothing to minimize")
    if not np.isfinite(x0).all():
        raise ValueError(f"{fn}: x0 holds NaN or infinite values")
    return x0


def checked_value(fn, f, where):
    """fun's value as a Python float: ValueError naming it when it is not a real scalar."""
    try:
        v = float(f)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: fun must return (f, g) with f a real number; got f of type "
                         f"{type(f).__name__} {where}") from None
    if isinstance(f, np.ndarray) and f.size != 1:
        raise ValueError(f"{fn}: fun's value f must be a scalar, got an array of shape {f.shape} "
                         f"{where}")
    return v


def checked_gradient(fn, g, shape, dtype, where):
    """fun's gradient, C-contiguous, of x's shape and dtype; ValueError naming what differs."""
    if type(g) is not np.ndarray or g.dtype != dtype or g.shape != shape:
        if shape == () and isinstance(g, np.generic):
            g = np.asarray(g)           # NumPy hands back scalars from 0-d arithmetic
        if not isinstance(g, np.ndarray):
            raise ValueError(f"{fn}: fun must return (f, g) with g a numpy.ndarray shaped like x "
                             f"({shape}, {dtype}); got g of type {type(g).__name__} {where}")
        if g.shape != shape:
            raise ValueError(f"{fn}: the gradient g returned by fun has shape {g.shape}, but x has "
                             f"shape {shape} ({where})")
        if g.dtype != dtype:
            raise ValueError(f"{fn}: the gradient g returned by fun has dtype {g.dtype}, but x has "
                             f"dtype {dtype} ({where}); return it in x's dtype")
    if not g.flags.c_contiguous:
        g = np.ascontiguousarray(g)
    return g


def split_result(fn, out, where):
    try:
        f, g = out
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: fun must return a pair (f, g), got {type(out).__name__} "
                         f"{where}") from None
    return f, g


# ---------------------------------------------------------------- the solver

class _Solver:
    """The state of an L-BFGS run: the iterate and gradient, the history ring and counters.
    Kept between calls of LBFGS.step; lbfgs() makes one per call."""

    def __init__(self, x0, m, fn):
        n = x0.size
        dt = x0.dtype
        self.fn = fn
        self.shape, self.dtype, self.n, self.m = x0.shape, dt, n, m
        k = m + 1                       # one spare row (see src/_lbfgs.pyx)
        self.S = np.zeros((k, n), dt)
        self.Y = np.zeros((k, n), dt)
        self.rho = np.zeros(k)
        self.alpha = np.zeros(k)
        self.x = np.array(x0, dtype=dt, order="C").reshape(n)
        self.xt = np.empty(n, dt)
        self.g = np.empty(n, dt)
        self.d = np.empty(n, dt)
        # what fun receives: read-only views of the two iterate buffers, in x's shape
        self._views = {id(a): self._view(a) for a in (self.x, self.xt)}
        self.newest, self.count, self.gamma = 0, 0, 1.0
        self.f = math.nan
        self.ginf = math.nan
        self.nfev = 0
        self.fresh = True               # no step taken since the start or a reset

    @staticmethod
    def _view(a):
        v = a.view()
        v.flags.writeable = False
        return v

    def reset(self):
        self.count, self.gamma, self.fresh = 0, 1.0, True

    def evaluate(self, fun, xbuf, where):
        """fun at xbuf: (f, g) with g checked (shape, dtype) but not yet tested for finiteness."""
        out = fun(self._views[id(xbuf)].reshape(self.shape))
        self.nfev += 1
        f, g = split_result(self.fn, out, where)
        return checked_value(self.fn, f, where), checked_gradient(
            self.fn, g, self.shape, self.dtype, where).reshape(self.n)

    def begin(self, fun):
        """Evaluate at the current x; ValueError when the value or gradient is not finite."""
        f, g = self.evaluate(fun, self.x, "at x0")
        gg, ginf = _lbfgs.load(self.g, g)
        if not math.isfinite(f):
            raise ValueError(f"{self.fn}: fun returned a non-finite value f={f} at x0")
        if not math.isfinite(gg):
            raise ValueError(f"{self.fn}: fun returned a gradient with NaN or infinite entries "
                             f"at x0")
        self.f, self.ginf = f, ginf

    def direction(self):
        """d = -H g (d = -g without history); resets the history when d is not a descent
        direction.  Returns g'd."""
        gd = _lbfgs.two_loop(self.S, self.Y, self.rho, self.alpha, self.newest, self.count,
                             self.g, self.d, self.gamma)
        if not gd < 0.0 and self.count > 0:
            self.reset()
            gd = _lbfgs.two_loop(self.S, self.Y, self.rho, self.alpha, self.newest, 0,
                                 self.g, self.d, 1.0)
        return gd

    def iterate(self, fun, *, gtol, ftol, maxiter, maxfun, maxls, c1, c2, callback=None,
                history=None):
        """Iterate from the current (x, f, g) until a stopping rule; returns its key in
        MESSAGES and the iterations taken."""
        if self.ginf <= gtol:
            return "gtol", 0
        nit = 0
        d = self.d
        fg = [0.0, None]                # the last trial's value and gradient
        step_to, dot = _lbfgs.step_to, _lbfgs.dot

        while True:
            if nit >= maxiter:
                return "maxiter", nit
            gd = self.direction()
            if not (gd < 0.0 and math.isfinite(gd)):
                return "linesearch", nit       # g'd would be -||g||^2: not finite or zero
            stp = min(1.0 / math.sqrt(-gd), STPMAX) if self.count == 0 and self.fresh else 1.0
            x, xt = self.x, self.xt

            def phi(a):
                step_to(xt, x, d, a)
                f, g = self.evaluate(fun, xt, "during the line search")
                fg[0], fg[1] = f, g
                return f, dot(g, d)

            ok, a, f_new, _, _ = more_thuente(phi, self.f, gd, stp, c1=c1, c2=c2,
                                              stpmax=STPMAX, maxls=maxls)
            if not ok:
                if self.count == 0:
                    return "linesearch", nit
                self.reset()                   # L-BFGS-B's refresh: steepest descent again
                continue
            # the last trial is the accepted point (more_thuente ends there when ok)
            k = self.S.shape[0]
            row = self.newest + 1 if self.newest + 1 < k else 0
            sy, yy, ginf = _lbfgs.accept(self.S, self.Y, row, x, xt, self.g, fg[1])
            if sy > EPS * yy:
                self.rho[row] = 1.0 / sy
                self.newest = row
                self.count = min(self.count + 1, self.m)
                self.gamma = sy / yy
            self.x, self.xt = xt, x
            f_old, self.f, self.ginf = self.f, f_new, ginf
            self.fresh = False
            nit += 1
            if history is not None:
                history[0].append(f_new)
                history[1].append(ginf)
            if callback is not None and callback(self.x.reshape(self.shape).copy()) is True:
                return "callback", nit
            if nit >= maxiter:
                return "maxiter", nit
            if self.nfev > maxfun:
                return "maxfun", nit
            if ginf <= gtol:
                return "gtol", nit
            if f_old - f_new <= ftol * max(abs(f_old), abs(f_new), 1.0):
                return "ftol", nit


def lbfgs(fun, x0, *, m=10, gtol=1e-5, ftol=2.2e-9, maxiter=15000, maxfun=15000, maxls=20,
          callback=None, c1=1e-4, c2=0.9):
    """Minimize fun by L-BFGS with a strong-Wolfe line search (Moré-Thuente).

    fun(x) returns (f, g): the value (a real number) and the gradient (an array of x's shape and
    dtype).  x0: a float32 or float64 array of any shape, not modified; the iterates keep its
    dtype.  fun receives a read-only array that lbfgs reuses: copy it to keep it.  Most L-BFGS
    failures are wrong gradients: check yours with lec6fast.check_grad first.

    An iteration, with g_k the gradient at x_k and the last m pairs (s_i, y_i):
        d_k = -H_k g_k                    by the two-loop recursion, H_k^0 = gamma_k I,
                                          gamma_k = s'y / y'y of the newest pair (1 without one)
        x_{k+1} = x_k + a_k d_k           a_k: strong Wolfe, c1 = 1e-4, c2 = 0.9; the first try
                                          a = 1, except 1/||g||_2 on the first iteration (as
                                          scipy's L-BFGS-B and torch.optim.LBFGS scale it)
        s_k = x_{k+1} - x_k,  y_k = g_{k+1} - g_k,  kept only when s'y > eps*y'y (eps the
                                          float64 machine epsilon), which keeps H positive
                                          definite; a skipped pair leaves the history as it was
    A direction that is not a descent direction (g'd >= 0, from rounding) resets the history
    to steepest descent; so does a line search that fails (after maxls evaluations, or NaN it
    cannot back away from), as L-BFGS-B does; a failure along steepest descent ends the run
    with success=False.  A NaN or infinite value or gradient during the line search is a step
    too far: the search backs off.

    Stopping rules, tested after every iteration in this order (scipy's L-BFGS-B's, so results
    compare one to one): callback(xk) returned True (status 3); maxiter iterations (status 1);
    more than maxfun evaluations (status 1, tested after an iteration, so a run may exceed it by
    one line search); ||g||_inf <= gtol (status 0, also tested at x0);
    (f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol (status 0).

    Returns an OptimizeResult: x (x0's shape and dtype), fun, grad, nit, nfev, success, status,
    message, history ({"f": ..., "gnorm": ...}: arrays over the iterates x_0 ... x_nit).

    Raises ValueError when fun's value or gradient at x0 is not finite, or fun returns anything
    but (real, array of x's shape and dtype).
    """
    fn = "lbfgs"
    x0 = start_point(fn, x0)
    m = _integer(fn, "m", m, 1)
    gtol = _real(fn, "gtol", gtol)
    ftol = _real(fn, "ftol", ftol)
    maxiter = _integer(fn, "maxiter", maxiter, 0)
    maxfun = _integer(fn, "maxfun", maxfun, 1)
    maxls = _integer(fn, "maxls", maxls, 1)
    c1 = _real(fn, "c1", c1, 0.0, 0.5, strict=True)
    c2 = _real(fn, "c2", c2, c1, 1.0, strict=True)
    if not (c2 < 1.0):
        raise ValueError(f"{fn}: c2 must be in (c1, 1), got {c2!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"{fn}: callback must be callable or None, got {type(callback).__name__}")
    if not callable(fun):
        raise TypeError(f"{fn}: fun must be callable, got {type(fun).__name__}")

    solver = _Solver(x0, m, fn)
    solver.begin(fun)
    history = ([solver.f], [solver.ginf])
    why, nit = solver.iterate(fun, gtol=gtol, ftol=ftol, maxiter=maxiter, maxfun=maxfun,
                              maxls=maxls, c1=c1, c2=c2, callback=callback, history=history)
    return result(solver, why, nit, history)


def result(solver, why, nit, history):
    g = solver.g.reshape(solver.shape).copy()
    return OptimizeResult(
        x=solver.x.reshape(solver.shape).copy(), fun=solver.f, grad=g, jac=g, nit=nit,
        nfev=solver.nfev, status=STATUS[why], success=STATUS[why] == 0, message=MESSAGES[why],
        history={"f": np.array(history[0]), "gnorm": np.array(history[1])})


# ---------------------------------------------------------------- the stateful optimizer

class LBFGS:
    """L-BFGS over a model's parameters, for full-batch training (torch.optim.LBFGS's shape):

        opt = optim.LBFGS(params, history=10, max_iter=20)
        loss = opt.step(closure)      # closure() returns (loss, grads), grads mirroring params

    params is what lec6fast.optim's optimizers take (a dict name -> array, a list of arrays;
    parameter groups are refused: L-BFGS has one set of hyperparameters).  Every parameter is
    float32, or every one float64.  step(closure) runs up to max_iter iterations of lec6fast.
    optim.lbfgs (its equations) on the parameters flattened into one vector, keeping the
    history between steps; before every evaluation the trial point is written into the
    parameter arrays (in place) and closure() is called; after the step they hold the new
    iterate.  Returns the loss at the start of the step (as torch does).  opt.result is the last
    step's OptimizeResult (its x flat), opt.nfev the evaluations so far.
    """

    def __init__(self, params, history=10, *, max_iter=20, max_eval=None, gtol=1e-7,
                 ftol=1e-9, maxls=25):
        fn = "LBFGS"
        self._structure = s = Structure(params)
        if s.grouped:
            raise ValueError(f"{fn}: parameter groups are not supported (one set of "
                             f"hyperparameters for the whole vector); pass a dict or a list")
        self._params = list(s.arrays)
        for name, p in zip(s.names, self._params):
            if not isinstance(p, np.ndarray):
                raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(p).__name__}")
            if p.dtype not in (np.float32, np.float64):
                raise TypeError(f"{fn}: {name} must have dtype float32 or float64, got {p.dtype}")
            if p.dtype != self._params[0].dtype:
                raise TypeError(f"{fn}: {name} has dtype {p.dtype} but {s.names[0]} has "
                                f"{self._params[0].dtype}; L-BFGS needs one dtype")
            if not p.flags.writeable:
                raise ValueError(f"{fn}: {name} is read-only, but LBFGS writes the iterate to it")
        if not self._params:
            raise ValueError(f"{fn}: params is empty")
        self.history = _integer(fn, "history", history, 1)
        self.max_iter = _integer(fn, "max_iter", max_iter, 1)
        self.max_eval = (self.max_iter * 5 // 4 if max_eval is None
                         else _integer(fn, "max_eval", max_eval, 1))
        self.gtol = _real(fn, "gtol", gtol)
        self.ftol = _real(fn, "ftol", ftol)
        self.maxls = _integer(fn, "maxls", maxls, 1)
        sizes = [p.size for p in self._params]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        x0 = np.empty(self._offsets[-1], self._params[0].dtype)
        self._gather(self._params, x0)
        self._solver = _Solver(x0, self.history, fn)
        self._g = np.empty_like(x0)
        self._started = False
        self.result = None

    def _gather(self, arrays, out):
        o = self._offsets
        for i, a in enumerate(arrays):
            out[o[i]:o[i + 1]] = a.reshape(-1)

    def _scatter(self, x):
        o = self._offsets
        for i, p in enumerate(self._params):
            p[...] = x[o[i]:o[i + 1]].reshape(p.shape)

    @property
    def nfev(self):
        return self._solver.nfev

    def step(self, closure):
        """Up to max_iter L-BFGS iterations (max_eval evaluations) from the current parameters;
        returns the loss at their start."""
        fn = "LBFGS.step"
        shapes = [p.shape for p in self._params]
        structure, params, gflat = self._structure, self._params, self._g

        def fun(x):
            self._scatter(x)
            loss, grads = split_result(fn, closure(), "from closure()")
            flat = structure.flatten(grads)
            if len(flat) != len(params):
                raise ValueError(f"{fn}: closure() returned {len(flat)} gradients for "
                                 f"{len(params)} parameters")
            for name, gr, shape in zip(structure.gnames, flat, shapes):
                if not isinstance(gr, np.ndarray) or gr.shape != shape or gr.dtype != gflat.dtype:
                    raise ValueError(f"{fn}: {name} must be an array of shape {shape} and dtype "
                                     f"{gflat.dtype}, got "
                                     f"{getattr(gr, 'shape', type(gr).__name__)} "
                                     f"{getattr(gr, 'dtype', '')}")
            self._gather(flat, gflat)
            return loss, gflat

        solver = self._solver
        # the parameters may have been changed between steps: restart from them
        self._gather(params, solver.x)
        solver.begin(fun)
        loss = solver.f
        history = ([solver.f], [solver.ginf])
        evals = solver.nfev
        why, nit = solver.iterate(fun, gtol=self.gtol, ftol=self.ftol, maxiter=self.max_iter,
                                  maxfun=evals + self.max_eval, maxls=self.maxls, c1=1e-4,
                                  c2=0.9, history=history)
        self._scatter(solver.x)
        self.result = result(solver, why, nit, history)
        return loss

"""Newton's method (dense, or Newton-CG on Hessian-vector products) with a line search:
lec6fast.optim.newton."""

import math

import numpy as np

from ._lbfgs import (MESSAGES, STATUS, OptimizeResult, _integer, _real, checked_gradient,
                     checked_value, split_result, start_point)
from ._linesearch import backtracking

NEWTON_MESSAGES = dict(MESSAGES, linesearch=(
    "ABNORMAL: THE LINE SEARCH FOUND NO DECREASE ALONG THE NEWTON DIRECTION NOR THE GRADIENT "
    "(check the gradient and Hessian, e.g. with lec6fast.check_grad)"),
    hessian="ABNORMAL: THE HESSIAN IS NOT FINITE")
NEWTON_STATUS = dict(STATUS, hessian=2)


def _cg(hvp, g, maxiter, tol):
    """Approximately solve H p = -g by conjugate gradients, stopping at ||r|| <= tol or at
    negative curvature (Nocedal & Wright, Algorithm 7.1): the truncated Newton step, a descent
    direction whatever H is (-g when the first direction already has negative curvature)."""
    p = np.zeros_like(g)
    r = g.astype(np.float64, copy=True)     # residual H p + g
    d = -r
    rr = float(r @ r)
    for _ in range(maxiter):
        hd = np.asarray(hvp(d.astype(g.dtype, copy=False)), dtype=np.float64).reshape(d.shape)
        curv = float(d @ hd)
        if not curv > 0.0:                  # negative (or zero, or NaN) curvature
            return -g.astype(np.float64) if not p.any() else p
        a = rr / curv
        p = p + a * d
        r = r + a * hd
        rr_new = float(r @ r)
        if math.sqrt(rr_new) <= tol:
            break
        d = -r + (rr_new / rr) * d
        rr = rr_new
    return p


def newton(fun, x0, *, hess, gtol=1e-8, maxiter=100, cg_maxiter=None, callback=None):
    """Minimize fun by Newton's method with a backtracking (Armijo) line search.

    fun(x) returns (f, g) as for lec6fast.optim.lbfgs.  hess(x) returns either a dense (n, n)
    array (n = x.size; small problems) or an object with `@` (a Hessian-vector product
    v -> H v on flat vectors of length n; e.g. scipy's LinearOperator), which makes this
    Newton-CG.  An iteration:

        solve H_k p_k = -g_k              dense: Cholesky; when H_k is not positive definite,
                                          H_k + tau I with tau doubled from 1e-3 * max|diag| until
                                          it is; Newton-CG: conjugate gradients, stopped at
                                          ||r|| <= min(0.5, sqrt(||g||)) ||g|| or at negative
                                          curvature (the step so far; -g on the first)
        x_{k+1} = x_k + a_k p_k           a_k = 1, 1/2, 1/4, ... until f decreases by at least
                                          1e-4 * a_k * g'p (Armijo); a_k = 1 near the minimum,
                                          where Newton converges quadratically

    There is no learning rate (the lecture's point): the Hessian sets the step's length.  If
    the search along p_k fails, one is tried along -g_k; if that fails too, the run ends with
    success=False.  Stops at ||g||_inf <= gtol (status 0; also at x0), after maxiter
    iterations (status 1), or when callback(xk) returns True (status 3).  Returns an
    OptimizeResult (as lbfgs: x, fun, grad, nit, nfev, success, status, message, history).
    """
    fn = "newton"
    x0 = start_point(fn, x0)
    gtol = _real(fn, "gtol", gtol)
    maxiter = _integer(fn, "maxiter", maxiter, 0)
    if not callable(fun):
        raise TypeError(f"{fn}: fun must be callable, got {type(fun).__name__}")
    if not callable(hess):
        raise TypeError(f"{fn}: hess must be callable (x -> Hessian or an object with @), got "
                        f"{type(hess).__name__}")
    shape, dtype, n = x0.shape, x0.dtype, x0.size
    cg_maxiter = 2 * n if cg_maxiter is None else _integer(fn, "cg_maxiter", cg_maxiter, 1)
    nfev = 0

    def evaluate(x, where):
        nonlocal nfev
        nfev += 1
        f, g = split_result(fn, fun(x.reshape(shape)), where)
        return (checked_value(fn, f, where),
                checked_gradient(fn, g, shape, dtype, where).reshape(n))

    x = np.array(x0, dtype=dtype).reshape(n)
    f, g = evaluate(x, "at x0")
    if not math.isfinite(f):
        raise ValueError(f"{fn}: fun returned a non-finite value f={f} at x0")
    if not np.isfinite(g).all():
        raise ValueError(f"{fn}: fun returned a gradient with NaN or infinite entries at x0")
    hist_f, hist_g = [f], [float(np.abs(g).max())]
    nit, why = 0, None
    while why is None:
        if hist_g[-1] <= gtol:
            why = "gtol"
            break
        if nit >= maxiter:
            why = "maxiter"
            break
        p = _direction(fn, hess, x.reshape(shape), g, n, cg_maxiter)
        if p is None:
            why = "hessian"
            break
        found = None
        for direction in (p, -g.astype(np.float64)):
            gp = float(g.astype(np.float64) @ direction)
            if not gp < 0.0:
                continue
            trial = {}

            def phi(a, direction=direction, trial=trial):
                xt = (x + a * direction).astype(dtype)
                ft, gt = evaluate(xt, "during the line search")
                trial[a] = (xt, gt)
                return ft if np.isfinite(gt).all() else math.nan

            ok, a, f_new, _ = backtracking(phi, f, gp)
            if ok:
                found = trial[a] + (f_new,)
                break
        if found is None:
            why = "linesearch"
            break
        x, g, f = found
        nit += 1
        hist_f.append(f)
        hist_g.append(float(np.abs(g).max()))
        if callback is not None and callback(x.reshape(shape).copy()) is True:
            why = "callback"
    gr = g.reshape(shape).copy()
    return OptimizeResult(
        x=x.reshape(shape).copy(), fun=f, grad=gr, jac=gr, nit=nit, nfev=nfev,
        status=NEWTON_STATUS[why], success=NEWTON_STATUS[why] == 0,
        message=NEWTON_MESSAGES[why], history={"f": np.array(hist_f), "gnorm": np.array(hist_g)})


def _direction(fn, hess, x, g, n, cg_maxiter):
    """The Newton step p (float64, length n), or None when the Hessian is not finite."""
    H = hess(x)
    if isinstance(H, np.ndarray) or np.isscalar(H) or isinstance(H, (list, tuple)):
        H = np.asarray(H, dtype=np.float64)
        if H.shape != (n, n):
            raise ValueError(f"{fn}: hess(x) must return an ({n}, {n}) array for x of {n} "
                             f"elements, got shape {H.shape}")
        if not np.isfinite(H).all():
            return None
        g64 = g.astype(np.float64)
        H = 0.5 * (H + H.T)
        tau = 0.0
        base = 1e-3 * max(float(np.abs(np.diag(H)).max()), 1e-12)
        while True:
            try:
                L = np.linalg.cholesky(H + tau * np.eye(n) if tau else H)
                break
            except np.linalg.LinAlgError:
                tau = base if tau == 0.0 else 2.0 * tau
        z = np.linalg.solve(L, -g64)
        return np.linalg.solve(L.T, z)
    if not hasattr(H, "__matmul__"):
        raise ValueError(f"{fn}: hess(x) must return an (n, n) array or an object with @ "
                         f"(Hessian-vector products), got {type(H).__name__}")
    gnorm = float(np.linalg.norm(g))
    tol = min(0.5, math.sqrt(gnorm)) * gnorm
    return _cg(lambda v: H @ v, g, cg_maxiter, tol)

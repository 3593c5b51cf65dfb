"""The line searches of lec6fast.optim.lbfgs and lec6fast.optim.newton, on scalars only.

`more_thuente` finds a step satisfying the strong Wolfe conditions
    phi(a) <= phi(0) + c1*a*phi'(0)    and    |phi'(a)| <= c2*|phi'(0)|
by the method of Moré and Thuente ("Line search algorithms with guaranteed sufficient
decrease", ACM TOMS 20, 1994), the search L-BFGS-B uses: safeguarded cubic and quadratic
interpolation steps that keep an interval of uncertainty [stx, sty] containing such a step once
one end is bracketed; while stage 1 lasts (no point yet with sufficient decrease and
phi' >= 0) the steps are taken on the modified function psi(a) = phi(a) - phi(0) - c1*a*phi'(0).
A trial whose value or slope is not finite (NaN, inf) is treated as a step too far: the search
halves back towards the best point and never extrapolates past it again.
"""

import math

XTRAPL, XTRAPU = 1.1, 4.0       # extrapolation limits before a bracket: [1.1, 4] x the last move
XTOL = 0.1                      # relative width of the interval of uncertainty that ends the search


def _cubic_min(a, fa, da, b, fb, db):
    """The minimizer parameters of the cubic interpolating (a, fa, da), (b, fb, db): returns
    (theta, gamma) with gamma signed so that a + (p/q)(b - a) is the cubic's minimizer."""
    theta = 3.0 * (fa - fb) / (b - a) + da + db
    s = max(abs(theta), abs(da), abs(db))
    if s == 0.0:
        return theta, 0.0
    disc = (theta / s) ** 2 - (da / s) * (db / s)
    gamma = s * math.sqrt(max(0.0, disc))
    return theta, gamma


def _next_step(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):
    """One safeguarded step of Moré-Thuente: the new trial step and the updated interval.
    Returns (stx, fx, dx, sty, fy, dy, stp, brackt)."""
    sgnd = dp * math.copysign(1.0, dx)
    if fp > fx:
        # higher value: the minimum is bracketed; cubic or the midpoint with the quadratic
        theta, gamma = _cubic_min(stx, fx, dx, stp, fp, dp)
        if stp < stx:
            gamma = -gamma
        r = ((gamma - dx) + theta) / (((gamma - dx) + gamma) + dp)
        stpc = stx + r * (stp - stx)
        stpq = stx + (dx / ((fx - fp) / (stp - stx) + dx)) / 2.0 * (stp - stx)
        stpf = stpc if abs(stpc - stx) < abs(stpq - stx) else stpc + (stpq - stpc) / 2.0
        brackt = True
    elif sgnd < 0.0:
        # slopes of opposite sign: bracketed; cubic or secant, whichever is farther from stp
        theta, gamma = _cubic_min(stx, fx, dx, stp, fp, dp)
        if stp > stx:
            gamma = -gamma
        r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dx)
        stpc = stp + r * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        brackt = True
    elif abs(dp) < abs(dx):
        # same sign, the slope shrinks: the cubic only if it tends to infinity in the step's
        # direction (or its minimum is beyond stp), else the limit; then the secant
        theta, gamma = _cubic_min(stx, fx, dx, stp, fp, dp)
        if stp > stx:
            gamma = -gamma
        r = ((gamma - dp) + theta) / ((gamma + (dx - dp)) + gamma)
        if r < 0.0 and gamma != 0.0:
            stpc = stp + r * (stx - stp)
        elif stp > stx:
            stpc = stpmax
        else:
            stpc = stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if brackt:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            bound = stp + 0.66 * (sty - stp)
            stpf = min(bound, stpf) if stp > stx else max(bound, stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = max(stpmin, min(stpmax, stpf))
    else:
        # same sign, the slope does not shrink: cubic on the bracket's far end, or the limit
        if brackt:
            theta, gamma = _cubic_min(sty, fy, dy, stp, fp, dp)
            if stp > sty:
                gamma = -gamma
            r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dy)
            stpf = stp + r * (sty - stp)
        elif stp > stx:
            stpf = stpmax
        else:
            stpf = stpmin
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sgnd < 0.0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, stpf, brackt


def more_thuente(phi, f0, g0, stp, *, c1=1e-4, c2=0.9, stpmax=1e10, maxls=20):
    """Search along a descent direction from phi(0) = f0 with slope g0 < 0, first trying stp.

    phi(a) evaluates the objective at step a and returns (value, slope); it is called at most
    maxls times.  Returns (ok, a, f, g, evaluations): ok is True when the last point evaluated
    (a, with value f and slope g) is where the search ended normally (the strong Wolfe
    conditions hold, or the interval of uncertainty is below the tolerance or rounding stops
    progress, as L-BFGS-B accepts); False when maxls evaluations were not enough or no finite
    value was found (a is then the best step seen, or 0).
    """
    ftol_slope = c1 * g0
    brackt, stage1 = False, True
    stx, fx, gx = 0.0, f0, g0
    sty, fy, gy = 0.0, f0, g0
    stmin, stmax = 0.0, stp + XTRAPU * stp
    width = stpmax
    width1 = 2.0 * width
    bad = math.inf              # the smallest step whose value or slope was not finite
    for it in range(1, maxls + 1):
        f, g = phi(stp)
        if not (math.isfinite(f) and math.isfinite(g)):
            bad = min(bad, stp)
            stp = stx + 0.5 * (stp - stx)
            if stp <= stx or stp - stx <= 1e-16 * max(1.0, stx):
                break
            continue
        ftest = f0 + stp * ftol_slope
        if stage1 and f <= ftest and g >= 0.0:
            stage1 = False
        if f <= ftest and abs(g) <= -c2 * g0:
            return True, stp, f, g, it
        if brackt and (stp <= stmin or stp >= stmax or stmax - stmin <= XTOL * stmax):
            return True, stp, f, g, it
        if stp == stpmax and f <= ftest and g <= ftol_slope:
            return True, stp, f, g, it
        if stage1 and f <= fx and f > ftest:
            # the modified function psi: same interpolation on shifted values and slopes
            stx, fxm, gxm, sty, fym, gym, nxt, brackt = _next_step(
                stx, fx - stx * ftol_slope, gx - ftol_slope, sty, fy - sty * ftol_slope,
                gy - ftol_slope, stp, f - stp * ftol_slope, g - ftol_slope, brackt, stmin, stmax)
            fx, gx = fxm + stx * ftol_slope, gxm + ftol_slope
            fy, gy = fym + sty * ftol_slope, gym + ftol_slope
        else:
            stx, fx, gx, sty, fy, gy, nxt, brackt = _next_step(
                stx, fx, gx, sty, fy, gy, stp, f, g, brackt, stmin, stmax)
        if brackt:
            if abs(sty - stx) >= 0.66 * width1:
                nxt = stx + 0.5 * (sty - stx)
            width1, width = width, abs(sty - stx)
            stmin, stmax = min(stx, sty), max(stx, sty)
        else:
            stmin, stmax = nxt + XTRAPL * (nxt - stx), nxt + XTRAPU * (nxt - stx)
        nxt = max(0.0, min(stpmax, nxt))
        if brackt and (nxt <= stmin or nxt >= stmax or stmax - stmin <= XTOL * stmax):
            nxt = stx
        if nxt >= bad:          # never again as far as a non-finite point
            nxt = stx + 0.5 * (bad - stx)
        stp = nxt
    return False, stx, fx, gx, maxls


def backtracking(phi, f0, g0, stp=1.0, *, c1=1e-4, shrink=0.5, maxls=50):
    """Armijo backtracking: the first of stp, shrink*stp, ... with phi(a) <= f0 + c1*a*g0 and a
    finite value.  phi(a) returns the value only.  Returns (ok, a, f, evaluations)."""
    for it in range(1, maxls + 1):
        f = phi(stp)
        if math.isfinite(f) and f <= f0 + c1 * stp * g0:
            return True, stp, f, it
        stp *= shrink
    return False, 0.0, f0, maxls

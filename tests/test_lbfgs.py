"""lec6fast.optim.lbfgs / LBFGS / newton and lec6fast.check_grad: the compiled two-loop
recursion against lec6fast.reference.two_loop, convergence to known minimizers, the evaluation
counts against scipy's L-BFGS-B, float32 runs, and bad input."""

import math

import numpy as np
import pytest

import lec6fast
from lec6fast import _lbfgs, check_grad, optim, reference as R
from lec6fast.bench import problems as P

K = _lbfgs


# ---------------------------------------------------------------- the two-loop recursion

def _ring(rng, k, n, dtype):
    S = rng.standard_normal((k, n)).astype(dtype)
    Y = (S + 0.3 * rng.standard_normal((k, n))).astype(dtype)
    rho = 1.0 / np.einsum("ij,ij->i", S.astype(np.float64), Y.astype(np.float64))
    return S, Y, rho


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 33, 1000, 4099])
@pytest.mark.parametrize("k,count,newest", [(2, 0, 0), (2, 1, 0), (2, 1, 1), (4, 3, 1),
                                            (11, 10, 10), (11, 10, 3), (11, 5, 2), (21, 20, 0)])
def test_two_loop_matches_the_reference(dtype, n, k, count, newest):
    rng = np.random.default_rng(n * 100 + k * 10 + count)
    S, Y, rho = _ring(rng, k, n, dtype)
    g = rng.standard_normal(n).astype(dtype)
    gamma = 0.37
    d_fast, d_ref = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
    a_fast, a_ref = np.zeros(k), np.zeros(k)
    S0, Y0, g0 = S.copy(), Y.copy(), g.copy()
    gd_fast = K.two_loop(S, Y, rho, a_fast, newest, count, g, d_fast, gamma)
    gd_ref = R.two_loop(S, Y, rho, a_ref, newest, count, g, d_ref, gamma)
    eps = np.finfo(dtype).eps
    # the same operations in the same dtype; only the dot products' summation order differs
    tol = 64 * eps * (count + 1)
    scale = np.abs(d_ref).max()
    assert np.abs(d_fast - d_ref).max() <= tol * scale
    assert abs(gd_fast - gd_ref) <= tol * (np.abs(g).astype(np.float64) @ np.abs(d_ref))
    assert np.array_equal(S, S0) and np.array_equal(Y, Y0) and np.array_equal(g, g0)
    if count == 0:
        assert np.array_equal(d_fast, -dtype(gamma) * g)


def test_two_loop_is_the_inverse_bfgs_matrix_on_a_quadratic():
    """n pairs of a quadratic's (s, Ay): the BFGS matrix from them is A^-1 exactly."""
    rng = np.random.default_rng(0)
    n = 6
    A = rng.standard_normal((n, n))
    A = A @ A.T + n * np.eye(n)
    S = rng.standard_normal((n + 1, n))
    Y = S @ A
    rho = 1.0 / np.einsum("ij,ij->i", S, Y)
    g = rng.standard_normal(n)
    d = np.empty(n)
    K.two_loop(S, Y, rho, np.zeros(n + 1), n - 1, n, g, d, 1.0)
    # pairs along n independent directions reproduce A^-1 only in exact conjugacy; check
    # the secant equation of the newest pair instead: H y_newest = s_newest
    K.two_loop(S, Y, rho, np.zeros(n + 1), n - 1, n, Y[n - 1], d, 1.0)
    np.testing.assert_allclose(-d, S[n - 1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_passes(dtype):
    rng = np.random.default_rng(1)
    n = 1001
    x, d, g, gt = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    xt = np.empty(n, dtype)
    K.step_to(xt, x, d, 0.25)
    assert np.array_equal(xt, x + dtype(0.25) * d)
    assert K.dot(g, d) == pytest.approx(g.astype(np.float64) @ d.astype(np.float64), rel=1e-12)
    S, Y = np.zeros((3, n), dtype), np.zeros((3, n), dtype)
    g_before = g.copy()
    sy, yy, ginf = K.accept(S, Y, 2, x, xt, g, gt)
    assert np.array_equal(S[2], xt - x) and np.array_equal(Y[2], gt - g_before)
    assert np.array_equal(g, gt) and not S[:2].any() and not Y[:2].any()
    assert sy == pytest.approx(S[2].astype(float) @ Y[2].astype(float), rel=1e-12)
    assert yy == pytest.approx(Y[2].astype(float) @ Y[2].astype(float), rel=1e-12)
    assert ginf == np.abs(gt).max()
    gg, ginf = K.load(g, g_before)
    assert np.array_equal(g, g_before) and ginf == np.abs(g_before).max()
    assert gg == pytest.approx(g_before.astype(float) @ g_before.astype(float), rel=1e-12)
    g_bad = g_before.copy()
    g_bad[5] = np.inf
    assert not math.isfinite(K.dot(g_bad, d))
    g_bad[5] = np.nan
    assert not math.isfinite(K.dot(g_bad, d)) and not math.isfinite(K.load(g, g_bad)[0])


def test_kernels_refuse_wrong_arrays():
    n = 5
    S = np.zeros((3, n))
    with pytest.raises(TypeError, match="d has dtype float32"):
        K.two_loop(S, S, np.ones(3), np.zeros(3), 0, 1, np.zeros(n), np.zeros(n, np.float32), 1.0)
    with pytest.raises(ValueError, match="count"):
        K.two_loop(S, S, np.ones(3), np.zeros(3), 0, 3, np.zeros(n), np.zeros(n), 1.0)
    with pytest.raises(ValueError, match="elements"):
        K.step_to(np.zeros(n), np.zeros(n), np.zeros(n + 1), 1.0)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(n)
        ro.flags.writeable = False
        K.step_to(ro, np.zeros(n), np.zeros(n), 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        K.dot(np.zeros(2 * n)[::2], np.zeros(n))
    with pytest.raises(ValueError, match="row"):
        K.accept(S, S.copy(), 3, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))


# ---------------------------------------------------------------- convergence

TIGHT = dict(gtol=1e-9, ftol=0.0, maxiter=30000, maxfun=40000)


@pytest.mark.parametrize("make", [lambda: P.rosenbrock(2), lambda: P.rosenbrock(5),
                                  lambda: P.rosenbrock(100), lambda: P.rosenbrock(1000),
                                  P.himmelblau, P.matyas, P.zakharov, P.beale, P.quadratic],
                         ids=["rosen2", "rosen5", "rosen100", "rosen1000", "himmelblau",
                              "matyas", "zakharov", "beale", "quadratic1e6"])
def test_converges_to_the_known_minimizer(make):
    p = make()
    x0 = p.x0.copy()
    r = optim.lbfgs(p.fun, p.x0, **TIGHT)
    assert np.array_equal(p.x0, x0)                       # x0 is not modified
    assert r.x.dtype == np.float64 and r.x.shape == p.x0.shape
    assert np.abs(r.x - p.xstar).max() <= 1e-4, r.message
    assert r.fun == p.fun(r.x)[0]
    np.testing.assert_array_equal(r.grad, p.fun(r.x)[1])
    assert len(r.history["f"]) == len(r.history["gnorm"]) == r.nit + 1
    assert r.history["f"][-1] == r.fun and r.history["f"][0] == p.fun(p.x0)[0]
    assert np.all(np.diff(r.history["f"]) <= 0)           # every accepted step decreases f


def _newton_minimizer(p):
    r = optim.newton(p.fun, p.x0, hess=p.hessp, gtol=1e-12, maxiter=200)
    assert r.history["gnorm"][-1] <= 1e-10, r.message
    return r.x


@pytest.mark.parametrize("make", [P.logistic, P.softmax], ids=["logistic", "softmax"])
def test_converges_on_regression_problems(make):
    p = make()
    xstar = _newton_minimizer(p)
    r = optim.lbfgs(p.fun, p.x0, **TIGHT)
    assert np.abs(r.x - xstar).max() <= 1e-4, r.message
    assert r.x.shape == p.x0.shape


@pytest.mark.parametrize("make", [P.logistic, P.softmax], ids=["logistic", "softmax"])
def test_float32_iterates_converge_to_float32_precision(make):
    p64, p32 = make(np.float64), make(np.float32)
    xstar = _newton_minimizer(p64)
    fstar = p64.fun(xstar)[0]
    r = optim.lbfgs(p32.fun, p32.x0)
    assert r.x.dtype == np.float32 and r.grad.dtype == np.float32
    assert r.success, r.message
    eps32 = np.finfo(np.float32).eps
    assert p64.fun(r.x.astype(np.float64))[0] - fstar <= 100 * eps32 * abs(fstar)
    assert np.abs(r.x - xstar).max() <= 1e-3 * max(1.0, np.abs(xstar).max())


SMALL = {"rosen2": lambda: P.rosenbrock(2), "rosen5": lambda: P.rosenbrock(5),
         "rosen100": lambda: P.rosenbrock(100), "himmelblau": P.himmelblau, "matyas": P.matyas,
         "zakharov": P.zakharov, "beale": P.beale, "logistic": P.logistic, "softmax": P.softmax}
LARGE = {"rosen1000": lambda: P.rosenbrock(1000), "quadratic1e6": P.quadratic}
CASES = ([(name, make, 1e-5) for name, make in {**SMALL, **LARGE}.items()]
         + [(name, make, 1e-8) for name, make in SMALL.items()])   # (scipy takes ~10 s on LARGE)


@pytest.mark.parametrize("name,make,gtol", CASES, ids=[f"{c[0]}-{c[2]:g}" for c in CASES])
def test_evaluations_at_most_1_1x_scipy(name, make, gtol):
    """Evaluations to reach the same accuracy: the first evaluation whose f is at most the worse
    of the two final values, ours against scipy's L-BFGS-B (m = 10 both).  Comparing nfev at
    stopping would compare different end points: on the ill-conditioned quadratic the
    relative-reduction rule stops the two a few hundred evaluations apart, at values 2e-6 apart,
    and which one stops first changes with the CPU's rounding of the dot products (on an AMD
    Zen 5 ours ran 3466 evaluations to f = -3.8722608, scipy 3149 to -3.8722580)."""
    minimize = pytest.importorskip("scipy.optimize").minimize
    p = make()
    shape = p.x0.shape
    ours_f, theirs_f = [], []

    def ours_fun(x):
        f, g = p.fun(x)
        ours_f.append(float(f))
        return f, g

    def flat(x):
        f, g = p.fun(x.reshape(shape))
        theirs_f.append(float(f))
        return f, g.reshape(-1)
    ours = optim.lbfgs(ours_fun, p.x0, m=10, gtol=gtol)
    theirs = minimize(flat, p.x0.reshape(-1), jac=True, method="L-BFGS-B",
                      options=dict(maxcor=10, gtol=gtol))
    assert ours.success and theirs.success
    assert ours.nfev == len(ours_f) and theirs.nfev == len(theirs_f)
    # both stop by the same rules, close to each other
    assert ours.fun <= theirs.fun + 1e-5 * max(1.0, abs(theirs.fun))
    target = max(ours.fun, theirs.fun)
    ours_n = 1 + next(i for i, f in enumerate(ours_f) if f <= target)
    theirs_n = 1 + next(i for i, f in enumerate(theirs_f) if f <= target)
    assert ours_n <= 1.1 * theirs_n, (ours_n, theirs_n, ours.nfev, theirs.nfev)


# ---------------------------------------------------------------- stopping rules

def test_stopping_rules_and_status():
    p = P.rosenbrock(5)
    r = optim.lbfgs(p.fun, p.x0, maxiter=3)
    assert (r.nit, r.status, r.success) == (3, 1, False) and "ITERATIONS" in r.message
    r = optim.lbfgs(p.fun, p.x0, maxfun=5)
    assert r.status == 1 and r.nfev > 5 and "EVALUATIONS" in r.message
    r = optim.lbfgs(p.fun, p.x0, gtol=1e-3, ftol=0.0)
    assert r.success and r.history["gnorm"][-1] <= 1e-3 < r.history["gnorm"][-2]
    r = optim.lbfgs(p.fun, p.x0, gtol=0.0, ftol=1e-3)
    f = r.history["f"]
    assert r.success and (f[-2] - f[-1]) <= 1e-3 * max(abs(f[-2]), abs(f[-1]), 1.0)
    r = optim.lbfgs(p.fun, p.xstar.copy())
    assert r.success and r.nit == 0 and r.nfev == 1       # gtol at x0
    seen = []
    r = optim.lbfgs(p.fun, p.x0, callback=lambda xk: seen.append(xk) or len(seen) == 4)
    assert r.nit == 4 and r.status == 3 and not r.success
    assert len({id(s) for s in seen}) == 4                # copies, not the solver's buffer
    np.testing.assert_array_equal(seen[-1], r.x)


def test_maxiter_zero_evaluates_once():
    p = P.beale()
    r = optim.lbfgs(p.fun, p.x0, maxiter=0)
    assert r.nit == 0 and r.nfev == 1 and r.status == 1


def test_any_shape_and_memory_of_at_most_m_pairs():
    p = P.softmax()
    r1 = optim.lbfgs(p.fun, p.x0, m=1)
    r30 = optim.lbfgs(p.fun, p.x0, m=30)
    assert r1.x.shape == r30.x.shape == (65, 10)
    assert r1.success and r30.success
    assert abs(r1.fun - r30.fun) <= 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_d_and_fortran_ordered_starts(dtype):
    r = optim.lbfgs(lambda x: (float((x - 3) ** 2), 2 * (x - 3)), np.array(0.0, dtype))
    assert r.success and r.x.shape == () and r.x.dtype == dtype and abs(r.x - 3) <= 1e-4
    A = np.asfortranarray(np.arange(6.0).reshape(2, 3)).astype(dtype, order="F")
    r = optim.lbfgs(lambda x: (float(((x - A) ** 2).sum()), 2 * (x - A)),
                    np.asfortranarray(np.zeros((2, 3), dtype)))
    assert r.success and r.x.shape == (2, 3) and np.abs(r.x - A).max() <= 1e-3


def test_fun_sees_read_only_input():
    p = P.beale()

    def fun(x):
        assert not x.flags.writeable
        return p.fun(x)
    assert optim.lbfgs(fun, p.x0).success


# ---------------------------------------------------------------- bad input

def test_bad_fun_output_is_refused_by_name():
    x0 = np.ones(3)
    with pytest.raises(ValueError, match="shape"):
        optim.lbfgs(lambda x: (1.0, np.ones(4)), x0)
    with pytest.raises(ValueError, match="dtype float32"):
        optim.lbfgs(lambda x: (1.0, np.ones(3, np.float32)), x0)
    with pytest.raises(ValueError, match="numpy.ndarray"):
        optim.lbfgs(lambda x: (1.0, [1.0, 1.0, 1.0]), x0)
    with pytest.raises(ValueError, match="pair"):
        optim.lbfgs(lambda x: 1.0, x0)
    with pytest.raises(ValueError, match="non-finite value"):
        optim.lbfgs(lambda x: (math.nan, np.ones(3)), x0)
    with pytest.raises(ValueError, match="non-finite value"):
        optim.lbfgs(lambda x: (math.inf, np.ones(3)), x0)
    with pytest.raises(ValueError, match="gradient with NaN"):
        optim.lbfgs(lambda x: (1.0, np.array([1.0, np.nan, 0.0])), x0)
    with pytest.raises(ValueError, match="gradient with NaN"):
        optim.lbfgs(lambda x: (1.0, np.array([1.0, -np.inf, 0.0])), x0)
    with pytest.raises(ValueError, match="real number"):
        optim.lbfgs(lambda x: ("a", np.ones(3)), x0)


def test_bad_arguments():
    f = P.beale().fun
    with pytest.raises(TypeError, match="x0"):
        optim.lbfgs(f, [1.0, 1.0])
    with pytest.raises(TypeError, match="x0"):
        optim.lbfgs(f, np.ones(2, np.int64))
    with pytest.raises(ValueError, match="x0"):
        optim.lbfgs(f, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        optim.lbfgs(f, np.ones(0))
    with pytest.raises(ValueError, match="m must"):
        optim.lbfgs(f, np.ones(2), m=0)
    with pytest.raises(TypeError, match="maxiter"):
        optim.lbfgs(f, np.ones(2), maxiter=1.5)
    with pytest.raises(ValueError, match="gtol"):
        optim.lbfgs(f, np.ones(2), gtol=-1.0)
    with pytest.raises(TypeError, match="callback"):
        optim.lbfgs(f, np.ones(2), callback=3)


def test_nan_in_the_line_search_backs_off():
    """f is NaN beyond x > 2: the search starts past it and backs off to a finite point."""
    def fun(x):
        if x[0] > 2.0:
            return math.nan, np.full(1, math.nan)
        return float((x[0] - 1.5) ** 2), np.array([2 * (x[0] - 1.5)])
    r = optim.lbfgs(fun, np.array([-100.0]))
    assert r.success and abs(r.x[0] - 1.5) <= 1e-5


def test_nan_everywhere_but_x0_fails_cleanly():
    calls = []

    def fun(x):
        calls.append(1)
        if len(calls) > 1:
            return math.nan, np.full(2, math.nan)
        return 1.0, np.array([1.0, -2.0])
    r = optim.lbfgs(fun, np.zeros(2), maxls=5)
    assert not r.success and r.status == 2 and "LINE SEARCH" in r.message
    assert np.array_equal(r.x, np.zeros(2)) and r.fun == 1.0


def test_wrong_gradient_fails_cleanly_not_raises():
    """An analytic gradient of the wrong sign: no descent is found, a message says so."""
    p = P.beale()
    r = optim.lbfgs(lambda x: (p.fun(x)[0], -p.fun(x)[1]), p.x0)
    assert not r.success and "check_grad" in r.message


def test_non_descent_direction_resets_the_history():
    """A gradient that changes between calls at the same x (noisy) produces pairs with s'y
    of either sign; the run must keep descending or stop cleanly, never raise."""
    rng = np.random.default_rng(0)
    p = P.quadratic(20, 1e3)

    def noisy(x):
        f, g = p.fun(x)
        return f, g + rng.standard_normal(g.shape) * 1e-3
    r = optim.lbfgs(noisy, p.x0, maxiter=200)
    assert r.nit > 0 and np.isfinite(r.fun)


def test_reset_path_is_taken_on_non_descent():
    s = optim._lbfgs._Solver(np.zeros(3), 2, "t")
    s.S[1] = [1.0, 0.0, 0.0]
    s.Y[1] = [-1.0, 0.0, 0.0]        # negative curvature: H not positive definite
    s.rho[1] = -1.0
    s.newest, s.count, s.gamma = 1, 1, 1.0
    s.g[:] = [1.0, 0.0, 0.0]
    gd = s.direction()
    assert gd < 0 and s.count == 0 and np.array_equal(s.d, -s.g)


# ---------------------------------------------------------------- the stateful LBFGS

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stateful_lbfgs_trains_a_model_full_batch(dtype):
    p = P.softmax(dtype)
    X, y, reg = p.data
    params = {"W": np.zeros((64, 10), dtype), "b": np.zeros(10, dtype)}
    W_ref = _newton_minimizer(P.softmax(np.float64))

    def closure():
        W = np.vstack([params["W"], params["b"][None]])
        loss, g = p.fun(W)
        return loss, {"W": g[:-1], "b": g[-1]}
    opt = optim.LBFGS(params, history=10, max_iter=50)
    losses = [opt.step(closure) for _ in range(6)]
    assert losses[-1] < losses[0]
    assert params["W"].dtype == dtype
    tol = 1e-4 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(params["W"], W_ref[:-1], atol=tol)
    np.testing.assert_allclose(params["b"], W_ref[-1], atol=tol)
    assert opt.result.nfev == opt.nfev


def test_stateful_lbfgs_refuses():
    with pytest.raises(TypeError, match="one dtype"):
        optim.LBFGS([np.zeros(2), np.zeros(2, np.float32)])
    with pytest.raises(ValueError, match="groups"):
        optim.LBFGS([{"params": [np.zeros(2)]}])
    params = [np.zeros(2)]
    opt = optim.LBFGS(params)
    with pytest.raises(ValueError, match="shape"):
        opt.step(lambda: (1.0, [np.zeros(3)]))


# ---------------------------------------------------------------- Newton

def test_newton_dense_converges_quadratically():
    p = P.logistic()

    def hess(w):
        X, t, reg = p.data
        z = t * (X @ w)
        s = 1 / (1 + np.exp(-z))
        return (X.T * (s * (1 - s))) @ X / len(X) + reg * np.eye(len(w))
    r = optim.newton(p.fun, p.x0, hess=hess)
    assert r.success and r.nit <= 10 and r.history["gnorm"][-1] <= 1e-8
    # Newton-CG on the same problem reaches the same point
    r2 = optim.newton(p.fun, p.x0, hess=p.hessp)
    assert r2.success and np.abs(r.x - r2.x).max() <= 1e-6


def test_newton_on_rosenbrock_and_indefinite_hessians():
    p = P.rosenbrock(2)

    def hess(x):
        a, b = x
        return np.array([[1200 * a * a - 400 * b + 2, -400 * a], [-400 * a, 200.0]])
    r = optim.newton(p.fun, p.x0, hess=hess)
    assert r.success and np.abs(r.x - 1).max() <= 1e-6
    p = P.himmelblau()

    def hess_h(x):
        a, b = x
        return np.array([[12 * a * a + 4 * b - 42, 4 * (a + b)],
                         [4 * (a + b), 4 * a + 12 * b * b - 26]])
    r = optim.newton(p.fun, np.array([-0.27, -0.92]), hess=hess_h)   # near the local maximum
    assert r.success and r.fun <= 1e-12


def test_newton_bad_input():
    p = P.beale()
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        optim.newton(p.fun, p.x0, hess=lambda x: np.eye(3))
    with pytest.raises(TypeError, match="hess"):
        optim.newton(p.fun, p.x0, hess=np.eye(2))
    r = optim.newton(p.fun, p.x0, hess=lambda x: np.full((2, 2), np.nan))
    assert not r.success and "HESSIAN" in r.message


# ---------------------------------------------------------------- check_grad

@pytest.mark.parametrize("make", [P.beale, P.zakharov, P.logistic, P.softmax])
def test_check_grad_accepts_right_gradients(make):
    p = make()
    x = p.x0 + 0.1
    before = x.copy()
    # (every coordinate of the small problems; 100 drawn ones of softmax's 650)
    err = check_grad(lambda z: p.fun(z)[0], x, p.fun(x)[1],
                     num_checks=None if x.size < 100 else 100, rng=1)
    assert err < 1e-5               # (softmax: 7e-6 on its smallest gradient entries)
    assert np.array_equal(x, before)
    assert check_grad(p.fun, x, p.fun, num_checks=5, rng=0) < 1e-5


def test_check_grad_flags_wrong_gradients_and_matches_rel_error():
    p = P.zakharov()
    x = np.array([0.3, -0.2, 0.1, 0.5, -0.4, 0.2])
    g = p.fun(x)[1].copy()
    g[3] *= 1.5
    err = check_grad(p.fun, x, g)
    assert err == pytest.approx(abs(g[3] - g[3] / 1.5) / abs(g[3]), rel=1e-5)
    assert check_grad(lambda z: float(z @ z), np.zeros(3), np.zeros(3)) == 0.0


def test_check_grad_float32_and_refusals():
    x = np.array([0.5, -1.0, 2.0], np.float32)
    err = check_grad(lambda z: float((z.astype(np.float64) ** 2).sum()), x, 2 * x, h=1e-2)
    assert err < 1e-5
    with pytest.raises(TypeError, match="x"):
        check_grad(lambda z: 0.0, [1.0], np.ones(1))
    with pytest.raises(ValueError, match="shape"):
        check_grad(lambda z: 0.0, np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="h must"):
        check_grad(lambda z: 0.0, np.ones(2), np.ones(2), h=0)
    with pytest.raises(ValueError, match="num_checks"):
        check_grad(lambda z: 0.0, np.ones(2), np.ones(2), num_checks=0)
    assert lec6fast.check_grad is check_grad


# ---------------------------------------------------------------- the bench section

def test_bench_section_rows_and_table():
    from lec6fast import cli
    from lec6fast.bench import lbfgs as lb, report
    rows = lb.run(repeat=2, problems=[P.beale(), P.softmax()], use_torch=True)
    ours = {r["problem"]: r for r in rows if r["solver"] == "lec6fast"}
    assert set(ours) == {"beale", "softmax (digits)"}
    assert ours["beale"]["err"] <= 1e-4 and "err" not in ours["softmax (digits)"]
    for r in rows:
        assert r["nit"] > 0 and r["nfev"] >= r["nit"] and 0 < r["solver_s"] <= r["wall_s"]
        if r["solver"] != "lec6fast":
            assert r["ratio"] == r["solver_s"] / ours[r["problem"]]["solver_s"]
    text = "\n".join(report.lbfgs(rows))
    assert "softmax (digits)" in text and "nfev" in text
    assert "lbfgs" in cli.SECTIONS
    assert cli.build_parser().parse_args(["bench", "--sections", "lbfgs"]).sections == ["lbfgs"]

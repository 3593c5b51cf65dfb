"""The test problems of lec6fast.optim.lbfgs and newton: each a fun(x) -> (f, g) in NumPy, a
start, and the known minimizer (None where it has no closed form: the regression problems).

Used by the lbfgs section of `lec6fast bench` (lec6fast/bench/lbfgs.py), by
benchmarks/test_bench_lbfgs.py and by tests/test_lbfgs.py.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    name: str
    fun: object             # x -> (f, g)
    x0: np.ndarray
    xstar: object = None    # the minimizer, or None
    hessp: object = None    # x -> object with @ (Hessian-vector products), where defined
    data: object = None     # the regression problems' (X, labels, reg)


def rosenbrock(n, dtype=np.float64):
    """sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 from (-1.2, 1, -1.2, 1, ...); x* = 1."""
    def fun(x):
        a, b = x[:-1], x[1:]
        t = b - a * a
        u = 1.0 - a
        g = np.zeros_like(x)
        g[:-1] = -400.0 * a * t - 2.0 * u
        g[1:] += 200.0 * t
        return float(100.0 * (t @ t) + u @ u), g
    x0 = np.ones(n, dtype)
    x0[0::2] = -1.2
    return Problem(f"rosenbrock{n}", fun, x0, np.ones(n))


def himmelblau():
    def fun(x):
        a = x[0] * x[0] + x[1] - 11.0
        b = x[0] + x[1] * x[1] - 7.0
        return float(a * a + b * b), np.array([4 * x[0] * a + 2 * b, 2 * a + 4 * x[1] * b])
    return Problem("himmelblau", fun, np.array([0.0, 0.0]), np.array([3.0, 2.0]))


def matyas():
    def fun(x):
        return (float(0.26 * (x @ x) - 0.48 * x[0] * x[1]),
                np.array([0.52 * x[0] - 0.48 * x[1], 0.52 * x[1] - 0.48 * x[0]]))
    return Problem("matyas", fun, np.array([1.0, -0.5]), np.zeros(2))


def zakharov():
    i = np.arange(1.0, 7.0)

    def fun(x):
        s = 0.5 * (i @ x)
        return float(x @ x + s * s + s ** 4), 2 * x + (2 * s + 4 * s ** 3) * 0.5 * i
    return Problem("zakharov6", fun, np.array([600.0, 700, 200, 100, 90, 1000]), np.zeros(6))


def beale():
    def fun(x):
        a, b = x
        t = [1.5 - a + a * b, 2.25 - a + a * b * b, 2.625 - a + a * b ** 3]
        da = [b - 1, b * b - 1, b ** 3 - 1]
        db = [a, 2 * a * b, 3 * a * b * b]
        return (float(sum(v * v for v in t)),
                np.array([sum(2 * v * w for v, w in zip(t, da)),
                          sum(2 * v * w for v, w in zip(t, db))]))
    return Problem("beale", fun, np.array([1.0, 1.0]), np.array([3.0, 0.5]))


def quadratic(n=100, cond=1e6, seed=0):
    """0.5 x'Ax - b'x with A's eigenvalues log-spaced over [1, cond]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (q * np.logspace(0, np.log10(cond), n)) @ q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(n)

    def fun(x):
        ax = A @ x
        return float(0.5 * (x @ ax) - b @ x), ax - b
    return Problem(f"quadratic (cond {cond:.0e})", fun, np.zeros(n), np.linalg.solve(A, b),
                   hessp=lambda x: A)


def _data(dtype, seed=0):
    """scikit-learn's digits (1797 x 64, scaled to [0, 1]) if importable, else synthetic data of
    the same size; with a column of ones (the bias)."""
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        X, y = d.data / 16.0, d.target
    except Exception:
        rng = np.random.default_rng(seed)
        centers = rng.standard_normal((10, 64))
        y = rng.integers(0, 10, 1797)
        X = centers[y] + rng.standard_normal((1797, 64))
    X = np.hstack([X, np.ones((len(X), 1))]).astype(dtype)
    return X, y


def logistic(dtype=np.float64, reg=1e-2):
    """Mean logistic loss of digit >= 5 against < 5, + reg/2 ||w||^2 (w: 65 weights)."""
    X, y = _data(dtype)
    t = np.where(y >= 5, 1.0, -1.0).astype(dtype)
    N = len(X)
    r = dtype(reg)

    def fun(w):
        z = t * (X @ w)
        loss = np.logaddexp(0, -z).mean() + 0.5 * r * (w @ w)
        s = -t / (1 + np.exp(z))            # d loss_i / d (x_i'w)
        return float(loss), (X.T @ s) / dtype(N) + r * w

    def hessp(w):
        z = t * (X @ w)
        p = 1 / (1 + np.exp(-z))
        dd = p * (1 - p) / N

        class H:
            def __matmul__(self, v):
                return X.T @ (dd * (X @ v)) + reg * v
        return H()
    return Problem("logistic (digits)", fun, np.zeros(X.shape[1], dtype), None, hessp,
                   (X, t, reg))


def softmax(dtype=np.float64, reg=1e-2):
    """Mean softmax cross-entropy over 10 digit classes, + reg/2 ||W||^2 (W: 65 x 10)."""
    X, y = _data(dtype)
    N, C = len(X), 10
    Y = np.zeros((N, C), dtype)
    Y[np.arange(N), y] = 1
    r = dtype(reg)

    def probs(W):
        s = X @ W
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return s, e / e.sum(axis=1, keepdims=True)

    def fun(W):
        s, p = probs(W)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        loss = -(Y * logp).sum() / N + 0.5 * r * (W * W).sum()
        return float(loss), (X.T @ (p - Y)) / dtype(N) + r * W

    def hessp(W):
        _, p = probs(W.reshape(X.shape[1], C))

        class H:
            def __matmul__(self, v):
                u = X @ v.reshape(X.shape[1], C)
                ju = p * (u - (p * u).sum(axis=1, keepdims=True))
                return ((X.T @ ju) / N + reg * v.reshape(X.shape[1], C)).reshape(-1)
        return H()
    return Problem("softmax (digits)", fun, np.zeros((X.shape[1], C), dtype), None, hessp,
                   (X, y, reg))


def all_problems():
    return [rosenbrock(2), rosenbrock(5), rosenbrock(100), rosenbrock(1000), himmelblau(),
            matyas(), zakharov(), beale(), quadratic(), logistic(), softmax()]

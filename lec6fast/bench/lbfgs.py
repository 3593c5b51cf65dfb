"""The lbfgs section of `lec6fast bench`: lec6fast.optim.lbfgs against scipy's L-BFGS-B and
torch.optim.LBFGS(line_search_fn="strong_wolfe") on the problems of lec6fast.bench.problems.

Each solver minimizes the same problem from the same start (float64; gtol=1e-5, m=10,
ftol=2.2e-9 for lec6fast and scipy, whose stopping rules are the same; torch with
tolerance_grad=1e-5 and tolerance_change=0, so it stops on the gradient's max-norm too).  The
runs of the solvers alternate (repeat rounds, each running every solver once), so they share
the machine's state; the table gives the medians.  The solver's own time is the wall time minus
the time spent inside the objective (timed by a wrapper around it): on cheap objectives that
overhead is what users wait for.  torch minimizes torch versions of the objectives (autograd for
the gradient) where there are some (Rosenbrock, softmax regression), and the NumPy objective
(on the tensor's memory, its gradient copied into .grad) elsewhere.
"""

import statistics
import time

import numpy as np

from lec6fast import optim
from lec6fast.bench import problems as P

GTOL, FTOL, M = 1e-5, 2.2e-9, 10


class Timed:
    """fun with the seconds spent inside it counted."""

    def __init__(self, fun):
        self.fun, self.seconds = fun, 0.0

    def __call__(self, x):
        t0 = time.perf_counter()
        out = self.fun(x)
        self.seconds += time.perf_counter() - t0
        return out


def run_ours(problem):
    fun = Timed(problem.fun)
    t0 = time.perf_counter()
    r = optim.lbfgs(fun, problem.x0, m=M, gtol=GTOL, ftol=FTOL)
    wall = time.perf_counter() - t0
    return dict(nit=r.nit, nfev=r.nfev, f=r.fun, gnorm=float(np.abs(r.grad).max()),
                wall_s=wall, solver_s=wall - fun.seconds, x=r.x)


def run_scipy(problem):
    try:
        from scipy.optimize import minimize
    except ImportError:
        return None
    fun = Timed(problem.fun)
    shape = problem.x0.shape

    def flat(x):
        f, g = fun(x.reshape(shape))
        return f, g.reshape(-1)
    t0 = time.perf_counter()
    r = minimize(flat, problem.x0.reshape(-1), jac=True, method="L-BFGS-B",
                 options=dict(maxcor=M, gtol=GTOL, ftol=FTOL, maxiter=15000, maxfun=15000))
    wall = time.perf_counter() - t0
    return dict(nit=int(r.nit), nfev=int(r.nfev), f=float(r.fun),
                gnorm=float(np.abs(r.jac).max()), wall_s=wall, solver_s=wall - fun.seconds,
                x=r.x.reshape(shape))


def torch_objective(torch, problem):
    """The problem's objective in torch operations (float64), or None: then torch minimizes
    the NumPy objective, called on the parameter tensor's memory."""
    if problem.name.startswith("rosenbrock"):
        def f(x):
            a, b = x[:-1], x[1:]
            return (100.0 * (b - a * a) ** 2).sum() + ((1.0 - a) ** 2).sum()
        return f
    if problem.name.startswith("softmax"):
        X, y, reg = problem.data
        Xt = torch.from_numpy(np.asarray(X, np.float64))
        yt = torch.from_numpy(np.asarray(y, np.int64))
        ce = torch.nn.functional.cross_entropy

        def f(W):
            return ce(Xt @ W, yt) + 0.5 * reg * (W * W).sum()
        return f
    return None


def run_torch(problem):
    try:
        import torch
    except Exception:
        return None
    f = torch_objective(torch, problem)
    p = torch.tensor(np.asarray(problem.x0, np.float64), requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1, max_iter=15000, max_eval=15000, tolerance_grad=GTOL,
                            tolerance_change=0.0, history_size=M, line_search_fn="strong_wolfe")
    inside = [0.0]

    def closure():
        t0 = time.perf_counter()
        if f is None:       # the NumPy objective on the tensor's memory; its gradient copied in
            value, g = problem.fun(p.detach().numpy())
            p.grad = torch.from_numpy(np.array(g, np.float64))
            loss = value
        else:
            opt.zero_grad()
            loss = f(p)
            loss.backward()
        inside[0] += time.perf_counter() - t0
        return loss
    t0 = time.perf_counter()
    opt.step(closure)
    wall = time.perf_counter() - t0
    state = opt.state[opt._params[0]]
    value, g = problem.fun(p.detach().numpy().copy())
    return dict(nit=int(state["n_iter"]), nfev=int(state["func_evals"]), f=float(value),
                gnorm=float(np.abs(g).max()), wall_s=wall, solver_s=wall - inside[0],
                x=p.detach().numpy().copy())


SOLVERS = {"lec6fast": run_ours, "scipy L-BFGS-B": run_scipy, "torch LBFGS": run_torch}


def run(*, repeat=5, use_torch=True, problems=None, progress=None):
    """Rows {problem, solver, nit, nfev, f, gnorm, wall_s, solver_s, [err], [ratio]}: times are
    medians over `repeat` interleaved rounds (each round runs every solver once); err is
    max|x - x*| where x* is known; ratio is the solver's own time over lec6fast's."""
    note = progress or (lambda what: None)
    rows = []
    for problem in problems or P.all_problems():
        names = [s for s in SOLVERS if use_torch or s != "torch LBFGS"]
        note(f"lbfgs: {problem.name}: " + ", ".join(names))
        runs = {s: [] for s in names}
        for _ in range(repeat):
            for s in names:
                out = SOLVERS[s](problem)
                if out is not None:
                    runs[s].append(out)
        ours = statistics.median(r["solver_s"] for r in runs["lec6fast"])
        for s in names:
            if not runs[s]:
                continue
            last = runs[s][-1]
            row = dict(problem=problem.name, solver=s, nit=last["nit"], nfev=last["nfev"],
                       f=last["f"], gnorm=last["gnorm"],
                       wall_s=statistics.median(r["wall_s"] for r in runs[s]),
                       solver_s=statistics.median(r["solver_s"] for r in runs[s]))
            if problem.xstar is not None:
                row["err"] = float(np.abs(last["x"] - problem.xstar).max())
            if s != "lec6fast":
                row["ratio"] = row["solver_s"] / ours
            rows.append(row)
    return rows


if __name__ == "__main__":
    from lec6fast.bench import report
    print("\n".join(report.lbfgs(run(progress=print), markdown=True)))

"""The lbfgs section (lec6fast/bench/lbfgs.py): whole L-BFGS solves of Rosenbrock-1000 and the
softmax regression (float64, gtol=1e-5, m=10) by lec6fast.optim.lbfgs, scipy's L-BFGS-B and
torch.optim.LBFGS(line_search_fn="strong_wolfe"), each when it imports.

Each round is one solve from the start; extra_info holds the iterations, evaluations, final f,
the gradient's max-norm and the solver's own time (the wall time minus the time inside the
objective).  `lec6fast bench --sections lbfgs` runs the solvers interleaved, which gives the
steadier ratios.
"""

import importlib.util

import pytest

from lec6fast.bench import lbfgs as lb
from lec6fast.bench import problems as P

PROBLEMS = {"rosenbrock1000": lambda: P.rosenbrock(1000), "softmax": P.softmax}


@pytest.mark.parametrize("solver", list(lb.SOLVERS))
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_lbfgs_solve(benchmark, problem, solver):
    benchmark.group = f"lbfgs: {problem}, a whole solve (float64, gtol=1e-5, m=10)"
    p = PROBLEMS[problem]()
    module = {"scipy L-BFGS-B": "scipy", "torch LBFGS": "torch"}.get(solver)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    out = {}
    benchmark.pedantic(lambda: out.update(lb.SOLVERS[solver](p)), rounds=3, iterations=1)
    benchmark.extra_info.update({k: v for k, v in out.items() if k != "x"})
    assert out["nit"] > 0 and out["f"] < p.fun(p.x0)[0]

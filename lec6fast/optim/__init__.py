"""Stateful optimizers over a whole model: one fused pass per step.

    opt = optim.Adam(params, lr=1e-3)     # params: dict name -> array, list of arrays, or groups
    opt.step(grads)                       # grads mirrors params; every array updated in place

Classes (hyperparameters named as in the kernels): SGD(params, lr), Momentum(params, lr, *,
mu=0.9), Nesterov(params, lr, *, mu=0.9), AdaGrad(params, lr, *, eps=1e-7), RMSProp(params, lr,
*, decay_rate=0.99, eps=1e-7), Adam(params, lr=1e-3, *, beta1=0.9, beta2=0.999, eps=1e-7).
Every class also takes:

    weight_decay=lam          the L2 gradient lam*x added to dx in the same pass
    decoupled_weight_decay    True: x *= 1 - lr*lam before the update instead (AdamW, torch's
                              formula)
    clip_norm=c               scale every gradient by min(1, c / (norm + 1e-6)), norm the global
                              L2 norm of the gradients as given (before weight decay), summed in
                              double in a fixed blocked order (the same bits on any thread count);
                              a non-finite norm raises FloatingPointError before any write;
                              opt.last_grad_norm reports it
    ema_decay=d               keep avg = d*avg + (1 - d)*x of every parameter, from x after this
                              step's update, in the same pass (initialised to the parameters);
                              opt.ema_params
    convention="lecture"      or "torch": Momentum/Nesterov in torch.optim.SGD's buffer form and
                              torch's defaults (eps: Adam 1e-8, RMSProp 1e-8, AdaGrad 1e-10)

lr (and mu) take a float or a schedule (lec6fast.schedules, or any callable t -> value with t
the 1-based step about to be taken).  A step's order: every hyperparameter (schedules called),
then the gradients collected, then every array checked, then one call that releases the GIL
once and splits the whole model by bytes across the threads; a refused step changes nothing.

Full-batch second-order methods (their docstrings give the equations): lbfgs(fun, x0, ...) and
newton(fun, x0, *, hess, ...) minimize fun(x) -> (f, g) and return an OptimizeResult;
LBFGS(params, history=10).step(closure) runs L-BFGS over a model's parameters.

opt.t, opt.lr, opt.param_groups (hyperparameters editable between steps), opt.ema_params,
opt.last_grad_norm, opt.state_dict() / load_state_dict(sd), opt.save(path) / load(path).
"""

from ._optimizer import Optimizer, SGD, Momentum, Nesterov, AdaGrad, RMSProp, Adam
from ._lbfgs import lbfgs, LBFGS, OptimizeResult
from ._newton import newton

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam",
           "lbfgs", "LBFGS", "newton", "OptimizeResult"]

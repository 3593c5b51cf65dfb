"""torch.optim optimizers whose step is lec6fast's fused kernel (lec6fast._updates.ModelStep).

Each class subclasses its torch.optim twin, so the constructor (signature, defaults, checks),
param_groups, state_dict()/load_state_dict(), hooks, zero_grad and the schedulers are torch's
own; only step() differs: every parameter with a gradient, of every group, is updated in place
in one fused call per update rule (the GIL released, chunked over lec6fast's thread pool), on
the tensors' own memory (a CPU tensor's .numpy() shares it).  The state has torch's keys and
layout (step as a 0-d float tensor, exp_avg, exp_avg_sq, momentum_buffer, sum, square_avg,
grad_avg, max_exp_avg_sq), so checkpoints move between the two implementations both ways.

The arithmetic is torch's for-loop CPU implementation's (its default on CPU), operation for
operation in the parameters' dtype; the exact equations are in each class's docstring and in
src/_updates.pyx.  Supported: CPU, dense, contiguous float32/float64 parameters and gradients.
Anything else is refused with ValueError (the tensors) or NotImplementedError (the options)
naming the parameter, never computed differently.  foreach and fused are accepted and ignored
(the step is always lec6fast's fused kernel).

A step whose parameters, gradients and state are laid out as at the last step reuses what that
step checked and bound (_Fused._cached); anything else takes the full checks again.
"""

import weakref
from itertools import compress, repeat
from operator import attrgetter, is_, is_not

import numpy as np
import torch

from .. import _dispatch

_updates = _dispatch.kernels("_updates", _dispatch.level)
_COL = {name: i for i, name in enumerate(_updates.HYPER_COLUMNS)}
_ROW = tuple(1.0 if c == "shrink" else 0.0 for c in _updates.HYPER_COLUMNS)   # no-ops
_DTYPES = (torch.float32, torch.float64)


def _scalar_dtype():
    """The dtype torch gives a new `step` (its _get_scalar_dtype() without fused)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _number(cls, where, value):
    """A hyperparameter as a float (a one-element tensor is read), TypeError otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{cls}: {where} must be a number or a one-element tensor, got a "
                             f"tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{cls}: {where} must be a real number, got {value!r}") from None
    return float(value)


def _take(row, column, cls, g, group, key):
    """row[column] = param_groups[g][key] as a float (see _number); returns it."""
    row[_COL[column]] = value = _number(cls, f"param_groups[{g}][{key!r}]", group[key])
    return value


# The step's cache (see _Fused._cached) reads tensors with these C-level calls only: the tensors
# are of exact torch types (checked first), so no Python of a subclass runs between its checks
# and the kernel.
_GRAD, _SHAPE, _DTYPE = attrgetter("grad"), attrgetter("shape"), attrgetter("dtype")
_LAYOUT, _IS_CPU = attrgetter("layout"), attrgetter("is_cpu")
# what a parameter's kept numpy view depends on (its type is checked with its group's)
_VIEWED = (_LAYOUT, torch.Tensor.data_ptr, _SHAPE, torch.Tensor.stride, _DTYPE, _IS_CPU)
_BOUND = (type, torch.Tensor.data_ptr)      # a state tensor bound to a plan (as _plan checks)
_COUNTER = (type, torch.Tensor.data_ptr, _SHAPE, _DTYPE)    # a step counter's kept view
_EXACT = (torch.Tensor, torch.nn.Parameter)


def _snapshot(ts, reads):
    """What _unchanged() compares: the tensors themselves and what each read gives now."""
    return ts, reads, [list(map(f, ts)) for f in reads]


def _unchanged(ts, snapshot):
    """Whether ts are the very tensors of the snapshot and read as they did then."""
    was, reads, values = snapshot
    return (len(ts) == len(was) and all(map(is_, ts, was))
            and all(list(map(f, ts)) == v for f, v in zip(reads, values)))


def _grad_views(grads, shapes, dtypes):
    """The gradients' numpy views if each is what step()'s checks accept (a dense, contiguous
    CPU torch.Tensor of its parameter's shape and dtype), else None."""
    if (all(map(is_, map(type, grads), repeat(torch.Tensor)))
            and all(map(is_, map(_LAYOUT, grads), repeat(torch.strided)))
            and all(map(_IS_CPU, grads)) and list(map(_SHAPE, grads)) == shapes
            and list(map(_DTYPE, grads)) == dtypes and all(map(torch.Tensor.is_contiguous, grads))):
        if any(map(attrgetter("requires_grad"), grads)):        # (backward(create_graph=True))
            grads = map(torch.Tensor.detach, grads)
        return list(map(torch.Tensor.numpy, grads))
    return None


def _own_counters(steps, written):
    """Whether the step counters can be read and written through numpy views of them: 0-d CPU
    float tensors, each alone in its memory (not a view of another counter or of a tensor the
    kernel writes, so writing t + 1 after the kernel is what torch's += 1 does)."""
    if not all(type(s) is torch.Tensor and s.dim() == 0 and s.is_cpu and s.dtype in _DTYPES
               and s.untyped_storage().nbytes() == s.element_size() for s in steps):
        return False
    ptrs = set(map(torch.Tensor.data_ptr, steps))
    return len(ptrs) == len(steps) and ptrs.isdisjoint(map(torch.Tensor.data_ptr, written))


def _values(steps):
    """The numbers in a list of 0-d step tensors (or numbers), in one read where they allow."""
    try:
        return torch.stack(steps).tolist()
    except (TypeError, RuntimeError):
        return [float(s) for s in steps]


class _Fused:
    """The step of every lec6fast.torch optimizer (a mixin before the torch.optim class)."""

    _counts_steps = True        # the state holds torch's `step` counter (SGD's does not)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # GradScaler: unscale the gradients first (torch's default path), never hand us
        # grad_scale/found_inf (the fused torch optimizers' shortcut).
        self._step_supports_amp_scaling = False
        self._plans = {}
        self._fast = None           # what the last checked step relied on (see _cached)
        self._owned = {}            # id -> weakref of the state tensors this optimizer made
        for g, group in enumerate(self.param_groups):
            self._check_options(g, group)

    # ------------------------------------------------------------- checks

    def _name(self, g, i, p):
        names = self.param_groups[g].get("param_names") if g < len(self.param_groups) else None
        name = names[i] if names and i < len(names) else f"param_groups[{g}]['params'][{i}]"
        return f"{name} (shape {tuple(p.shape)}, dtype {str(p.dtype).replace('torch.', '')})"

    def _check_options(self, g, group):
        cls = type(self).__name__
        for flag in ("capturable", "differentiable"):
            if group.get(flag):
                raise NotImplementedError(
                    f"{cls}: param_groups[{g}] sets {flag}=True, which lec6fast.torch does not "
                    f"support (its step runs outside autograd and CUDA graphs); use "
                    f"{self._twin().__module__}.{self._twin().__name__} for it")

    def _twin(self):
        """The torch.optim class this one stands in for."""
        return next(c for c in type(self).__mro__ if c.__module__.startswith("torch.optim"))

    def _check_tensor(self, cls, what, t, g, i, p):
        """A parameter or gradient the kernel can update in place, or ValueError naming
        param_groups[g]['params'][i] (p)."""
        if (t.layout == torch.strided and t.device.type == "cpu" and t.dtype in _DTYPES
                and t.is_contiguous()):
            return
        p_name = self._name(g, i, p)
        if t.layout != torch.strided:
            raise ValueError(f"{cls}: {what} of {p_name} is {t.layout} (a sparse tensor); "
                             f"lec6fast.torch supports dense CPU tensors only")
        if t.device.type != "cpu":
            raise ValueError(f"{cls}: {what} of {p_name} is on {t.device}; lec6fast.torch runs on "
                             f"CPU tensors only (use torch.optim for other devices)")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{cls}: {what} of {p_name} has dtype {t.dtype}; lec6fast.torch "
                             f"supports torch.float32 and torch.float64 only")
        if not t.is_contiguous():
            raise ValueError(f"{cls}: {what} of {p_name} is not contiguous (strides "
                             f"{t.stride()}); lec6fast.torch updates the tensor's memory in "
                             f"place and never copies: make the parameter contiguous first")

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        g = len(self.param_groups) - 1
        cls = type(self).__name__
        for i, p in enumerate(self.param_groups[g]["params"]):
            self._check_tensor(cls, "the parameter", p, g, i, p)
        if hasattr(self, "_plans"):     # (torch's __init__ adds the first groups before ours)
            self._check_options(g, self.param_groups[g])

    # ------------------------------------------------------------- the step

    @torch.no_grad()
    def step(self, closure=None):
        """One step of every parameter with a gradient; returns closure()'s loss (or None)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        cls = type(self).__name__
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            raise NotImplementedError(f"{cls}: grad_scale/found_inf are not supported; let "
                                      f"GradScaler unscale the gradients (its default path)")
        work = self._cached(cls)
        if work is None:
            work = self._checked(cls)
        for plan, params, grads, table, steps, views, dicts, tensors in work.values():
            col = table[:, _COL["t"]]
            if steps:               # torch's step counters, + 1 (stored after the update)
                col[:] = _values(steps) if views is None else np.array(views)
                col += 1
            plan.step(params, grads, table, 0.0, -1.0)
            if views is not None:   # (t + 1 in double, rounded once to the counter's dtype)
                list(map(np.ndarray.__setitem__, views, repeat(()), col.tolist()))
                torch.autograd.graph.increment_version(steps)
            elif steps and all(type(t) is torch.Tensor for t in steps):
                torch._foreach_add_(steps, 1.0)
            else:
                for st in dicts:
                    if "step" in st:
                        st["step"] += 1
            # The kernel wrote through .numpy(): tell autograd, as an in-place op would.
            torch.autograd.graph.increment_version(tensors)
        return loss

    def _base(self, cls, g, group):
        """The row of param_groups[g]'s hyperparameters (before the per-parameter columns)."""
        base = list(_ROW)
        self._row(cls, g, group, base)
        return base

    def _checked(self, cls):
        """The step's work, {rule: (plan, params, grads, table, steps, their views, state
        dicts, param tensors)}, every tensor checked; remembers what it relied on for _cached()."""
        self._fast = None
        # Everything checked and every row computed first; the state's `step` counters are
        # advanced only once their parameters' update has run (a refusal changes nothing).
        work = {}   # rule -> (params, grads, states, rows, param tensors, state keys, state dicts)
        for g, group in enumerate(self.param_groups):
            self._check_options(g, group)
            rule, keys = self._layout(group)
            base = None             # the group's row, converted once
            for i, p in enumerate(group["params"]):
                grad = p.grad
                if grad is None:
                    continue
                if base is None:
                    base = self._base(cls, g, group)
                self._check_tensor(cls, "the parameter", p, g, i, p)
                self._check_tensor(cls, "the gradient", grad, g, i, p)
                if grad.dtype != p.dtype or grad.shape != p.shape:
                    raise ValueError(f"{cls}: the gradient of {self._name(g, i, p)} has dtype "
                                     f"{grad.dtype} and shape {tuple(grad.shape)}; it must match "
                                     f"the parameter")
                state = self.state[p] if keys else {}     # (SGD without momentum keeps none)
                first = self._init_state(p, group, state)
                if self._counts_steps and "step" not in state:
                    raise ValueError(f"{cls}: the state of {self._name(g, i, p)} has no 'step' "
                                     f"(a state dict from another optimizer?)")
                row = base
                if first or self._counts_steps:
                    row = list(base)
                    row[_COL["first"]] = 1.0 if first else 0.0
                w = work.setdefault(rule, ([], [], [], [], [], [], []))
                w[0].append(p.detach().numpy())
                w[1].append(grad.detach().numpy())
                w[2].append([state.get(k) for k in keys])
                w[3].append(row)
                w[4].append(p)
                w[5].append(keys)
                w[6].append(state)
        out = {}
        for rule, (params, grads, states, rows, tensors, keys, dicts) in work.items():
            plan = self._plan(rule, tensors, params, states, keys)
            steps = [st["step"] for st in dicts] if self._counts_steps else []
            out[rule] = (plan, params, grads, np.array(rows, dtype=np.float64), steps, None,
                         dicts, tensors)
        self._fast = self._remember(out)
        return out

    def _remember(self, work):
        """What _cached() checks at the next steps, read after the last Python the step runs
        before its kernel (a hyperparameter's __float__ in _checked() might have replaced a
        tensor already viewed); None where a read could run Python (a subclass's) or the step
        counters are not tensors (torch's fallback, stepped through the dicts)."""
        groups, active, layouts = [], {}, {}
        for group in self.param_groups:
            params = list(group["params"])
            if not all(type(p) in _EXACT for p in params):
                return None
            layout = self._layout(group)
            mask = list(map(is_not, map(_GRAD, params), repeat(None)))
            groups.append((params, list(map(type, params)), layout, mask))
            if any(mask):
                active.setdefault(layout[0], []).extend(compress(params, mask))
                layouts[layout[0]] = layout
        if list(active) != list(work):
            return None
        rules = {}
        for rule, (plan, _, _, _, steps, _, dicts, tensors) in work.items():
            if len(tensors) != len(active[rule]) or not all(map(is_, tensors, active[rule])):
                return None
            keys = layouts[rule][1]
            bound = [list(map(dict.get, dicts, repeat(k))) for k in keys]
            if not all(type(t) is torch.Tensor for ts in bound for t in ts):
                return None
            state = None
            if keys:
                state = (_snapshot(dicts, ()),
                         [(k, _snapshot(ts, _BOUND)) for k, ts in zip(keys, bound)])
            if steps and not _own_counters(steps, tensors + [t for ts in bound for t in ts]):
                return None
            rules[rule] = (plan, [p.detach().numpy() for p in tensors], _snapshot(tensors, _VIEWED),
                           state, _snapshot(steps, _COUNTER),
                           [s.numpy() for s in steps] if steps else None)
        return groups, rules

    def _cached(self, cls):
        """The step's work as _checked() would make it, from what _remember() kept, or None
        where anything it relied on differs: the groups (their parameters, layouts and which
        parameters have a gradient), each parameter's memory and layout (its numpy view is
        kept), the state dicts, state tensors and step counters (by identity, and the state
        tensors' addresses the plan is bound to).  The gradients are checked and viewed anew."""
        if self._fast is None:
            return None
        groups, rules = self._fast
        if len(self.param_groups) != len(groups):
            return None
        try:    # the hyperparameters first: the only reads that may run Python (__float__)
            bases = [self._base(cls, g, group) if any(mask) else None
                     for g, (group, (_, _, _, mask)) in enumerate(zip(self.param_groups, groups))]
            layouts = [self._layout(group) for group in self.param_groups]
            lists = [group["params"] for group in self.param_groups]
        except Exception:           # (_checked() raises it, after what it checks first)
            return None
        found = {}                  # rule -> (gradients, group rows, parameters per row)
        for group, base, layout, ps, (params, types, was, mask) in zip(
                self.param_groups, bases, layouts, lists, groups):
            if (group.get("capturable") or group.get("differentiable") or layout != was
                    or type(ps) is not list or len(ps) != len(params)
                    or not all(map(is_, ps, params)) or list(map(type, ps)) != types):
                return None
            grads = list(map(_GRAD, ps))
            if list(map(is_not, grads, repeat(None))) != mask:
                return None
            if base is not None:
                f = found.setdefault(layout[0], ([], [], []))
                f[0].extend(compress(grads, mask))
                f[1].append(base)
                f[2].append(sum(mask))
        work = {}
        for rule, (grads, bases, counts) in found.items():
            plan, params, viewed, state, stepped, views = rules[rule]
            tensors, _, (_, _, shapes, _, dtypes, _) = viewed
            if not _unchanged(tensors, viewed):
                return None
            grads = _grad_views(grads, shapes, dtypes)
            if grads is None:
                return None
            dicts, steps = [], []
            if state is not None:
                dicts = list(map(self.state.get, tensors))
                if not (_unchanged(dicts, state[0]) and all(
                        _unchanged(list(map(dict.get, dicts, repeat(k))), bound)
                        for k, bound in state[1])):
                    return None
            if self._counts_steps:
                steps = list(map(dict.get, dicts, repeat("step")))
                if not _unchanged(steps, stepped):
                    return None
            table = np.repeat(np.array(bases, dtype=np.float64), counts, axis=0)
            work[rule] = (plan, params, grads, table, steps, views, dicts, tensors)
        return work

    def _state_tensor(self, cls, p, t, key):
        """t, the state[key] of p, or ValueError."""
        if (not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type != "cpu"
                or t.dtype != p.dtype or t.shape != p.shape):
            name = self._where(p)
            what = (f"a {t.dtype} tensor of shape {tuple(t.shape)} on {t.device}"
                    if isinstance(t, torch.Tensor) else repr(t))
            raise ValueError(f"{cls}: state[{key!r}] of {name} is {what}; it must be a dense CPU "
                             f"tensor of the parameter's shape and dtype")
        return t

    def _plan(self, rule, tensors, params, states, keys):
        """The ModelStep of these parameters, bound to their state tensors (a copy of each in
        memory of its own whenever the state's tensors changed since: a loaded state dict, or
        tensors set by hand, which might share memory with each other or a parameter)."""
        key = (rule,) + tuple(map(id, tensors))
        plan = self._plans.get(key)
        flat = [t for ts in states for t in ts]
        # the very tensors bound last time, at the same addresses (a resize_ or set_ moves them)
        if plan is not None and len(plan[1]) == len(flat) and all(map(
                lambda a, b, ptr: a is b and a.data_ptr() == ptr, plan[1], flat, plan[2])):
            return plan[0]
        cls = type(self).__name__
        for p, ts, ks in zip(tensors, states, keys):
            for k, t in zip(ks, ts):
                self._state_tensor(cls, p, t, k)
        fresh = []
        for p, ts, ks in zip(tensors, states, keys):
            mine = [t if self._is_owned(t) else self._own(t.clone(memory_format=torch.contiguous_format))
                    for t in ts]
            fresh.append(mine)
            for k, t in zip(ks, mine):
                self.state[p][k] = t
        names = [self._where(p) for p in tensors]
        step = _updates.ModelStep(rule, names, [f"the gradient of {n}" for n in names], params,
                                  type(self).__name__)
        step.bind([[t.numpy() for t in ts] for ts in fresh], [None] * len(params), [])
        bound = [t for ts in fresh for t in ts]
        self._plans[key] = (step, bound, [t.data_ptr() for t in bound])
        return step

    def _where(self, p):
        """p's name (see _name), found in the groups: for messages only."""
        return next(self._name(g, i, p) for g, group in enumerate(self.param_groups)
                    for i, q in enumerate(group["params"]) if q is p)

    def _own(self, t):
        self._owned[id(t)] = weakref.ref(t)
        return t

    def _is_owned(self, t):
        r = self._owned.get(id(t))
        return r is not None and r() is t

    def __setstate__(self, state):
        super().__setstate__(state)         # (unpickling or copy.deepcopy: what torch keeps)
        self._step_supports_amp_scaling = False
        self._plans = {}
        self._fast = None
        self._owned = {}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._plans.clear()         # the state tensors are new: copy and bind at the next step
        self._fast = None

    def _init_state(self, p, group, state):
        """torch's lazy state of a parameter's first step (zeros); whether it was made."""
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
            for k in self._layout(group)[1]:
                state[k] = self._zeros(p)
            return True
        return False

    def _zeros(self, p):
        return self._own(torch.zeros_like(p, memory_format=torch.contiguous_format))

    @staticmethod
    def _common(cls, g, group, row):
        """lr, L2 weight decay and maximize, as every torch.optim rule takes them."""
        lr = _take(row, "lr", cls, g, group, "lr")
        wd = _number(cls, f"param_groups[{g}]['weight_decay']", group["weight_decay"])
        row[_COL["maximize"]] = 1.0 if group.get("maximize") else 0.0
        return lr, wd


class SGD(_Fused, torch.optim.SGD):
    """torch.optim.SGD on lec6fast's fused kernel (same signature, defaults and state).

        g = -dx if maximize else dx;  g = g + weight_decay*x
        momentum == 0:  x = x + (-lr)*g
        else:  b = g on the first step, else b = b*momentum + (1 - dampening)*g   (momentum_buffer)
               x = x + (-lr)*(g + momentum*b) if nesterov else x + (-lr)*b
    """

    _counts_steps = False

    def _layout(self, group):
        if group["momentum"] == 0:
            return "sgd_torch", ()
        return "sgd_torch_momentum", ("momentum_buffer",)

    def _init_state(self, p, group, state):
        if group["momentum"] != 0 and state.get("momentum_buffer") is None:
            state["momentum_buffer"] = self._zeros(p)
            return True
        return False

    def _row(self, cls, g, group, row):
        lr, wd = self._common(cls, g, group, row)
        row[_COL["l2"]] = wd
        _take(row, "mu", cls, g, group, "momentum")
        _take(row, "dampening", cls, g, group, "dampening")
        row[_COL["beta1"]] = 1.0 if group["nesterov"] else 0.0      # the kernel's nesterov flag


class Adam(_Fused, torch.optim.Adam):
    """torch.optim.Adam on lec6fast's fused kernel (same signature, defaults and state; t is the
    parameter's state['step'] after its increment):

        g = -dx if maximize else dx
        decoupled_weight_decay:  x = x*(1 - lr*weight_decay),  else  g = g + weight_decay*x
        m = lerp(m, g, 1 - beta1)           (m + w*(g - m) for w < 0.5, else g - (g - m)*(1 - w))
        v = v*beta2 + ((1 - beta2)*g)*g
        amsgrad:  vmax = max(vmax, v), used for v below
        x = x + (-(lr/(1 - beta1**t))) * (m / (sqrt(v)/(1 - beta2**t)**0.5 + eps))
    """

    _KEYS = ("exp_avg", "exp_avg_sq")

    def _layout(self, group):
        if group["amsgrad"]:
            return "adam_torch_amsgrad", self._KEYS + ("max_exp_avg_sq",)
        return "adam_torch", self._KEYS

    def _row(self, cls, g, group, row):
        lr, wd = self._common(cls, g, group, row)
        beta1, beta2 = group["betas"]
        row[_COL["beta1"]] = _number(cls, f"param_groups[{g}]['betas'][0]", beta1)
        row[_COL["beta2"]] = _number(cls, f"param_groups[{g}]['betas'][1]", beta2)
        _take(row, "eps", cls, g, group, "eps")
        if group.get("decoupled_weight_decay"):
            row[_COL["shrink"]] = 1.0 - lr * wd
        else:
            row[_COL["l2"]] = wd


class AdamW(Adam, torch.optim.AdamW):
    """torch.optim.AdamW on lec6fast's fused kernel: Adam with decoupled_weight_decay=True
    (x = x*(1 - lr*weight_decay) first; weight_decay defaults to 1e-2)."""


class Adagrad(_Fused, torch.optim.Adagrad):
    """torch.optim.Adagrad on lec6fast's fused kernel (same signature, defaults and state; t is
    the parameter's state['step'] after its increment):

        g = -dx if maximize else dx;  g = g + weight_decay*x
        sum = sum + g*g                     (sum starts at initial_accumulator_value)
        x = x + (-(lr/(1 + (t - 1)*lr_decay))) * (g / (sqrt(sum) + eps))
    """

    def _layout(self, group):
        return "adagrad_torch", ("sum",)

    def _init_state(self, p, group, state):
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
            state["sum"] = self._own(torch.full_like(p, self.defaults["initial_accumulator_value"],
                                                     memory_format=torch.contiguous_format))
            return True
        return False

    def _row(self, cls, g, group, row):
        lr, wd = self._common(cls, g, group, row)
        row[_COL["l2"]] = wd
        _take(row, "eps", cls, g, group, "eps")
        _take(row, "decay", cls, g, group, "lr_decay")


class RMSprop(_Fused, torch.optim.RMSprop):
    """torch.optim.RMSprop on lec6fast's fused kernel (same signature, defaults and state):

        g = -dx if maximize else dx;  g = g + weight_decay*x
        square_avg = square_avg*alpha + ((1 - alpha)*g)*g
        centered:  grad_avg = lerp(grad_avg, g, 1 - alpha);  d = sqrt(square_avg - grad_avg**2) + eps
        else:      d = sqrt(square_avg) + eps
        momentum > 0:  b = b*momentum + g/d;  x = x + (-lr)*b     (momentum_buffer)
        else:          x = x + (-lr)*(g/d)
    """

    def _layout(self, group):
        keys = ("square_avg",) + (("grad_avg",) if group["centered"] else ())
        if group["momentum"] > 0:
            keys += ("momentum_buffer",)
        rule = "rmsprop_torch" + ("_centered" if group["centered"] else "")
        return rule + ("_momentum" if group["momentum"] > 0 else ""), keys

    def _row(self, cls, g, group, row):
        lr, wd = self._common(cls, g, group, row)
        row[_COL["l2"]] = wd
        _take(row, "eps", cls, g, group, "eps")
        _take(row, "decay", cls, g, group, "alpha")
        _take(row, "mu", cls, g, group, "momentum")

"""The optimizers of lec6fast.optim: the state, schedules, averaging, clipping and resume of a
whole model, around one fused Cython step (lec6fast._updates.ModelStep)."""

import contextlib
import math
import operator
import threading

import numpy as np

from .. import _dispatch
from .._rules import CLIP_NORM, EMA_DECAY, GROUP_HYPERS, OPTIMIZERS
from ._structure import Structure
from . import _checkpoint

_updates = _dispatch.kernels("_updates", _dispatch.level)
COLUMNS = _updates.HYPER_COLUMNS        # lr, mu, eps, decay, beta1, beta2, l2, shrink, ema, ...(0)
SCHEDULABLE = ("lr", "mu")
_PLAIN = frozenset((float, int, bool))  # immutable, and converted without user code
CONVENTIONS = ("lecture", "torch")
ALIGN = 64                              # bytes: each state array starts on a cache line


def _read_only_view(a, buffers):
    """a (a view into one of buffers) through a read-only memoryview of that buffer."""
    for buf in buffers.values():
        start = a.ctypes.data - buf.ctypes.data
        if buf.size and 0 <= start < buf.size:
            ro = np.frombuffer(memoryview(buf).toreadonly(), dtype=a.dtype,
                               count=a.size, offset=start)
            return ro.reshape(a.shape)
    return np.frombuffer(memoryview(b"").toreadonly(), dtype=a.dtype).reshape(a.shape)


class Optimizer:
    """Base of the optimizers: see lec6fast.optim for the contract."""

    rule = None                         # the lec6fast._rules.Rule row, set by each subclass

    def __init__(self, params, *, convention="lecture", weight_decay=0.0,
                 decoupled_weight_decay=False, clip_norm=None, ema_decay=None, **hypers):
        cls = type(self).__name__
        if convention not in CONVENTIONS:
            raise ValueError(f"{cls}: convention must be 'lecture' or 'torch', got {convention!r}")
        self.convention = convention
        rule = self.rule
        self._kernel_rule = (rule.name + "_torch" if convention == "torch"
                             and rule.name in ("momentum", "nesterov") else rule.name)
        defaults = rule.defaults(convention)
        for h in rule.hypers:
            if hypers.get(h.name) is None:
                if h.name not in defaults:
                    raise TypeError(f"{cls}: missing the hyperparameter {h.name!r}")
                hypers[h.name] = defaults[h.name]
        self.defaults = dict(hypers, weight_decay=weight_decay,
                             decoupled_weight_decay=decoupled_weight_decay)
        self._clip_norm = None if clip_norm is None else _updates._real(
            cls, "clip_norm", clip_norm, CLIP_NORM.range)
        self._ema_decay = None if ema_decay is None else _updates._real(
            cls, "ema_decay", ema_decay, EMA_DECAY.range)

        self._structure = s = Structure(params)
        self._params = list(s.arrays)
        allowed = set(self.defaults)
        self.param_groups = []
        for (kind, keys, overrides), sl in zip(s.groups, s.slices):
            unknown = sorted(set(overrides) - allowed)
            if unknown:
                where = ("clip_norm and ema_decay apply to the whole step; give them to the "
                         "optimizer" if set(unknown) & {"clip_norm", "ema_decay"}
                         else f"{cls} takes {', '.join(sorted(allowed))}")
                raise ValueError(f"{cls}: a parameter group sets {unknown[0]!r}; {where}")
            group = dict(self.defaults)
            group.update(overrides)
            group["params"] = tuple(self._params[sl])
            self.param_groups.append(group)
        self._ranges = {h.name: h.range for h in rule.hypers + GROUP_HYPERS}

        self._plan = _updates.ModelStep(self._kernel_rule, s.names, s.gnames, self._params, cls)
        self._shapes, self._dtypes = self._plan.shapes, self._plan.dtypes
        self._state, self._ema, self._buffers = self._allocate()
        self._plan.bind(self._state, self._ema, list(self._buffers.values()))
        # What ema_params hands out: views of a read-only memoryview of the buffer, which numpy
        # will not make writeable again (a view of the buffer itself it would).
        self._ema_read_only = [None if a is None else _read_only_view(a, self._buffers)
                               for a in self._ema]
        self._t = 0
        self._busy = threading.Lock()
        self._held = [g["params"] for g in self.param_groups]       # the tuples we made
        self._keys = sorted(self.defaults)
        self._get_values = operator.itemgetter(*self._keys)
        self._cached_key = self._cached_table = None
        self._clip_arg = -1.0 if self._clip_norm is None else self._clip_norm
        self.last_grad_norm = None
        self._hyper_table(1)            # every hyperparameter checked now, not at the first step

    @property
    def clip_norm(self):
        """The global-norm bound of every step's gradients, or None (set when made)."""
        return self._clip_norm

    @property
    def ema_decay(self):
        """The running average's decay, or None (set when made: the averages' memory is
        allocated with the optimizer)."""
        return self._ema_decay

    # ---------------------------------------------------------------- state

    def _allocate(self):
        """One zeroed buffer per dtype holding every state array and average; views into it."""
        nstate = len(self.rule.state)
        per_param = nstate + (self.ema_decay is not None)
        offsets, sizes = [], {"float32": 0, "float64": 0}
        for shape, dtype in zip(self._shapes, self._dtypes):
            nbytes = math.prod(shape) * np.dtype(dtype).itemsize
            step = -(-nbytes // ALIGN) * ALIGN
            mine = []
            for _ in range(per_param):
                mine.append(sizes[dtype])
                sizes[dtype] += step
            offsets.append(mine)
        buffers = {}
        for dtype, nbytes in sizes.items():
            raw = np.zeros(nbytes + ALIGN, dtype=np.uint8)
            start = -raw.ctypes.data % ALIGN
            buffers[dtype] = raw[start:start + nbytes]
        views = []
        for shape, dtype, mine in zip(self._shapes, self._dtypes, offsets):
            n = math.prod(shape) * np.dtype(dtype).itemsize
            views.append([buffers[dtype][o:o + n].view(dtype).reshape(shape) for o in mine])
        state = [v[:nstate] for v in views]
        ema = [None] * len(views)
        if self.ema_decay is not None:
            ema = [v[nstate] for v in views]
            for avg, x in zip(ema, self._params):
                np.copyto(avg, x)
        return state, ema, buffers

    # ---------------------------------------------------------------- hyperparameters

    def _value(self, group, g, name, t):
        v = group[name]
        if name in SCHEDULABLE and callable(v):
            v = v(t)
        where = f"param_groups[{g}][{name!r}]" if len(self.param_groups) > 1 else name
        return _updates._real(type(self).__name__, where, v, self._ranges[name])

    def _check_groups(self, groups):
        cls = type(self).__name__
        if not isinstance(groups, list) or len(groups) != len(self._structure.slices):
            raise ValueError(f"{cls}: param_groups must stay a list of {len(self._structure.slices)} "
                             f"groups (their hyperparameters may change between steps, the groups "
                             f"may not: make a new optimizer)")
        want = set(self.defaults) | {"params"}
        for g, (group, sl) in enumerate(zip(groups, self._structure.slices)):
            if not isinstance(group, dict) or set(group) != want:
                have = set(group) if isinstance(group, dict) else set()
                odd = sorted(have - want) or sorted(want - have)
                raise ValueError(f"{cls}: param_groups[{g}] has {'an unknown' if have - want else 'no'} "
                                 f"entry {odd[0] if odd else type(group).__name__!r}; a group holds "
                                 f"exactly {', '.join(sorted(want))}")
            held = group["params"]
            if not (isinstance(held, tuple) and len(held) == sl.stop - sl.start
                    and all(a is b for a, b in zip(held, self._params[sl]))):
                raise ValueError(f"{cls}: param_groups[{g}]['params'] changed; a group's "
                                 f"hyperparameters may change between steps, its arrays may not "
                                 f"(make a new optimizer)")

    def _hyper_table(self, t, groups=None):
        """Every group's hyperparameters at step t, converted and checked (scalars first: this
        is where a schedule or a user's number type runs), as the step's per-parameter table."""
        groups = self.param_groups if groups is None else groups
        self._check_groups(groups)
        table = np.zeros((len(self._params), len(COLUMNS)))
        for g, (group, sl) in enumerate(zip(groups, self._structure.slices)):
            row = dict.fromkeys(COLUMNS, 0.0)
            for name in [h.name for h in self.rule.hypers] + ["weight_decay"]:
                value = self._value(group, g, name, t)
                row["decay" if name == "decay_rate" else name] = value
            flag = group["decoupled_weight_decay"]
            if not (flag is True or flag is False or isinstance(flag, np.bool_)):
                raise TypeError(f"{type(self).__name__}: decoupled_weight_decay must be True or "
                                f"False, got {flag!r}")
            wd = row.pop("weight_decay")
            row["l2"] = 0.0 if flag else wd
            row["shrink"] = 1.0 - row["lr"] * wd if flag else 1.0
            row["ema"] = self.ema_decay or 0.0
            table[sl] = [row[c] for c in COLUMNS]
        return table

    def _step_table(self, t):
        """_hyper_table(t), reused from the last step while every group holds the very same
        objects as then, all plain numbers (int, float, bool: immutable) and no schedule."""
        key = self._group_key()
        cached = self._cached_key
        if (key is not None and cached is not None and len(key) == len(cached)
                and all(map(operator.is_, key, cached))):
            return self._cached_table
        table = self._hyper_table(t)
        self._cached_key = key if key is not None and _PLAIN.issuperset(map(type, key)) else None
        self._cached_table = table
        return table

    def _group_key(self):
        """Every group's hyperparameter objects in one tuple; None if the groups changed shape."""
        groups, held = self.param_groups, self._held
        if type(groups) is not list or len(groups) != len(held):
            return None
        key, size = (), len(self._keys) + 1
        for group, h in zip(groups, held):
            if type(group) is not dict or len(group) != size or group.get("params") is not h:
                return None
            try:
                key += self._get_values(group)
            except KeyError:
                return None
        return key

    @property
    def lr(self):
        """The first group's learning rate at the current step (the last one taken; the first
        one before any), after its schedule.  Setting it sets every group's "lr" (a float or a
        schedule), used from the next step."""
        return self._value(self.param_groups[0], 0, "lr", max(self.t, 1))

    @lr.setter
    def lr(self, value):
        self._hyper_table(self.t + 1, [dict(g, lr=value) for g in self.param_groups])
        for g in self.param_groups:
            g["lr"] = value

    # ---------------------------------------------------------------- the step

    def step(self, grads):
        """Update every parameter (and its state and running average) in place, in one fused
        pass.  grads mirrors params.  Nothing is written when anything is refused."""
        # (the lock by hand, not _exclusive(): a context manager costs more than a
        # CS231n-sized model's whole Python side of the step)
        if not self._busy.acquire(False):
            raise self._busy_error("step")
        try:
            t = self._t + 1
            table = self._step_table(t)                     # 1. every scalar
            flat = self._structure.flatten(grads)           # 2. the gradient objects
            # 3. every array checked at C level, then the update with exactly those arrays.
            norm = self._plan.step(self._params, flat, table, t, self._clip_arg)
            self._t = t
            if norm is not None:
                self.last_grad_norm = norm
        finally:
            self._busy.release()

    @property
    def t(self):
        """The number of steps taken (the next step is t + 1)."""
        return self._t

    @t.setter
    def t(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{type(self).__name__}.t must be an integer >= 0 (steps taken), "
                             f"got {value!r}")
        self._t = int(value)

    # ---------------------------------------------------------------- averages and state

    @property
    def ema_params(self):
        """The running averages (read-only views), in the params' structure; None without
        ema_decay."""
        if self.ema_decay is None:
            return None
        return self._structure.unflatten([a.view() for a in self._ema_read_only])

    def state_dict(self):
        """Everything a resume needs, as plain data (ints, floats, strings, lists, ndarrays)."""
        return _checkpoint.state_dict(self)

    def load_state_dict(self, sd):
        """Restore a state_dict() of an optimizer of the same rule and parameters; ValueError
        saying what differs (and nothing changed) otherwise."""
        with self._exclusive("load_state_dict"):
            _checkpoint.load_state_dict(self, sd)

    def save(self, path):
        """Write a checkpoint of training to path (.npz): the parameters and state_dict().
        Atomic: a temporary file in the same folder, fsync, rename (an interruption leaves the
        previous file intact)."""
        _checkpoint.save(self, path)

    def load(self, path):
        """Restore what save() wrote: the optimizer's state, and the parameters, in place.
        Checked first: a damaged or foreign file is refused with ValueError, changing nothing."""
        with self._exclusive("load"):
            _checkpoint.load(self, path)

    @contextlib.contextmanager
    def _exclusive(self, what):
        """Steps and loads write the same memory: one at a time (RuntimeError otherwise)."""
        if not self._busy.acquire(blocking=False):
            raise self._busy_error(what)
        try:
            yield
        finally:
            self._busy.release()

    def _busy_error(self, what):
        return RuntimeError(f"{type(self).__name__}.{what}: called while a step or a load of "
                            f"this optimizer is running (another thread, or a schedule calling "
                            f"back); one optimizer does one thing at a time")

    def __repr__(self):
        extras = "".join(f", {k}={getattr(self, k)!r}" for k in ("clip_norm", "ema_decay")
                         if getattr(self, k) is not None)
        return (f"{type(self).__name__}({len(self._params)} arrays, t={self.t}, "
                f"convention={self.convention!r}{extras})")


# ---------------------------------------------------------------- the rules
# Each class states its update; the arithmetic is the kernel's (lec6fast.<rule>_), the whole
# model in one pass.  Every class also takes the keywords of Optimizer (see lec6fast.optim).

class SGD(Optimizer):
    """Vanilla SGD:  x += -lr * dx"""
    rule = OPTIMIZERS["SGD"]

    def __init__(self, params, lr, *, weight_decay=0.0, decoupled_weight_decay=False,
                 clip_norm=None, ema_decay=None, convention="lecture"):
        super().__init__(params, lr=lr, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, clip_norm=clip_norm,
                         ema_decay=ema_decay, convention=convention)


class Momentum(Optimizer):
    """SGD with momentum.  convention="lecture":  v = mu*v - lr*dx;  x += v
    convention="torch" (torch.optim.SGD's buffer form):  b = mu*b + dx;  x += -lr*b"""
    rule = OPTIMIZERS["Momentum"]

    def __init__(self, params, lr, *, mu=None, weight_decay=0.0, decoupled_weight_decay=False,
                 clip_norm=None, ema_decay=None, convention="lecture"):
        super().__init__(params, lr=lr, mu=mu, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, clip_norm=clip_norm,
                         ema_decay=ema_decay, convention=convention)


class Nesterov(Optimizer):
    """Nesterov momentum.  convention="lecture":
        v_prev = v;  v = mu*v - lr*dx;  x += -mu*v_prev + (1 + mu)*v
    convention="torch" (torch.optim.SGD(nesterov=True)):  b = mu*b + dx;  x += -lr*(dx + mu*b)"""
    rule = OPTIMIZERS["Nesterov"]

    def __init__(self, params, lr, *, mu=None, weight_decay=0.0, decoupled_weight_decay=False,
                 clip_norm=None, ema_decay=None, convention="lecture"):
        super().__init__(params, lr=lr, mu=mu, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, clip_norm=clip_norm,
                         ema_decay=ema_decay, convention=convention)


class AdaGrad(Optimizer):
    """AdaGrad:  cache += dx**2;  x += -lr * dx / (sqrt(cache) + eps)"""
    rule = OPTIMIZERS["AdaGrad"]

    def __init__(self, params, lr, *, eps=None, weight_decay=0.0, decoupled_weight_decay=False,
                 clip_norm=None, ema_decay=None, convention="lecture"):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, clip_norm=clip_norm,
                         ema_decay=ema_decay, convention=convention)


class RMSProp(Optimizer):
    """RMSProp:  cache = decay_rate*cache + (1 - decay_rate)*dx**2;
                 x += -lr * dx / (sqrt(cache) + eps)"""
    rule = OPTIMIZERS["RMSProp"]

    def __init__(self, params, lr, *, decay_rate=None, eps=None, weight_decay=0.0,
                 decoupled_weight_decay=False, clip_norm=None, ema_decay=None,
                 convention="lecture"):
        super().__init__(params, lr=lr, decay_rate=decay_rate, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, clip_norm=clip_norm,
                         ema_decay=ema_decay, convention=convention)


class Adam(Optimizer):
    """Adam with bias correction (t = the 1-based step):
        m = beta1*m + (1 - beta1)*dx;  v = beta2*v + (1 - beta2)*dx**2
        x += -lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
    With decoupled_weight_decay=True this is AdamW."""
    rule = OPTIMIZERS["Adam"]

    def __init__(self, params, lr=1e-3, *, beta1=None, beta2=None, eps=None, weight_decay=0.0,
                 decoupled_weight_decay=False, clip_norm=None, ema_decay=None,
                 convention="lecture"):
        super().__init__(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                         weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         clip_norm=clip_norm, ema_decay=ema_decay, convention=convention)

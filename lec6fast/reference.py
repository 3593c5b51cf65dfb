"""The executable specification: the lecture's NumPy code, one function per fast kernel.

Each function has the same name and signature as its fast counterpart in lec6fast and
updates its arrays in place, but is written the way CS231n lecture 6 writes it: plain NumPy
expressions with their temporaries.  The tests hold every fast kernel to these functions;
when the two disagree, this module is right.

No validation happens here: pass what the fast functions accept.
"""

import numpy as np


def sgd_(x, dx, *, lr):
    x += -lr * dx


def momentum_(x, dx, v, *, lr, mu=0.9):
    v[...] = mu * v - lr * dx
    x += v


def nesterov_(x, dx, v, *, lr, mu=0.9):
    v_prev = v.copy()
    v[...] = mu * v - lr * dx
    x += -mu * v_prev + (1 + mu) * v


def adagrad_(x, dx, cache, *, lr, eps=1e-7):
    cache += dx**2
    x += -lr * dx / (np.sqrt(cache) + eps)


def rmsprop_(x, dx, cache, *, lr, decay_rate=0.99, eps=1e-7):
    cache[...] = decay_rate * cache + (1 - decay_rate) * dx**2
    x += -lr * dx / (np.sqrt(cache) + eps)


def adam_(x, dx, m, v, *, t, lr, beta1=0.9, beta2=0.999, eps=1e-7):
    m[...] = beta1 * m + (1 - beta1) * dx
    v[...] = beta2 * v + (1 - beta2) * (dx**2)
    mb = m / (1 - float(beta1) ** t)        # bias corrections in double precision
    vb = v / (1 - float(beta2) ** t)
    x += -lr * mb / (np.sqrt(vb) + eps)


def ema_(x_avg, x, *, decay=0.995):
    x_avg[...] = decay * x_avg + (1 - decay) * x


def average_(out, arrays, weights=None):
    """out = sum_k (w_k / sum(w)) * arrays[k], summed in double in the order of arrays."""
    w = [1.0] * len(arrays) if weights is None else [float(v) for v in weights]
    total = 0.0
    for v in w:                     # in order (numpy's sum would add pairwise)
        total += v
    w = [v / total for v in w]
    acc = w[0] * arrays[0].astype(np.float64)
    for wk, a in zip(w[1:], arrays[1:]):
        acc += wk * a.astype(np.float64)
    out[...] = acc


# torch.optim.SGD's momentum buffer (lec6fast.optim, convention="torch"): b includes no lr.

def momentum_torch_(x, dx, b, *, lr, mu=0.9):
    b[...] = mu * b + dx
    x += -lr * b


def nesterov_torch_(x, dx, b, *, lr, mu=0.9):
    b[...] = mu * b + dx
    x += -lr * (dx + mu * b)


# ---------------------------------------------------------------- dropout
# p is the probability of KEEPING a unit (the lecture's convention; PyTorch's p = 1 - p).
#
# The keep-mask is a documented function of the caller's generator, the same here and in
# lec6fast.dropout_forward: a call takes four raw draws of rng's bit generator, whose low 32
# bits are the Philox4x32-10 key (words 0, 1) and the upper words of its counter (2, 3); element
# i (C order) lies in group i // 256, at word (i % 256) // 64 of the block whose counter is
# 64 * (i // 256) + i % 64; it is kept iff that 32-bit word u < p * 2**32.  (The lecture draws
# U = np.random.rand(*x.shape) < p: the same distribution, another stream.)

_M32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 (Salmon et al., SC'11) on arrays of 32-bit counter words and a 32-bit key
    pair, in uint64 arithmetic; returns the four output words."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in (c0, c1, c2, c3))
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = c0 * np.uint64(0xD2511F53)
        p1 = c2 * np.uint64(0xCD9E8D57)
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _M32,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _M32)
        k0 = (k0 + np.uint64(0x9E3779B9)) & _M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _M32
    return c0, c1, c2, c3


def dropout_keep(shape, p, rng=None):
    """The keep-mask (bool, `shape`) of one dropout_forward call, as above; takes four raw draws
    of rng's bit generator (rng: a Generator, or what numpy.random.default_rng accepts)."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    words = [int(w) & 0xFFFFFFFF for w in gen.bit_generator.random_raw(4)]
    n = int(np.prod(shape))
    keep = np.empty(n, dtype=bool)
    for lo in range(0, n, 1 << 20):                     # in slabs: bounded temporaries
        i = np.arange(lo, min(n, lo + (1 << 20)), dtype=np.uint64)
        group, r = i // np.uint64(256), i % np.uint64(256)
        ctr = group * np.uint64(64) + r % np.uint64(64)
        out = philox4x32_10(ctr & _M32, ctr >> np.uint64(32), np.full(i.size, words[2], np.uint64),
                            np.full(i.size, words[3], np.uint64), words[0], words[1])
        u = np.choose((r // np.uint64(64)).astype(np.intp), out)
        keep[lo:lo + i.size] = u.astype(np.float64) < p * 2.0**32
    return keep.reshape(shape)


def dropout_forward(x, *, p, rng=None, train=True, inverted=True, out=None):
    """The lecture's dropout, with the documented keep-mask.  Returns (out, U): U is the float
    mask the backward multiplies by (U = keep/p for inverted dropout, keep for vanilla), None at
    test time."""
    if train:
        U = dropout_keep(x.shape, p, rng)
        if inverted:
            U = U / p
        res = x * U
    else:
        U = None
        res = x if inverted else x * p
    return _store(res, x.dtype, out), U


def dropout_backward(dout, mask, *, out=None):
    """dx = dout * U.  mask is this module's U, or the compact mask of lec6fast.dropout_forward."""
    U = mask
    if hasattr(mask, "to_array"):
        U = mask.to_array()
        if mask.inverted:
            U = U / mask.p
    return _store(dout * U, dout.dtype, out)


def _store(res, dtype, out):
    if out is None:
        return np.asarray(res, dtype=dtype)
    out[...] = res
    return out


# ---------------------------------------------------------------- batch normalization
# x is (N, D), or (N, C, H, W) normalized per channel over N, H and W.

def _bn_axes(x):
    return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))


def batchnorm_forward(x, gamma, beta, *, running_mean, running_var, train=True,
                      momentum=0.9, eps=1e-5, out=None):
    """The lecture's batch normalization, with the biased batch variance.  Returns (out, cache);
    the cache is for this module's batchnorm_backward (None at test time)."""
    axes, shape = _bn_axes(x)
    if train and x.size and x.size == x.shape[1]:
        raise ValueError("batchnorm_forward: expected more than 1 value per feature when training")
    if train:
        mu = x.mean(axis=axes)
        xmu = x - mu.reshape(shape)
        var = (xmu**2).mean(axis=axes)
        sqrtvar = np.sqrt(var + eps)
        ivar = 1 / sqrtvar
        xhat = xmu * ivar.reshape(shape)
        res = gamma.reshape(shape) * xhat + beta.reshape(shape)
        running_mean[...] = momentum * running_mean + (1 - momentum) * mu
        running_var[...] = momentum * running_var + (1 - momentum) * var
        cache = (xhat, xmu, ivar, sqrtvar, var, gamma.copy(), eps, axes, shape)
    else:
        xhat = (x - running_mean.reshape(shape)) / np.sqrt(running_var.reshape(shape) + eps)
        res = gamma.reshape(shape) * xhat + beta.reshape(shape)
        cache = None
    return _store(res, x.dtype, out), cache


def batchnorm_backward(dout, cache):
    """Backpropagation through the forward's computational graph, stage by stage (an
    independent derivation from the closed form the fast kernel uses).  Returns
    (dx, dgamma, dbeta)."""
    xhat, xmu, ivar, sqrtvar, var, gamma, eps, axes, shape = cache
    N = np.prod([dout.shape[a] for a in axes])
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * gamma.reshape(shape)
    divar = (dxhat * xmu).sum(axis=axes)
    dxmu1 = dxhat * ivar.reshape(shape)
    dsqrtvar = -1 / sqrtvar**2 * divar
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    dsq = np.ones_like(dout) / N * dvar.reshape(shape)
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -dx1.sum(axis=axes)
    dx2 = np.ones_like(dout) / N * dmu.reshape(shape)
    dx = dx1 + dx2
    return dx.astype(dout.dtype, copy=False), dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)


# ---------------------------------------------------------------- optimizers (lec6fast.optim)
# The same classes as lec6fast.optim, written as the lecture writes a training step: a loop over
# the parameters calling the rules above.  They take what the fast ones accept (no validation,
# no save/resume) and are an independent implementation of the same contract.

NORM_BLOCK = 4096       # the global norm's blocks (per parameter)
NORM_LANES = 16         # and its independent sums per block


def global_norm(grads):
    """The L2 norm of all gradients in lec6fast.optim's fixed order: each gradient in blocks of
    NORM_BLOCK elements; in a block, element i goes to lane i % NORM_LANES, each lane summed in
    order in double, the lanes then halved (lane j += lane j + w, for w = 8, 4, 2, 1); the
    blocks' sums added in order (gradient by gradient), then the square root."""
    total = 0.0
    for g in grads:
        sq = g.astype(np.float64).ravel() ** 2
        for b in range(0, sq.size, NORM_BLOCK):
            block = sq[b:b + NORM_BLOCK]
            lanes = np.array([np.cumsum(block[j::NORM_LANES])[-1] if block[j::NORM_LANES].size
                              else 0.0 for j in range(NORM_LANES)])
            while lanes.size > 1:
                lanes = lanes[:lanes.size // 2] + lanes[lanes.size // 2:]
            total += float(lanes[0])
    return float(np.sqrt(total))


class _Optimizer:
    rule = ()                   # (kernel, its state arrays, hyperparameters with defaults)
    torch_defaults = {}

    def __init__(self, params, *, convention="lecture", weight_decay=0.0,
                 decoupled_weight_decay=False, clip_norm=None, ema_decay=None, **hyper):
        kernel, self.state_names, defaults = self.rule
        if convention == "torch":
            defaults = dict(defaults, **self.torch_defaults)
            kernel = {momentum_: momentum_torch_, nesterov_: nesterov_torch_}.get(kernel, kernel)
        self.kernel = kernel
        hyper = {k: (defaults[k] if v is None else v) for k, v in hyper.items()}
        base = dict(hyper, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
        grouped = isinstance(params, (list, tuple)) and all(isinstance(g, dict) for g in params)
        self.grouped = grouped
        groups = params if grouped else [{"params": params}]
        self.param_groups = []
        self.params = []            # (group, key, array)
        for group in groups:
            g = dict(base, **{k: v for k, v in group.items() if k != "params"})
            inner = group["params"]
            keys = list(inner) if isinstance(inner, dict) else list(range(len(inner)))
            g["keys"] = keys
            g["kind"] = dict if isinstance(inner, dict) else list
            self.param_groups.append(g)
            self.params += [(g, k, inner[k]) for k in keys]
        self.state = [[np.zeros_like(x) for _ in self.state_names] for _, _, x in self.params]
        self.clip_norm, self.ema_decay = clip_norm, ema_decay
        self.ema = None if ema_decay is None else [x.copy() for _, _, x in self.params]
        self.t = 0
        self.last_grad_norm = None

    def _grads(self, grads):
        if isinstance(grads, dict):
            return [grads[k] for _, k, _ in self.params]
        if self.grouped:
            return [grads[self.param_groups.index(g)][k] for g, k, _ in self.params]
        return list(grads)

    def step(self, grads):
        t = self.t + 1
        grads = self._grads(grads)
        if self.clip_norm is not None:
            norm = global_norm(grads)
            if not np.isfinite(norm):       # refused: nothing changes, t neither
                raise FloatingPointError("the global norm of the gradients is not finite")
            scale = min(1.0, float(self.clip_norm) / (norm + 1e-6))
            # (np.asarray: NumPy turns a 0-d result into a scalar, whose float32 ** 2 is
            # not the array's correctly rounded square)
            grads = [np.asarray(g * scale) for g in grads]
            self.last_grad_norm = norm
        self.t = t
        for i, ((group, _, x), dx) in enumerate(zip(self.params, grads)):
            h = {k: group[k] for k in self.rule[2]}
            h["lr"] = group["lr"]
            for k in h:                 # every hyperparameter as a Python float (a double)
                h[k] = float(h[k](t) if callable(h[k]) else h[k])
            lam = float(group["weight_decay"])
            if lam and group["decoupled_weight_decay"]:
                x *= 1 - h["lr"] * lam
            elif lam:
                dx = np.asarray(dx + lam * x)
            if self.kernel is adam_:
                h["t"] = t
            self.kernel(x, dx, *self.state[i], **h)
            if self.ema is not None:
                ema_(self.ema[i], x, decay=float(self.ema_decay))

    @property
    def ema_params(self):
        if self.ema is None:
            return None
        out = []
        for g in self.param_groups:
            pairs = [(k, a) for (gg, k, _), a in zip(self.params, self.ema) if gg is g]
            out.append(dict(pairs) if g["kind"] is dict else [a for _, a in pairs])
        return out if self.grouped else out[0]


class SGD(_Optimizer):
    rule = (sgd_, (), {})

    def __init__(self, params, lr, **kw):
        super().__init__(params, lr=lr, **kw)


class Momentum(_Optimizer):
    rule = (momentum_, ("v",), {"mu": 0.9})

    def __init__(self, params, lr, *, mu=None, **kw):
        super().__init__(params, lr=lr, mu=mu, **kw)


class Nesterov(Momentum):
    rule = (nesterov_, ("v",), {"mu": 0.9})


class AdaGrad(_Optimizer):
    rule = (adagrad_, ("cache",), {"eps": 1e-7})
    torch_defaults = {"eps": 1e-10}

    def __init__(self, params, lr, *, eps=None, **kw):
        super().__init__(params, lr=lr, eps=eps, **kw)


class RMSProp(_Optimizer):
    rule = (rmsprop_, ("cache",), {"decay_rate": 0.99, "eps": 1e-7})
    torch_defaults = {"eps": 1e-8}

    def __init__(self, params, lr, *, decay_rate=None, eps=None, **kw):
        super().__init__(params, lr=lr, decay_rate=decay_rate, eps=eps, **kw)


class Adam(_Optimizer):
    rule = (adam_, ("m", "v"), {"beta1": 0.9, "beta2": 0.999, "eps": 1e-7})
    torch_defaults = {"eps": 1e-8}

    def __init__(self, params, lr=1e-3, *, beta1=None, beta2=None, eps=None, **kw):
        super().__init__(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, **kw)


# ---------------------------------------------------------------- L-BFGS (lec6fast.optim.lbfgs)

def two_loop(S, Y, rho, alpha, newest, count, g, d, gamma):
    """The L-BFGS direction d = -H g by the two-loop recursion (Nocedal & Wright, Algorithm
    7.4), over the `count` newest pairs of the ring S, Y ((k, n) arrays; the newest in row
    `newest`, older ones in the rows before it, modulo k), rho[i] = 1 / (s_i'y_i), H0 = gamma*I.
    Writes d (and alpha); returns g'd.  Dot products in float64, vectors in g's dtype."""
    k = S.shape[0]
    rows = [(newest - j) % k for j in range(count)]         # newest first
    dt = g.dtype.type
    q = g.copy()
    for i in rows:
        alpha[i] = rho[i] * np.dot(S[i].astype(np.float64), q.astype(np.float64))
        q = q - dt(alpha[i]) * Y[i]
    r = dt(gamma) * q
    for i in reversed(rows):
        beta = rho[i] * np.dot(Y[i].astype(np.float64), r.astype(np.float64))
        r = r + dt(alpha[i] - beta) * S[i]
    d[...] = -r
    return float(np.dot(g.astype(np.float64), d.astype(np.float64)))

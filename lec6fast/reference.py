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


# ---------------------------------------------------------------- dropout
# p is the probability of KEEPING a unit (the lecture's convention; PyTorch's p = 1 - p).

def dropout_forward(x, *, p, rng=None, train=True, inverted=True, out=None):
    """The lecture's dropout.  Returns (out, U): U is the float mask the backward multiplies
    by (U = keep/p for inverted dropout, keep for vanilla), None at test time."""
    if train:
        rng = np.random.default_rng(rng)
        U = rng.random(x.shape) < p
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

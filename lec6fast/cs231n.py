"""The CS231n assignment's update rules and layers, same signatures and defaults, on lec6fast.

    from lec6fast import cs231n
    next_w, config = cs231n.adam(w, dw, config)          # config=None allowed
    out, cache = cs231n.dropout_forward(x, dropout_param)
    out, cache = cs231n.batchnorm_forward(x, gamma, beta, bn_param)

A drop-in for the assignment's `cs231n/optim.py` (and the dropout and batch-norm functions of
`cs231n/layers.py`): the `Solver` calls `getattr(optim, update_rule)`, so replacing its
`from cs231n import optim` by `from lec6fast import cs231n as optim` runs its training on the
fused kernels, unchanged otherwise.

This is the convenience layer.  Unlike the kernels it converts what it only reads (`dw`, `x`,
`dout`, `gamma`, `beta`: any float dtype, any layout) to the parameter's dtype.  It never
silently loses an update: `w` is updated in place when it is a writeable, C-contiguous float32
or float64 array, and otherwise replaced by an updated float copy, which is returned as
`next_w` (the Solver stores `next_w` back, so either way is safe there).  State arrays in
`config` and `bn_param` that cannot be updated in place are replaced the same way, in the dict.
"""

import numpy as np

import lec6fast

__all__ = ["sgd", "sgd_momentum", "nesterov_momentum", "adagrad", "rmsprop", "adam",
           "dropout_forward", "dropout_backward", "batchnorm_forward", "batchnorm_backward",
           "batchnorm_backward_alt", "spatial_batchnorm_forward", "spatial_batchnorm_backward"]

FLOATS = (np.float32, np.float64)


# ---------------------------------------------------------------- arrays

def _updatable(a):
    """Whether lec6fast can update `a` in place."""
    return (type(a) is np.ndarray and a.dtype in FLOATS and a.dtype.isnative
            and a.flags.c_contiguous and a.flags.aligned and a.flags.writeable)


def _param(w):
    """w itself when it can be updated in place, else a float copy (float64 unless w is a
    float32 array) that the caller returns as next_w."""
    if _updatable(w):
        return w
    a = np.asarray(w)
    dtype = a.dtype if a.dtype in FLOATS else np.float64
    return np.array(a, dtype=dtype, order="C")


def _contiguous(a, dtype):
    """a as a C-contiguous array of dtype, its shape kept (0-d too); a copy only when needed."""
    a = np.asarray(a)
    if a.dtype != dtype or not a.flags.c_contiguous or not a.dtype.isnative:
        a = np.array(a, dtype=dtype, order="C")
    return a


def _float(a):
    """a as a C-contiguous float array (float64 unless it is float32 or float64 already)."""
    a = np.asarray(a)
    return _contiguous(a, a.dtype if a.dtype in FLOATS else np.float64)


def _read(a, like, *written):
    """A read-only input as a C-contiguous array of like's dtype and shape, sharing no memory
    with like or the other arrays a call writes (a copy only when needed)."""
    a = _contiguous(a, like.dtype)
    return a.copy() if any(np.shares_memory(a, w) for w in (like, *written)) else a


def _state(d, key, like, *avoid):
    """d[key] as an array lec6fast can update in place next to `like` (its shape and dtype,
    sharing memory with none of `avoid`): zeros on first use; converted (a scalar broadcast)
    and stored back when it cannot be updated as it is."""
    s = d.get(key)
    if s is None:
        s = np.zeros_like(like)
    elif not (_updatable(s) and s.shape == like.shape and s.dtype == like.dtype
              and not any(np.shares_memory(s, a) for a in (like, *avoid))):
        try:
            s = np.array(np.broadcast_to(s, like.shape), dtype=like.dtype, order="C")
        except ValueError:
            raise ValueError(f"config[{key!r}] has shape {np.shape(s)} but w has shape "
                             f"{like.shape}") from None
    d[key] = s
    return s


# ---------------------------------------------------------------- update rules
# Each: (w, dw, config=None) -> (next_w, config), config's keys and defaults as the
# assignment's optim.py.

def sgd(w, dw, config=None):
    """Vanilla SGD:  w -= learning_rate * dw.  config: learning_rate (1e-2)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    w = _param(w)
    lec6fast.sgd_(w, _read(dw, w), lr=config["learning_rate"])
    return w, config


def _with_velocity(kernel, w, dw, config):
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    w = _param(w)
    v = _state(config, "velocity", w, dw)
    kernel(w, _read(dw, w, v), v, lr=config["learning_rate"], mu=config["momentum"])
    return w, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum:  v = momentum*v - learning_rate*dw;  w += v.
    config: learning_rate (1e-2), momentum (0.9), velocity (zeros)."""
    return _with_velocity(lec6fast.momentum_, w, dw, config)


def nesterov_momentum(w, dw, config=None):
    """Nesterov momentum (the lecture's form):
    v_prev = v;  v = momentum*v - learning_rate*dw;  w += -momentum*v_prev + (1 + momentum)*v.
    config: learning_rate (1e-2), momentum (0.9), velocity (zeros)."""
    return _with_velocity(lec6fast.nesterov_, w, dw, config)


def adagrad(w, dw, config=None):
    """AdaGrad:  cache += dw**2;  w -= learning_rate * dw / (sqrt(cache) + epsilon).
    config: learning_rate (1e-2), epsilon (1e-8), cache (zeros)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("epsilon", 1e-8)
    w = _param(w)
    cache = _state(config, "cache", w, dw)
    lec6fast.adagrad_(w, _read(dw, w, cache), cache, lr=config["learning_rate"], eps=config["epsilon"])
    return w, config


def rmsprop(w, dw, config=None):
    """RMSProp:  cache = decay_rate*cache + (1 - decay_rate)*dw**2;
    w -= learning_rate * dw / (sqrt(cache) + epsilon).
    config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8), cache (zeros)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    w = _param(w)
    cache = _state(config, "cache", w, dw)
    lec6fast.rmsprop_(w, _read(dw, w, cache), cache, lr=config["learning_rate"],
                      decay_rate=config["decay_rate"], eps=config["epsilon"])
    return w, config


def adam(w, dw, config=None):
    """Adam with bias correction; config['t'] is incremented *before* it is used (so the first
    step uses t = 1), as the assignment's skeleton says:
        t += 1;  m = beta1*m + (1 - beta1)*dw;  v = beta2*v + (1 - beta2)*dw**2
        w -= learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon)
    config: learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8), m, v (zeros),
    t (0)."""
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("t", 0)
    w = _param(w)
    m = _state(config, "m", w, dw)
    v = _state(config, "v", w, dw, m)
    dw = _read(dw, w, m, v)
    t = config["t"] + 1
    lec6fast.adam_(w, dw, m, v, t=t, lr=config["learning_rate"], beta1=config["beta1"],
                   beta2=config["beta2"], eps=config["epsilon"])
    config["t"] = t                 # only once the update has been made
    return w, config


# ---------------------------------------------------------------- dropout
# dropout_param: mode 'train' or 'test', p the probability of KEEPING a unit (the lecture's
# and the 2018+ assignments' convention), optional seed.

def _generator(dropout_param):
    """With a seed: the same mask on every call (as np.random.seed(seed) in the assignment).
    Without: the key is drawn from NumPy's global generator, so np.random.seed(231) at the top
    of a notebook makes the masks reproducible, as it does for the assignment's code."""
    if "seed" in dropout_param:
        return dropout_param["seed"]
    return np.random.randint(0, 2**32, size=4, dtype=np.uint64)


def dropout_forward(x, dropout_param):
    """Inverted dropout: out = x * mask / p in 'train' mode, out = x in 'test' mode.
    Returns (out, cache); the cache holds the 1-bit-per-element mask."""
    p, mode = dropout_param["p"], dropout_param["mode"]
    mask = None
    if mode == "train":
        out, mask = lec6fast.dropout_forward(_float(x), p=p, rng=_generator(dropout_param))
    elif mode == "test":
        out = x
    else:
        raise ValueError(f"dropout_param['mode'] must be 'train' or 'test', got {mode!r}")
    return out, (dropout_param, mask)


def dropout_backward(dout, cache):
    """dx = dout * mask / p ('train'), dout ('test')."""
    dropout_param, mask = cache
    if dropout_param["mode"] == "train":
        return lec6fast.dropout_backward(_float(dout), mask)
    return dout


# ---------------------------------------------------------------- batch normalization
# bn_param: mode 'train' or 'test', eps (1e-5), momentum (0.9), running_mean and running_var
# (created as zeros on first use): running = momentum*running + (1 - momentum)*batch statistic.

def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, D) with the biased batch variance; the running statistics
    in bn_param are updated in place in 'train' mode.  Returns (out, cache)."""
    mode = bn_param["mode"]
    if mode not in ("train", "test"):
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    x = _float(x)
    features = np.zeros(x.shape[1] if x.ndim > 1 else 0, dtype=x.dtype)
    running_mean = _state(bn_param, "running_mean", features)
    running_var = _state(bn_param, "running_var", features)
    return lec6fast.batchnorm_forward(
        x, _read(gamma, features), _read(beta, features), running_mean=running_mean,
        running_var=running_var, train=mode == "train", momentum=momentum, eps=eps)


def batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta) for the cache of a 'train'-mode batchnorm_forward."""
    return lec6fast.batchnorm_backward(_float(dout), cache)


batchnorm_backward_alt = batchnorm_backward     # the same closed form (one fused pass)


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W."""
    return batchnorm_forward(x, gamma, beta, bn_param)


def spatial_batchnorm_backward(dout, cache):
    return batchnorm_backward(dout, cache)

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

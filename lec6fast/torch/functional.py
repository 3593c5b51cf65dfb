"""Dropout and batch normalization for torch tensors, on lec6fast's kernels (autograd functions).

Inputs are CPU float32/float64 tensors; the kernels run on zero-copy NumPy views of them and
write into tensors torch allocated.  A non-contiguous input (a transpose, channels_last) is
made contiguous first (a copy; the output is then contiguous, NCHW for 4-D); tensors that are
updated in place (running statistics) must already be contiguous.  Each backward runs once:
differentiating a backward again (double backward) raises RuntimeError.
"""

import math
import numbers
import threading

import numpy as np
import torch
from torch.autograd.function import once_differentiable

import lec6fast

__all__ = ["dropout", "batch_norm"]

_DTYPES = (torch.float32, torch.float64)


# ---------------------------------------------------------------- arguments

def check_tensor(fn, name, t, *, dtype=None):
    """t is a CPU strided float32/float64 tensor (of `dtype`, if given), else TypeError or
    ValueError naming `name`, what was expected and what was given."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{fn}: {name} must be float32 or float64 (lec6fast's kernels), got "
                        f"{t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{fn}: {name} is {t.dtype} but input is {dtype}; convert one of them "
                        f"(module.to(input.dtype) for a layer)")
    if t.device.type != "cpu":
        raise ValueError(f"{fn}: {name} is on {t.device}; lec6fast runs on the CPU only "
                         f"(use torch.nn's layer on other devices)")
    if t.layout != torch.strided:
        raise ValueError(f"{fn}: {name} must be a dense (strided) tensor, got layout {t.layout}")


def check_real(fn, name, value, lo, hi):
    """A real number (not bool) as a float: in [lo, hi], or, with hi None, finite and > lo."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {value!r} "
                        f"({type(value).__name__})")
    v = float(value)
    if hi is None and not (v > lo and math.isfinite(v)):
        raise ValueError(f"{fn}: {name} must be a finite number > {lo}, got {value!r}")
    if hi is not None and not lo <= v <= hi:
        raise ValueError(f"{fn}: {name} must be in [{lo}, {hi}], got {value!r}")
    return v


def _view(t):
    """The NumPy array sharing t's memory (t contiguous, CPU, float32/float64)."""
    return t.detach().numpy()


# ---------------------------------------------------------------- dropout

class _Dropout(torch.autograd.Function):
    """out = x * U / keep with U ~ Bernoulli(keep) drawn by lec6fast.dropout_forward from the
    Philox key `rng`; the backward multiplies by the same U / keep, read from the 1-bit mask."""

    @staticmethod
    def forward(ctx, x, keep, rng):
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        _, ctx.mask = lec6fast.dropout_forward(_view(x), p=keep, rng=rng, out=_view(out))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        dout = dout.contiguous()
        dx = torch.empty_like(dout, memory_format=torch.contiguous_format)
        lec6fast.dropout_backward(_view(dout), ctx.mask, out=_view(dx))
        return dx, None, None


_local = threading.local()


def _philox_from(generator):
    """A numpy.random.Generator (Philox) keyed by 128 bits drawn from `generator` (a
    torch.Generator; None: torch's default generator), so that torch.manual_seed and a seeded
    torch.Generator decide the masks.  The NumPy generator is this thread's own, re-keyed on
    every call (setting its state costs a few microseconds; a new Philox costs tens)."""
    words = torch.randint(-2**63, 2**63 - 1, (2,), dtype=torch.int64, generator=generator)
    gen = getattr(_local, "philox", None)
    if gen is None:
        gen = _local.philox = np.random.Generator(np.random.Philox(0))
    gen.bit_generator.state = {
        "bit_generator": "Philox",
        "state": {"counter": np.zeros(4, np.uint64), "key": words.numpy().view(np.uint64)},
        "buffer": np.zeros(4, np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0}
    return gen


def dropout(input, p=0.5, training=True, generator=None):
    """Inverted dropout, torch's convention: p is the probability of DROPPING (zeroing) a unit.

    training=True:   out = input * U / (1 - p),  U_i ~ Bernoulli(1 - p) independently
    training=False:  out = input (the same tensor, as torch.nn.functional.dropout)

    The mask U is kept for the backward (dinput = dout * U / (1 - p)) as 1 bit per element
    (lec6fast.DropoutMask), where torch's CPU dropout keeps a float mask (32 bits per element
    for float32).  It is drawn by lec6fast's Philox4x32-10 keyed with 128 bits taken from
    `generator` (a CPU torch.Generator, or None for torch's default generator): after
    torch.manual_seed(s), or with torch.Generator().manual_seed(s), the masks repeat; they are
    not the masks torch.nn.functional.dropout would draw.  The same on every thread count and
    SIMD level.  Unit i is kept iff its 32-bit draw u_i < (1 - p) * 2**32.

    p = 0 and empty inputs return `input` unchanged (no draw); p = 1 returns input * 0 (zeros,
    NaN where input is NaN, as torch).  Arithmetic in double, rounded once to input's dtype.
    input: a CPU float32/float64 tensor, made contiguous if it is not.  Double backward is
    not supported (RuntimeError).
    """
    fn = "lec6fast.torch.functional.dropout"
    check_tensor(fn, "input", input)
    p = check_real(fn, "p", p, 0.0, 1.0)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, got {training!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{fn}: generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"{fn}: generator must be a CPU torch.Generator, got one on "
                         f"{generator.device}")
    if not training or p == 0.0 or input.numel() == 0:
        return input
    if p == 1.0:
        return input * 0.0
    return _Dropout.apply(input.contiguous(), 1.0 - p, _philox_from(generator))


# ---------------------------------------------------------------- batch normalization

def _as_kernel_shape(a):
    """(N, C) stays; (N, C, *S) is viewed as (N, C, prod(S), 1), the spatial kernel's (N, C, H,
    W) layout (normalized per channel over N and all of S), without a copy."""
    if a.ndim == 2 or a.ndim == 4:
        return a
    return a.reshape(a.shape[0], a.shape[1], -1, 1)


def _checked_parameter(fn, name, t, x):
    """weight/bias/running_* of batch_norm: None, or a tensor of x's dtype, shape (C,)."""
    if t is None:
        return None
    check_tensor(fn, name, t, dtype=x.dtype)
    if t.shape != (x.shape[1],):
        raise ValueError(f"{fn}: {name} has shape {tuple(t.shape)} but input has {x.shape[1]} "
                         f"channels (shape {tuple(x.shape)}); expected ({x.shape[1]},)")
    return t


class _BatchNorm(torch.autograd.Function):
    """forward: lec6fast.batchnorm_forward; backward: lec6fast.batchnorm_backward (training),
    the closed form of the affine map in torch (eval)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        xa = _as_kernel_shape(_view(x))
        C = x.shape[1]
        # weight, bias (and the running statistics in eval) are only read: any strides
        gamma = np.ones(C, xa.dtype) if weight is None else _view(weight.contiguous())
        beta = np.zeros(C, xa.dtype) if bias is None else _view(bias.contiguous())
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        outa = _as_kernel_shape(_view(out))
        ctx.training = training
        if training:
            # The kernel's running statistics are the lecture's (biased variance, momentum
            # weighting the old value); with momentum 0 and scratch arrays it hands over the
            # batch mean and the biased variance, and torch's update is done here.
            mean, var = np.zeros(C, xa.dtype), np.zeros(C, xa.dtype)
            _, ctx.cache = lec6fast.batchnorm_forward(
                xa, gamma, beta, running_mean=mean, running_var=var, train=True, momentum=0.0,
                eps=eps, out=outa)
            if running_mean is not None:
                m = xa.size // C
                _update(running_mean, ctx.cache.mean, momentum)
                _update(running_var, var.astype(np.float64) * (m / (m - 1)), momentum)
            ctx.save_for_backward(x)        # (torch's version check: x modified in place)
        else:
            lec6fast.batchnorm_forward(xa, gamma, beta,
                                       running_mean=_view(running_mean.contiguous()),
                                       running_var=_view(running_var.contiguous()),
                                       train=False, eps=eps, out=outa)
            ctx.eps = eps
            ctx.save_for_backward(x, weight, running_mean, running_var)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        dout = dout.contiguous()
        if ctx.training:
            x, = ctx.saved_tensors
            dx, dgamma, dbeta = lec6fast.batchnorm_backward(_as_kernel_shape(_view(dout)),
                                                            ctx.cache)
            dx = torch.from_numpy(dx).view(dout.shape)
            dgamma, dbeta = torch.from_numpy(dgamma), torch.from_numpy(dbeta)
        else:
            # out = weight * (x - rm) * s + bias with s = 1/sqrt(rv + eps), per channel
            x, weight, rm, rv = ctx.saved_tensors
            shape = (1, -1) + (1,) * (x.ndim - 2)
            dims = [0] + list(range(2, x.ndim))
            s = torch.rsqrt(rv.double() + ctx.eps)
            scale = s if weight is None else s * weight.double()
            dx = (dout.double() * scale.view(shape)).to(dout.dtype)
            dgamma = dbeta = None
            if ctx.needs_input_grad[1]:
                xhat = (x.double() - rm.double().view(shape)) * s.view(shape)
                dgamma = (dout.double() * xhat).sum(dims).to(dout.dtype)
            if ctx.needs_input_grad[2]:
                dbeta = dout.double().sum(dims).to(dout.dtype)
        need = ctx.needs_input_grad
        return (dx if need[0] else None, dgamma if need[1] else None,
                dbeta if need[2] else None, None, None, None, None, None)


def _update(running, batch, momentum):
    """torch's running statistic: running = (1 - momentum)*running + momentum*batch, in
    float64, rounded once (batch: float64)."""
    with torch.no_grad():
        r = _view(running).astype(np.float64)
        running.copy_(torch.from_numpy((1.0 - momentum) * r + momentum * batch))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalization, torch.nn.functional.batch_norm's signature and semantics.

    input is (N, C) or (N, C, *S) (the (N, C, L) of BatchNorm1d, the (N, C, H, W) of
    BatchNorm2d, any number of trailing dims), normalized per channel over N and S; with M
    the count per channel (N * prod(S)):

        training=True:   mean = sum(x)/M;  var = sum((x - mean)**2)/M    (biased)
                         out = weight*(x - mean)/sqrt(var + eps) + bias
                         and, if running_mean/running_var are given, in place:
                         running_mean = (1 - momentum)*running_mean + momentum*mean
                         running_var  = (1 - momentum)*running_var  + momentum*var*M/(M - 1)
        training=False:  out = weight*(x - running_mean)/sqrt(running_var + eps) + bias

    (torch's momentum: it weights the NEW statistic, and the running variance is unbiased;
    lec6fast.batchnorm_forward's lecture convention is converted here.)  weight/bias None
    mean 1/0.  Statistics and arithmetic in float64, rounded once, except that the running
    variance's update starts from the batch variance as the kernel hands it over, rounded to
    input's dtype (so it is within 1.5 ulps, not 0.5).  Training needs M > 1
    (ValueError), except on an empty input, which gives an empty output (connected to weight
    and bias, whose gradients are then 0) and leaves the running statistics alone, as torch.
    The (N, C, *S) input is viewed as (N, C, prod(S), 1) for the spatial kernel, without a copy.

    input: a CPU float32/float64 tensor (made contiguous if it is not); weight, bias and the
    running statistics of its dtype and shape (C,), any strides, except that the running
    statistics, updated in place when training, must then be contiguous.  Double backward is
    not supported (RuntimeError).
    """
    fn = "lec6fast.torch.functional.batch_norm"
    check_tensor(fn, "input", input)
    if input.ndim < 2:
        raise ValueError(f"{fn}: input must be (N, C) or (N, C, *spatial), got shape "
                         f"{tuple(input.shape)}")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training must be a bool, got {training!r}")
    training = bool(training)
    momentum = check_real(fn, "momentum", momentum, 0.0, 1.0)
    eps = check_real(fn, "eps", eps, 0.0, None)
    params = [_checked_parameter(fn, name, t, input) for name, t in (
        ("weight", weight), ("bias", bias), ("running_mean", running_mean),
        ("running_var", running_var))]
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must both be tensors or both be "
                         f"None")
    if running_mean is None and not training:
        raise ValueError(f"{fn}: training=False normalizes with running_mean and running_var, "
                         f"which are None")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and training and not t.is_contiguous():
            raise ValueError(f"{fn}: {name} must be contiguous (it is updated in place)")
        if t is not None and t.requires_grad:
            raise ValueError(f"{fn}: {name} must not require grad (a buffer, not a parameter)")
    m = input.numel() // input.shape[1] if input.shape[1] else 0
    if training and input.numel() and m <= 1:
        raise ValueError(f"{fn}: expected more than 1 value per channel when training, got "
                         f"input of shape {tuple(input.shape)}")
    if training and input.numel() == 0:
        # torch's answer: no statistics to take, an empty output that still reaches weight and bias
        shape = (1, -1) + (1,) * (input.ndim - 2)
        out = input.clone(memory_format=torch.contiguous_format)
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out
    return _BatchNorm.apply(input.contiguous(), params[0], params[1], params[2], params[3],
                            training, momentum, eps)

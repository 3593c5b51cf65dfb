"""torch.nn layers on lec6fast's kernels: Dropout (a 1-bit mask), BatchNorm1d, BatchNorm2d."""

import numbers

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import functional


class Dropout(nn.Module):
    """torch.nn.Dropout on lec6fast's kernel: p is the probability of DROPPING a unit.

    Training: out = x * U / (1 - p), U ~ Bernoulli(1 - p), the mask kept for the backward as 1
    bit per element (torch's CPU dropout keeps 32 bits per float32 element).  Eval: out = x.
    The masks come from `generator` (a CPU torch.Generator) or, when None, torch's default
    generator, so torch.manual_seed makes them repeat (they differ from nn.Dropout's masks).
    See lec6fast.torch.functional.dropout.  inplace=True is not supported.
    """

    def __init__(self, p=0.5, inplace=False, *, generator=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise TypeError(f"Dropout: p must be a real number, got {p!r} ({type(p).__name__})")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1], got {p!r}")
        if inplace:
            raise ValueError("Dropout: inplace=True is not supported by lec6fast.torch.Dropout "
                             "(the output is a new tensor); use inplace=False")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"Dropout: generator must be a torch.Generator or None, got "
                            f"{type(generator).__name__}")
        self.p = float(p)
        self.inplace = False
        self.generator = generator

    def forward(self, input):
        return functional.dropout(input, self.p, self.training, self.generator)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class _LecBatchNorm(_BatchNorm):
    """nn.BatchNorm's module (its constructor, parameters, buffers, state dict, momentum=None
    as a cumulative average, track_running_stats) with the forward on lec6fast's kernels."""

    _dims = ()
    _what = ""

    def _check_input_dim(self, input):
        name = type(self).__name__
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"{name}: input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in self._dims:
            raise ValueError(f"{name}: input must be {self._what}, got shape "
                             f"{tuple(input.shape)}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{name}: input has {input.shape[1]} channels (shape "
                             f"{tuple(input.shape)}) but the layer has num_features="
                             f"{self.num_features}")

    def forward(self, input):
        # nn.BatchNorm's forward, with F.batch_norm replaced
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        tracked = not self.training or self.track_running_stats
        return functional.batch_norm(
            input, self.running_mean if tracked else None, self.running_var if tracked else None,
            self.weight, self.bias, use_batch, factor, self.eps)


class BatchNorm1d(_LecBatchNorm):
    """torch.nn.BatchNorm1d on lec6fast's kernels: input (N, C) or (N, C, L).

    Same constructor, parameters, buffers and state dict keys (weight, bias, running_mean,
    running_var, num_batches_tracked) as nn.BatchNorm1d, so state dicts load both ways; the
    same semantics: torch's momentum (weighting the new statistic; None: cumulative average),
    the unbiased running variance, eval mode normalizing with the running statistics,
    track_running_stats=False normalizing with batch statistics always.  (N, C, L) runs on the
    spatial kernel as (N, C, L, 1), without a copy.  CPU float32/float64 only; see
    lec6fast.torch.functional.batch_norm.
    """

    _dims = (2, 3)
    _what = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_LecBatchNorm):
    """torch.nn.BatchNorm2d on lec6fast's kernels: input (N, C, H, W); see BatchNorm1d.

    A channels_last input is copied to NCHW first, and the output is NCHW-contiguous.
    """

    _dims = (4,)
    _what = "4-D (N, C, H, W)"

"""lec6fast.torch: torch.optim optimizers and torch.nn layers that run on lec6fast's kernels.

The one place of the library that imports torch (an optional dependency):

    pip install torch          # a CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu
    import lec6fast.torch as lt
"""

try:
    import torch  # noqa: F401  (absolute: the PyTorch package, not this module)
except ImportError as e:            # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "lec6fast.torch needs PyTorch, which is not installed; install a CPU build with "
        "`pip install torch --index-url https://download.pytorch.org/whl/cpu` "
        "(lec6fast itself never needs torch)") from e

from . import functional
from ._layers import BatchNorm1d, BatchNorm2d, Dropout
from ._optim import SGD, Adam, AdamW, Adagrad, RMSprop
from ._threads import use_torch_threads

__all__ = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Dropout", "BatchNorm1d", "BatchNorm2d",
           "functional", "use_torch_threads"]

use_torch_threads()     # lec6fast's kernels on torch's OpenMP threads (see _threads.py)

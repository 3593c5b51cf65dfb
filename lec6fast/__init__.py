"""lec6fast: the training techniques of CS231n lecture 6 as fused, in-place Cython kernels.

Every update runs as one pass over contiguous float32/float64 arrays, in place, with the GIL
released (from 4096 elements on), and is held to the NumPy code of lec6fast.reference, which is
its specification.
"""

from ._version import __version__

try:
    from . import _runtime
except ImportError as _e:       # pragma: no cover - exercised in a subprocess by the tests
    import os as _os
    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"lec6fast's compiled kernels are missing from {_here}. If that is the source folder of "
        f"a checkout (you are running Python from the repository root, so the unbuilt sources "
        f"shadow the installed package), run from another folder, or build in place with "
        f"`python setup.py build_ext --inplace`; otherwise reinstall lec6fast. ({_e})") from _e

from . import _dispatch
from ._dispatch import get_num_threads, set_num_threads

_updates = _dispatch.kernels("_updates", _dispatch.level)
_dropout = _dispatch.kernels("_dropout", _dispatch.level)
_batchnorm = _dispatch.kernels("_batchnorm", _dispatch.level)

# The update kernels, one per row of the rules table (sgd_, momentum_, ..., adam_, ema_).
from ._rules import RULES as _RULES
for _rule in _RULES.values():
    globals()[_rule.kernel] = getattr(_updates, _rule.kernel)
del _rule
average_ = _updates.average_

dropout_forward = _dropout.dropout_forward
dropout_backward = _dropout.dropout_backward
batchnorm_forward = _batchnorm.batchnorm_forward
batchnorm_backward = _batchnorm.batchnorm_backward

from ._dropout_mask import DropoutMask
from ._batchnorm_cache import BatchNormCache
from . import optim, schedules
from ._gradcheck import check_grad


def show_config(file=None):
    """Print the version, the SIMD level in use and the thread pool."""
    from ._config import config_lines
    print("\n".join(config_lines()), file=file)


__all__ = [
    *(rule.kernel for rule in _RULES.values()), "average_", "optim", "schedules",
    "dropout_forward", "dropout_backward", "DropoutMask",
    "batchnorm_forward", "batchnorm_backward", "BatchNormCache",
    "set_num_threads", "get_num_threads", "show_config", "check_grad", "__version__",
]

"""The cache that lec6fast.batchnorm_forward (train mode) hands to lec6fast.batchnorm_backward.

A plain Python class, shared by the kernel modules of every SIMD level, so a cache made by
one level's forward is accepted by any level's backward.
"""


class BatchNormCache:
    """What the batch-norm backward needs from a train-mode forward, and nothing more.

    - ``x``: a reference to the forward's input (not a copy).  The backward recomputes
      ``xhat = (x - mean) * inv_std`` from it, so **x must not be modified in place between
      the forward and the backward** (the fast kernels cannot detect that).
    - ``stats``: one float64 array of shape (3, F) for the F features (D, or channels C):
      row 0 the batch mean, row 1 ``inv_std = 1/sqrt(var + eps)`` (biased batch variance),
      row 2 a copy of gamma (exact in float64; a copy so that an optimizer updating gamma
      in place before the backward does not change the gradient).

    Beyond x it holds 24*F bytes (``nbytes``), where the lecture's cache holds several
    arrays of x's size.
    """

    __slots__ = ("x", "stats")

    def __init__(self, x, stats):
        self.x = x
        self.stats = stats

    @property
    def mean(self):
        """Per-feature batch mean (float64, length F)."""
        return self.stats[0]

    @property
    def inv_std(self):
        """Per-feature 1/sqrt(var + eps) with the biased batch variance (float64, length F)."""
        return self.stats[1]

    @property
    def gamma(self):
        """The gamma of the forward call, copied (float64, length F)."""
        return self.stats[2]

    @property
    def nbytes(self):
        """Bytes held beyond the reference to x."""
        return self.stats.nbytes

    def __repr__(self):
        return (f"<BatchNormCache for x of shape {self.x.shape} {self.x.dtype}, "
                f"{self.stats.shape[1]} features>")

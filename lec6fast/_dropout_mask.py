"""The compact keep-mask that dropout_forward hands to dropout_backward."""

import numpy as np


class DropoutMask:
    """Which units one dropout_forward call kept: 1 bit per element.

    Bit i of the mask (bits[i // 8] >> (i % 8) & 1, C order over `shape`) is 1 when element i
    was kept.  PyTorch's CPU dropout keeps a float mask instead (32 bits per element for
    float32).  Attributes: shape, size, p (the keep probability), inverted, nbytes.
    """

    __slots__ = ("bits", "shape", "p", "inverted")

    def __init__(self, bits, shape, p, inverted):
        self.bits = bits
        self.shape = tuple(shape)
        self.p = float(p)
        self.inverted = bool(inverted)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        """Bytes of memory the mask holds: ceil(size / 8)."""
        return self.bits.nbytes

    def to_array(self):
        """The keep-mask as a boolean array of `shape` (True where the unit was kept)."""
        keep = np.unpackbits(self.bits, count=self.size, bitorder="little")
        return keep.view(np.bool_).reshape(self.shape)

    def __repr__(self):
        kind = "inverted" if self.inverted else "vanilla"
        return f"DropoutMask(shape={self.shape}, p={self.p}, {kind}, nbytes={self.nbytes})"

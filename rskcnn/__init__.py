"""rskcnn: randomly-sparse-kernel convolutions whose kernels skip the masked weights."""

from . import _extension
from .backends import available_backends
from .convert import convert, revert
from .functional import rsk_conv2d
from .masks import (GRANULARITIES, LAWS, block_shape, exact_keep_count, expand_mask, keep_fraction, mask_rows,
                    mask_shape, sample_mask)
from .modules import RSKConv2d
from .schedule import KeepProbScheduler

if _extension.has_ops():
    from .ops import cpp  # noqa: F401  (schemas, fake kernels, autograd and autocast of the C++ ops)

__version__ = "0.1.0"

__all__ = [
    "GRANULARITIES",
    "KeepProbScheduler",
    "LAWS",
    "RSKConv2d",
    "available_backends",
    "block_shape",
    "convert",
    "exact_keep_count",
    "expand_mask",
    "keep_fraction",
    "mask_rows",
    "mask_shape",
    "revert",
    "rsk_conv2d",
    "sample_mask",
]

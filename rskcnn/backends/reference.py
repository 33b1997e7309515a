"""Dense ``F.conv2d`` on the expanded masked weight: the oracle and the fallback."""

from __future__ import annotations

import torch.nn.functional as F

from ..masks import expand_mask
from .base import Backend


def reference_conv2d(input, weight, mask, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                     block=(1, 1, 1, 1), scale=1.0):
    """``F.conv2d(input, weight * expand_mask(mask) * scale, bias, ...)``, taken literally."""
    masked = weight * expand_mask(mask, block, weight.shape)
    if scale != 1.0:
        masked = masked * scale
    return F.conv2d(input, masked, bias, stride, padding, dilation, groups)


class ReferenceBackend(Backend):
    name = "reference"
    description = "dense F.conv2d on weight * mask (the paper's way); every device and dtype"
    fallback = True

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        return reference_conv2d(input, weight, mask, bias, stride, padding, dilation, groups,
                                block=block, scale=scale)

"""Turns ``padding='same'/'valid'`` into the symmetric int pair the ops take."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def explicit_padding(input: torch.Tensor, weight_shape, padding, dilation):
    """Returns ``(input, (ph, pw))``. For 'same' with an odd total padding the extra row or
    column goes on the bottom/right, padded here, as ``F.conv2d`` does."""
    if padding == "valid":
        return input, (0, 0)
    if padding != "same":
        return input, tuple(padding)
    totals = [d * (k - 1) for d, k in zip(dilation, weight_shape[2:])]
    extra = [t % 2 for t in totals]
    if any(extra):
        input = F.pad(input, (0, extra[1], 0, extra[0]))
    return input, (totals[0] // 2, totals[1] // 2)

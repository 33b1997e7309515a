"""What every backend declares: a name, the devices it runs on and, for a call,
the reasons it cannot serve it (empty when it can)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masks import Block


@dataclass(frozen=True)
class ConvCall:
    """The static description of one masked convolution (no tensor data)."""

    device: torch.device
    dtype: torch.dtype
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    block: Block
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


class Backend:
    name: str = ""
    description: str = ""

    def unavailable_reason(self, device: torch.device) -> str | None:
        """Why this backend cannot run on ``device`` at all, or None."""
        raise NotImplementedError

    def not_supported_reasons(self, call: ConvCall) -> list[str]:
        """Why this backend cannot run ``call``; empty when it can."""
        reason = self.unavailable_reason(call.device)
        return [] if reason is None else [reason]

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        """The masked convolution; ``padding`` is a pair of ints or 'same'/'valid'."""
        raise NotImplementedError

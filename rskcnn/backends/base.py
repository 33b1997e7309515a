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
    # Fraction of mask entries kept, where reading it costs no device sync (CPU, eager);
    # None otherwise. Only auto's speed rules look at it.
    kept_fraction: float | None = None


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

    def auto_skip_reasons(self, call: ConvCall) -> list[str]:
        """Why ``auto`` should not pick this backend for ``call``: the reasons it cannot,
        plus any reason it would be slower than the next candidate."""
        return self.not_supported_reasons(call)

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        """The masked convolution; ``padding`` is a pair of ints or 'same'/'valid'."""
        raise NotImplementedError

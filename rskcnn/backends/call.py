"""``ConvCall``: the static description of one masked convolution, which backends and auto's
speed tables judge without touching tensor data (so choosing never syncs and traces under
``torch.compile``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masks import Block, granularity_of


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
    # Fraction of mask entries kept, where reading it costs no device sync (CPU, eager) or the
    # caller said it (expected_keep); None otherwise. Only auto's speed rules look at it.
    kept_fraction: float | None = None
    # The exact number of units every mask row keeps (rows of rskcnn.masks.mask_rows), where the
    # caller knows it statically (rsk_conv2d's kept_per_row; RSKConv2d with law='exact'); None
    # otherwise. Lets a backend build a static-shape index list without reading the mask.
    kept_per_row: int | None = None

    @property
    def granularity(self) -> str:
        return granularity_of(self.block, self.weight_shape)

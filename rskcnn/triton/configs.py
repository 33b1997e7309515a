"""Default tile sizes per pass, derived from the mask's block shape.

The tiles along channels decide which work a mask lets the kernels skip: a reduction step
is skipped only when its whole (channel tile x channel chunk) holds no kept weight. So they
follow the block: a ``block`` mask with ``bo, bi >= 16`` gets tiles no larger than its blocks,
one block per ``tl.dot`` step; ``tap`` gets the narrowest output tile (16), since only channels
with the same kept taps share empty tiles; ``filter`` compacts its kept filters and takes
wide tiles. The pixel tile (``block_m`` of forward/grad-input, ``block_k`` of grad-weight)
and warps/stages are free, and are what opt-in autotuning varies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masks import granularity_of

MIN_DOT = 16  # tl.dot needs every dimension >= 16


@dataclass(frozen=True)
class Tiles:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


def _pow2_at_most(value: int, lo: int, hi: int) -> int:
    p = lo
    while p * 2 <= min(value, hi):
        p *= 2
    return p


def _channel_tiles(block, weight_shape, dtype: torch.dtype) -> tuple[int, int]:
    """(output-channel tile, input-channel tile) for this mask."""
    bo, bi = block[0], block[1]
    cin_g = weight_shape[1]
    wide_k = 32 if dtype == torch.float32 else 64
    granularity = granularity_of(block, weight_shape)
    if granularity == "filter":
        return 64, _pow2_at_most(cin_g, MIN_DOT, wide_k)
    if granularity in ("tap", "element"):
        return MIN_DOT, _pow2_at_most(cin_g, MIN_DOT, wide_k)
    return _pow2_at_most(bo, MIN_DOT, 128), _pow2_at_most(min(bi, cin_g), MIN_DOT, wide_k)


def forward_tiles(block, weight_shape, dtype) -> Tiles:
    """block_m: output pixels; block_n: output channels; block_k: input channels."""
    tile_o, tile_i = _channel_tiles(block, weight_shape, dtype)
    return Tiles(128, tile_o, tile_i)


def grad_input_tiles(block, weight_shape, dtype) -> Tiles:
    """block_m: input pixels; block_n: input channels; block_k: output channels."""
    tile_o, tile_i = _channel_tiles(block, weight_shape, dtype)
    return Tiles(128, tile_i, tile_o)


def grad_weight_tiles(block, weight_shape, dtype) -> Tiles:
    """block_m: output channels; block_n: input channels; block_k: pixels."""
    tile_o, tile_i = _channel_tiles(block, weight_shape, dtype)
    return Tiles(tile_o, tile_i, 64)

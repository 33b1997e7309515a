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

import os
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


# --------------------------------------------------------------------------- opt-in autotuning

# Off by default, so results and timings are reproducible. With RSKCNN_TRITON_AUTOTUNE=1 the
# free parameters (pixel tile, warps, stages) are tuned per key: the shape and the kept
# fraction in tenths. Reading the kept fraction waits for the GPU once per call, so
# autotuning does not belong in a CUDA-graph capture.
AUTOTUNE_ENV = "RSKCNN_TRITON_AUTOTUNE"
AUTOTUNE_KEY = ["N", "H", "W", "OH", "OW", "CIN_G", "COUT_G", "KW", "STRIDE_H", "STRIDE_W", "KEPT_TENTHS"]
_FREE_VALUES = {"BLOCK_M": (64, 128, 256), "BLOCK_K": (32, 64, 128)}
_AUTOTUNED: dict = {}


def autotuning() -> bool:
    from . import interpreting

    return os.environ.get(AUTOTUNE_ENV) == "1" and not interpreting()


def autotune_configs(free: str) -> list:
    """The configs autotuning tries: ``free`` (the pixel tile) x warps x stages."""
    import triton

    return [triton.Config({free: value}, num_warps=warps, num_stages=stages)
            for value in _FREE_VALUES[free] for warps in (4, 8) for stages in (2, 3, 4)]


def autotuned(kernel, free: str):
    """``kernel`` wrapped in ``triton.autotune`` over :func:`autotune_configs` (built once)."""
    import triton

    if kernel not in _AUTOTUNED:
        _AUTOTUNED[kernel] = triton.autotune(configs=autotune_configs(free), key=AUTOTUNE_KEY)(kernel)
    return _AUTOTUNED[kernel]


def kept_tenths(mask: torch.Tensor) -> int:
    """The autotuning key's kept fraction, in tenths; 0 when not autotuning (no sync then),
    -1 while torch.compile traces."""
    if not autotuning():
        return 0
    if torch.compiler.is_compiling():
        return -1
    return int(mask.float().mean().item() * 10)


def launch(kernel, free: str, grid, tiles: Tiles, tensors: tuple, args: dict) -> None:
    """Launches ``kernel`` through ``wrap_triton``: with ``tiles``' fixed config, or autotuned over
    ``free`` (``"BLOCK_M"`` or ``"BLOCK_K"``, the pixel tile) and warps/stages where autotuning is on.
    ``grid(free_value)`` gives the grid for a value of the free tile size."""
    from torch.library import wrap_triton

    if autotuning():
        wrap_triton(autotuned(kernel, free))[lambda meta: grid(meta[free])](*tensors, **args)
        return
    value = getattr(tiles, free.lower())
    wrap_triton(kernel)[grid(value)](*tensors, **args, **{free: value}, num_warps=tiles.num_warps,
                                     num_stages=tiles.num_stages)


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """tl.dot's input precision: fp32 follows ``torch.backends.cudnn.allow_tf32`` as cuDNN does."""
    if dtype == torch.float32 and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"

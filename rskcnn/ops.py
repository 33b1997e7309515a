"""Fake kernels and autograd for the C++ ops whose schemas live in csrc/rskcnn.cpp.

Importing this module requires ``rskcnn._C`` to be loaded. The rules themselves are shared
with the Triton ops and live in :mod:`rskcnn.op_rules`.
"""

from __future__ import annotations

import torch

from .op_rules import OpTrio, output_memory_format, register_autograd, register_fakes

CPP_OPS = OpTrio("rskcnn::masked_conv2d", "rskcnn::masked_conv2d_grad_input", "rskcnn::masked_conv2d_grad_weight")

register_fakes(CPP_OPS)
register_autograd(CPP_OPS)


@torch.library.register_fake("rskcnn::plan_tiles")
def _plan_tiles_fake(mask, weight_size, groups, block, tile_shape, reorder):
    """Shapes of the tile plans (csrc/tile_steps.h); the op has no gradient."""
    cout, cin_g, kh, kw = weight_size
    out_tile, in_chunk, in_tile, out_chunk = tile_shape
    torch._check(groups > 0 and cout % groups == 0, lambda: f"groups = {groups} must divide Cout = {cout}")
    cout_g = cout // groups
    out_rows, in_rows = groups * -(-cout_g // out_tile), groups * -(-cin_g // in_tile)
    out_capacity = kh * kw * -(-cin_g // in_chunk)
    in_capacity = kh * kw * -(-cout_g // out_chunk)

    def new(*shape):
        return mask.new_empty(shape, dtype=torch.int32)

    return new(cout), new(out_rows, out_capacity), new(out_rows), new(in_rows, in_capacity), new(in_rows)

__all__ = ["CPP_OPS", "output_memory_format"]

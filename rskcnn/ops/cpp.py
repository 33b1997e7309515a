"""The C++ trio ``rskcnn::masked_conv2d*`` and ``rskcnn::plan_tiles``: schemas, fake kernels,
autograd and autocast rules.

The kernels live in ``csrc/`` and register for these schemas under the CPU and CUDA
dispatch keys (``csrc/cpu/register.cpp``, ``csrc/cuda/register.cpp``) when ``rskcnn._C``
is loaded. Importing this module requires that extension (:mod:`rskcnn._extension`).
"""

from __future__ import annotations

import torch

from .. import _extension
from ..geometry import ceil_div
from . import schemas
from .autocast import register_autocast_rule
from .rules import register_autograd, register_fakes

_extension.require_ops()

# Defined here, implemented in C++: the dispatcher accepts the kernels that rskcnn._C
# registered before this definition and checks their C++ signatures against it.
_LIBRARY = torch.library.Library(schemas.NAMESPACE, "FRAGMENT")
for _which, _schema in schemas.CPP_OPS.schemas().items():
    _LIBRARY.define(getattr(schemas.CPP_OPS, _which) + _schema)
_LIBRARY.define("plan_tiles" + schemas.PLAN_TILES)

register_fakes(schemas.CPP_OPS)
register_autograd(schemas.CPP_OPS)
# The C++ CPU kernels compute in float32/float64 only; the CUDA ones in half precision too.
register_autocast_rule(schemas.CPP_OPS.qualified("forward"), "cpu", run_dtypes=())
if _extension.cuda_built():
    register_autocast_rule(schemas.CPP_OPS.qualified("forward"), "cuda", run_dtypes=(torch.float16, torch.bfloat16))


@torch.library.register_fake("rskcnn::plan_tiles")
def _plan_tiles_fake(mask, weight_size, groups, block, tile_shape, reorder):
    """Shapes of the tile plans (see ``plan_tiles`` in :mod:`rskcnn.ops.schemas`)."""
    cout, cin_g, kh, kw = weight_size
    out_tile, in_chunk, in_tile, out_chunk = tile_shape
    torch._check(groups > 0 and cout % groups == 0, lambda: f"groups = {groups} must divide Cout = {cout}")
    cout_g = cout // groups
    out_rows, in_rows = groups * ceil_div(cout_g, out_tile), groups * ceil_div(cin_g, in_tile)
    out_capacity = kh * kw * ceil_div(cin_g, in_chunk)
    in_capacity = kh * kw * ceil_div(cout_g, out_chunk)

    def new(*shape):
        return mask.new_empty(shape, dtype=torch.int32)

    return new(cout), new(out_rows, out_capacity), new(out_rows), new(in_rows, in_capacity), new(in_rows)

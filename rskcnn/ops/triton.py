"""The Triton trio ``rskcnn::triton_conv2d*``: defined with the schemas of
:mod:`rskcnn.ops.schemas` from the pass functions of :mod:`rskcnn.triton_kernels.passes`,
with the shared fake kernels, autograd and autocast rules.

On a GPU they are ``torch.library.triton_op``s, so ``torch.compile`` sees through them to
the kernels. Under Triton's CPU interpreter a kernel cannot be traced (Triton hands back a
plain Python function), so there they are opaque ``custom_op``s with fake kernels.
Importing this module imports Triton; the ``triton`` backend does it on first use.
"""

from __future__ import annotations

import torch

from ..triton_kernels import interpreting, passes
from . import schemas
from .autocast import register_autocast_rule
from .rules import register_autograd, register_fakes

_define = torch.library.custom_op if interpreting() else torch.library.triton_op

# Held so that the definitions live as long as the module.
DEFINITIONS = {
    which: _define(schemas.TRITON_OPS.qualified(which), getattr(passes, which), mutates_args=(), schema=schema)
    for which, schema in schemas.TRITON_OPS.schemas().items()
}

if interpreting():
    register_fakes(schemas.TRITON_OPS)  # a triton_op's fake is its own function run on fake tensors
register_autograd(schemas.TRITON_OPS)
# Under torch.autocast the forward returns autocast's dtype, as nn.Conv2d does (ops/autocast.py); it
# runs in float16/bfloat16 where the kernels do, else in float32 (the interpreter has no bfloat16).
register_autocast_rule(schemas.TRITON_OPS.qualified("forward"), "cuda", run_dtypes=(torch.float16, torch.bfloat16))
register_autocast_rule(schemas.TRITON_OPS.qualified("forward"), "cpu", run_dtypes=(torch.float16,))

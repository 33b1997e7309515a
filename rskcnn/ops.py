"""Fake kernels and autograd for the C++ ops whose schemas live in csrc/rskcnn.cpp.

Importing this module requires ``rskcnn._C`` to be loaded. The rules themselves are shared
with the Triton ops and live in :mod:`rskcnn.op_rules`.
"""

from __future__ import annotations

from .op_rules import OpTrio, output_memory_format, register_autograd, register_fakes

CPP_OPS = OpTrio("rskcnn::masked_conv2d", "rskcnn::masked_conv2d_grad_input", "rskcnn::masked_conv2d_grad_weight")

register_fakes(CPP_OPS)
register_autograd(CPP_OPS)

__all__ = ["CPP_OPS", "output_memory_format"]

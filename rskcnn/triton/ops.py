"""The Triton ops ``rskcnn::triton_conv2d``, ``..._grad_input`` and ``..._grad_weight``.

They follow the schemas of the C++ ops (see :mod:`rskcnn.op_rules`) and share their autograd
rules. On a GPU they are ``torch.library.triton_op``s, so ``torch.compile`` sees through
them to the kernels. Under Triton's CPU interpreter a kernel cannot be traced (Triton hands
back a plain Python function), so there they are opaque custom ops with fake kernels.

Every mask-dependent decision is made on the device: the index lists come from one launch of
:mod:`rskcnn.triton.plans` and the kernels read their lengths and the mask itself, so nothing
here waits on the GPU, and a tiled pass is two launches.
"""

from __future__ import annotations

import torch

from ..autocast import register_autocast_rule
from ..masks import expand_mask, granularity_of
from ..op_rules import OpTrio, output_memory_format, output_shape, register_autograd, register_fakes
from . import configs, element, interpreting, plans
from .forward import launch_forward
from .geometry import ConvGeometry, dot_precision
from .grad_input import launch_grad_input
from .grad_weight import launch_grad_weight

TRITON_OPS = OpTrio("rskcnn::triton_conv2d", "rskcnn::triton_conv2d_grad_input", "rskcnn::triton_conv2d_grad_weight")


def _define(name: str):
    if interpreting():
        return torch.library.custom_op(name, mutates_args=())
    return torch.library.triton_op(name, mutates_args=())


def _masked_weight(weight, mask, block, scale):
    """``weight * scale`` where kept and exactly 0 elsewhere (so a masked NaN or inf never
    reaches a product), and the bool ``kept``."""
    kept = expand_mask(mask, block, weight.shape)
    masked = torch.where(kept, weight, weight.new_zeros(()))
    if scale != 1.0:
        masked = masked * scale
    return masked, kept


def _uses_element_kernels(block, weight_shape) -> bool:
    return granularity_of(block, weight_shape) == "element"


@_define(TRITON_OPS.forward)
def triton_conv2d(
    input: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
    stride: list[int], padding: list[int], dilation: list[int], groups: int, block: list[int], scale: float,
) -> torch.Tensor:
    """``(N, Cin, H, W) -> (N, Cout, OH, OW)``; the output follows the input's memory format."""
    shape = output_shape(input.shape, weight.shape, stride, padding, dilation)
    out = torch.empty(shape, dtype=input.dtype, device=input.device).contiguous(
        memory_format=output_memory_format(input))
    if out.numel() == 0:
        return out
    geo = ConvGeometry.of(input.shape, weight.shape, stride, padding, dilation, groups)
    if _uses_element_kernels(block, weight.shape):
        masked, kept = _masked_weight(weight, mask, block, scale)
        element.element_forward(input, masked, kept, bias, out, geo.stride, geo.padding, geo.dilation, groups)
        return out
    mask = plans.mask_bytes(mask)  # once per pass: the plan and the kernel then read it as is
    tiles = configs.forward_tiles(block, weight.shape, input.dtype)
    order, steps, counts = plans.forward_plan(mask, block, geo, tiles.block_n, tiles.block_k)
    launch_forward(input, weight, mask, block, float(scale), bias, out, order, steps, counts, geo, tiles,
                   dot_precision(input.dtype, input.device), configs.kept_tenths(mask))
    return out


@_define(TRITON_OPS.grad_input)
def triton_conv2d_grad_input(
    grad_output: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, input_size: list[int],
    stride: list[int], padding: list[int], dilation: list[int], groups: int, block: list[int], scale: float,
) -> torch.Tensor:
    """``(N, Cout, OH, OW) -> (N, Cin, H, W)``; follows grad_output's memory format."""
    out = torch.empty(input_size, dtype=grad_output.dtype, device=grad_output.device).contiguous(
        memory_format=output_memory_format(grad_output))
    if out.numel() == 0:
        return out
    if grad_output.numel() == 0:
        return out.zero_()
    geo = ConvGeometry.of(input_size, weight.shape, stride, padding, dilation, groups)
    if _uses_element_kernels(block, weight.shape):
        masked, kept = _masked_weight(weight, mask, block, scale)
        element.element_grad_input(grad_output, masked, kept, out, geo.stride, geo.padding, geo.dilation, groups)
        return out
    mask = plans.mask_bytes(mask)
    tiles = configs.grad_input_tiles(block, weight.shape, grad_output.dtype)
    order, steps, counts = plans.grad_input_plan(mask, block, geo, tiles.block_n, tiles.block_k)
    launch_grad_input(grad_output, weight, mask, block, float(scale), out, order, steps, counts, geo, tiles,
                      dot_precision(grad_output.dtype, grad_output.device), configs.kept_tenths(mask))
    return out


@_define(TRITON_OPS.grad_weight)
def triton_conv2d_grad_weight(
    grad_output: torch.Tensor, input: torch.Tensor, mask: torch.Tensor, weight_size: list[int],
    stride: list[int], padding: list[int], dilation: list[int], groups: int, block: list[int], scale: float,
) -> torch.Tensor:
    """``(N, Cout, OH, OW), (N, Cin, H, W) -> (Cout, Cin_g, KH, KW)``, exactly 0 where masked."""
    out = torch.empty(weight_size, dtype=grad_output.dtype, device=grad_output.device)
    if out.numel() == 0:
        return out
    if grad_output.numel() == 0:
        return out.zero_()
    geo = ConvGeometry.of(input.shape, weight_size, stride, padding, dilation, groups)
    if _uses_element_kernels(block, weight_size):
        element.element_grad_weight(grad_output, input, expand_mask(mask, block, weight_size), scale, out, geo.stride, geo.padding, geo.dilation,
                                    groups)
        return out
    mask = plans.mask_bytes(mask)
    tiles = configs.grad_weight_tiles(block, weight_size, grad_output.dtype)
    order = plans.channel_order(mask, block, geo)
    launch_grad_weight(grad_output, input, mask, block, float(scale), out, order, geo, tiles,
                       dot_precision(grad_output.dtype, grad_output.device), configs.kept_tenths(mask))
    return out


if interpreting():
    register_fakes(TRITON_OPS)
register_autograd(TRITON_OPS)
# Under torch.autocast the forward returns autocast's dtype, as nn.Conv2d does (rskcnn/autocast.py);
# it runs in float16/bfloat16 where the kernels do, else in float32 (the interpreter has no bfloat16).
register_autocast_rule(TRITON_OPS.forward, "cuda", run_dtypes=(torch.float16, torch.bfloat16))
register_autocast_rule(TRITON_OPS.forward, "cpu", run_dtypes=(torch.float16,))

"""The three passes of the Triton backend as plain functions of tensors; :mod:`rskcnn.ops.triton`
defines the ops ``rskcnn::triton_conv2d{,_grad_input,_grad_weight}`` from them.

Every mask-dependent decision is made on the device: the index lists come from one launch of
:mod:`rskcnn.triton_kernels.tile_steps` and the kernels read their lengths and the mask itself,
so nothing here waits on the GPU, and a tiled pass is two launches.
"""

from __future__ import annotations

import torch

from ..geometry import ConvGeometry, conv_output_shape, output_memory_format
from ..masks import expand_mask, granularity_of
from . import configs, element, tile_steps
from .configs import dot_precision
from .forward import launch_forward
from .grad_input import launch_grad_input
from .grad_weight import launch_grad_weight


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


def forward(
    input: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None,
    stride: list[int], padding: list[int], dilation: list[int], groups: int, block: list[int], scale: float,
) -> torch.Tensor:
    """``(N, Cin, H, W) -> (N, Cout, OH, OW)``; the output follows the input's memory format."""
    shape = conv_output_shape(input.shape, weight.shape, stride, padding, dilation)
    if min(shape[2:]) < 1:
        raise ValueError(f"rskcnn: kernel is larger than the padded input (output extents {tuple(shape[2:])})")
    out = torch.empty(shape, dtype=input.dtype, device=input.device).contiguous(
        memory_format=output_memory_format(input))
    if out.numel() == 0:
        return out
    geo = ConvGeometry.of(input.shape, weight.shape, stride, padding, dilation, groups)
    if _uses_element_kernels(block, weight.shape):
        masked, kept = _masked_weight(weight, mask, block, scale)
        element.element_forward(input, masked, kept, bias, out, geo.stride, geo.padding, geo.dilation, groups)
        return out
    mask = tile_steps.mask_bytes(mask)  # once per pass: the plan and the kernel then read it as is
    tiles = configs.forward_tiles(block, weight.shape, input.dtype)
    order, steps, counts = tile_steps.forward_plan(mask, block, geo, tiles.block_n, tiles.block_k)
    launch_forward(input, weight, mask, block, float(scale), bias, out, order, steps, counts, geo, tiles,
                   dot_precision(input.dtype, input.device), configs.kept_tenths(mask))
    return out


def grad_input(
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
    mask = tile_steps.mask_bytes(mask)
    tiles = configs.grad_input_tiles(block, weight.shape, grad_output.dtype)
    order, steps, counts = tile_steps.grad_input_plan(mask, block, geo, tiles.block_n, tiles.block_k)
    launch_grad_input(grad_output, weight, mask, block, float(scale), out, order, steps, counts, geo, tiles,
                      dot_precision(grad_output.dtype, grad_output.device), configs.kept_tenths(mask))
    return out


def grad_weight(
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
    mask = tile_steps.mask_bytes(mask)
    tiles = configs.grad_weight_tiles(block, weight_size, grad_output.dtype)
    order = tile_steps.channel_order(mask, block, geo)
    launch_grad_weight(grad_output, input, mask, block, float(scale), out, order, geo, tiles,
                       dot_precision(grad_output.dtype, grad_output.device), configs.kept_tenths(mask))
    return out


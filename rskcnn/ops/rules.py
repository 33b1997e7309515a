"""Fake kernels and autograd shared by every trio of masked-convolution ops.

The trios (:mod:`rskcnn.ops.schemas`) share one schema, so one set of rules serves them all:

* fake kernels: output shapes and strides from the arguments alone, validated with
  ``torch._check`` (what ``torch.compile`` and ``opcheck`` run);
* autograd: the convolution is bilinear in (input, weight), so each op's derivatives are
  the other two ops of its trio, which gives double backward too.
"""

from __future__ import annotations

import torch

from ..geometry import conv_output_shape, mask_shape_of, output_memory_format
from .schemas import OpTrio


def output_shape(input_size, weight_size, stride, padding, dilation) -> tuple:
    """``(N, Cout, OH, OW)``, checked (with ``torch._check``, so it also runs on fake tensors)."""
    shape = conv_output_shape(input_size, weight_size, stride, padding, dilation)
    torch._check(shape[2] > 0 and shape[3] > 0, lambda: "rskcnn: kernel is larger than the padded input")
    return shape


def check_mask(mask, weight_size, block, device) -> None:
    torch._check(
        mask.device == device, lambda: f"rskcnn: mask is on {mask.device} but the other tensors are on {device}"
    )
    expected = mask_shape_of(weight_size, block)
    torch._check(mask.dtype == torch.bool, lambda: f"rskcnn: mask must be torch.bool, got {mask.dtype}")
    torch._check(
        tuple(mask.shape) == expected,
        lambda: f"rskcnn: mask must have shape {expected} = ceil(weight shape / block), got {tuple(mask.shape)}",
    )


def forward_fake(input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
    check_mask(mask, weight.shape, block, input.device)
    torch._check(input.shape[1] == weight.shape[1] * groups, lambda: "rskcnn: channel mismatch")
    shape = output_shape(input.shape, weight.shape, stride, padding, dilation)
    return input.new_empty(shape).contiguous(memory_format=output_memory_format(input))


def grad_input_fake(grad_output, weight, mask, input_size, stride, padding, dilation, groups, block, scale):
    check_mask(mask, weight.shape, block, grad_output.device)
    return grad_output.new_empty(input_size).contiguous(memory_format=output_memory_format(grad_output))


def grad_weight_fake(grad_output, input, mask, weight_size, stride, padding, dilation, groups, block, scale):
    check_mask(mask, weight_size, block, grad_output.device)
    return grad_output.new_empty(weight_size)


def register_fakes(trio: OpTrio) -> None:
    torch.library.register_fake(trio.qualified("forward"), forward_fake)
    torch.library.register_fake(trio.qualified("grad_input"), grad_input_fake)
    torch.library.register_fake(trio.qualified("grad_weight"), grad_weight_fake)


def register_autograd(trio: OpTrio) -> None:
    """Autograd for a trio. The convolution is bilinear in (input, weight), so each op's
    derivatives are the other two ops; registering all three gives double backward."""
    fwd, gi, gw = (lambda: trio.op("forward")), (lambda: trio.op("grad_input")), (lambda: trio.op("grad_weight"))

    def setup_forward(ctx, inputs, output):
        input, weight, mask, bias, *conv = inputs
        ctx.conv = conv  # stride, padding, dilation, groups, block, scale
        ctx.input_size = input.shape
        ctx.weight_size = weight.shape
        needs_input, needs_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(input if needs_weight else None, weight if needs_input else None, mask)

    def backward_forward(ctx, grad_output):
        input, weight, mask = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = gi()(grad_output, weight, mask, ctx.input_size, *ctx.conv)
        if ctx.needs_input_grad[1]:
            grad_weight = gw()(grad_output, input, mask, ctx.weight_size, *ctx.conv)
        if ctx.needs_input_grad[3]:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_input, grad_weight, None, grad_bias, None, None, None, None, None, None

    def setup_grad_input(ctx, inputs, output):
        grad_output, weight, mask, input_size, *conv = inputs
        ctx.conv = conv
        ctx.weight_size = weight.shape
        ctx.save_for_backward(grad_output, weight, mask)

    def backward_grad_input(ctx, grad_grad_input):
        grad_output, weight, mask = ctx.saved_tensors
        d_grad_output = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad_output = fwd()(grad_grad_input, weight, mask, None, *ctx.conv)
        if ctx.needs_input_grad[1]:
            d_weight = gw()(grad_output, grad_grad_input, mask, ctx.weight_size, *ctx.conv)
        return d_grad_output, d_weight, None, None, None, None, None, None, None, None

    def setup_grad_weight(ctx, inputs, output):
        grad_output, input, mask, weight_size, *conv = inputs
        ctx.conv = conv
        ctx.input_size = input.shape
        ctx.save_for_backward(grad_output, input, mask)

    def backward_grad_weight(ctx, grad_grad_weight):
        grad_output, input, mask = ctx.saved_tensors
        d_grad_output = d_input = None
        if ctx.needs_input_grad[0]:
            d_grad_output = fwd()(input, grad_grad_weight, mask, None, *ctx.conv)
        if ctx.needs_input_grad[1]:
            d_input = gi()(grad_output, grad_grad_weight, mask, ctx.input_size, *ctx.conv)
        return d_grad_output, d_input, None, None, None, None, None, None, None, None

    torch.library.register_autograd(trio.qualified("forward"), backward_forward, setup_context=setup_forward)
    torch.library.register_autograd(trio.qualified("grad_input"), backward_grad_input, setup_context=setup_grad_input)
    torch.library.register_autograd(trio.qualified("grad_weight"), backward_grad_weight,
                                    setup_context=setup_grad_weight)

"""Fake kernels and autograd shared by every trio of masked-convolution ops.

A trio is ``(forward, grad_input, grad_weight)``: the C++ ops of csrc/rskcnn.cpp
(``masked_conv2d*``) and the Triton ops of rskcnn/triton (``triton_conv2d*``) follow the
same schemas, so one set of rules serves both:

* ``forward(input, weight, mask, bias, stride, padding, dilation, groups, block, scale)``
* ``grad_input(grad_output, weight, mask, input_size, stride, ..., scale)``
* ``grad_weight(grad_output, input, mask, weight_size, stride, ..., scale)``

with the meaning of ``F.conv2d(input, weight * expand(mask, block) * scale, ...)``; padding
is symmetric ints here (the functional API resolves ``'same'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .functional import conv_out_extent


def output_memory_format(t: torch.Tensor) -> torch.memory_format:
    """The rule of csrc/conv_args.h::follow_memory_format, so fake and real strides agree."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def output_shape(input_size, weight_size, stride, padding, dilation) -> tuple:
    n, _, h, w = input_size
    cout, _, kh, kw = weight_size
    oh = conv_out_extent(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_extent(w, kw, stride[1], padding[1], dilation[1])
    torch._check(oh > 0 and ow > 0, lambda: "rskcnn: kernel is larger than the padded input")
    return (n, cout, oh, ow)


def check_mask(mask, weight_size, block, device) -> None:
    torch._check(
        mask.device == device, lambda: f"rskcnn: mask is on {mask.device} but the other tensors are on {device}"
    )
    expected = tuple(-(-s // b) for s, b in zip(weight_size, block))
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


@dataclass(frozen=True)
class OpTrio:
    """Qualified names (``ns::name``) of a forward op and its two gradient ops."""

    forward: str
    grad_input: str
    grad_weight: str

    def op(self, which: str):
        namespace, name = getattr(self, which).split("::")
        return getattr(getattr(torch.ops, namespace), name).default


def register_fakes(trio: OpTrio) -> None:
    torch.library.register_fake(trio.forward, forward_fake)
    torch.library.register_fake(trio.grad_input, grad_input_fake)
    torch.library.register_fake(trio.grad_weight, grad_weight_fake)


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

    torch.library.register_autograd(trio.forward, backward_forward, setup_context=setup_forward)
    torch.library.register_autograd(trio.grad_input, backward_grad_input, setup_context=setup_grad_input)
    torch.library.register_autograd(trio.grad_weight, backward_grad_weight, setup_context=setup_grad_weight)

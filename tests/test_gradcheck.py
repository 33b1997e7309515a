"""gradcheck and gradgradcheck of the cpu backend in float64.

The three ops register autograd for each other, so double backward runs the C++ ops too.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import rskcnn

from conftest import ConvConfig, make_inputs, requires_cpu_ops

pytestmark = requires_cpu_ops

SMALL = ConvConfig(n=2, cin=4, cout=4, h=5, w=6, kernel=(3, 2), padding=1, keep_prob=0.5)
ODD = ConvConfig(n=2, cin=6, cout=6, h=7, w=6, kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                 dilation=(2, 1), groups=3, keep_prob=0.5)

CASES = [
    pytest.param(dataclasses.replace(SMALL, granularity="element"), id="element"),
    pytest.param(dataclasses.replace(SMALL, granularity="tap"), id="tap"),
    pytest.param(dataclasses.replace(SMALL, granularity="filter"), id="filter"),
    pytest.param(dataclasses.replace(SMALL, granularity="block", block_size=(3, 3)), id="block3x3"),
    pytest.param(dataclasses.replace(ODD, granularity="element"), id="odd-element"),
    pytest.param(dataclasses.replace(ODD, granularity="block", block_size=(4, 2), bias=False), id="odd-block-nobias"),
    pytest.param(dataclasses.replace(SMALL, granularity="tap", padding="same", kernel=(2, 3), scale=1.7),
                 id="same-scaled"),
]


def _function(cfg: ConvConfig, mask: torch.Tensor):
    def f(x, w, *maybe_bias):
        b = maybe_bias[0] if maybe_bias else None
        return rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale,
                                 backend="cpu")

    return f


def _args(inp):
    return (inp.input, inp.weight) + ((inp.bias,) if inp.bias is not None else ())


@pytest.mark.parametrize("cfg", CASES)
def test_gradcheck(cfg):
    inp = make_inputs(cfg, torch.float64)
    assert gradcheck(_function(cfg, inp.mask), _args(inp), fast_mode=False)


@pytest.mark.parametrize("cfg", CASES)
def test_gradgradcheck(cfg):
    inp = make_inputs(cfg, torch.float64)
    assert gradgradcheck(_function(cfg, inp.mask), _args(inp), fast_mode=False)


def test_gradcheck_unbatched():
    cfg = dataclasses.replace(SMALL, n=1, granularity="filter")
    inp = make_inputs(cfg, torch.float64)
    x = inp.input[0].detach().requires_grad_()
    assert gradcheck(_function(cfg, inp.mask), (x, inp.weight, inp.bias), fast_mode=True)


def _op_conv_args(cfg: ConvConfig):
    assert not isinstance(cfg.padding, str)
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    return [pair(cfg.stride), pair(cfg.padding), pair(cfg.dilation), cfg.groups, list(cfg.block), cfg.scale]


@pytest.mark.parametrize("cfg", [c for c in CASES if c.id in ("tap", "odd-element", "odd-block-nobias")])
def test_gradcheck_backward_ops(cfg):
    """The grad_input and grad_weight ops are differentiable in both of their tensor arguments."""
    inp = make_inputs(cfg, torch.float64)
    conv = _op_conv_args(cfg)
    go = inp.grad_output.detach().requires_grad_()
    ops = torch.ops.rskcnn

    def grad_input(go, w):
        return ops.masked_conv2d_grad_input(go, w, inp.mask, list(inp.input.shape), *conv)

    def grad_weight(go, x):
        return ops.masked_conv2d_grad_weight(go, x, inp.mask, list(cfg.weight_shape), *conv)

    assert gradcheck(grad_input, (go, inp.weight), fast_mode=True)
    assert gradcheck(grad_weight, (go, inp.input), fast_mode=True)

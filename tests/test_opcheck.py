"""torch.library.opcheck on the three ops: schema, fake kernel, autograd registration and
AOT dispatch, over a few samples per granularity (channels_last and batch 0 included)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import ConvConfig, as_layout, make_inputs, requires_cpu_ops

pytestmark = requires_cpu_ops

BASE = ConvConfig(n=2, cin=4, cout=6, h=6, w=5, kernel=(3, 2), padding=(1, 0), keep_prob=0.5)
ODD = ConvConfig(n=2, cin=6, cout=6, h=7, w=6, kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                 dilation=(2, 1), groups=3, keep_prob=0.5)

SAMPLES = {
    "base": (BASE, "contiguous"),
    "odd_grouped": (ODD, "contiguous"),
    "channels_last": (BASE, "channels_last"),
    "batch0": (dataclasses.replace(BASE, n=0), "contiguous"),
    "no_bias_scaled": (dataclasses.replace(ODD, bias=False, scale=0.5), "contiguous"),
}

GRANULARITIES = [
    pytest.param("element", (4, 2), id="element"),
    pytest.param("tap", (4, 2), id="tap"),
    pytest.param("filter", (4, 2), id="filter"),
    pytest.param("block", (4, 2), id="block"),
]


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _conv_args(cfg: ConvConfig) -> list:
    return [_pair(cfg.stride), _pair(cfg.padding), _pair(cfg.dilation), cfg.groups, list(cfg.block),
            float(cfg.scale)]


def _sample(name, granularity, block_size, dtype, requires_grad):
    cfg, layout = SAMPLES[name]
    cfg = dataclasses.replace(cfg, granularity=granularity, block_size=block_size)
    inp = make_inputs(cfg, dtype, requires_grad=requires_grad)
    x = as_layout(inp.input, layout)
    go = as_layout(inp.grad_output, layout)
    if requires_grad:
        go.requires_grad_()
    return cfg, inp, x, go


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("granularity, block_size", GRANULARITIES)
def test_opcheck_masked_conv2d(granularity, block_size, name, requires_grad):
    cfg, inp, x, _ = _sample(name, granularity, block_size, torch.float64, requires_grad)
    _opcheck(torch.ops.rskcnn.masked_conv2d, (x, inp.weight, inp.mask, inp.bias, *_conv_args(cfg)))


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("granularity, block_size", GRANULARITIES)
def test_opcheck_grad_input(granularity, block_size, name):
    cfg, inp, x, go = _sample(name, granularity, block_size, torch.float64, True)
    _opcheck(torch.ops.rskcnn.masked_conv2d_grad_input,
             (go, inp.weight, inp.mask, list(x.shape), *_conv_args(cfg)))


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("granularity, block_size", GRANULARITIES)
def test_opcheck_grad_weight(granularity, block_size, name):
    cfg, inp, x, go = _sample(name, granularity, block_size, torch.float64, True)
    _opcheck(torch.ops.rskcnn.masked_conv2d_grad_weight,
             (go, x, inp.mask, list(cfg.weight_shape), *_conv_args(cfg)))


@pytest.mark.parametrize("op_name", ["masked_conv2d", "masked_conv2d_grad_input", "masked_conv2d_grad_weight"])
def test_opcheck_float32(op_name):
    cfg, inp, x, go = _sample("odd_grouped", "tap", (4, 2), torch.float32, True)
    op = getattr(torch.ops.rskcnn, op_name)
    if op_name == "masked_conv2d":
        args = (x, inp.weight, inp.mask, inp.bias)
    elif op_name == "masked_conv2d_grad_input":
        args = (go, inp.weight, inp.mask, list(x.shape))
    else:
        args = (go, x, inp.mask, list(cfg.weight_shape))
    _opcheck(op, (*args, *_conv_args(cfg)))


def test_fake_output_strides_match_real_for_channels_last():
    """The fake kernel predicts the real kernel's output memory format."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg, inp, x, go = _sample("channels_last", "element", (4, 2), torch.float32, False)
    real = torch.ops.rskcnn.masked_conv2d(x, inp.weight, inp.mask, inp.bias, *_conv_args(cfg))
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(t) for t in (x, inp.weight, inp.mask, inp.bias)]
        fake = torch.ops.rskcnn.masked_conv2d(*fake_args, *_conv_args(cfg))
    assert fake.shape == real.shape
    assert fake.stride() == real.stride()
    assert real.is_contiguous(memory_format=torch.channels_last)

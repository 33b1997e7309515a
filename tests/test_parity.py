"""Every backend against the reference backend and against a float64 oracle.

The oracle is built here, independently of rskcnn: ``F.conv2d`` in float64 on
``weight * M * scale``, where ``M[o, i, h, w] = mask[o // bo, i // bi, h // bh, w // bw]`` is
computed by index arithmetic. Forward, grad_input, grad_weight and grad_bias are compared;
gradients of masked weights must be exactly zero.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import rskcnn
from rskcnn.backends import reference_conv2d

from conftest import (BACKENDS, LAYOUTS, ConvConfig, as_layout, assert_close, leaf_copy, make_inputs, requires_cpu_ops,
                      widest_dtype)

DTYPES = [torch.float32, torch.float64]


def full_mask(mask: torch.Tensor, block, weight_shape) -> torch.Tensor:
    """Elementwise mask by index arithmetic (independent of rskcnn.expand_mask)."""
    idx = [torch.arange(s) // b for s, b in zip(weight_shape, block)]
    return mask[idx[0][:, None, None, None], idx[1][None, :, None, None],
                idx[2][None, None, :, None], idx[3][None, None, None, :]]


@dataclasses.dataclass
class Result:
    out: torch.Tensor
    grad_input: torch.Tensor
    grad_weight: torch.Tensor
    grad_bias: torch.Tensor | None


def run_backend(backend, cfg: ConvConfig, inp, *, layout="contiguous") -> Result:
    x = as_layout(leaf_copy(inp.input), layout) if layout != "contiguous" else leaf_copy(inp.input)
    w, b = leaf_copy(inp.weight), leaf_copy(inp.bias)
    out = rskcnn.rsk_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale,
                            backend=backend)
    out.backward(inp.grad_output)
    return Result(out.detach(), x.grad, w.grad, None if b is None else b.grad)


def run_reference(cfg: ConvConfig, inp) -> Result:
    x, w, b = leaf_copy(inp.input), leaf_copy(inp.weight), leaf_copy(inp.bias)
    out = reference_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale)
    out.backward(inp.grad_output)
    return Result(out.detach(), x.grad, w.grad, None if b is None else b.grad)


def run_oracle(cfg: ConvConfig, inp) -> Result:
    f64 = torch.float64
    x, w, b = leaf_copy(inp.input, f64), leaf_copy(inp.weight, f64), leaf_copy(inp.bias, f64)
    m = full_mask(inp.mask, cfg.block, cfg.weight_shape).to(f64)
    out = F.conv2d(x, w * m * cfg.scale, b, **cfg.conv_kwargs())
    out.backward(inp.grad_output.to(f64))
    return Result(out.detach(), x.grad, w.grad, None if b is None else b.grad)


def reductions(cfg: ConvConfig) -> dict[str, int]:
    _, _, oh, ow = cfg.output_shape()
    taps = cfg.kernel[0] * cfg.kernel[1]
    return dict(out=cfg.cin // cfg.groups * taps, grad_input=cfg.cout // cfg.groups * taps,
                grad_weight=cfg.n * oh * ow, grad_bias=cfg.n * oh * ow)


def check_result(res: Result, expected: Result, cfg: ConvConfig, dtype, what: str) -> None:
    red = reductions(cfg)
    for field in ("out", "grad_input", "grad_weight", "grad_bias"):
        got, want = getattr(res, field), getattr(expected, field)
        if want is None:
            assert got is None, field
            continue
        assert got is not None, f"{field} is missing"
        assert got.shape == want.shape, f"{field}: {tuple(got.shape)} != {tuple(want.shape)}"
        assert_close(got, want, dtype, red[field], msg=f"{field} vs {what}")


def check_parity(backend, cfg: ConvConfig, dtype, *, layout="contiguous") -> Result:
    inp = make_inputs(cfg, dtype)
    res = run_backend(backend, cfg, inp, layout=layout)

    assert tuple(res.out.shape) == cfg.output_shape()
    assert res.out.dtype == dtype
    assert res.grad_input.dtype == dtype and res.grad_weight.dtype == dtype
    assert tuple(res.grad_input.shape) == tuple(inp.input.shape)
    assert tuple(res.grad_weight.shape) == cfg.weight_shape

    kept = full_mask(inp.mask, cfg.block, cfg.weight_shape)
    dropped = res.grad_weight[~kept]
    assert (dropped == 0).all(), f"{int((dropped != 0).sum())} masked weights got a nonzero gradient"
    if cfg.keep_prob == 1.0:
        assert kept.all()

    check_result(res, run_reference(cfg, inp), cfg, dtype, "reference backend")
    check_result(res, run_oracle(cfg, inp), cfg, dtype, "float64 oracle")
    return res


# --------------------------------------------------------------------------- grid 1
# Every granularity x keep_prob x dtype on one odd grouped configuration: Cin/groups = 3 and
# Cout = 8 (4 per group), so the (4, 2) and (3, 5) blocks divide neither, and a (3, 5) block
# straddles the boundary between the two groups.

ODD = ConvConfig(n=2, cin=6, cout=8, h=9, w=7, kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                 dilation=(2, 1), groups=2, bias=True)

GRANULARITY_CASES = [
    pytest.param("element", (4, 2), id="element"),
    pytest.param("tap", (4, 2), id="tap"),
    pytest.param("filter", (4, 2), id="filter"),
    pytest.param("block", (4, 2), id="block4x2"),
    pytest.param("block", (3, 5), id="block3x5"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("granularity, block_size", GRANULARITY_CASES)
def test_parity_granularity(backend, granularity, block_size, keep_prob, dtype):
    cfg = dataclasses.replace(ODD, granularity=granularity, block_size=block_size, keep_prob=keep_prob)
    check_parity(backend, cfg, dtype)


# --------------------------------------------------------------------------- grid 2
# Geometry: hand-picked rather than a cartesian product; the granularity rotates.

GEOMETRIES = {
    "plain3x3_pad1": ConvConfig(kernel=(3, 3), padding=1, granularity="element"),
    "stride2_1": ConvConfig(stride=(2, 1), kernel=(3, 3), granularity="tap"),
    "pad1_0": ConvConfig(padding=(1, 0), granularity="filter"),
    "dil2_1": ConvConfig(dilation=(2, 1), kernel=(3, 3), h=11, granularity="block", block_size=(4, 2)),
    "kernel3x2": ConvConfig(kernel=(3, 2), granularity="element"),
    "torchvision_odd": ConvConfig(cin=6, cout=6, h=10, w=9, kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                                  dilation=(2, 1), groups=3, granularity="tap"),
    "groups2": ConvConfig(cin=4, cout=6, groups=2, padding=1, granularity="filter"),
    "groups3": ConvConfig(cin=6, cout=6, groups=3, padding=1, granularity="block", block_size=(3, 5)),
    "depthwise": ConvConfig(cin=4, cout=8, groups=4, padding=1, granularity="element"),
    "same_3x3": ConvConfig(padding="same", kernel=(3, 3), granularity="tap"),
    "same_even_kernel": ConvConfig(padding="same", kernel=(4, 2), granularity="element"),
    "same_dilated": ConvConfig(padding="same", kernel=(3, 2), dilation=(2, 3), granularity="filter"),
    "valid": ConvConfig(padding="valid", kernel=(3, 2), granularity="block", block_size=(4, 2)),
    "odd_spatial": ConvConfig(h=11, w=5, kernel=(3, 3), stride=2, padding=1, granularity="element"),
    "1x1": ConvConfig(kernel=(1, 1), granularity="element"),
    "1x1_stride2_pad2": ConvConfig(kernel=(1, 1), stride=2, padding=2, granularity="tap"),
    "1x1_block": ConvConfig(cin=8, cout=8, kernel=(1, 1), granularity="block", block_size=(3, 5)),
    "stride3_large_pad": ConvConfig(kernel=(2, 3), stride=3, padding=(2, 3), granularity="filter"),
    "kernel_fills_input": ConvConfig(h=3, w=4, kernel=(3, 4), granularity="element"),
    "height1": ConvConfig(h=1, w=11, kernel=(1, 3), padding=(0, 1), granularity="tap"),
    "block_bigger_than_weight": ConvConfig(granularity="block", block_size=(32, 32), padding=1),
    "batch33": ConvConfig(n=33, cin=2, cout=3, h=5, w=5, padding=1, granularity="element"),
    "single_channel": ConvConfig(n=1, cin=1, cout=1, h=6, w=6, granularity="element"),
    "no_bias": ConvConfig(bias=False, padding=1, granularity="element"),
    "no_bias_grouped": ConvConfig(cin=6, cout=9, groups=3, bias=False, stride=2, granularity="tap"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_parity_geometry(backend, name, dtype):
    check_parity(backend, GEOMETRIES[name], dtype)


@pytest.mark.parametrize("scale", [2.5, 1 / 3])
def test_parity_scale(backend, scale):
    cfg = dataclasses.replace(ODD, granularity="tap", scale=scale)
    check_parity(backend, cfg, widest_dtype(backend))


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", [lay for lay in LAYOUTS if lay != "contiguous"])
def test_parity_input_layout(backend, layout, dtype):
    cfg = dataclasses.replace(ODD, granularity="element", keep_prob=0.5)
    res = check_parity(backend, cfg, dtype, layout=layout)
    if layout == "channels_last":
        assert res.out.is_contiguous(memory_format=torch.channels_last), "output lost channels_last"


@pytest.mark.parametrize("granularity", ["block", "element"])
@pytest.mark.parametrize("layout", ["channels_last", "permuted", "strided"])
def test_parity_all_operands_non_contiguous(backend, layout, granularity):
    """Input, weight, mask, bias and grad_output all in an unusual layout."""
    cfg = dataclasses.replace(ODD, granularity=granularity, block_size=(3, 5), keep_prob=0.5)
    dtype = widest_dtype(backend)
    inp = make_inputs(cfg, dtype)
    expected = run_oracle(cfg, inp)
    x, w = as_layout(leaf_copy(inp.input), layout), as_layout(leaf_copy(inp.weight), layout)
    b = as_layout(leaf_copy(inp.bias), "strided") if layout == "strided" else leaf_copy(inp.bias)
    mask = as_layout(inp.mask, "permuted" if layout == "channels_last" else layout)
    go = as_layout(inp.grad_output, layout)
    for t in (x, w, mask, go):
        assert not t.is_contiguous()
    if layout == "strided":
        assert not b.is_contiguous()
    out = rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, backend=backend)
    out.backward(go)
    check_result(Result(out.detach(), x.grad, w.grad, b.grad), expected, cfg, dtype, "float64 oracle")


# --------------------------------------------------------------------------- batch 0 and unbatched


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("granularity", ["element", "filter"])
def test_batch_zero(backend, granularity, dtype):
    cfg = dataclasses.replace(ODD, n=0, granularity=granularity)
    inp = make_inputs(cfg, dtype)
    x, w, b = leaf_copy(inp.input), leaf_copy(inp.weight), leaf_copy(inp.bias)
    out = rskcnn.rsk_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block, backend=backend)
    assert tuple(out.shape) == cfg.output_shape()
    assert out.shape[0] == 0 and out.dtype == dtype
    out.backward(inp.grad_output)
    assert x.grad is not None and x.grad.shape == x.shape
    assert w.grad is not None and torch.equal(w.grad, torch.zeros_like(w))
    assert b.grad is not None and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unbatched_3d_input(backend, dtype):
    cfg = dataclasses.replace(ODD, n=1, granularity="tap")
    inp = make_inputs(cfg, dtype)
    expected = run_oracle(cfg, inp)
    x = leaf_copy(inp.input[0])
    w, b = leaf_copy(inp.weight), leaf_copy(inp.bias)
    assert x.dim() == 3
    out = rskcnn.rsk_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block, backend=backend)
    assert tuple(out.shape) == cfg.output_shape()[1:]
    out.backward(inp.grad_output[0])
    red = reductions(cfg)
    assert_close(out, expected.out[0], dtype, red["out"], msg="out")
    assert_close(x.grad, expected.grad_input[0], dtype, red["grad_input"], msg="grad_input")
    assert_close(w.grad, expected.grad_weight, dtype, red["grad_weight"], msg="grad_weight")
    assert_close(b.grad, expected.grad_bias, dtype, red["grad_bias"], msg="grad_bias")


# --------------------------------------------------------------------------- auto


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_auto_matches_oracle(dtype):
    check_parity("auto", dataclasses.replace(ODD, granularity="block", block_size=(4, 2)), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_auto_falls_back_for_other_dtypes(dtype):
    cfg = dataclasses.replace(ODD, granularity="element")
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    x, w, b = inp.input.to(dtype), inp.weight.to(dtype), inp.bias.to(dtype)
    out = rskcnn.rsk_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="auto")
    assert out.dtype == dtype
    expected = reference_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block)
    torch.testing.assert_close(out, expected)


def test_all_cpu_backends_are_listed():
    """The parametrisation covers every registered backend (skipped, with a reason, where unavailable)."""
    names = {p.values[0] for p in BACKENDS}
    assert {"reference", "cpu"} <= names
    assert set(rskcnn.available_backends("cpu")) <= names
    assert "reference" in rskcnn.available_backends("cpu")


# --------------------------------------------------------------------------- the cpu kernels skip masked weights


@requires_cpu_ops
@pytest.mark.parametrize("granularity, block_size", GRANULARITY_CASES)
def test_cpu_never_reads_masked_weights(granularity, block_size):
    """Masked weights set to NaN must not reach the output or grad_input (the kernels never load them)."""
    cfg = dataclasses.replace(ODD, granularity=granularity, block_size=block_size, keep_prob=0.5)
    inp = make_inputs(cfg, torch.float64)
    expected = run_oracle(cfg, inp)
    kept = full_mask(inp.mask, cfg.block, cfg.weight_shape)
    poisoned = inp.weight.detach().masked_fill(~kept, float("nan"))
    x, w, b = leaf_copy(inp.input), poisoned.clone().requires_grad_(), leaf_copy(inp.bias)
    out = rskcnn.rsk_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="cpu")
    out.backward(inp.grad_output)
    check_result(Result(out.detach(), x.grad, w.grad, b.grad), expected, cfg, torch.float64, "float64 oracle")


@requires_cpu_ops
def test_cpu_is_deterministic_across_runs_and_thread_counts():
    cfg = dataclasses.replace(GEOMETRIES["batch33"], granularity="block", block_size=(2, 1))
    inp = make_inputs(cfg, torch.float32)
    first = run_backend("cpu", cfg, inp)
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            again = run_backend("cpu", cfg, inp)
            for field in ("out", "grad_input", "grad_weight", "grad_bias"):
                assert torch.equal(getattr(again, field), getattr(first, field)), (field, n)
    finally:
        torch.set_num_threads(threads)

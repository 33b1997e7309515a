"""Bad input gives a clear error (type and message), never a crash or a wrong result."""

from __future__ import annotations

import re

import pytest
import torch

import rskcnn

from conftest import requires_cpu_ops

W_SHAPE = (6, 4, 3, 3)


def good(dtype=torch.float32):
    x = torch.randn(2, 4, 8, 8, dtype=dtype)
    w = torch.randn(W_SHAPE, dtype=dtype)
    mask = torch.rand(W_SHAPE) < 0.5
    b = torch.randn(6, dtype=dtype)
    return x, w, mask, b


def call(backend="auto", **overrides):
    x, w, mask, b = good()
    args = dict(input=x, weight=w, mask=mask, bias=b)
    args.update({k: v for k, v in overrides.items() if k in args})
    kwargs = {k: v for k, v in overrides.items() if k not in args}
    return rskcnn.rsk_conv2d(args["input"], args["weight"], args["mask"], args["bias"], backend=backend, **kwargs)


def test_good_call_works(backend):
    assert call(backend).shape == (2, 6, 6, 6)


# --------------------------------------------------------------------------- keep_prob, granularity, backend


@pytest.mark.parametrize("keep_prob", [0.0, -0.1, 1.5, 1.0000001])
def test_sample_mask_keep_prob_out_of_range(keep_prob):
    with pytest.raises(ValueError, match="keep_prob"):
        rskcnn.sample_mask(W_SHAPE, keep_prob, (1, 1, 1, 1))


@pytest.mark.parametrize("keep_prob", [0.0, -0.1, 1.5])
def test_module_keep_prob_out_of_range(keep_prob):
    with pytest.raises(ValueError, match=r"keep_prob.*\(0, 1\]"):
        rskcnn.RSKConv2d(4, 6, 3, keep_prob=keep_prob)


def test_module_keep_prob_wrong_type():
    with pytest.raises(TypeError, match="keep_prob"):
        rskcnn.RSKConv2d(4, 6, 3, keep_prob="0.5")


def test_unknown_granularity():
    with pytest.raises(ValueError, match="granularity.*'channels'"):
        rskcnn.block_shape("channels", W_SHAPE)
    with pytest.raises(ValueError, match="granularity.*'channels'"):
        rskcnn.RSKConv2d(4, 6, 3, granularity="channels")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend.*'nope'"):
        call("nope")
    with pytest.raises(ValueError, match="backend.*'nope'"):
        rskcnn.RSKConv2d(4, 6, 3, backend="nope")


def test_bad_block_size():
    with pytest.raises(ValueError, match="block_size"):
        rskcnn.block_shape("block", W_SHAPE, (0, 4))
    with pytest.raises(ValueError, match="block_size"):
        rskcnn.block_shape("block", W_SHAPE, (4,))


# --------------------------------------------------------------------------- mask


def test_mask_wrong_shape(backend):
    with pytest.raises(ValueError, match=re.escape("mask must have shape (6, 4, 3, 3)")):
        call(backend, mask=torch.ones(6, 4, 3, 2, dtype=torch.bool))
    # A mask for another block: (1, 4, 1, 1) gives (6, 1, 3, 3), not the element mask.
    with pytest.raises(ValueError, match=re.escape("got (6, 1, 3, 3)")):
        call(backend, mask=torch.ones(6, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        call(backend, mask=torch.ones(6, 4, 3, 3, dtype=torch.bool), block=(1, 4, 1, 1))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.int64])
def test_mask_wrong_dtype(backend, dtype):
    with pytest.raises(TypeError, match=r"mask must be a torch.bool tensor.*" + str(dtype).split(".")[1]):
        call(backend, mask=torch.ones(W_SHAPE, dtype=dtype))


def test_mask_wrong_device(backend):
    with pytest.raises(ValueError, match="mask is on meta"):
        call(backend, mask=torch.ones(W_SHAPE, dtype=torch.bool, device="meta"))


def test_expand_mask_wrong_shape():
    with pytest.raises(ValueError, match="mask must have shape"):
        rskcnn.expand_mask(torch.ones(2, 2, 2, 2, dtype=torch.bool), (1, 1, 1, 1), W_SHAPE)


# --------------------------------------------------------------------------- tensors


def test_channel_mismatch(backend):
    with pytest.raises(ValueError, match="input has 5 channels"):
        call(backend, input=torch.randn(2, 5, 8, 8))


def test_groups_not_dividing(backend):
    x = torch.randn(2, 8, 8, 8)
    w = torch.randn(6, 2, 3, 3)
    with pytest.raises(ValueError, match="divisible by groups = 4"):
        rskcnn.rsk_conv2d(x, w, torch.ones(6, 2, 3, 3, dtype=torch.bool), groups=4, backend=backend)


@pytest.mark.parametrize("groups", [0, -1, 1.5, True])
def test_bad_groups(groups):
    with pytest.raises(ValueError, match="groups"):
        call(groups=groups)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
def test_integer_input(backend, dtype):
    x = torch.ones(2, 4, 8, 8, dtype=dtype)
    with pytest.raises(TypeError, match="floating-point"):
        call(backend, input=x)


def test_integer_weight_and_mismatched_dtypes(backend):
    with pytest.raises(TypeError, match="dtype"):
        call(backend, weight=torch.ones(W_SHAPE, dtype=torch.int64))
    with pytest.raises(TypeError, match="dtype"):
        call(backend, weight=torch.randn(W_SHAPE, dtype=torch.float64))


def test_bad_bias(backend):
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        call(backend, bias=torch.randn(5))
    with pytest.raises(TypeError, match="bias"):
        call(backend, bias=torch.randn(6, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(4, 8), (1, 2, 4, 8, 8)])
def test_wrong_input_rank(shape):
    with pytest.raises(ValueError, match="input must be 4-D"):
        call(input=torch.randn(shape))


def test_wrong_weight_rank():
    with pytest.raises(ValueError, match="weight must be 4-D"):
        call(weight=torch.randn(6, 4, 9))


def test_non_tensor_input():
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        call(input=[[1.0]])


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((2, 4, 2, 8), {}),
        ((2, 4, 8, 2), {}),
        ((2, 4, 4, 4), dict(dilation=3)),
        ((2, 4, 1, 1), dict(padding=(0, 1))),
    ],
)
def test_kernel_larger_than_padded_input(backend, shape, kwargs):
    with pytest.raises(ValueError, match="larger than the padded input"):
        call(backend, input=torch.randn(shape), **kwargs)


def test_kernel_fits_once_padded(backend):
    assert call(backend, input=torch.randn(2, 4, 1, 1), padding=1).shape == (2, 6, 1, 1)


@pytest.mark.parametrize("stride", ["same", "1", (1, 2, 3), 1.5, (1, "2"), torch.tensor(1)])
def test_bad_stride_type(stride):
    with pytest.raises(TypeError, match="stride"):
        call(stride=stride)


@pytest.mark.parametrize("stride", [0, (1, 0), -1])
def test_bad_stride_value(stride):
    with pytest.raises(ValueError, match="stride"):
        call(stride=stride)


@pytest.mark.parametrize("padding", ["full", "SAME", "circular"])
def test_bad_padding_string(padding):
    with pytest.raises(ValueError, match=f"padding.*'same'.*'valid'.*{padding}"):
        call(padding=padding)


def test_padding_same_with_stride():
    with pytest.raises(ValueError, match="same.*stride"):
        call(padding="same", stride=2)


@pytest.mark.parametrize("padding", [-1, (0, -2)])
def test_negative_padding(padding):
    with pytest.raises(ValueError, match="padding"):
        call(padding=padding)


@pytest.mark.parametrize("dilation", [0, (1, -1)])
def test_bad_dilation(dilation):
    with pytest.raises(ValueError, match="dilation"):
        call(dilation=dilation)


@pytest.mark.parametrize(
    "block", [(0, 1, 1, 1), (1, 1, 0, 1), (1, 1, 1), (1, 1, 1, 1, 1), (1, -2, 1, 1), (1.0, 1, 1, 1)]
)
def test_bad_block(backend, block):
    with pytest.raises(ValueError, match="block"):
        call(backend, block=block)
    with pytest.raises(ValueError, match="block"):
        rskcnn.mask_shape(W_SHAPE, block)


def test_bad_scale():
    with pytest.raises(TypeError, match="scale"):
        call(scale="2")


# --------------------------------------------------------------------------- the cpu backend's own limits


@requires_cpu_ops
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_backend_rejects_other_float_dtypes(dtype):
    x, w, mask, b = good(dtype)
    with pytest.raises(RuntimeError, match=r"cpu.*dtype.*float32/float64"):
        rskcnn.rsk_conv2d(x, w, mask, b, backend="cpu")


def test_unavailable_reasons_explain_every_missing_backend():
    available = set(rskcnn.available_backends("cpu"))
    reasons = rskcnn.backends.unavailable_reasons("cpu")
    assert set(reasons) | available == set(rskcnn.backends.BACKENDS)
    assert not set(reasons) & available
    assert all(isinstance(r, str) and r for r in reasons.values())


# --------------------------------------------------------------------------- the C++ ops called directly

CONV_ARGS = ([1, 1], [0, 0], [1, 1], 1, [1, 1, 1, 1], 1.0)


@requires_cpu_ops
def test_ops_wrong_mask_shape():
    x, w, _, b = good()
    go = torch.randn(2, 6, 6, 6)
    bad = torch.ones(6, 4, 3, 2, dtype=torch.bool)
    msg = re.escape("mask must have shape [6, 4, 3, 3]")
    with pytest.raises(RuntimeError, match=msg):
        torch.ops.rskcnn.masked_conv2d(x, w, bad, b, *CONV_ARGS)
    with pytest.raises(RuntimeError, match=msg):
        torch.ops.rskcnn.masked_conv2d_grad_input(go, w, bad, list(x.shape), *CONV_ARGS)
    with pytest.raises(RuntimeError, match=msg):
        torch.ops.rskcnn.masked_conv2d_grad_weight(go, x, bad, list(W_SHAPE), *CONV_ARGS)


@requires_cpu_ops
def test_ops_wrong_mask_dtype():
    x, w, _, b = good()
    with pytest.raises(RuntimeError, match="mask must be torch.bool"):
        torch.ops.rskcnn.masked_conv2d(x, w, torch.ones(W_SHAPE, dtype=torch.uint8), b, *CONV_ARGS)


@requires_cpu_ops
def test_ops_geometry_errors():
    x, w, mask, b = good()
    with pytest.raises(RuntimeError, match="input has 5 channels"):
        torch.ops.rskcnn.masked_conv2d(torch.randn(2, 5, 8, 8), w, mask, b, *CONV_ARGS)
    with pytest.raises(RuntimeError, match="larger than the padded input"):
        torch.ops.rskcnn.masked_conv2d(torch.randn(2, 4, 2, 2), w, mask, b, *CONV_ARGS)
    with pytest.raises(RuntimeError, match="block entries must be positive"):
        torch.ops.rskcnn.masked_conv2d(x, w, mask, b, [1, 1], [0, 0], [1, 1], 1, [1, 0, 1, 1], 1.0)
    with pytest.raises(RuntimeError, match="stride must be positive"):
        torch.ops.rskcnn.masked_conv2d(x, w, mask, b, [0, 1], [0, 0], [1, 1], 1, [1, 1, 1, 1], 1.0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.rskcnn.masked_conv2d(x.int(), w.int(), mask, None, *CONV_ARGS)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        torch.ops.rskcnn.masked_conv2d(x, w, mask, torch.randn(3), *CONV_ARGS)


@requires_cpu_ops
def test_ops_grad_output_shape_checked():
    x, w, mask, _ = good()
    wrong = torch.randn(2, 6, 5, 6)
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        torch.ops.rskcnn.masked_conv2d_grad_input(wrong, w, mask, list(x.shape), *CONV_ARGS)
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        torch.ops.rskcnn.masked_conv2d_grad_weight(wrong, x, mask, list(W_SHAPE), *CONV_ARGS)


@requires_cpu_ops
def test_ops_mask_on_another_device():
    """A meta mask with CPU tensors must be rejected, not answered with an uninitialised tensor."""
    x, w, _, b = good()
    go = torch.randn(2, 6, 6, 6)
    meta_mask = torch.ones(W_SHAPE, dtype=torch.bool, device="meta")
    with pytest.raises(RuntimeError, match="mask"):
        torch.ops.rskcnn.masked_conv2d(x, w, meta_mask, b, *CONV_ARGS)
    with pytest.raises(RuntimeError, match="mask"):
        torch.ops.rskcnn.masked_conv2d_grad_input(go, w, meta_mask, list(x.shape), *CONV_ARGS)
    with pytest.raises(RuntimeError, match="mask"):
        torch.ops.rskcnn.masked_conv2d_grad_weight(go, x, meta_mask, list(W_SHAPE), *CONV_ARGS)

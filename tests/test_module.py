"""RSKConv2d: scaling in train and eval, keep_prob=1, state_dict, masks, padding modes, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rskcnn

from conftest import assert_close

CONV = dict(in_channels=4, out_channels=6, kernel_size=3, padding=1)
X_SHAPE = (2, 4, 7, 8)
RED = 4 * 9  # Cin * KH * KW


def make_pair(seed=0, dtype=torch.float32, **opts):
    """An nn.Conv2d and an RSKConv2d with the same parameters."""
    conv_opts = {k: v for k, v in opts.items()
                 if k in ("stride", "padding", "dilation", "groups", "bias", "padding_mode")}
    rsk_opts = {k: v for k, v in opts.items() if k not in conv_opts}
    kw = {**CONV, **conv_opts}
    conv = nn.Conv2d(**kw, dtype=dtype)
    rsk = rskcnn.RSKConv2d(**kw, dtype=dtype, **rsk_opts)
    rsk.load_state_dict(conv.state_dict())
    return conv, rsk


def dense(x, weight, module):
    """F.conv2d with the module's geometry (zeros padding)."""
    return F.conv2d(x, weight, module.bias, module.stride, module.padding, module.dilation, module.groups)


def expected_mask(rsk, seed):
    return rskcnn.sample_mask(rsk.weight.shape, rsk.keep_prob, rsk.block,
                              generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- eval scaling


@pytest.mark.parametrize("granularity", ["element", "filter"])
@pytest.mark.parametrize("keep_prob", [0.3, 0.75])
def test_eval_paper_mode_scales_weight_by_keep_prob(keep_prob, granularity):
    _, rsk = make_pair(keep_prob=keep_prob, granularity=granularity, scale_mode="paper")
    rsk.eval()
    x = torch.randn(X_SHAPE)
    with torch.no_grad():
        assert_close(rsk(x), dense(x, rsk.weight * keep_prob, rsk), torch.float32, RED)


@pytest.mark.parametrize("keep_prob", [0.3, 0.75])
def test_eval_inverted_mode_is_plain_conv(keep_prob):
    conv, rsk = make_pair(keep_prob=keep_prob, scale_mode="inverted")
    rsk.eval()
    x = torch.randn(X_SHAPE)
    with torch.no_grad():
        assert_close(rsk(x), conv(x), torch.float32, RED)


def test_eval_is_deterministic():
    _, rsk = make_pair(keep_prob=0.5)
    rsk.eval()
    x = torch.randn(X_SHAPE)
    with torch.no_grad():
        assert torch.equal(rsk(x), rsk(x))


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("granularity, block_size", [("element", (32, 32)), ("tap", (32, 32)),
                                                     ("filter", (32, 32)), ("block", (4, 3))])
def test_train_paper_mode_equals_reference_with_its_mask(backend, granularity, block_size):
    seed = 1234
    _, rsk = make_pair(keep_prob=0.5, granularity=granularity, block_size=block_size,
                       generator=torch.Generator().manual_seed(seed), backend=backend)
    rsk.train()
    x = torch.randn(X_SHAPE)
    y = rsk(x)
    mask = expected_mask(rsk, seed)
    assert rsk.block == rskcnn.block_shape(granularity, rsk.weight.shape, block_size)
    ref = rskcnn.backends.reference_conv2d(x, rsk.weight, mask, rsk.bias, rsk.stride, rsk.padding,
                                           rsk.dilation, rsk.groups, block=rsk.block)
    full = rskcnn.expand_mask(mask, rsk.block, rsk.weight.shape)
    assert_close(y, ref, torch.float32, RED)
    assert_close(y, dense(x, rsk.weight * full, rsk), torch.float32, RED)

    y.backward(torch.randn_like(y))
    assert (rsk.weight.grad[~full] == 0).all()


def test_train_inverted_mode_divides_by_keep_prob(backend):
    seed, p = 99, 0.3
    _, rsk = make_pair(keep_prob=p, scale_mode="inverted", generator=torch.Generator().manual_seed(seed),
                       backend=backend)
    x = torch.randn(X_SHAPE)
    y = rsk.train()(x)
    full = rskcnn.expand_mask(expected_mask(rsk, seed), rsk.block, rsk.weight.shape)
    assert_close(y, dense(x, rsk.weight * full / p, rsk), torch.float32, RED)


def test_train_gradients_match_dense_masked_conv(backend):
    seed = 5
    _, rsk = make_pair(keep_prob=0.5, granularity="tap", generator=torch.Generator().manual_seed(seed),
                       backend=backend)
    x = torch.randn(X_SHAPE, requires_grad=True)
    y = rsk.train()(x)
    go = torch.randn_like(y)
    y.backward(go)

    full = rskcnn.expand_mask(expected_mask(rsk, seed), rsk.block, rsk.weight.shape)
    x2 = x.detach().clone().requires_grad_()
    w2 = rsk.weight.detach().clone().requires_grad_()
    b2 = rsk.bias.detach().clone().requires_grad_()
    F.conv2d(x2, w2 * full, b2, rsk.stride, rsk.padding).backward(go)
    assert_close(x.grad, x2.grad, torch.float32, RED)
    assert_close(rsk.weight.grad, w2.grad, torch.float32, 2 * 7 * 8)
    assert_close(rsk.bias.grad, b2.grad, torch.float32, 2 * 7 * 8)


@pytest.mark.parametrize(
    "geometry",
    [
        dict(stride=(2, 1), dilation=(1, 2), padding=(1, 2)),
        dict(groups=2, padding=0),
        dict(padding="same", dilation=2),
        dict(padding="valid", stride=1),
    ],
    ids=["strided", "grouped", "same", "valid"],
)
def test_train_geometry(backend, geometry):
    seed = 17
    _, rsk = make_pair(keep_prob=0.5, granularity="tap", generator=torch.Generator().manual_seed(seed),
                       backend=backend, **geometry)
    x = torch.randn(X_SHAPE)
    y = rsk.train()(x)
    full = rskcnn.expand_mask(expected_mask(rsk, seed), rsk.block, rsk.weight.shape)
    assert_close(y, dense(x, rsk.weight * full, rsk), torch.float32, RED)
    with torch.no_grad():
        assert_close(rsk.eval()(x), dense(x, rsk.weight * 0.5, rsk), torch.float32, RED)


def test_eval_paper_mode_gradient_is_scaled():
    conv, rsk = make_pair(keep_prob=0.25)
    x = torch.randn(X_SHAPE)
    y, y2 = rsk.eval()(x), conv(x)
    go = torch.randn_like(y)
    y.backward(go)
    y2.backward(go)
    assert_close(rsk.weight.grad, conv.weight.grad * 0.25, torch.float32, 2 * 7 * 8)
    assert_close(rsk.bias.grad, conv.bias.grad, torch.float32, 2 * 7 * 8)


def test_fresh_mask_each_forward():
    _, rsk = make_pair(keep_prob=0.5)
    rsk.train()
    x = torch.randn(X_SHAPE)
    outs = [rsk(x) for _ in range(3)]
    assert not torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[1], outs[2])


def test_masks_reproducible_with_generator():
    x = torch.randn(X_SHAPE)
    runs = []
    for seed in (7, 7, 8):
        _, rsk = make_pair(keep_prob=0.5, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            rsk.weight.copy_(torch.arange(rsk.weight.numel(), dtype=torch.float32).view_as(rsk.weight) / 100)
            rsk.bias.zero_()
        torch.rand(10)  # the global RNG must not matter
        runs.append([rsk.train()(x) for _ in range(2)])
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_sample_mask_method_shape_and_dtype():
    _, rsk = make_pair(keep_prob=0.5, granularity="block", block_size=(4, 3))
    mask = rsk.sample_mask()
    assert mask.dtype == torch.bool
    assert tuple(mask.shape) == rskcnn.mask_shape(rsk.weight.shape, (4, 3, 1, 1))


def test_unbatched_input_in_train_and_eval():
    seed = 3
    _, rsk = make_pair(keep_prob=0.5, generator=torch.Generator().manual_seed(seed))
    x = torch.randn(X_SHAPE[1:])
    y = rsk.train()(x)
    full = rskcnn.expand_mask(expected_mask(rsk, seed), rsk.block, rsk.weight.shape)
    assert y.dim() == 3
    assert_close(y, dense(x[None], rsk.weight * full, rsk)[0], torch.float32, RED)
    with torch.no_grad():
        assert_close(rsk.eval()(x), dense(x[None], rsk.weight * 0.5, rsk)[0], torch.float32, RED)


# --------------------------------------------------------------------------- keep_prob = 1


@pytest.mark.parametrize("scale_mode", ["paper", "inverted"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_keep_prob_one_is_exactly_conv2d(training, scale_mode):
    conv, rsk = make_pair(keep_prob=1.0, scale_mode=scale_mode, stride=(2, 1), dilation=(1, 2), padding=2)
    conv.train(training)
    rsk.train(training)
    x = torch.randn(X_SHAPE, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = rsk(x), conv(x2)
    assert torch.equal(y, y2)
    go = torch.randn_like(y)
    y.backward(go)
    y2.backward(go)
    assert torch.equal(x.grad, x2.grad)
    assert torch.equal(rsk.weight.grad, conv.weight.grad)
    assert torch.equal(rsk.bias.grad, conv.bias.grad)


# --------------------------------------------------------------------------- state_dict


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_equal_conv2d(bias):
    conv, rsk = make_pair(keep_prob=0.5, bias=bias, granularity="block", block_size=(2, 2))
    assert list(rsk.state_dict().keys()) == list(conv.state_dict().keys())
    for key, value in conv.state_dict().items():
        assert torch.equal(rsk.state_dict()[key], value)


def test_load_state_dict_both_ways():
    conv = nn.Conv2d(**CONV)
    rsk = rskcnn.RSKConv2d(**CONV, keep_prob=0.5)
    assert not torch.equal(conv.weight, rsk.weight)
    rsk.load_state_dict(conv.state_dict(), strict=True)
    assert torch.equal(rsk.weight, conv.weight) and torch.equal(rsk.bias, conv.bias)

    rsk2 = rskcnn.RSKConv2d(**CONV, keep_prob=0.3, scale_mode="inverted")
    conv2 = nn.Conv2d(**CONV)
    conv2.load_state_dict(rsk2.state_dict(), strict=True)
    assert torch.equal(rsk2.weight, conv2.weight) and torch.equal(rsk2.bias, conv2.bias)
    x = torch.randn(X_SHAPE)
    with torch.no_grad():
        assert_close(rsk2.eval()(x), conv2(x), torch.float32, RED)


def test_keep_prob_is_not_in_state_dict_and_survives_load():
    rsk = rskcnn.RSKConv2d(**CONV, keep_prob=0.25)
    rsk.load_state_dict(nn.Conv2d(**CONV).state_dict())
    assert rsk.keep_prob == 0.25
    x = torch.randn(X_SHAPE)
    with torch.no_grad():
        assert_close(rsk.eval()(x), dense(x, rsk.weight * 0.25, rsk), torch.float32, RED)


def test_keep_prob_setter_changes_scaling():
    _, rsk = make_pair(keep_prob=0.5)
    rsk.keep_prob = 0.2
    assert rsk.keep_prob == 0.2
    x = torch.randn(X_SHAPE)
    with torch.no_grad():
        assert_close(rsk.eval()(x), dense(x, rsk.weight * 0.2, rsk), torch.float32, RED)
    with pytest.raises(ValueError, match="keep_prob"):
        rsk.keep_prob = 0.0


# --------------------------------------------------------------------------- padding modes


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
def test_padding_modes(backend, padding_mode):
    seed = 11
    conv, rsk = make_pair(keep_prob=0.5, padding_mode=padding_mode, padding=(1, 2),
                          generator=torch.Generator().manual_seed(seed), backend=backend)
    x = torch.randn(X_SHAPE)
    padded = F.pad(x, (2, 2, 1, 1), mode=padding_mode)
    y = rsk.train()(x)
    full = rskcnn.expand_mask(expected_mask(rsk, seed), rsk.block, rsk.weight.shape)
    expected = F.conv2d(padded, rsk.weight * full, rsk.bias)
    assert y.shape == conv(x).shape
    assert_close(y, expected, torch.float32, RED)
    with torch.no_grad():
        assert_close(rsk.eval()(x), F.conv2d(padded, rsk.weight * 0.5, rsk.bias), torch.float32, RED)


# --------------------------------------------------------------------------- float64 precision


@pytest.mark.parametrize("how", ["constructed", "converted"])
@pytest.mark.parametrize("case", ["eval_paper", "train_inverted"])
def test_float64_module_scales_by_exact_keep_prob(case, how):
    """A float64 module must scale by keep_prob in float64, not by a float32-rounded copy."""
    p, seed = 0.3, 21
    gen = torch.Generator().manual_seed(seed)
    scale_mode = "paper" if case == "eval_paper" else "inverted"
    if how == "constructed":
        rsk = rskcnn.RSKConv2d(**CONV, keep_prob=p, scale_mode=scale_mode, generator=gen, dtype=torch.float64)
    else:
        rsk = rskcnn.RSKConv2d(**CONV, keep_prob=p, scale_mode=scale_mode, generator=gen).double()
    x = torch.randn(X_SHAPE, dtype=torch.float64)
    with torch.no_grad():
        if case == "eval_paper":
            y, expected = rsk.eval()(x), dense(x, rsk.weight * p, rsk)
        else:
            y = rsk.train()(x)
            full = rskcnn.expand_mask(expected_mask(rsk, seed), rsk.block, rsk.weight.shape)
            expected = dense(x, rsk.weight * full / p, rsk)
    assert_close(y, expected, torch.float64, RED)


# --------------------------------------------------------------------------- repr and validation


def test_repr():
    rsk = rskcnn.RSKConv2d(**CONV, keep_prob=0.25, granularity="block", block_size=(8, 4), scale_mode="inverted")
    text = repr(rsk)
    assert text.startswith("RSKConv2d(")
    for part in ("4, 6", "kernel_size=(3, 3)", "keep_prob=0.25", "granularity='block'", "(8, 4)", "inverted"):
        assert part in text, (part, text)
    assert "keep_prob=0.5" in repr(rskcnn.RSKConv2d(**CONV))


@pytest.mark.parametrize("keep_prob", [0, 0.0, -0.1, 1.5, float("nan")])
def test_bad_keep_prob(keep_prob):
    with pytest.raises(ValueError, match="keep_prob"):
        rskcnn.RSKConv2d(**CONV, keep_prob=keep_prob)


@pytest.mark.parametrize(
    "opts, word",
    [
        (dict(granularity="channel"), "granularity"),
        (dict(granularity="Element"), "granularity"),
        (dict(scale_mode="dropout"), "scale_mode"),
        (dict(backend="cuda_triton_nope"), "backend"),
    ],
)
def test_bad_options(opts, word):
    with pytest.raises(ValueError, match=word) as info:
        rskcnn.RSKConv2d(**CONV, **opts)
    assert repr(next(iter(opts.values()))) in str(info.value) or next(iter(opts.values())) in str(info.value)


def test_is_a_conv2d():
    rsk = rskcnn.RSKConv2d(**CONV)
    assert isinstance(rsk, nn.Conv2d)
    assert rsk.keep_prob == 0.5 and rsk.granularity == "element" and rsk.scale_mode == "paper"

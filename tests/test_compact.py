"""The ``compact`` backend: ``filter`` masks as dense convolutions of the kept filters only,
through ``rskcnn::filter_compact_conv2d`` (rskcnn/ops/compact.py).

Parity with the reference backend and a float64 oracle built here (``F.conv2d`` on
``weight * mask[o] * scale``), under both mask laws (``exact`` passes ``kept_per_row``, the
static-shape path; ``bernoulli`` the CPU's ``torch.nonzero`` path); gradcheck and
gradgradcheck; opcheck; NaN in dropped filters; the bias in dropped channels;
torch.compile(fullgraph=True) under the exact law; clear errors for bad arguments; and the
backend's declared refusals. The CUDA tests run only where a GPU is present.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch._dynamo.testing
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import rskcnn
from rskcnn import backends as rsk_backends
from rskcnn.backends import reference_conv2d
from rskcnn.backends.compact import kept_filter_indices
from rskcnn.ops import compact as compact_op
from rskcnn.ops import schemas

from conftest import (ConvConfig, as_layout, assert_close, check_step_without_sync_in_cuda_graph, leaf_copy,
                      make_inputs, make_mask)

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (the cuDNN path of compact)")

LAWS = ("bernoulli", "exact")
DTYPES = [torch.float32, torch.float64]

ODD = ConvConfig(n=2, cin=5, cout=7, h=9, w=7, kernel=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1),
                 granularity="filter", keep_prob=0.5)

CASES = {
    "odd": ODD,
    "grouped": ConvConfig(n=3, cin=6, cout=9, h=8, w=7, kernel=(3, 3), stride=2, padding=1, groups=3,
                          granularity="filter", keep_prob=0.5),
    "depthwise": ConvConfig(n=2, cin=4, cout=8, h=6, w=6, kernel=(3, 3), padding=1, groups=4, granularity="filter",
                            keep_prob=0.5),
    "same_dilated": ConvConfig(cin=3, cout=6, h=7, w=8, kernel=(4, 3), padding="same", dilation=(2, 1),
                               granularity="filter", keep_prob=0.4),
    "1x1_stride2_pad2": ConvConfig(cin=4, cout=5, kernel=(1, 1), stride=2, padding=2, granularity="filter"),
    "scaled_no_bias": dataclasses.replace(ODD, bias=False, scale=1 / 3),
    "kernel_fills_input": ConvConfig(cin=2, cout=5, h=3, w=4, kernel=(3, 4), granularity="filter", keep_prob=0.6),
}


# --------------------------------------------------------------------------- helpers


def rows_and_count(cfg: ConvConfig) -> tuple[int, int]:
    return rskcnn.mask_rows(cfg.weight_shape, cfg.block, cfg.groups)


def exact_count(cfg: ConvConfig) -> int:
    return rskcnn.exact_keep_count(cfg.keep_prob, rows_and_count(cfg)[1])


def draw_mask(cfg: ConvConfig, law: str) -> tuple[torch.Tensor, int | None]:
    """A mask of ``law`` and the ``kept_per_row`` to pass with it (None for Bernoulli masks)."""
    if law == "bernoulli":
        return make_mask(cfg.weight_shape, cfg.keep_prob, cfg.block), None
    mask = rskcnn.sample_mask(cfg.weight_shape, cfg.keep_prob, cfg.block, law="exact", groups=cfg.groups)
    return mask, exact_count(cfg)


def run_compact(cfg: ConvConfig, inp, mask, kept_per_row=None, *, layout="contiguous"):
    """(out, grad_input, grad_weight, grad_bias) of the compact backend."""
    x = as_layout(leaf_copy(inp.input), layout)
    w, b = leaf_copy(inp.weight), leaf_copy(inp.bias)
    out = rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale,
                            backend="compact", kept_per_row=kept_per_row)
    out.backward(as_layout(inp.grad_output, layout))
    return out.detach(), x.grad, w.grad, None if b is None else b.grad


def run_reference(cfg: ConvConfig, inp, mask):
    x, w, b = leaf_copy(inp.input), leaf_copy(inp.weight), leaf_copy(inp.bias)
    out = reference_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale)
    out.backward(inp.grad_output)
    return out.detach(), x.grad, w.grad, None if b is None else b.grad


def run_oracle(cfg: ConvConfig, inp, mask):
    """float64 F.conv2d on weight * mask[o] * scale, independent of rskcnn's mask code."""
    f64 = torch.float64
    x, w, b = leaf_copy(inp.input, f64), leaf_copy(inp.weight, f64), leaf_copy(inp.bias, f64)
    keep = mask.reshape(-1).to(f64)[:, None, None, None]  # a filter mask is (Cout, 1, 1, 1)
    out = F.conv2d(x, w * keep * cfg.scale, b, **cfg.conv_kwargs())
    out.backward(inp.grad_output.to(f64))
    return out.detach(), x.grad, w.grad, None if b is None else b.grad


def reductions(cfg: ConvConfig) -> tuple[int, int, int, int]:
    _, _, oh, ow = cfg.output_shape()
    taps = cfg.kernel[0] * cfg.kernel[1]
    pixels = cfg.n * oh * ow
    return cfg.cin // cfg.groups * taps, cfg.cout // cfg.groups * taps, pixels, pixels


def check_against(got, want, cfg: ConvConfig, dtype, what: str) -> None:
    for name, g, e, red in zip(("out", "grad_input", "grad_weight", "grad_bias"), got, want, reductions(cfg)):
        if e is None:
            assert g is None, f"{name} should be None"
            continue
        assert g is not None, f"{name} is missing"
        assert g.shape == e.shape, f"{name}: {tuple(g.shape)} != {tuple(e.shape)}"
        assert_close(g, e, dtype, red, msg=f"{name} vs {what}")


def check_parity(cfg: ConvConfig, dtype, law: str, *, mask=None, kept_per_row=None, layout="contiguous", inp=None):
    """Compact against the reference and the float64 oracle; returns what compact computed."""
    inp = make_inputs(cfg, dtype) if inp is None else inp
    if mask is None:
        mask, kept_per_row = draw_mask(cfg, law)
    got = run_compact(cfg, inp, mask, kept_per_row, layout=layout)
    out, _, grad_weight, _ = got
    assert tuple(out.shape) == cfg.output_shape() and out.dtype == dtype
    dropped = ~mask.reshape(-1)
    assert (grad_weight[dropped] == 0).all(), "a dropped filter got a nonzero gradient"
    check_against(got, run_reference(cfg, inp, mask), cfg, dtype, "reference backend")
    check_against(got, run_oracle(cfg, inp, mask), cfg, dtype, "float64 oracle")
    return got


# --------------------------------------------------------------------------- parity


def served(names) -> list:
    """(case, law) pairs compact serves: both laws for ungrouped cases, the exact law (with
    kept_per_row) for grouped ones. Grouped Bernoulli masks are refused, which
    test_grouped_bernoulli_is_refused_with_its_reason checks."""
    return [pytest.param(name, law, id=f"{name}-{law}") for name in names for law in LAWS
            if law == "exact" or CASES[name].groups == 1]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, law", served(CASES))
def test_parity(name, law, dtype):
    cfg = CASES[name]
    check_parity(cfg, dtype, law)


@pytest.mark.parametrize("layout", ["channels_last", "permuted", "strided"])
@pytest.mark.parametrize("name, law", served(["odd", "grouped"]))
def test_parity_input_layouts(name, layout, law):
    cfg = CASES[name]
    out = check_parity(cfg, torch.float64, law, layout=layout)[0]
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last), "output lost channels_last"
    else:
        assert out.is_contiguous(), "a non-channels_last input gives a contiguous output"


def test_all_operands_non_contiguous():
    """Weight (channels_last), mask (strided along Cout), bias (strided) and grad_output (strided) too."""
    cfg = CASES["grouped"]
    dtype = torch.float64
    inp = make_inputs(cfg, dtype)
    mask, k = draw_mask(cfg, "exact")
    expected = run_oracle(cfg, inp, mask)
    x, w = as_layout(leaf_copy(inp.input), "strided"), as_layout(leaf_copy(inp.weight), "channels_last")
    b, go = as_layout(leaf_copy(inp.bias), "strided"), as_layout(inp.grad_output, "strided")
    mask = torch.stack([mask, ~mask], dim=1).reshape(2 * cfg.cout, 1, 1, 1)[::2]  # every other entry
    for t in (x, w, b, go, mask):
        assert not t.is_contiguous()
    out = rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="compact", kept_per_row=k)
    out.backward(go)
    check_against((out.detach(), x.grad, w.grad, b.grad), expected, cfg, dtype, "float64 oracle")


@pytest.mark.parametrize("law", LAWS)
def test_batch_zero(law):
    cfg = dataclasses.replace(CASES["grouped"] if law == "exact" else ODD, n=0)
    inp = make_inputs(cfg, torch.float64)
    mask, k = draw_mask(cfg, law)
    out, gx, gw, gb = run_compact(cfg, inp, mask, k)
    assert tuple(out.shape) == cfg.output_shape() and out.shape[0] == 0
    assert gx is not None and gx.shape == inp.input.shape
    assert torch.equal(gw, torch.zeros_like(gw)) and torch.equal(gb, torch.zeros_like(gb))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["odd", "scaled_no_bias"])
def test_all_dropped(name, dtype):
    """No filter kept: the output is the bias (0 without one) and every gradient is an exact zero, not None."""
    cfg = CASES[name]
    inp = make_inputs(cfg, dtype)
    mask = torch.zeros(cfg.cout, 1, 1, 1, dtype=torch.bool)
    out, gx, gw, gb = check_parity(cfg, dtype, "bernoulli", mask=mask, inp=inp)
    bias = torch.zeros(cfg.cout, dtype=dtype) if inp.bias is None else inp.bias.detach()
    assert torch.equal(out, bias.view(1, -1, 1, 1).expand_as(out))
    assert torch.equal(gx, torch.zeros_like(gx)) and torch.equal(gw, torch.zeros_like(gw))


@pytest.mark.parametrize("name, law", served(["odd", "grouped"]))
def test_all_kept(name, law):
    cfg = CASES[name]
    mask = torch.ones(cfg.cout, 1, 1, 1, dtype=torch.bool)
    k = cfg.cout // cfg.groups if law == "exact" else None
    check_parity(cfg, torch.float64, law, mask=mask, kept_per_row=k)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_on_cpu(low):
    cfg = ODD
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    mask, _ = draw_mask(cfg, "bernoulli")
    x, w, b = inp.input.to(low), inp.weight.to(low), inp.bias.to(low)
    out = rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="compact")
    assert out.dtype == low
    expected = reference_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block)
    assert_close(out, expected, low, reductions(cfg)[0])


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("all_dropped", [False, True])
def test_autocast_gives_autocast_dtype(amp, all_dropped):
    cfg = ODD
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    mask = torch.zeros(cfg.cout, 1, 1, 1, dtype=torch.bool) if all_dropped else draw_mask(cfg, "bernoulli")[0]
    with torch.autocast("cpu", dtype=amp):
        out = rskcnn.rsk_conv2d(inp.input, inp.weight, mask, inp.bias, **cfg.conv_kwargs(), block=cfg.block,
                                backend="compact")
        expected = reference_conv2d(inp.input, inp.weight, mask, inp.bias, **cfg.conv_kwargs(), block=cfg.block)
    assert out.dtype == expected.dtype == amp
    assert_close(out, expected, amp, reductions(cfg)[0])


# --------------------------------------------------------------------------- dropped filters


def test_nan_in_dropped_filters_never_reaches_output_or_gradients():
    cfg = CASES["grouped"]
    inp = make_inputs(cfg, torch.float64)
    mask, k = draw_mask(cfg, "exact")
    expected = run_oracle(cfg, inp, mask)
    dropped = ~mask.reshape(-1)
    assert dropped.any() and (~dropped).any()
    poisoned = inp.weight.detach().clone()
    poisoned[dropped] = float("nan")
    poisoned[dropped, 0, 0, 0] = float("inf")
    x, w, b = leaf_copy(inp.input), poisoned.requires_grad_(), leaf_copy(inp.bias)
    out = rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="compact", kept_per_row=k)
    out.backward(inp.grad_output)
    for t in (out, x.grad, w.grad, b.grad):
        assert torch.isfinite(t).all()
    assert torch.equal(w.grad[dropped], torch.zeros_like(w.grad[dropped])), "dropped filters' gradient must be 0"
    check_against((out.detach(), x.grad, w.grad, b.grad), expected, cfg, torch.float64, "float64 oracle")


def test_bias_fills_the_dropped_channels_exactly():
    cfg = ODD
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    mask, _ = draw_mask(cfg, "bernoulli")
    dropped = ~mask.reshape(-1)
    out = rskcnn.rsk_conv2d(inp.input, inp.weight, mask, inp.bias, **cfg.conv_kwargs(), block=cfg.block,
                            backend="compact")
    expected = inp.bias[dropped].view(1, -1, 1, 1).expand(out.shape[0], -1, *out.shape[2:])
    assert torch.equal(out[:, dropped], expected)
    no_bias = rskcnn.rsk_conv2d(inp.input, inp.weight, mask, None, **cfg.conv_kwargs(), block=cfg.block,
                                backend="compact")
    assert torch.equal(no_bias[:, dropped], torch.zeros_like(no_bias[:, dropped]))


# --------------------------------------------------------------------------- gradcheck


GRADCHECK_CASES = [
    pytest.param(dataclasses.replace(ODD, n=2, cin=3, cout=4, h=6, w=5), "bernoulli", id="odd-bernoulli"),
    pytest.param(dataclasses.replace(CASES["grouped"], n=2, h=5, w=5), "exact", id="grouped-exact"),
    pytest.param(dataclasses.replace(CASES["same_dilated"], n=1, scale=1.7), "bernoulli", id="same-scaled"),
    pytest.param(dataclasses.replace(ODD, n=1, cin=2, cout=3, h=5, w=4, bias=False), "exact", id="no-bias-exact"),
]


def _function(cfg: ConvConfig, mask, kept_per_row):
    def f(x, w, *maybe_bias):
        b = maybe_bias[0] if maybe_bias else None
        return rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale,
                                 backend="compact", kept_per_row=kept_per_row)

    return f


def _args(inp):
    return (inp.input, inp.weight) + ((inp.bias,) if inp.bias is not None else ())


@pytest.mark.parametrize("cfg, law", GRADCHECK_CASES)
def test_gradcheck(cfg, law):
    inp = make_inputs(cfg, torch.float64)
    mask, k = draw_mask(cfg, law)
    assert gradcheck(_function(cfg, mask, k), _args(inp), fast_mode=False)


@pytest.mark.parametrize("cfg, law", GRADCHECK_CASES)
def test_gradgradcheck(cfg, law):
    inp = make_inputs(cfg, torch.float64)
    mask, k = draw_mask(cfg, law)
    assert gradgradcheck(_function(cfg, mask, k), _args(inp), fast_mode=False)


def test_gradcheck_all_dropped():
    cfg = dataclasses.replace(ODD, n=1, cin=2, cout=3, h=5, w=4)
    inp = make_inputs(cfg, torch.float64)
    mask = torch.zeros(cfg.cout, 1, 1, 1, dtype=torch.bool)
    assert gradcheck(_function(cfg, mask, None), _args(inp), fast_mode=False)
    assert gradgradcheck(_function(cfg, mask, None), _args(inp), fast_mode=False)


# --------------------------------------------------------------------------- the op


def _op_args(cfg: ConvConfig, inp, kept: torch.Tensor) -> tuple:
    pair = lambda v: list(v) if isinstance(v, tuple) else [v, v]  # noqa: E731
    return (inp.input, inp.weight, kept, inp.bias, pair(cfg.stride), pair(cfg.padding), pair(cfg.dilation),
            cfg.groups, float(cfg.scale))


def test_registered_schema_is_the_contract():
    text = str(compact_op.op()._schema)
    assert text[text.index("("):] == str(torch._C.parse_schema("x" + schemas.FILTER_COMPACT))[1:]


OPCHECK_CASES = {
    "odd": (ODD, [0, 2, 3, 6]),
    "grouped": (CASES["grouped"], [1, 2, 3, 5, 6, 8]),
    "no_bias_scaled": (CASES["scaled_no_bias"], [1, 4]),
    "all_dropped": (ODD, []),
    "all_kept": (ODD, list(range(7))),
}


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck(name, layout):
    cfg, kept = OPCHECK_CASES[name]
    inp = make_inputs(cfg, torch.float64)
    inp.input = as_layout(inp.input, layout)
    args = _op_args(cfg, inp, torch.tensor(kept, dtype=torch.int64))
    torch.library.opcheck(compact_op.op(), args)


def test_op_output_follows_input_memory_format():
    cfg = CASES["grouped"]
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    kept = torch.tensor([0, 2, 3, 4, 7, 8])
    for layout, fmt in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format),
                        ("strided", torch.contiguous_format)):
        inp_l = dataclasses.replace(inp, input=as_layout(inp.input, layout))
        out = compact_op.op()(*_op_args(cfg, inp_l, kept))
        assert out.is_contiguous(memory_format=fmt), layout


BAD_KEPT = [
    pytest.param(torch.tensor([0, 7]), ValueError, r"kept_filters entries must lie in \[0, 7\)", id="out-of-range"),
    pytest.param(torch.tensor([-1, 2]), ValueError, r"kept_filters entries must lie in", id="negative"),
    pytest.param(torch.tensor([0, 2], dtype=torch.int32), TypeError, r"kept_filters must have dtype torch.int64",
                 id="int32"),
    pytest.param(torch.tensor([0.0, 2.0]), TypeError, r"kept_filters must have dtype torch.int64", id="float"),
    pytest.param(torch.tensor([[0, 2]]), ValueError, r"kept_filters must be 1-D", id="2-d"),
    pytest.param(torch.tensor([2, 0]), ValueError, r"kept_filters must be strictly increasing", id="unsorted"),
    pytest.param(torch.tensor([2, 2]), ValueError, r"kept_filters must be strictly increasing", id="duplicate"),
    pytest.param(torch.arange(8), ValueError, r"kept_filters must hold the same number k <= 7", id="too-many"),
    pytest.param(torch.tensor([0, 2], device="meta"), ValueError, r"kept_filters is on meta", id="device"),
    pytest.param([0, 2], TypeError, r"kept_filters must be a torch.Tensor", id="list"),
]


@pytest.mark.parametrize("kept, error, match", BAD_KEPT)
def test_bad_kept_filters_raise_naming_it(kept, error, match):
    cfg = ODD
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    args = list(_op_args(cfg, inp, torch.tensor([0])))
    args[2] = kept
    with pytest.raises(error, match=match):
        compact_op.filter_compact_conv2d(*args)  # the kernel itself (a list cannot pass the dispatcher)
    if isinstance(kept, torch.Tensor):
        with pytest.raises(error, match=match):
            compact_op.op()(*args)


@pytest.mark.parametrize("kept, match", [
    pytest.param([0, 1, 3, 4, 6], r"the same number k <= 3 of filters for each of the groups = 3", id="uneven"),
    pytest.param([0, 3, 4, 5, 6, 8], r"j-th run of 2 inside group j's channels", id="wrong-group"),
])
def test_kept_filters_must_respect_groups(kept, match):
    cfg = CASES["grouped"]
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    with pytest.raises(ValueError, match=match):
        compact_op.op()(*_op_args(cfg, inp, torch.tensor(kept)))


def test_kept_filter_indices_static_and_sorted_per_group():
    mask = torch.tensor([0, 1, 1, 1, 0, 1, 1, 1, 0], dtype=torch.bool).view(9, 1, 1, 1)
    kept = kept_filter_indices(mask, 3, kept_per_row=2)
    assert kept.dtype == torch.int64 and kept.tolist() == [1, 2, 3, 5, 6, 7]
    assert kept_filter_indices(mask, 1).tolist() == [1, 2, 3, 5, 6, 7]
    with pytest.raises(ValueError, match="kept_per_row is needed with groups = 3"):
        kept_filter_indices(mask, 3)


# --------------------------------------------------------------------------- kept_per_row on rsk_conv2d


@pytest.mark.parametrize("value, match", [
    (-1, r"kept_per_row must be None or an int in \[0, 3\]"),
    (4, r"kept_per_row must be None or an int in \[0, 3\]"),
    (1.0, r"kept_per_row must be None or an int"),
    (True, r"kept_per_row must be None or an int"),
    (1, r"kept_per_row = 1, but the mask's 3 rows of 3 units keep \[2, 2, 2\]"),
])
def test_bad_kept_per_row_raises_naming_it(value, match):
    cfg = CASES["grouped"]
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    mask = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.bool).view(9, 1, 1, 1)
    for backend in ("compact", "reference"):
        with pytest.raises(ValueError, match=match):
            rskcnn.rsk_conv2d(inp.input, inp.weight, mask, inp.bias, **cfg.conv_kwargs(), block=cfg.block,
                              backend=backend, kept_per_row=value)


def test_kept_per_row_never_changes_other_backends():
    cfg = dataclasses.replace(CASES["grouped"], granularity="tap")
    inp = make_inputs(cfg, torch.float64, requires_grad=False)
    mask = rskcnn.sample_mask(cfg.weight_shape, 0.5, cfg.block, law="exact", groups=cfg.groups)
    k = rskcnn.exact_keep_count(0.5, rows_and_count(cfg)[1])
    args = (inp.input, inp.weight, mask, inp.bias)
    for backend in ("reference", *(["cpu"] if "cpu" in rskcnn.available_backends("cpu") else [])):
        with_k = rskcnn.rsk_conv2d(*args, **cfg.conv_kwargs(), block=cfg.block, backend=backend, kept_per_row=k)
        without = rskcnn.rsk_conv2d(*args, **cfg.conv_kwargs(), block=cfg.block, backend=backend)
        assert torch.equal(with_k, without), backend


# --------------------------------------------------------------------------- the backend's declarations


def _call(granularity="filter", groups=1, device="cpu", kept_per_row=None, dtype=torch.float32):
    weight_shape = (6, 4 // groups, 3, 3)
    return rsk_backends.ConvCall(device=torch.device(device), dtype=dtype, input_shape=(2, 4, 7, 7),
                                 weight_shape=weight_shape, block=rskcnn.block_shape(granularity, weight_shape, (2, 2)),
                                 stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=groups,
                                 kept_per_row=kept_per_row)


def test_declared_refusals():
    compact = rsk_backends.get_backend("compact")
    assert compact.not_supported_reasons(_call()) == []
    assert compact.not_supported_reasons(_call(groups=2, kept_per_row=1)) == []
    for granularity in ("element", "tap", "block"):
        assert any(f"{granularity} masks are not served (only filter)" in r
                   for r in compact.not_supported_reasons(_call(granularity)))
    assert any("needs the same kept count in every group" in r and "kept_per_row" in r
               for r in compact.not_supported_reasons(_call(groups=2)))
    assert not compact.not_supported_reasons(_call(dtype=torch.bfloat16))
    assert compact.not_supported_reasons(_call(dtype=torch.int32))
    cuda = compact.extra_reasons(_call(device="cuda"))
    assert cuda and "kept count unknown without a device sync" in cuda[0]
    assert compact.extra_reasons(_call(device="cuda", kept_per_row=3)) == []


def test_grouped_bernoulli_is_refused_with_its_reason():
    cfg = CASES["grouped"]
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    with pytest.raises(RuntimeError, match="backend 'compact' cannot run this call: groups = 3 > 1 needs the same"):
        rskcnn.rsk_conv2d(inp.input, inp.weight, inp.mask, inp.bias, **cfg.conv_kwargs(), block=cfg.block,
                          backend="compact")


def test_auto_tries_compact_first_on_cpu_where_the_speed_table_says(monkeypatch):
    from rskcnn.backends import calibration

    order = rsk_backends.auto_priority("cpu")
    assert order.index("compact") < order.index("reference")
    if "cpu" in order:
        assert order.index("compact") < order.index("cpu")
    table = {"device": "Test CPU", "faster_below": {"float32": {"compact": {"filter": 0.25}}}}
    monkeypatch.setattr(calibration, "_TABLES", {("cpu", None): ("cpu-test", table)})
    chosen, _ = rsk_backends.choose(dataclasses.replace(_call(), kept_fraction=0.25))
    assert chosen.name == "compact"
    chosen, skipped = rsk_backends.choose(dataclasses.replace(_call(), kept_fraction=0.5))
    assert chosen.name != "compact" and "only up to keep 0.25" in skipped["compact"][0]
    monkeypatch.setattr(calibration, "_TABLES", {("cpu", None): ("cpu-test", None)})
    chosen, skipped = rsk_backends.choose(dataclasses.replace(_call(), kept_fraction=0.25))
    assert chosen.name != "compact"
    assert any("not calibrated" in r for r in skipped["compact"]), skipped["compact"]


# --------------------------------------------------------------------------- the module and torch.compile


def _exact_layer(**options):
    return rskcnn.RSKConv2d(6, 9, 3, stride=(2, 1), padding=1, groups=3, keep_prob=0.5, granularity="filter",
                            law="exact", mask_seed=11, backend="compact", **options)


def test_exact_module_runs_compact_with_its_static_count():
    layer = _exact_layer()
    assert layer._kept_per_row() == 2  # round(0.5 * 3) per group of 3 filters
    x = torch.randn(2, 6, 7, 6, requires_grad=True)
    y = layer(x)
    mask = rskcnn.sample_mask(layer.weight.shape, 0.5, layer.block, seed=11, step=0, law="exact", groups=3)
    expected = reference_conv2d(x, layer.weight, mask, layer.bias, layer.stride, layer.padding, 1, 3,
                                block=layer.block)
    assert_close(y, expected, torch.float32, 27)
    y.square().sum().backward()
    assert torch.equal(layer.weight.grad[~mask.reshape(-1)], torch.zeros(9 - 6, 2, 3, 3))
    assert rskcnn.RSKConv2d(6, 9, 3, groups=3, granularity="filter")._kept_per_row() is None  # Bernoulli


@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_exact_layer_fullgraph_matches_eager():
    """fullgraph train steps equal their eager twin (same seeded masks); a keep_prob with the
    same k per group compiles no second graph."""
    eager, twin = _exact_layer(), _exact_layer()
    twin.load_state_dict(eager.state_dict())
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(twin, backend=counter, fullgraph=True)
    x = torch.randn(2, 6, 7, 6)
    counts = []
    for p in (0.5, 0.6):  # round(1.5) = round(1.8) = 2 of 3 filters per group
        eager.keep_prob = twin.keep_prob = p
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = eager(xe), compiled(xc)
        assert_close(yc, ye, torch.float32, 27, msg=f"keep_prob={p}")
        ye.square().sum().backward()
        yc.square().sum().backward()
        assert_close(xc.grad, xe.grad, torch.float32, 54, msg="grad_input")
        assert_close(twin.weight.grad, eager.weight.grad, torch.float32, 2 * 4 * 6, msg="grad_weight")
        counts.append(counter.frame_count)
    assert counts[0] >= 1 and counts == [counts[0]] * len(counts), f"graphs compiled so far {counts}"


@pytest.mark.usefixtures("fresh_dynamo")
def test_compiled_function_fullgraph_with_kept_per_row_inductor():
    cfg = CASES["grouped"]
    inp = make_inputs(cfg, torch.float32)
    mask, k = draw_mask(cfg, "exact")

    def f(x, w, b):
        return rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="compact",
                                 kept_per_row=k)

    compiled = torch.compile(f, fullgraph=True)
    results = []
    for fn in (compiled, f):
        x, w, b = leaf_copy(inp.input), leaf_copy(inp.weight), leaf_copy(inp.bias)
        y = fn(x, w, b)
        y.backward(inp.grad_output)
        results.append((y.detach(), x.grad, w.grad, b.grad))
    check_against(results[0], results[1], cfg, torch.float32, "eager")


@pytest.mark.usefixtures("fresh_dynamo")
def test_compile_without_kept_per_row_is_refused_with_its_reason():
    cfg = ODD
    inp = make_inputs(cfg, torch.float32, requires_grad=False)

    def f(x, w, mask, b):
        return rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="compact")

    with pytest.raises(Exception, match="data-dependent shape while torch.compile traces; pass kept_per_row"):
        torch.compile(f, backend="eager", fullgraph=True)(inp.input, inp.weight, inp.mask, inp.bias)


# --------------------------------------------------------------------------- CUDA (cuDNN)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["odd", "grouped", "depthwise"])
def test_cuda_parity_with_kept_per_row(name, dtype):
    cfg = CASES[name]
    inp = make_inputs(cfg, torch.float32)
    mask, k = draw_mask(cfg, "exact")
    dev = torch.device("cuda")
    x, w, b = (leaf_copy(t, dtype).detach().to(dev).requires_grad_() for t in (inp.input, inp.weight, inp.bias))
    out = rskcnn.rsk_conv2d(x, w, mask.to(dev), b, **cfg.conv_kwargs(), block=cfg.block, backend="compact",
                            kept_per_row=k)
    out.backward(inp.grad_output.to(dev, dtype))
    expected = run_oracle(cfg, inp, mask)
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    check_dtype = torch.bfloat16 if tf32 else dtype  # TF32 rounds inputs to 10 mantissa bits
    got = tuple(t.detach().cpu() for t in (out, x.grad, w.grad, b.grad))
    check_against(got, expected, cfg, check_dtype, "float64 oracle")
    assert (got[2][~mask.reshape(-1)] == 0).all()


@requires_cuda
def test_cuda_without_kept_per_row_is_refused():
    cfg = ODD
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    args = (t.cuda() for t in (inp.input, inp.weight, inp.mask, inp.bias))
    with pytest.raises(RuntimeError, match="kept count unknown without a device sync"):
        rskcnn.rsk_conv2d(*args, **cfg.conv_kwargs(), block=cfg.block, backend="compact")


@requires_cuda
def test_cuda_exact_layer_step_without_sync_in_cuda_graph():
    layer = _exact_layer().cuda()
    check_step_without_sync_in_cuda_graph(layer, torch.randn(4, 6, 9, 8, device="cuda"))


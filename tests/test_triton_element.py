"""The ``element`` sparse Triton kernels (rskcnn/triton/element.py), pass by pass.

Without CUDA the kernels run on the CPU under Triton's interpreter; ``TRITON_INTERPRET``
must be set before Triton is first imported, so it is set here before anything imports it.
Every pass is checked against a float64 oracle (``reference_conv2d`` and autograd on it) and
against the same reference in the kernels' dtype.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import dataclasses  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed")

from rskcnn.backends import reference_conv2d  # noqa: E402
from rskcnn.triton_kernels.element import (  # noqa: E402
    _compact,
    element_forward,
    element_grad_input,
    element_grad_weight,
)

from conftest import ConvConfig, as_layout  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not 1, so the Triton kernels cannot run here",
                allow_module_level=True)
if not CUDA:
    from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
    import triton.language as tl  # noqa: E402

    if not isinstance(tl.zeros, InterpretedFunction):
        raise RuntimeError("Triton was imported before TRITON_INTERPRET=1 was set (by conftest or a plugin?), "
                           "so its kernels cannot run on the CPU; set TRITON_INTERPRET=1 before importing rskcnn")

requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

CONFIGS = {
    # odd sizes with every conv parameter off its default
    "odd": ConvConfig(n=2, cin=5, cout=7, h=9, w=11, kernel=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1)),
    "odd_groups2": ConvConfig(n=2, cin=6, cout=4, h=9, w=11, kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                              dilation=(2, 1), groups=2),
    "3x3_pad1": ConvConfig(n=2, cin=3, cout=5, h=6, w=7, kernel=(3, 3), padding=(1, 1)),
    "stride2": ConvConfig(n=1, cin=3, cout=4, h=7, w=8, kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
    "stride3x2_dil2": ConvConfig(n=1, cin=2, cout=3, h=10, w=9, kernel=(2, 3), stride=(3, 2), padding=(2, 1),
                                 dilation=(2, 2)),
}


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conv_args(cfg: ConvConfig):
    return _pair(cfg.stride), _pair(cfg.padding), _pair(cfg.dilation), cfg.groups


@dataclasses.dataclass
class Case:
    x: torch.Tensor
    w: torch.Tensor
    kept: torch.Tensor
    b: torch.Tensor | None
    go: torch.Tensor


def make_case(cfg: ConvConfig, keep: float, dtype=torch.float32, *, bias=True) -> Case:
    x = torch.randn(cfg.n, cfg.cin, cfg.h, cfg.w, dtype=dtype, device=DEVICE)
    w = torch.randn(cfg.weight_shape, dtype=dtype, device=DEVICE)
    b = torch.randn(cfg.cout, dtype=dtype, device=DEVICE) if bias else None
    kept = torch.rand(cfg.weight_shape, device=DEVICE) < keep
    if keep < 1.0 and kept.numel() >= 2:  # both kinds of weight, whatever the draw
        kept.view(-1)[0] = True
        kept.view(-1)[-1] = False
    go = torch.randn(cfg.output_shape(), dtype=dtype, device=DEVICE)
    return Case(x, w, kept, b, go)


def nan_empty(shape, dtype, layout="contiguous"):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=DEVICE, memory_format=fmt).fill_(float("nan"))


def run_kernels(case: Case, cfg: ConvConfig, *, scale=1.0, out_layout="contiguous", splits=None):
    """The three passes into NaN-filled outputs (so every element must be written)."""
    stride, padding, dilation, groups = conv_args(cfg)
    dtype = case.x.dtype
    masked = case.w * case.kept * scale
    y = nan_empty(cfg.output_shape(), dtype, out_layout)
    element_forward(case.x, masked, case.kept, case.b, y, stride, padding, dilation, groups)
    gi = nan_empty(case.x.shape, dtype, out_layout)
    element_grad_input(case.go, masked, case.kept, gi, stride, padding, dilation, groups)
    gw = nan_empty(case.w.shape, dtype, out_layout)
    element_grad_weight(case.go, case.x, case.kept, scale, gw, stride, padding, dilation, groups, splits=splits)
    return y, gi, gw


def run_reference(case: Case, cfg: ConvConfig, dtype, *, scale=1.0):
    """reference_conv2d and autograd on it, with every tensor cast to ``dtype``."""
    stride, padding, dilation, groups = conv_args(cfg)
    x = case.x.detach().to(dtype).requires_grad_(True)
    w = case.w.detach().to(dtype).requires_grad_(True)
    b = None if case.b is None else case.b.detach().to(dtype)
    with torch.backends.cudnn.flags(allow_tf32=False):
        y = reference_conv2d(x, w, case.kept, b, stride, padding, dilation, groups, scale=scale)
        y.backward(case.go.to(dtype))
    return y.detach(), x.grad, w.grad


def reductions(cfg: ConvConfig):
    """How many products each output of (forward, grad-input, grad-weight) sums, at most."""
    kh, kw = cfg.kernel
    oh, ow = cfg.output_shape()[2:]
    return (cfg.cin // cfg.groups * kh * kw, cfg.cout // cfg.groups * kh * kw, cfg.n * oh * ow)


def check_fp32(actual, expected, reduction, what):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=1e-5, atol=1e-5 * math.sqrt(reduction),
                               msg=lambda m: f"{what}: {m}")


NAMES = ("forward", "grad_input", "grad_weight")


def check_all_fp32(case, cfg, got, *, scale=1.0):
    oracle = run_reference(case, cfg, torch.float64, scale=scale)
    same_dtype = run_reference(case, cfg, torch.float32, scale=scale)
    for name, a, e64, e32, r in zip(NAMES, got, oracle, same_dtype, reductions(cfg)):
        check_fp32(a, e64, r, f"{name} vs float64")
        check_fp32(a, e32, r, f"{name} vs float32 reference")
    gw = got[2]
    assert torch.equal(gw[~case.kept], torch.zeros_like(gw[~case.kept])), "masked weights' grad must be exactly 0"


# --------------------------------------------------------------------------- fp32


@pytest.mark.parametrize("keep", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_matches_reference(name, keep):
    cfg = CONFIGS[name]
    case = make_case(cfg, keep)
    check_all_fp32(case, cfg, run_kernels(case, cfg))


def test_scale_and_no_bias():
    cfg = CONFIGS["odd_groups2"]
    case = make_case(cfg, 0.5, bias=False)
    check_all_fp32(case, cfg, run_kernels(case, cfg, scale=2.5), scale=2.5)


@pytest.mark.parametrize("splits", [1, 2, 7])
def test_grad_weight_split_reduction(splits):
    """The pixel reduction split across programs (fp32 workspace + torch sum) agrees."""
    cfg = CONFIGS["odd"]
    case = make_case(cfg, 0.5)
    got = run_kernels(case, cfg, scale=0.5, splits=splits)
    check_all_fp32(case, cfg, got, scale=0.5)


def test_fully_dropped_filters():
    cfg = CONFIGS["odd_groups2"]
    case = make_case(cfg, 0.5)
    case.kept[1] = False  # one whole filter
    case.kept[2, 0] = False  # one (filter, channel) pair
    y, gi, gw = got = run_kernels(case, cfg)
    check_all_fp32(case, cfg, got)
    assert torch.equal(y[:, 1], case.b[1].expand_as(y[:, 1])), "a dropped filter's output is its bias"
    assert torch.equal(gw[1], torch.zeros_like(gw[1]))


def test_all_dropped():
    cfg = CONFIGS["odd"]
    case = make_case(cfg, 0.5)
    case.kept.zero_()
    y, gi, gw = run_kernels(case, cfg)
    assert torch.equal(y, case.b[None, :, None, None].expand_as(y))
    assert torch.equal(gi, torch.zeros_like(gi))
    assert torch.equal(gw, torch.zeros_like(gw))


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("out_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("layout", ["channels_last", "strided", "permuted"])
def test_layouts(layout, out_layout):
    """Non-contiguous input, grad_output and weight, and channels_last outputs."""
    cfg = CONFIGS["odd"]
    case = make_case(cfg, 0.5)
    case.x = as_layout(case.x, layout)
    case.go = as_layout(case.go, layout)
    case.w = as_layout(case.w, "permuted")
    got = run_kernels(case, cfg, out_layout=out_layout)
    if out_layout == "channels_last":
        for t in got:
            assert t.is_contiguous(memory_format=torch.channels_last)
    check_all_fp32(case, cfg, got)


# --------------------------------------------------------------------------- empty shapes


def test_batch_zero():
    cfg = dataclasses.replace(CONFIGS["odd"], n=0)
    case = make_case(cfg, 0.5)
    y, gi, gw = run_kernels(case, cfg)
    assert y.shape == cfg.output_shape() and gi.shape == case.x.shape
    assert torch.equal(gw, torch.zeros_like(gw)), "no pixels: the weight grad is all zeros"


def test_zero_output_channels():
    cfg = dataclasses.replace(CONFIGS["3x3_pad1"], cout=0)
    case = make_case(cfg, 0.5)
    y, gi, gw = run_kernels(case, cfg)
    assert y.numel() == 0 and gw.numel() == 0
    assert torch.equal(gi, torch.zeros_like(gi)), "no filters: the input grad is all zeros"


# --------------------------------------------------------------------------- low precision


def check_low_precision(cfg, dtype):
    case = make_case(cfg, 0.5, dtype)
    got = run_kernels(case, cfg)
    oracle = run_reference(case, cfg, torch.float64)
    theirs = run_reference(case, cfg, dtype)
    for name, a, e, t, r in zip(NAMES, got, oracle, theirs, reductions(cfg)):
        assert a.dtype == dtype
        err = (a.double() - e).abs().max().item()
        torch_err = (t.double() - e).abs().max().item()
        # within twice torch's own error in this dtype (both round an fp32 sum once), plus a
        # small absolute floor for the case where torch's error happens to be tiny
        floor = 1e-3
        assert err <= 2 * torch_err + floor, f"{name}: error {err:.3g} vs torch {dtype} error {torch_err:.3g}"
    gw = got[2]
    assert torch.equal(gw[~case.kept], torch.zeros_like(gw[~case.kept]))


@pytest.mark.parametrize("name", ["odd", "odd_groups2"])
def test_fp16(name):
    check_low_precision(CONFIGS[name], torch.float16)


@requires_cuda  # the Triton interpreter computes bf16 wrongly, so bf16 runs on a GPU only
@pytest.mark.parametrize("name", ["odd", "odd_groups2"])
def test_bf16(name):
    check_low_precision(CONFIGS[name], torch.bfloat16)


# --------------------------------------------------------------------------- lists and errors


def test_compact_lists():
    kept = torch.rand(9, 13, device=DEVICE) < 0.4
    kept[3] = False
    kept[5] = True
    order, count, rows = _compact(kept)
    assert torch.equal(count.long(), kept.sum(1))
    for r in range(kept.shape[0]):
        c = int(count[r])
        expected = torch.cat([kept[r].nonzero().flatten(), (~kept[r]).nonzero().flatten()])
        assert torch.equal(order[r], expected), f"row {r}: kept positions first, ascending, then dropped"
        assert c == kept[r].sum()
    counts = count[rows.long()]
    assert torch.all(counts[:-1] >= counts[1:]), "rows launch in order of decreasing count"
    assert sorted(rows.tolist()) == list(range(kept.shape[0]))


def test_bad_arguments():
    cfg = CONFIGS["3x3_pad1"]
    case = make_case(cfg, 0.5)
    args = conv_args(cfg)
    y = torch.empty(cfg.output_shape(), device=DEVICE)
    with pytest.raises(TypeError, match="kept must have dtype torch.bool"):
        element_forward(case.x, case.w, case.kept.float(), case.b, y, *args)
    with pytest.raises(ValueError, match="kept must have the weight's shape"):
        element_forward(case.x, case.w, case.kept[:, :1], case.b, y, *args)
    with pytest.raises(ValueError, match="out must have shape"):
        element_forward(case.x, case.w, case.kept, case.b, y[:, :1], *args)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        element_grad_input(case.go[:1], case.w, case.kept, torch.empty_like(case.x), *args)
    with pytest.raises(TypeError, match="input must be float32, float16 or bfloat16"):
        element_grad_weight(case.go, case.x.double(), case.kept, 1.0, torch.empty_like(case.w), *args)


# --------------------------------------------------------------------------- CUDA only


@requires_cuda
def test_no_host_sync_and_graph_capture():
    """The lists are built on the device: no synchronisation, and the passes replay in a CUDA graph
    with a new mask copied into the captured one."""
    cfg = CONFIGS["odd_groups2"]
    case = make_case(cfg, 0.5)
    run_kernels(case, cfg)  # compile outside the capture
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_kernels(case, cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = run_kernels(case, cfg)
    case.kept.copy_(torch.rand(case.kept.shape, device=DEVICE) < 0.3)
    graph.replay()
    torch.cuda.synchronize()
    check_all_fp32(case, cfg, got)

"""The ``cuda`` backend (csrc/cuda). Here, without a GPU: the build compiled and registered
the CUDA kernels, and auto's calibration logic. On a GPU: every kernel against the reference
and a float64 oracle, gradcheck, opcheck, low precision, layouts, no host sync, streams,
CUDA graphs and torch.compile."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import rskcnn
from rskcnn import _extension
from rskcnn.backends import calibration, choose
from rskcnn.backends.reference import reference_conv2d

from conftest import (ConvConfig, as_layout, check_step_without_sync_in_cuda_graph, leaf_copy, make_inputs,
                      requires_cpu_ops)
from test_auto_speed import gpu_call
from test_parity import Result, check_result, full_mask, run_oracle

CUDA = torch.cuda.is_available()
requires_cuda_backend = pytest.mark.skipif(
    "cuda" not in (rskcnn.available_backends("cuda") if CUDA else []),
    reason="needs a CUDA GPU and the CUDA build: "
    + (rskcnn.backends.unavailable_reasons("cuda").get("cuda", "") if CUDA else "no CUDA device here"),
)
OPS = ("masked_conv2d", "masked_conv2d_grad_input", "masked_conv2d_grad_weight", "plan_tiles")


def toolkit_present() -> bool:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return (Path(home) / "bin" / "nvcc").exists() or shutil.which("nvcc") is not None


# --------------------------------------------------------------------------- build (runs anywhere)


@requires_cpu_ops
@pytest.mark.skipif(torch.version.cuda is None, reason=f"torch {torch.__version__} is a CPU build")
@pytest.mark.skipif(os.environ.get("FORCE_CUDA") == "0", reason="FORCE_CUDA=0 builds without CUDA")
def test_extension_contains_the_cuda_kernels_where_a_toolkit_is():
    if not toolkit_present():
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    assert _extension.cuda_built(), f"CUDA kernels were not built: {_extension.cuda_build_reason()}"
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rskcnn::{op}", "CUDA"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rskcnn::{op}", "CPU"), op
    # Under torch.autocast("cuda") the forward returns autocast's dtype, as nn.Conv2d does.
    assert torch._C._dispatch_has_kernel_for_dispatch_key("rskcnn::masked_conv2d", "AutocastCUDA")


def test_cuda_backend_says_why_it_cannot_run_on_the_cpu():
    reason = rskcnn.backends.unavailable_reasons("cpu")["cuda"]
    assert "cuda devices only" in reason
    assert "cuda" not in rskcnn.available_backends("cpu")


def test_expected_keep_is_validated():
    cfg = ConvConfig()
    inp = make_inputs(cfg, requires_grad=False)
    with pytest.raises(ValueError, match="expected_keep must be None or a float in"):
        rskcnn.rsk_conv2d(inp.input, inp.weight, inp.mask, expected_keep=1.5, block=cfg.block)


# --------------------------------------------------------------------------- GPU


def run_cuda(cfg: ConvConfig, inp, *, layout="contiguous", dtype=None) -> Result:
    dev = torch.device("cuda")
    x = leaf_copy(inp.input, dtype).to(dev).detach()
    x = as_layout(x.cpu(), layout).to(dev) if layout not in ("contiguous", "strided") else x
    if layout == "strided":
        buffer = torch.full((*x.shape[:-1], 2 * x.shape[-1]), float("nan"), dtype=x.dtype, device=dev)
        buffer[..., ::2] = x
        x = buffer[..., ::2]
    x.requires_grad_(True)
    w = leaf_copy(inp.weight, dtype).to(dev).detach().requires_grad_(True)
    b = None if inp.bias is None else leaf_copy(inp.bias, dtype).to(dev).detach().requires_grad_(True)
    out = rskcnn.rsk_conv2d(x, w, inp.mask.to(dev), b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale,
                            backend="cuda")
    out.backward(inp.grad_output.to(dev, out.dtype))
    return Result(out.detach().cpu(), x.grad.cpu(), w.grad.cpu(), None if b is None else b.grad.cpu())


# Shapes that exercise partial tiles, chunks that do not fill 32 channels, the 16-byte and the
# scalar load paths, stride and dilation, groups, and 1x1 kernels.
GPU_CONFIGS = {
    "odd_small": ConvConfig(n=2, cin=6, cout=8, h=9, w=7, kernel=(3, 2), stride=(2, 1), padding=(1, 0),
                            dilation=(2, 1), groups=2),
    "tensor_core": ConvConfig(n=3, cin=64, cout=96, h=13, w=11, padding=1),
    "partial_chunks": ConvConfig(n=2, cin=40, cout=70, h=10, w=9, padding=1),
    "strided_grouped": ConvConfig(n=2, cin=64, cout=64, h=15, w=16, stride=2, padding=1, groups=2),
    "one_by_one": ConvConfig(n=4, cin=48, cout=32, h=7, w=7, kernel=(1, 1)),
}
GPU_GRANULARITIES = [("element", (4, 2)), ("tap", (4, 2)), ("filter", (4, 2)), ("block", (32, 32)),
                     ("block", (16, 16)), ("block", (4, 8))]


@requires_cuda_backend
@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("granularity, block_size", GPU_GRANULARITIES, ids=lambda v: str(v))
@pytest.mark.parametrize("name", sorted(GPU_CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cuda_matches_reference_and_oracle(name, granularity, block_size, keep_prob, dtype, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cfg = dataclasses.replace(GPU_CONFIGS[name], granularity=granularity, block_size=block_size,
                              keep_prob=keep_prob)
    inp = make_inputs(cfg, dtype)
    res = run_cuda(cfg, inp)
    kept = full_mask(inp.mask, cfg.block, cfg.weight_shape)
    assert (res.grad_weight[~kept] == 0).all()
    x, w, b = leaf_copy(inp.input), leaf_copy(inp.weight), leaf_copy(inp.bias)
    out = reference_conv2d(x, w, inp.mask, b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale)
    out.backward(inp.grad_output)
    check_result(res, Result(out.detach(), x.grad, w.grad, None if b is None else b.grad), cfg, dtype, "reference")
    check_result(res, run_oracle(cfg, inp), cfg, dtype, "float64 oracle")


@requires_cuda_backend
@pytest.mark.parametrize("layout", ["channels_last", "permuted", "strided"])
@pytest.mark.parametrize("granularity", ["element", "filter", "block"])
def test_cuda_input_layouts(layout, granularity):
    cfg = dataclasses.replace(GPU_CONFIGS["tensor_core"], granularity=granularity)
    inp = make_inputs(cfg, torch.float64)
    res = run_cuda(cfg, inp, layout=layout)
    check_result(res, run_oracle(cfg, inp), cfg, torch.float64, f"oracle ({layout})")


@requires_cuda_backend
@pytest.mark.parametrize("granularity", ["element", "tap", "filter", "block"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "tf32"], ids=str)
def test_cuda_low_precision_within_twice_torchs_error(granularity, dtype, monkeypatch):
    """Error against the float64 oracle <= 2 x torch's own error in the same dtype + atol.
    TF32: cuDNN may pick full-float32 kernels even when TF32 is allowed (seen on an H200 for
    grad-input), so torch's error is no yardstick there; the bound is TF32's own instead,
    a relative (Frobenius) error of at most 2e-3 (10-bit mantissa operands, float32 sums)."""
    tf32 = dtype == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    dtype = torch.float32 if tf32 else dtype
    cfg = dataclasses.replace(GPU_CONFIGS["tensor_core"], granularity=granularity, block_size=(32, 32))
    inp = make_inputs(cfg, torch.float64)
    oracle = run_oracle(cfg, inp)
    ours = run_cuda(cfg, inp, dtype=dtype)
    m = full_mask(inp.mask, cfg.block, cfg.weight_shape)
    dev = torch.device("cuda")
    x = inp.input.detach().to(dev, dtype).requires_grad_(True)
    w = inp.weight.detach().to(dev, dtype).requires_grad_(True)
    out = F.conv2d(x, w * m.to(dev, dtype), inp.bias.detach().to(dev, dtype), **cfg.conv_kwargs())
    out.backward(inp.grad_output.to(dev, dtype))
    torch_res = {"out": out.detach().cpu(), "grad_input": x.grad.cpu(), "grad_weight": w.grad.cpu()}
    for field, theirs in torch_res.items():
        want = getattr(oracle, field)
        ours_diff = getattr(ours, field).double() - want
        torch_err = (theirs.double() - want).abs().max().item()
        if tf32:
            rel = (ours_diff.norm() / want.norm()).item()
            assert rel <= 2e-3, f"{field}: relative error {rel:.2e} (torch's max error {torch_err:.2e})"
        else:
            ours_err = ours_diff.abs().max().item()
            assert ours_err <= 2 * torch_err + 1e-2, f"{field}: {ours_err} vs torch {torch_err}"


@requires_cuda_backend
@pytest.mark.parametrize("granularity", ["element", "tap", "filter", "block"])
def test_cuda_gradcheck(granularity):
    cfg = ConvConfig(n=2, cin=4, cout=6, h=5, w=6, kernel=(3, 2), padding=1, granularity=granularity,
                     block_size=(2, 2), keep_prob=0.5)
    inp = make_inputs(cfg, torch.float64)
    mask = inp.mask.cuda()
    x, w, b = (t.detach().cuda().requires_grad_(True) for t in (inp.input, inp.weight, inp.bias))

    def f(x, w, b):
        return rskcnn.rsk_conv2d(x, w, mask, b, **cfg.conv_kwargs(), block=cfg.block, backend="cuda")

    assert torch.autograd.gradcheck(f, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x, w, b), fast_mode=True)


@requires_cuda_backend
@pytest.mark.parametrize("granularity", ["element", "filter", "block"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_opcheck(granularity, layout):
    cfg = dataclasses.replace(GPU_CONFIGS["odd_small"], granularity=granularity)
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    dev = torch.device("cuda")
    x = as_layout(inp.input, layout).to(dev)
    w, mask, b, go = inp.weight.to(dev), inp.mask.to(dev), inp.bias.to(dev), inp.grad_output.to(dev)
    conv = [[2, 1], [1, 0], [2, 1], cfg.groups, list(cfg.block), 1.0]
    ops = torch.ops.rskcnn
    torch.library.opcheck(ops.masked_conv2d.default, (x.requires_grad_(True), w, mask, b, *conv))
    torch.library.opcheck(ops.masked_conv2d_grad_input.default, (go, w, mask, list(x.shape), *conv))
    torch.library.opcheck(ops.masked_conv2d_grad_weight.default, (go, x.detach(), mask, list(w.shape), *conv))


@requires_cuda_backend
@pytest.mark.parametrize("granularity", ["element", "tap", "filter", "block"])
def test_cuda_never_reads_masked_weights(granularity):
    cfg = dataclasses.replace(GPU_CONFIGS["tensor_core"], granularity=granularity, keep_prob=0.5)
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    kept = full_mask(inp.mask, cfg.block, cfg.weight_shape)
    poisoned = inp.weight.masked_fill(~kept, float("nan")).cuda()
    out = rskcnn.rsk_conv2d(inp.input.cuda(), poisoned, inp.mask.cuda(), inp.bias.cuda(), **cfg.conv_kwargs(),
                            block=cfg.block, backend="cuda")
    assert torch.isfinite(out).all()


@requires_cuda_backend
@pytest.mark.parametrize("granularity", ["element", "filter"])
def test_cuda_batch_zero(granularity):
    cfg = dataclasses.replace(GPU_CONFIGS["odd_small"], n=0, granularity=granularity)
    inp = make_inputs(cfg, torch.float32)
    res = run_cuda(cfg, inp)
    assert res.out.shape == cfg.output_shape() and (res.grad_weight == 0).all()


@requires_cuda_backend
@pytest.mark.parametrize("granularity", ["element", "filter", "block"])
def test_cuda_step_has_no_host_sync_runs_on_a_side_stream_and_replays_in_a_graph(granularity):
    torch.manual_seed(0)
    layer = rskcnn.RSKConv2d(64, 64, 3, padding=1, keep_prob=0.5, granularity=granularity,
                             backend="cuda", device="cuda")
    x = torch.randn(8, 64, 14, 14, device="cuda", requires_grad=True)
    check_step_without_sync_in_cuda_graph(layer, x)


@requires_cuda_backend
def test_cuda_compile_fullgraph_matches_eager():
    layer = rskcnn.RSKConv2d(32, 48, 3, padding=1, keep_prob=0.5, granularity="filter", backend="cuda",
                             mask_seed=3, device="cuda")
    x = torch.randn(4, 32, 12, 12, device="cuda")
    eager = layer(x)
    layer.mask_step.zero_()
    compiled = torch.compile(layer, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager)


@requires_cuda_backend
def test_auto_keeps_cudnn_on_an_uncalibrated_card(monkeypatch):
    monkeypatch.setitem(calibration._TABLES, ("cuda", torch.cuda.current_device()), ("uncalibrated", None))
    call = dataclasses.replace(gpu_call(), device=torch.device("cuda", torch.cuda.current_device()))
    chosen, skipped = choose(call)
    assert chosen.name == "reference" and "not calibrated" in skipped["cuda"][0]

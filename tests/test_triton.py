"""The ``triton`` backend: its ops, step lists and dtypes, beyond the generic parity tests
(tests/test_parity.py runs it too, in float32, like every backend).

Without CUDA the kernels run under Triton's interpreter (switched on by conftest before
Triton is imported). bfloat16, CUDA graphs and the no-sync check need a GPU and are skipped
here with that reason.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import rskcnn
from rskcnn import backends as rsk_backends
from rskcnn.backends import reference_conv2d

from conftest import ConvConfig, as_layout, check_step_without_sync_in_cuda_graph, leaf_copy, make_inputs

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
_reason = rsk_backends.unavailable_reasons(DEVICE).get("triton")
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"triton backend unavailable: {_reason}")
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (bf16, CUDA graphs and sync checks)")

if _reason is None:
    from rskcnn.triton_kernels import configs, passes as triton_passes, tile_steps  # noqa: E402
    from rskcnn.geometry import ConvGeometry  # noqa: E402
    from rskcnn.triton_kernels.configs import dot_precision  # noqa: E402

ODD = ConvConfig(n=2, cin=6, cout=8, h=9, w=7, kernel=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1),
                 groups=2, block_size=(3, 5))
# Big enough for whole 16x16 tiles, so the tiled kernels skip (and keep) real tiles.
WIDE = ConvConfig(n=2, cin=32, cout=48, h=6, w=5, kernel=(3, 3), padding=(1, 1), block_size=(16, 16))

GRANULARITIES = ["element", "tap", "filter", "block"]


def _grads(backend, cfg, inp, dtype, *, create_graph=False):
    x, w, b = (leaf_copy(t, dtype) for t in (inp.input, inp.weight, inp.bias))
    x, w = x.to(DEVICE), w.to(DEVICE)
    b = b.to(DEVICE) if b is not None else None
    out = rskcnn.rsk_conv2d(x, w, inp.mask.to(DEVICE), b, **cfg.conv_kwargs(), block=cfg.block, scale=cfg.scale,
                            backend=backend)
    grads = torch.autograd.grad(out, (x, w, b), inp.grad_output.to(DEVICE, dtype), create_graph=create_graph)
    return (out, *grads), (x, w, b)


def _max_errors(got, want):
    return [(g.double() - w.double()).abs().max().item() for g, w in zip(got, want)]


@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_float16_error_within_twice_torchs_own(granularity, keep_prob):
    """fp16 inputs, fp32 accumulation: the error against float64 is at most twice that of torch's own
    fp16 convolution (the reference backend in fp16) plus a small atol."""
    # The interpreter runs the element kernels' gathers slowly: fewer channels there.
    channels = dict(cin=8, cout=12) if granularity == "element" and not CUDA else {}
    cfg = dataclasses.replace(WIDE, granularity=granularity, keep_prob=keep_prob, **channels)
    inp = make_inputs(cfg, torch.float32)
    exact, _ = _grads("reference", cfg, inp, torch.float64)
    ours, _ = _grads("triton", cfg, inp, torch.float16)
    torch_own, _ = _grads("reference", cfg, inp, torch.float16)
    for name, e_ours, e_torch in zip(("out", "grad_input", "grad_weight", "grad_bias"),
                                     _max_errors(ours, exact), _max_errors(torch_own, exact)):
        assert e_ours <= 2 * e_torch + 1e-2, f"{name}: fp16 error {e_ours:.3g} vs torch's {e_torch:.3g}"
    assert all(t.dtype == torch.float16 for t in ours)


@pytest.fixture(autouse=True)
def exact_float32(monkeypatch):
    """fp32 results are compared at 1e-4. On a GPU, cuDNN's default ``allow_tf32`` would make
    both tl.dot (see dot_precision) and the reference TF32; tests that want TF32 set it."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_tiled_kernels_serve_every_granularity(granularity, monkeypatch):
    """The implicit-GEMM kernels are correct for every mask, element masks included (which
    normally take the sparse kernels)."""
    monkeypatch.setattr(triton_passes, "_uses_element_kernels", lambda block, shape: False)
    cfg = dataclasses.replace(ODD, granularity=granularity, keep_prob=0.5)
    inp = make_inputs(cfg, torch.float32)
    want, _ = _grads("reference", cfg, inp, torch.float64)
    got, _ = _grads("triton", cfg, inp, torch.float32)
    for name, g, w in zip(("out", "grad_input", "grad_weight", "grad_bias"), got, want):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_masked_nan_weights_never_reach_the_output(granularity):
    cfg = dataclasses.replace(ODD if granularity == "element" else WIDE, granularity=granularity, keep_prob=0.5)
    inp = make_inputs(cfg, torch.float32, requires_grad=False)
    kept = rskcnn.expand_mask(inp.mask, cfg.block, cfg.weight_shape)
    poisoned = inp.weight.masked_fill(~kept, float("nan"))
    out = rskcnn.rsk_conv2d(inp.input.to(DEVICE), poisoned.to(DEVICE), inp.mask.to(DEVICE), None,
                            **cfg.conv_kwargs(), block=cfg.block, backend="triton")
    clean = reference_conv2d(inp.input, inp.weight, inp.mask, None, **cfg.conv_kwargs(), block=cfg.block)
    torch.testing.assert_close(out.cpu(), clean, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_double_backward_matches_reference(granularity):
    cfg = dataclasses.replace(ODD, granularity=granularity, keep_prob=0.5)
    inp = make_inputs(cfg, torch.float32)
    results = {}
    for backend in ("triton", "reference"):
        (out, gx, gw, gb), (x, w, b) = _grads(backend, cfg, inp, torch.float32, create_graph=True)
        # A scalar of the first-order grads, differentiated again.
        second = torch.autograd.grad((gx.square().sum() + (gw * w).sum()), (x, w, b), allow_unused=True)
        results[backend] = [t for t in second if t is not None]
    for got, want in zip(results["triton"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_float16_layouts_keep_the_memory_format(layout):
    cfg = dataclasses.replace(WIDE, granularity="block", keep_prob=0.5)
    inp = make_inputs(cfg, torch.float16, requires_grad=False)
    x = as_layout(inp.input, layout).to(DEVICE)
    out = rskcnn.rsk_conv2d(x, inp.weight.to(DEVICE), inp.mask.to(DEVICE), inp.bias.to(DEVICE), **cfg.conv_kwargs(),
                            block=cfg.block, backend="triton")
    want = reference_conv2d(inp.input.float(), inp.weight.float(), inp.mask, inp.bias.float(), **cfg.conv_kwargs(),
                            block=cfg.block)
    torch.testing.assert_close(out.float().cpu(), want, rtol=2e-2, atol=2e-2)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- step lists


def _geometry(weight_shape, groups=1):
    cout, cin_g, kh, kw = weight_shape
    return ConvGeometry.of((2, cin_g * groups, kh + 2, kw + 2), weight_shape, (1, 1), (0, 0), (1, 1), groups)


def _plan_inputs(granularity, weight_shape, keep, groups=1, block_size=(4, 3)):
    block = rskcnn.block_shape(granularity, weight_shape, block_size)
    mask = rskcnn.sample_mask(weight_shape, keep, block)
    kept = rskcnn.expand_mask(mask, block, weight_shape)
    return mask.to(DEVICE), block, kept, _geometry(weight_shape, groups)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_channel_order_puts_dropped_filters_last_within_each_group(granularity):
    mask, block, kept, geo = _plan_inputs(granularity, (12, 3, 3, 3), 0.6, groups=2, block_size=(1, 2))
    if granularity in ("element", "block"):  # drop three whole filters in the mask itself
        mask[[1, 4, 7]] = False
        kept[[1, 4, 7]] = False
    order = tile_steps.channel_order(mask, block, geo).long().cpu()
    for g in range(2):
        local = order[g * 6:(g + 1) * 6]
        assert sorted(local.tolist()) == list(range(g * 6, (g + 1) * 6)), "order left its group"
        alive = kept[local].flatten(1).any(1)
        assert not (alive[1:] & ~alive[:-1]).any(), "a kept filter comes after a dropped one"


def test_channel_order_groups_filters_by_kept_taps():
    """tap masks: channels sorted by their kept-tap pattern, first tap most significant."""
    mask, block, kept, geo = _plan_inputs("tap", (40, 8, 3, 3), 0.5)
    order = tile_steps.channel_order(mask, block, geo).long().cpu()
    patterns = kept[order].flatten(2).any(1).long()  # (Cout, T)
    keys = [int("".join(map(str, row.tolist())), 2) for row in patterns]
    assert keys == sorted(keys, reverse=True)


def _brute_force_steps(rows_kept, rows, cols):
    """rows_kept (G, R, C, T) bool: per tile of ``rows`` rows, the steps tap * n_chunks + chunk whose
    ``rows x cols`` block holds a kept weight."""
    g, r, c, t = rows_kept.shape
    n_chunks = -(-c // cols)
    expected = []
    for gi in range(g):
        for ri in range(-(-r // rows)):
            expected.append([tap * n_chunks + ci for tap in range(t) for ci in range(n_chunks)
                             if rows_kept[gi, ri * rows:(ri + 1) * rows, ci * cols:(ci + 1) * cols, tap].any()])
    return expected


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_forward_plan_lists_exactly_the_nonempty_tiles(granularity, groups):
    mask, block, kept, geo = _plan_inputs(granularity, (20, 9, 3, 2), 0.4, groups=groups)
    order, steps, counts = (t.cpu() for t in tile_steps.forward_plan(mask, block, geo, 4, 4))
    assert torch.equal(order, tile_steps.channel_order(mask, block, geo).cpu())
    ordered = kept[order.long()].view(groups, 20 // groups, 9, -1)  # rows: output channels in order
    for tile, expected in enumerate(_brute_force_steps(ordered, 4, 4)):
        assert counts[tile].item() == len(expected)
        assert steps[tile, :len(expected)].tolist() == expected


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_grad_input_plan_lists_exactly_the_nonempty_tiles(granularity):
    mask, block, kept, geo = _plan_inputs(granularity, (10, 7, 2, 3), 0.3)
    order, steps, counts = (t.cpu() for t in tile_steps.grad_input_plan(mask, block, geo, 4, 2))
    transposed = kept[order.long()].view(1, 10, 7, -1).transpose(1, 2)  # rows: input channels
    for tile, expected in enumerate(_brute_force_steps(transposed, 4, 2)):
        assert counts[tile].item() == len(expected)
        assert steps[tile, :len(expected)].tolist() == expected


def test_aligned_block_masks_visit_one_step_per_kept_block():
    """A 16x16 block mask on 16-wide tiles: the forward visits exactly the kept blocks, once per tap."""
    weight_shape = (64, 64, 3, 3)
    block = rskcnn.block_shape("block", weight_shape, (16, 16))
    tiles = configs.forward_tiles(block, weight_shape, torch.float16)
    assert (tiles.block_n, tiles.block_k) == (16, 16)
    mask = rskcnn.sample_mask(weight_shape, 0.5, block, device=DEVICE)
    _, _, counts = tile_steps.forward_plan(mask, block, _geometry(weight_shape), tiles.block_n, tiles.block_k)
    assert counts.sum().item() == mask.sum().item()


def test_filter_masks_give_dropped_filters_no_steps():
    weight_shape = (128, 32, 3, 3)
    block = rskcnn.block_shape("filter", weight_shape)
    mask = torch.zeros(128, 1, 1, 1, dtype=torch.bool)
    mask[torch.randperm(128)[:40]] = True
    tiles = configs.forward_tiles(block, weight_shape, torch.float32)
    _, _, counts = tile_steps.forward_plan(mask.to(DEVICE), block, _geometry(weight_shape), tiles.block_n, tiles.block_k)
    busy_tiles = -(-40 // tiles.block_n)
    assert (counts[:busy_tiles] > 0).all() and (counts[busy_tiles:] == 0).all()


def test_dot_precision_follows_cudnn_allow_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert dot_precision(torch.float32, torch.device("cuda")) == "tf32"
    assert dot_precision(torch.float16, torch.device("cuda")) == "ieee"
    assert dot_precision(torch.float32, torch.device("cpu")) == "ieee"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert dot_precision(torch.float32, torch.device("cuda")) == "ieee"


# --------------------------------------------------------------------------- the ops


def _op_samples():
    for granularity in GRANULARITIES:
        for cfg, layout in ((ODD, "contiguous"), (dataclasses.replace(ODD, groups=1, stride=1), "channels_last"),
                            (dataclasses.replace(ODD, n=0), "contiguous")):
            cfg = dataclasses.replace(cfg, granularity=granularity, keep_prob=0.5, scale=0.5)
            yield pytest.param(cfg, layout, id=f"{granularity}-{layout}-n{cfg.n}-g{cfg.groups}")


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


@pytest.mark.parametrize("cfg, layout", list(_op_samples()))
def test_opcheck(cfg, layout):
    inp = make_inputs(cfg, torch.float32)
    x = as_layout(inp.input, layout).to(DEVICE).requires_grad_()
    w, b = inp.weight.to(DEVICE).detach().requires_grad_(), inp.bias.to(DEVICE).detach().requires_grad_()
    mask, go = inp.mask.to(DEVICE), inp.grad_output.to(DEVICE)
    conv = [_pair(cfg.stride), _pair(cfg.padding), _pair(cfg.dilation), cfg.groups, list(cfg.block), cfg.scale]
    ops = torch.ops.rskcnn
    torch.library.opcheck(ops.triton_conv2d.default, (x, w, mask, b, *conv))
    torch.library.opcheck(ops.triton_conv2d_grad_input.default, (go, w.detach(), mask, list(x.shape), *conv))
    torch.library.opcheck(ops.triton_conv2d_grad_weight.default, (go, x.detach(), mask, list(w.shape), *conv))


def _fp16_call(input_shape, weight_shape, block, padding) -> "rsk_backends.ConvCall":
    """A float16 call on DEVICE with stride and dilation 1 and one group."""
    return rsk_backends.ConvCall(device=DEVICE, dtype=torch.float16, input_shape=input_shape,
                                 weight_shape=weight_shape, block=block, stride=(1, 1), padding=padding,
                                 dilation=(1, 1), groups=1)


def test_too_large_for_int32_indexing_goes_elsewhere():
    call = _fp16_call((1024, 512, 64, 64), (512, 512, 3, 3), (1, 512, 3, 3), (1, 1))
    reasons = rsk_backends.get_backend("triton").not_supported_reasons(call)
    assert any("int32" in r for r in reasons)
    assert rsk_backends.choose(call)[0].name == "reference"


def test_auto_never_picks_the_interpreter():
    if CUDA:
        pytest.skip("the interpreter is only used without CUDA")
    call = _fp16_call((2, 8, 5, 5), (8, 8, 3, 3), (1, 8, 3, 3), (1, 1))
    assert rsk_backends.choose(call)[0].name == "reference"
    assert "interpreter" in " ".join(rsk_backends.get_backend("triton").auto_skip_reasons(call))


# --------------------------------------------------------------------------- CUDA only


@requires_cuda
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_bfloat16_error_within_twice_torchs_own(granularity):
    cfg = dataclasses.replace(WIDE, granularity=granularity, keep_prob=0.5)
    inp = make_inputs(cfg, torch.float32)
    exact, _ = _grads("reference", cfg, inp, torch.float64)
    ours, _ = _grads("triton", cfg, inp, torch.bfloat16)
    torch_own, _ = _grads("reference", cfg, inp, torch.bfloat16)
    for e_ours, e_torch in zip(_max_errors(ours, exact), _max_errors(torch_own, exact)):
        assert e_ours <= 2 * e_torch + 5e-2


@requires_cuda
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_training_step_has_no_host_sync_and_replays_in_a_cuda_graph(granularity):
    """A whole step (fresh mask, forward, backward) under sync-debug 'error', then captured in a
    CUDA graph and replayed with a new mask drawn inside the graph."""
    layer = rskcnn.RSKConv2d(32, 48, 3, padding=1, keep_prob=0.5, granularity=granularity, block_size=(16, 16),
                             backend="triton", device="cuda")
    x = torch.randn(4, 32, 12, 12, device="cuda", requires_grad=True)
    check_step_without_sync_in_cuda_graph(layer, x)


@requires_cuda
def test_compile_fullgraph_on_cuda():
    layer = rskcnn.RSKConv2d(32, 48, 3, padding=1, keep_prob=0.5, granularity="block", block_size=(16, 16),
                             backend="triton", device="cuda")
    x = torch.randn(4, 32, 12, 12, device="cuda")
    compiled = torch.compile(layer, fullgraph=True)
    compiled(x).sum().backward()
    assert layer.weight.grad is not None


# --------------------------------------------------------------------------- autotuning


def test_autotuning_is_off_by_default_and_reads_no_mask(monkeypatch):
    monkeypatch.delenv(configs.AUTOTUNE_ENV, raising=False)
    assert not configs.autotuning()
    assert configs.kept_tenths(torch.ones(3, 1, 1, 1, dtype=torch.bool)) == 0


def test_autotune_configs_vary_only_the_free_parameters():
    """BLOCK_N/BLOCK_K of forward and grad-input shape the step lists, so autotuning must not touch them."""
    for free in ("BLOCK_M", "BLOCK_K"):
        cfgs = configs.autotune_configs(free)
        assert len(cfgs) >= 6
        assert all(set(c.kwargs) == {free} for c in cfgs)
    assert "KEPT_TENTHS" in configs.AUTOTUNE_KEY and "COUT_G" in configs.AUTOTUNE_KEY


@requires_cuda
def test_autotuned_kernels_match_reference(monkeypatch):
    monkeypatch.setenv(configs.AUTOTUNE_ENV, "1")
    cfg = dataclasses.replace(WIDE, granularity="block", keep_prob=0.5)
    inp = make_inputs(cfg, torch.float32)
    want, _ = _grads("reference", cfg, inp, torch.float64)
    got, _ = _grads("triton", cfg, inp, torch.float16)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=2e-2, atol=5e-2)


def test_too_many_channels_per_group_for_the_plan_kernel_goes_elsewhere():
    call = _fp16_call((1, 8, 4, 4), (10000, 8, 1, 1), (1, 8, 1, 1), (0, 0))
    reasons = rsk_backends.get_backend("triton").not_supported_reasons(call)
    assert any("output channels per group" in r for r in reasons)

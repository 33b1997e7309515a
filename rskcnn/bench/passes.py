"""The timed callables: one convolution (dense, masked-dense, compact-ideal or an rskcnn
backend) run as one pass, with autograd asked for exactly the gradients that pass computes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PASSES = ("forward", "grad-input", "grad-weight", "step")
SHORT = {"forward": "fwd", "grad-input": "grad-in", "grad-weight": "grad-w", "step": "step"}
DENSE = "dense"
MASKED_DENSE = "masked-dense"
# Dense F.conv2d on the kept filters of a filter mask alone: the compaction path with free
# gathers and scatters. An ideal to compare with, never a choice of auto, so a run records
# it apart from its backends (the settings' "ideals").
COMPACT_IDEAL = "compact-ideal"
IDEALS = (COMPACT_IDEAL,)
COMPACT_IDEAL_GRANULARITY = "filter"

# conv(x (N, C_in, H, W), w (C_out, C_in, kH, kW), b (C_out,) or None) -> (N, C_out, H_out, W_out)
Conv = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def dense_conv(stride: int, padding: int) -> Conv:
    """Dense ``F.conv2d``: the baseline every ratio divides by."""
    return lambda x, w, b: F.conv2d(x, w, b, stride, padding)


def masked_dense_conv(mask, block, stride: int, padding: int) -> Conv:
    """The paper's way: weight * mask (the masking is part of the timed work), then dense conv.
    ``mask`` has :func:`rskcnn.mask_shape` of the weight and ``block``."""
    from rskcnn.backends import reference_conv2d

    return lambda x, w, b: reference_conv2d(x, w, mask, b, stride, padding, block=block)


def backend_conv(name: str, mask, block, stride: int, padding: int) -> Conv:
    """The public op :func:`rskcnn.rsk_conv2d` with an explicit ``backend=name``, so its per-call
    overhead is timed too."""
    from rskcnn.functional import rsk_conv2d

    return lambda x, w, b: rsk_conv2d(x, w, mask, b, stride, padding, block=block, backend=name)


def kept_filters(mask: torch.Tensor) -> torch.Tensor:
    """The indices (int64, on the mask's device) of the filters a filter mask keeps. ``mask``
    is a bool mask of shape (C_out, 1, 1, 1), as :func:`rskcnn.sample_mask` draws it for
    ``block_shape("filter", weight_shape)``. Reads the mask on the host (a sync on CUDA)."""
    from rskcnn.backends.compact import kept_filter_indices

    if mask.dim() != 4 or tuple(mask.shape[1:]) != (1, 1, 1):
        raise ValueError(f"kept_filters: mask must be a filter mask of shape (C_out, 1, 1, 1), got {tuple(mask.shape)}")
    return kept_filter_indices(mask, groups=1)


def _in_format_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` made contiguous in the memory format ``like`` has (the ops' output rule)."""
    from rskcnn.geometry import output_memory_format

    return t.contiguous(memory_format=output_memory_format(like))


def compact_ideal_tensors(mask: torch.Tensor, x, w, b, grad_output):
    """The tensors compact-ideal times dense ``F.conv2d`` on: ``(x, w_kept, b_kept,
    grad_output_kept)`` with only the k kept filters of the filter mask ``mask`` (C_out, 1, 1, 1).

    ``x`` (N, C_in, H, W) as given; ``w_kept`` (k, C_in, kH, kW), ``b_kept`` (k,) or None and
    ``grad_output_kept`` (N, k, H_out, W_out) are copies in the memory format of ``w`` and
    ``grad_output``, made here so that the timed passes gather and scatter nothing. Raises
    ValueError when the mask keeps no filter (a convolution with no output channel)."""
    kept = kept_filters(mask)
    if kept.numel() == 0:
        raise ValueError("compact_ideal_tensors: the mask keeps no filter")
    w_kept = _in_format_of(w.index_select(0, kept), w)
    b_kept = None if b is None else b.index_select(0, kept).contiguous()
    grad_output_kept = _in_format_of(grad_output.index_select(1, kept), grad_output)
    return x, w_kept, b_kept, grad_output_kept


def make_pass(conv: Conv, pass_name: str, x, w, b, grad_output) -> Callable[[], object]:
    """A no-argument callable that runs ``pass_name`` (one of :data:`PASSES`) of ``conv`` once.

    ``x`` (N, C_in, H, W), ``w`` (C_out, C_in, kH, kW), ``b`` (C_out,) or None, ``grad_output``
    (N, C_out, H_out, W_out), as :func:`rskcnn.bench.bench_tensors` draws them.

    forward: no autograd. grad-input / grad-weight: the graph is built once, outside the
    timing, and each call back-propagates ``grad_output`` to that one tensor only.
    step: forward, then the gradients of input, weight and bias together.
    """
    if pass_name == "forward":
        def forward():
            with torch.no_grad():
                return conv(x, w, b)
        return forward

    if pass_name in ("grad-input", "grad-weight"):
        wants_input = pass_name == "grad-input"
        xg = x.detach().requires_grad_(wants_input)
        wg = w.detach().requires_grad_(not wants_input)
        output = conv(xg, wg, b)
        target = xg if wants_input else wg

        def backward():
            return torch.autograd.grad(output, target, grad_output, retain_graph=True)
        return backward

    if pass_name == "step":
        xg = x.detach().requires_grad_()
        wg = w.detach().requires_grad_()
        bg = None if b is None else b.detach().requires_grad_()
        params = [t for t in (xg, wg, bg) if t is not None]

        def step():
            return torch.autograd.grad(conv(xg, wg, bg), params, grad_output)
        return step

    raise ValueError(f"pass must be one of {PASSES}, got {pass_name!r}")

"""``rskcnn::filter_compact_conv2d``: a ``filter`` mask's kept filters as one dense convolution.

A dropped filter is a dropped output channel, so the masked convolution of a ``filter`` mask
is a smaller dense one (oneDNN on the CPU, cuDNN on CUDA) on the kept filters, plus the bias
in the dropped channels::

    y[:, o] = F.conv2d(input, weight[kept] * scale, bias[kept], ...)[:, j]   for o = kept[j]
    y[:, o] = bias[o]  (0 without a bias)                                     for o not kept

Schema: :data:`rskcnn.ops.schemas.FILTER_COMPACT`. Shapes: input ``(N, Cin, H, W)``, weight
``(Cout, Cin/groups, KH, KW)``, kept_filters int64 ``(groups * k,)``: for each conv group, in
order, its ``k`` kept output channels as sorted global indices (so every group keeps the same
number and one grouped convolution serves them all), bias ``(Cout,)``, output
``(N, Cout, OH, OW)`` in the input's memory format (:func:`rskcnn.geometry.output_memory_format`).

The kernel is ``CompositeImplicitAutograd``: its body is plain differentiable ATen, so autograd
runs grad-input as the convolution backward of the kept filters and grad-weight as an
``index_add`` of their gradient into zeros. A dropped weight is never read (NaN there never
reaches the output or a gradient) and its gradient is exactly 0; double backward,
``torch.compile`` and autocast (the inner ``conv2d`` follows autocast's own rule) come with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import conv_output_shape, output_memory_format
from . import schemas

_LIBRARY = torch.library.Library(schemas.NAMESPACE, "FRAGMENT")
_LIBRARY.define(schemas.FILTER_COMPACT_OP + schemas.FILTER_COMPACT)


def _reads_data_for_free(t: torch.Tensor) -> bool:
    """Whether checking ``t``'s values costs no device sync and no trace: a plain CPU tensor
    outside torch.compile (fake and functional tensors are subclasses, and skip the checks)."""
    return type(t) is torch.Tensor and t.device.type == "cpu" and not torch.compiler.is_compiling()


def check_kept_filters(kept_filters, weight: torch.Tensor, groups: int) -> None:
    """Raises TypeError/ValueError naming ``kept_filters`` unless it is an int64 ``(groups * k,)``
    tensor on the weight's device whose ``j``-th run of ``k`` entries are strictly increasing
    output channels of group ``j``. The values are checked where that is free (CPU tensors,
    eager); on CUDA an index out of range is caught by ``index_select``'s device-side check."""
    if not isinstance(kept_filters, torch.Tensor):
        raise TypeError(f"kept_filters must be a torch.Tensor of int64 indices, got {type(kept_filters).__name__}")
    if kept_filters.dtype != torch.int64:
        raise TypeError(f"kept_filters must have dtype torch.int64, got {kept_filters.dtype}")
    if kept_filters.dim() != 1:
        raise ValueError(f"kept_filters must be 1-D (groups * k,), got shape {tuple(kept_filters.shape)}")
    if kept_filters.device != weight.device:
        raise ValueError(f"kept_filters is on {kept_filters.device} but weight is on {weight.device}")
    cout = weight.shape[0]
    if groups < 1 or cout % groups:
        raise ValueError(f"groups = {groups} must be a positive divisor of weight.shape[0] = {cout}")
    count = kept_filters.shape[0]
    if count % groups or count > cout:
        raise ValueError(f"kept_filters must hold the same number k <= {cout // groups} of filters for each of the "
                         f"groups = {groups} conv groups, got {count} entries")
    if count == 0 or not _reads_data_for_free(kept_filters):
        return
    per_group = kept_filters.view(groups, count // groups)
    cout_g = cout // groups
    first = torch.arange(groups, dtype=torch.int64).unsqueeze(1) * cout_g
    if bool(((per_group < first) | (per_group >= first + cout_g)).any()):
        raise ValueError(f"kept_filters entries must lie in [0, {cout}) with the j-th run of {count // groups} inside "
                         f"group j's channels [j * {cout_g}, (j + 1) * {cout_g}), got {kept_filters.tolist()}")
    if bool((per_group[:, 1:] <= per_group[:, :-1]).any()):
        raise ValueError(f"kept_filters must be strictly increasing within each group, got {kept_filters.tolist()}")


def _no_channels(input: torch.Tensor, small_weight: torch.Tensor, shape) -> torch.Tensor:
    """An ``(N, 0, OH, OW)`` output that depends on ``input`` and ``small_weight`` (``(0, ...)``)
    without reading a value: ``F.conv2d`` refuses zero output channels, and with no filter kept
    the gradients must still be exact zeros rather than missing."""
    n, _, oh, ow = shape
    from_input = input.narrow(1, 0, 0).sum((2, 3), keepdim=True)  # (N, 0, 1, 1)
    from_weight = small_weight.sum((1, 2, 3)).view(1, 0, 1, 1)
    return (from_input + from_weight).expand(n, 0, oh, ow)


def filter_compact_conv2d(input, weight, kept_filters, bias, stride, padding, dilation, groups, scale):
    """The body of ``rskcnn::filter_compact_conv2d`` (see the module docstring)."""
    check_kept_filters(kept_filters, weight, groups)
    small_weight = weight.index_select(0, kept_filters)  # reads the kept filters only
    if scale != 1.0:
        small_weight = small_weight * scale
    shape = conv_output_shape(input.shape, weight.shape, stride, padding, dilation)
    if kept_filters.shape[0] == 0:
        kept_out = _no_channels(input, small_weight, shape)
        device_type = input.device.type
        if torch.is_autocast_enabled(device_type) and input.dtype != torch.float64:  # as conv2d would return
            kept_out = kept_out.to(torch.get_autocast_dtype(device_type))
    else:
        small_bias = None if bias is None else bias.index_select(0, kept_filters)
        kept_out = F.conv2d(input, small_weight, small_bias, stride, padding, dilation, groups)
    # One pass over the output: the bias (or zeros) in the input's memory format, then the kept
    # channels copied over. kept_out's dtype, not the bias's: under autocast conv2d runs lower.
    out = torch.empty(shape, dtype=kept_out.dtype, device=kept_out.device, memory_format=output_memory_format(input))
    if bias is None:
        out.zero_()
    else:
        out.copy_(bias.view(1, -1, 1, 1))  # broadcast; copy_ casts, and autograd routes the gradient to bias
    return out.index_copy_(1, kept_filters, kept_out)


_LIBRARY.impl(schemas.FILTER_COMPACT_OP, filter_compact_conv2d, "CompositeImplicitAutograd")


def op() -> torch._ops.OpOverload:
    """The registered overload ``torch.ops.rskcnn.filter_compact_conv2d.default``."""
    return getattr(torch.ops.rskcnn, schemas.FILTER_COMPACT_OP).default

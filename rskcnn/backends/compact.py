"""``filter`` masks as dense convolutions of the kept filters only (oneDNN on the CPU, cuDNN on
CUDA), through the ATen op ``rskcnn::filter_compact_conv2d`` (:mod:`rskcnn.ops.compact`).

The op takes the kept output channels as an index list, ``k`` per conv group. This module
derives the list from the mask without a device sync:

* with a static kept count per group (``kept_per_row``, which ``RSKConv2d(law='exact')``
  passes): a stable descending sort of each group's mask row, cut at ``k``, so the list has a
  static shape on every device and traces under ``torch.compile(fullgraph=True)``;
* without it, on the CPU in eager mode: ``torch.nonzero`` of the mask (reading a CPU mask is
  free), for ungrouped convolutions only, since a Bernoulli mask keeps different numbers of
  filters in different groups and one grouped convolution needs the same number in each.

Everything else is refused with a reason (:meth:`CompactBackend.extra_reasons`).
"""

from __future__ import annotations

import torch

from ..ops import compact as compact_op
from ..ops.schemas import FILTER_COMPACT_OP
from .base import Backend
from .call import ConvCall
from .padding import explicit_padding


def kept_filter_indices(mask: torch.Tensor, groups: int, kept_per_row: int | None = None) -> torch.Tensor:
    """The int64 ``(groups * k,)`` list of kept output channels of a ``filter`` mask (shape
    ``(Cout, 1, 1, 1)``): for each conv group in order, its kept channels, sorted. With
    ``kept_per_row`` (every group keeps exactly that many) the shape is static and nothing is
    read on the host; without it the list comes from ``torch.nonzero`` (``groups == 1``)."""
    rows = mask.reshape(groups, -1)  # (groups, Cout/groups): one mask row per conv group
    if kept_per_row is None:
        if groups != 1:
            raise ValueError(f"kept_per_row is needed with groups = {groups} > 1 (the same count in every group)")
        return torch.nonzero(rows.reshape(-1)).reshape(-1)
    # Kept entries first, in channel order (a stable sort), then the first k of each row.
    order = torch.argsort(rows.to(torch.uint8), dim=1, descending=True, stable=True)[:, :kept_per_row]
    first_channel = torch.arange(groups, dtype=torch.int64, device=mask.device).unsqueeze(1) * rows.shape[1]
    return (order + first_channel).reshape(-1)


class CompactBackend(Backend):
    name = "compact"
    description = ("dense oneDNN/cuDNN convolution of a filter mask's kept filters only "
                   "(ATen, no extension needed); every dtype torch convolves in")
    devices = ("cpu", "cuda")
    dtypes = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
    granularities = ("filter",)
    empty_reduction = False  # F.conv2d gives no usable output for Cin/groups = 0
    # Tried before cpu (10) and the GPU kernels (10, 20); auto takes it only where a speed
    # table says it is the fast choice.
    auto_priority = 5
    uses_kept_per_row = True
    op = FILTER_COMPACT_OP

    def extra_reasons(self, call: ConvCall) -> list[str]:
        if call.kept_per_row is not None:
            return []
        hint = "pass kept_per_row= (RSKConv2d with law='exact' does)"
        if call.device.type != "cpu":
            return [f"kept count unknown without a device sync; {hint}"]
        if call.groups > 1:
            return [f"groups = {call.groups} > 1 needs the same kept count in every group, which only "
                    f"kept_per_row= guarantees (a Bernoulli mask's groups keep different counts); {hint}"]
        if torch.compiler.is_compiling():
            return [f"the kept count is a data-dependent shape while torch.compile traces; {hint}"]
        return []

    def run(self, call: ConvCall, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        return self.conv2d(input, weight, mask, bias, stride, padding, dilation, groups, block, scale,
                           kept_per_row=call.kept_per_row)

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale, *,
               kept_per_row: int | None = None):
        """The masked convolution of a ``filter`` mask (``block`` only shapes the mask,
        ``(Cout, 1, 1, 1)``); ``kept_per_row``: the kept filters per conv group, if known."""
        input, padding = explicit_padding(input, weight.shape, padding, dilation)
        kept = kept_filter_indices(mask, groups, kept_per_row)
        return compact_op.op()(input, weight, kept, bias, list(stride), list(padding), list(dilation), groups,
                               float(scale))

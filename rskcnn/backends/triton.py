"""The Triton kernels of rskcnn/triton: implicit-GEMM convolutions on tensor cores that skip
mask tiles without kept weights, and per-weight sparse kernels for ``element`` masks."""

from __future__ import annotations

import torch

from .. import triton as rsk_triton
from ..triton import MAX_GROUP_CHANNELS
from .base import Backend, ConvCall
from .padding import explicit_padding

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# The kernels index with int32 offsets; larger tensors go to another backend.
MAX_ELEMENTS = 2**31 - 1


def _ops():
    """The op namespace, registering the Triton ops on first use (this imports Triton)."""
    from ..triton import ops  # noqa: F401

    return torch.ops.rskcnn


class TritonBackend(Backend):
    name = "triton"
    description = "Triton implicit-GEMM kernels that skip empty mask tiles (CUDA; CPU under TRITON_INTERPRET=1)"

    def unavailable_reason(self, device: torch.device) -> str | None:
        return rsk_triton.unavailable_reason(device.type, device.index)

    def not_supported_reasons(self, call: ConvCall) -> list[str]:
        reasons = super().not_supported_reasons(call)
        if call.dtype not in TRITON_DTYPES:
            reasons.append(f"dtype {call.dtype} is not float32/float16/bfloat16")
        if call.device.type == "cpu" and call.dtype == torch.bfloat16:
            reasons.append("Triton's CPU interpreter computes bfloat16 wrongly")
        n, cin, h, w = call.input_shape
        cout, cin_g, kh, kw = call.weight_shape
        if min(cin_g, kh, kw) == 0:
            reasons.append(f"weight {call.weight_shape} has an empty reduction (Cin/groups, KH or KW is 0)")
        if cout // call.groups > MAX_GROUP_CHANNELS:
            reasons.append(f"more than {MAX_GROUP_CHANNELS} output channels per group ({cout // call.groups}), "
                           "which the plan kernel sorts in registers")
        # Padded extents bound the output; any tensor past int32 offsets is refused.
        sizes = {"input": n * cin * h * w, "output": n * cout * (h + 2 * call.padding[0]) * (w + 2 * call.padding[1]),
                 "weight": cout * call.weight_shape[1] * kh * kw}
        for name, size in sizes.items():
            if size > MAX_ELEMENTS:
                reasons.append(f"{name} has {size} elements, more than the int32 indexing of the kernels allows "
                               f"({MAX_ELEMENTS})")
        return reasons

    def auto_skip_reasons(self, call: ConvCall) -> list[str]:
        reasons = self.not_supported_reasons(call)
        if reasons:
            return reasons
        if call.device.type == "cpu":
            return ["the CPU interpreter is for testing, never faster"]
        from .calibration import faster_than_dense_reasons

        return faster_than_dense_reasons(self.name, call)

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        input, padding = explicit_padding(input, weight.shape, padding, dilation)
        return _ops().triton_conv2d(input, weight, mask, bias, list(stride), list(padding), list(dilation), groups,
                                    list(block), float(scale))

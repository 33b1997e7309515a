"""The Triton kernels of rskcnn/triton_kernels: implicit-GEMM convolutions on tensor cores
that skip mask tiles without kept weights, and per-weight sparse kernels for ``element`` masks."""

from __future__ import annotations

import torch

from .. import triton_kernels
from .base import Backend
from .call import ConvCall

# The kernels index with int32 offsets; larger tensors go to another backend.
MAX_ELEMENTS = 2**31 - 1


class TritonBackend(Backend):
    name = "triton"
    description = "Triton implicit-GEMM kernels that skip empty mask tiles (CUDA; CPU under TRITON_INTERPRET=1)"
    devices = ("cuda", "cpu")
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    min_capability = (8, 0)
    min_capability_why = "tensor-core tl.dot in bf16/tf32"
    empty_reduction = False
    auto_priority = 20
    op = "triton_conv2d"

    def runtime_reason(self, device: torch.device) -> str | None:
        return triton_kernels.unavailable_reason(device.type)

    def extra_reasons(self, call: ConvCall) -> list[str]:
        reasons = []
        if call.device.type == "cpu" and call.dtype == torch.bfloat16:
            reasons.append("Triton's CPU interpreter computes bfloat16 wrongly")
        n, cin, h, w = call.input_shape
        cout, cin_g, kh, kw = call.weight_shape
        if cout // call.groups > triton_kernels.MAX_GROUP_CHANNELS:
            reasons.append(f"more than {triton_kernels.MAX_GROUP_CHANNELS} output channels per group "
                           f"({cout // call.groups}), which the step-list kernel sorts in registers")
        # Padded extents bound the output; any tensor past int32 offsets is refused.
        sizes = {"input": n * cin * h * w, "output": n * cout * (h + 2 * call.padding[0]) * (w + 2 * call.padding[1]),
                 "weight": cout * cin_g * kh * kw}
        for name, size in sizes.items():
            if size > MAX_ELEMENTS:
                reasons.append(f"{name} has {size} elements, more than the int32 indexing of the kernels allows "
                               f"({MAX_ELEMENTS})")
        return reasons

    def auto_skip_reasons(self, call: ConvCall) -> list[str]:
        if call.device.type == "cpu" and not self.not_supported_reasons(call):
            return ["the CPU interpreter is for testing, never faster"]
        return super().auto_skip_reasons(call)

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        from ..ops import triton  # noqa: F401  (defines the Triton ops on first use; imports Triton)

        return super().conv2d(input, weight, mask, bias, stride, padding, dilation, groups, block, scale)

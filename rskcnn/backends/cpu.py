"""The C++ kernels of csrc/cpu, which visit only kept weights."""

from __future__ import annotations

import torch

from .. import _extension
from .base import Backend, ConvCall
from .padding import explicit_padding

CPU_DTYPES = (torch.float32, torch.float64)


class CpuBackend(Backend):
    name = "cpu"
    description = "C++ direct sparse convolution (csrc/cpu), at::parallel_for; float32/float64"

    def unavailable_reason(self, device: torch.device) -> str | None:
        if device.type != "cpu":
            return f"runs on the CPU only, not {device.type}"
        return _extension.load_error()

    def not_supported_reasons(self, call: ConvCall) -> list[str]:
        reasons = super().not_supported_reasons(call)
        if call.dtype not in CPU_DTYPES:
            reasons.append(f"dtype {call.dtype} is not float32/float64")
        return reasons

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        input, padding = explicit_padding(input, weight.shape, padding, dilation)
        return torch.ops.rskcnn.masked_conv2d(
            input, weight, mask, bias, stride, padding, dilation, groups, block, float(scale)
        )

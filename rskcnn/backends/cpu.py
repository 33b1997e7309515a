"""The C++ kernels of csrc/cpu, which visit only kept weights."""

from __future__ import annotations

import torch

from .. import _extension
from .base import Backend
from .call import ConvCall


class CpuBackend(Backend):
    name = "cpu"
    description = "C++ kernels (csrc/cpu) that visit only kept weights; float32/float64"
    devices = ("cpu",)
    dtypes = (torch.float32, torch.float64)
    int32_indices = True
    auto_priority = 10
    op = "masked_conv2d"

    def runtime_reason(self, device: torch.device) -> str | None:
        return _extension.load_error()

    def extra_reasons(self, call: ConvCall) -> list[str]:
        if call.weight_shape[1] == 0:  # the C++ kernels read out of bounds (segfault) on such weights
            return ["weight has Cin/groups = 0 input channels, which the C++ kernels do not handle"]
        return []

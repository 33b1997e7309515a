"""The hand-written CUDA kernels of csrc/cuda: tensor-core implicit GEMMs that visit only
kept (tap, channel-chunk) steps for ``tap``/``filter``/``block`` masks, and per-filter
sparse lists for ``element`` masks."""

from __future__ import annotations

import torch

from .. import _extension
from .base import Backend, ConvCall
from .cpu import int32_overflow_reasons
from .padding import explicit_padding

CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
BUILD_HINT = ("build it where nvcc is found (CUDA_HOME or /usr/local/cuda) with a CUDA build of torch: "
              "pip install --no-build-isolation -e .")

# A plain dict rather than functools.cache, which torch.compile would trace through.
_CAPABILITY_REASONS: dict[int | None, str | None] = {}


def _capability_reason(index: int | None) -> str | None:
    if index not in _CAPABILITY_REASONS:
        major, minor = torch.cuda.get_device_capability(index)
        _CAPABILITY_REASONS[index] = (None if major >= 8 else
                                      f"needs compute capability >= 8.0 (cp.async, bf16/tf32 tensor cores), "
                                      f"got {major}.{minor}")
    return _CAPABILITY_REASONS[index]


class CudaBackend(Backend):
    name = "cuda"
    description = "hand-written CUDA kernels (csrc/cuda): tensor-core tiles for tap/filter/block, sparse lists for element"

    def unavailable_reason(self, device: torch.device) -> str | None:
        if device.type != "cuda":
            return f"runs on CUDA GPUs only, not {device.type}"
        error = _extension.load_error()
        if error is not None:
            return error
        if not _extension.cuda_built():
            return f"rskcnn._C was built without CUDA kernels ({_extension.cuda_build_reason()}); {BUILD_HINT}"
        if not torch.cuda.is_available():
            return "CUDA is not available"
        return _capability_reason(device.index)

    def not_supported_reasons(self, call: ConvCall) -> list[str]:
        reasons = super().not_supported_reasons(call)
        if call.dtype not in CUDA_DTYPES:
            reasons.append(f"dtype {call.dtype} is not float32/float64/float16/bfloat16")
        if min(call.weight_shape[1:]) == 0:
            reasons.append(f"weight {call.weight_shape} has an empty reduction (Cin/groups, KH or KW is 0)")
        reasons.extend(int32_overflow_reasons(call))
        return reasons

    def auto_skip_reasons(self, call: ConvCall) -> list[str]:
        reasons = self.not_supported_reasons(call)
        if reasons:
            return reasons
        from .calibration import faster_than_dense_reasons

        return faster_than_dense_reasons(self.name, call)

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        input, padding = explicit_padding(input, weight.shape, padding, dilation)
        return torch.ops.rskcnn.masked_conv2d(
            input, weight, mask, bias, stride, padding, dilation, groups, block, float(scale)
        )

"""The hand-written CUDA kernels of csrc/cuda: tensor-core implicit GEMMs that visit only
kept (tap, channel-chunk) steps for ``tap``/``filter``/``block`` masks, and per-filter
sparse lists for ``element`` masks."""

from __future__ import annotations

import torch

from .. import _extension
from .base import Backend

BUILD_HINT = ("build it where nvcc is found (CUDA_HOME or /usr/local/cuda) with a CUDA build of torch: "
              "pip install --no-build-isolation -e .")


class CudaBackend(Backend):
    name = "cuda"
    description = "hand-written CUDA kernels (csrc/cuda): tensor-core tiles for tap/filter/block, sparse lists for element"
    devices = ("cuda",)
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    min_capability = (8, 0)
    min_capability_why = "cp.async, bf16/tf32 tensor cores"
    int32_indices = True
    empty_reduction = False
    auto_priority = 10
    op = "masked_conv2d"

    def runtime_reason(self, device: torch.device) -> str | None:
        error = _extension.load_error()
        if error is not None:
            return error
        if not _extension.cuda_built():
            return f"rskcnn._C was built without CUDA kernels ({_extension.cuda_build_reason()}); {BUILD_HINT}"
        if not torch.cuda.is_available():
            return "CUDA is not available"
        return None

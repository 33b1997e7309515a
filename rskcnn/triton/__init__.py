"""The Triton backend's kernels: implicit-GEMM convolutions whose reduction loops visit
only the kept (tap, channel-block) pairs, and sparse kernels for per-weight masks.

Importing this package does not import Triton; :func:`unavailable_reason` does, once.
On the CPU the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set
before Triton is imported), which is how CI tests them.
"""

from __future__ import annotations

import importlib.util
import os

import torch

# The plan kernel (plans.py) sorts a group's output channels in one program's registers.
MAX_GROUP_CHANNELS = 8192


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as error:  # a broken install must not break rskcnn's import
        return f"triton failed to import: {error}"
    if not hasattr(torch.library, "triton_op"):
        return f"torch {torch.__version__} lacks torch.library.triton_op (needs torch >= 2.6)"
    return None


# A plain dict rather than functools.cache, which torch.compile would trace through.
_REASONS: dict[tuple[str, int | None], str | None] = {}


def unavailable_reason(device_type: str, device_index: int | None = None) -> str | None:
    """Why the Triton kernels cannot run on a device of this type, or None (checked once)."""
    key = (device_type, device_index)
    if key not in _REASONS:
        _REASONS[key] = _unavailable_reason(device_type, device_index)
    return _REASONS[key]


def _unavailable_reason(device_type: str, device_index: int | None) -> str | None:
    error = _import_error()
    if error is not None:
        return error
    if device_type == "cpu":
        if not interpreting():
            return "runs on the CPU only under Triton's interpreter (set TRITON_INTERPRET=1 before importing triton)"
        return None
    if device_type != "cuda":
        return f"runs on CUDA GPUs (or the CPU interpreter), not {device_type}"
    if interpreting():
        return "TRITON_INTERPRET=1 is set, so Triton cannot launch on CUDA in this process"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, _ = torch.cuda.get_device_capability(device_index)
    if major < 8:
        return f"needs a GPU of compute capability >= 8.0 (tensor-core tl.dot in bf16/tf32), got {major}.x"
    return None

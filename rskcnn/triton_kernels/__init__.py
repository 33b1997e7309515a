"""The Triton backend's kernels: implicit-GEMM convolutions whose reduction loops visit
only the kept (tap, channel-block) pairs, and sparse kernels for per-weight masks.

One module a job: :mod:`.tile_steps` (channel order and kept-step lists, one launch per
pass), :mod:`.forward`, :mod:`.grad_input`, :mod:`.grad_weight` (the tiled kernels),
:mod:`.element` (per-weight sparse kernels), :mod:`.configs` (tiles), and :mod:`.passes`
(the three passes as functions of tensors, from which :mod:`rskcnn.ops.triton` defines the ops).

Importing this package does not import Triton; :func:`unavailable_reason` does, once.
On the CPU the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set
before Triton is imported), which is how CI tests them.
"""

from __future__ import annotations

import importlib.util
import os

import torch

# The step-list kernel (tile_steps.py) sorts a group's output channels in one program's registers.
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
_REASONS: dict[str, str | None] = {}


def unavailable_reason(device_type: str) -> str | None:
    """Why the Triton kernels cannot run on a ``"cpu"`` or ``"cuda"`` device, or None (checked
    once per type). The compute capability is the backend's declaration (rskcnn.backends.triton)."""
    if device_type not in _REASONS:
        _REASONS[device_type] = _unavailable_reason(device_type)
    return _REASONS[device_type]


def _unavailable_reason(device_type: str) -> str | None:
    error = _import_error()
    if error is not None:
        return error
    if device_type == "cpu":
        if not interpreting():
            return "runs on the CPU only under Triton's interpreter (set TRITON_INTERPRET=1 before importing triton)"
        return None
    if interpreting():
        return "TRITON_INTERPRET=1 is set, so Triton cannot launch on CUDA in this process"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None

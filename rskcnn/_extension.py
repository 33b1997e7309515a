"""Loads the compiled ops (``rskcnn._C``) and explains what to do when they are missing.

The package imports without the extension, so the reference backend always works;
the C++/CUDA backends report why they are unavailable instead.
"""

from __future__ import annotations

import importlib

import torch

REBUILD_HINT = "rebuild it with: pip install --no-build-isolation -e ."


def _load() -> str | None:
    try:
        build_info = importlib.import_module("rskcnn._build_info")
    except ImportError:
        return f"rskcnn._C is not built; {REBUILD_HINT}"
    if build_info.TORCH_VERSION != torch.__version__:
        return (
            f"rskcnn._C was built against torch {build_info.TORCH_VERSION} but torch "
            f"{torch.__version__} is installed; {REBUILD_HINT}"
        )
    try:
        importlib.import_module("rskcnn._C")
    except ImportError as error:
        return f"rskcnn._C failed to load ({error}); {REBUILD_HINT}"
    return None


# Loaded once at import, so that code torch.compile traces only reads a constant.
_LOAD_ERROR = _load()


def load_error() -> str | None:
    """None when ``rskcnn._C`` is loaded, otherwise why it is not."""
    return _LOAD_ERROR


def has_ops() -> bool:
    return load_error() is None


def require_ops() -> None:
    error = load_error()
    if error is not None:
        raise RuntimeError(error)


def _build_info(name: str, default):
    try:
        return getattr(importlib.import_module("rskcnn._build_info"), name)
    except ImportError:
        return default


_CUDA_BUILT = _LOAD_ERROR is None and bool(_build_info("CUDA_BUILT", False))


def cuda_built() -> bool:
    """Whether the loaded extension contains the CUDA kernels."""
    return _CUDA_BUILT


def cuda_build_reason() -> str:
    return _build_info("CUDA_REASON", "extension not built")

"""The backend registry and ``auto``'s choice.

Adding a backend: a module here with a :class:`Backend` subclass that declares what it
serves (see :mod:`rskcnn.backends.base`), and one line in ``BACKENDS``. ``auto`` tries the
backends that run on the call's device in order of their ``auto_priority`` (the fallback,
``reference``, last) and takes the first with no reason against the call; a kernel backend's
reasons include the measured speed table of the machine class (:mod:`.calibration`).
"""

from __future__ import annotations

import logging

import torch

from .base import Backend
from .call import ConvCall
from .compact import CompactBackend
from .cpu import CpuBackend
from .cuda import CudaBackend
from .reference import ReferenceBackend, reference_conv2d
from .triton import TritonBackend

logger = logging.getLogger("rskcnn")

BACKENDS: dict[str, Backend] = {
    b.name: b for b in (ReferenceBackend(), CpuBackend(), CudaBackend(), TritonBackend(), CompactBackend())
}


def auto_priority(device_type: str) -> tuple[str, ...]:
    """The backends ``auto`` tries on a device type, in order; the fallback last."""
    candidates = [b for b in BACKENDS.values() if b.auto_priority is not None and not b.fallback
                  and (not b.devices or device_type in b.devices)]
    candidates.sort(key=lambda b: b.auto_priority)
    return (*(b.name for b in candidates), *(b.name for b in BACKENDS.values() if b.fallback))


BACKEND_NAMES = ("auto", *BACKENDS)


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    return BACKENDS[name]


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can run on ``device`` (for some configuration)."""
    device = torch.device(device)
    return [name for name, b in BACKENDS.items() if b.unavailable_reason(device) is None]


def unavailable_reasons(device: torch.device | str = "cpu") -> dict[str, str]:
    """For each backend that cannot run on ``device``, why."""
    device = torch.device(device)
    reasons = {name: b.unavailable_reason(device) for name, b in BACKENDS.items()}
    return {name: r for name, r in reasons.items() if r is not None}


def choose(call: ConvCall) -> tuple[Backend, dict[str, list[str]]]:
    """The backend ``auto`` uses for ``call``, and the reasons it passed over the others."""
    skipped: dict[str, list[str]] = {}
    for name in auto_priority(call.device.type):
        reasons = BACKENDS[name].auto_skip_reasons(call)
        if not reasons:
            if skipped and not torch.compiler.is_compiling():  # Dynamo cannot trace logging
                logger.debug("rskcnn auto: %s for %s; skipped %s", name, call, skipped)
            return BACKENDS[name], skipped
        skipped[name] = reasons
    raise RuntimeError(f"rskcnn: no backend supports {call}: {skipped}")


def resolve(name: str, call: ConvCall) -> Backend:
    """The backend for an explicit name or 'auto'; an explicit name that cannot serve
    ``call`` raises with its reasons."""
    if name == "auto":
        return choose(call)[0]
    backend = get_backend(name)
    reasons = backend.not_supported_reasons(call)
    if reasons:
        raise RuntimeError(f"rskcnn: backend {name!r} cannot run this call: " + "; ".join(reasons))
    return backend


__all__ = [
    "BACKENDS",
    "Backend",
    "ConvCall",
    "auto_priority",
    "available_backends",
    "choose",
    "get_backend",
    "reference_conv2d",
    "resolve",
    "unavailable_reasons",
]

"""What every backend declares, and the checks made once, here, from those declarations.

A backend is a :class:`Backend` subclass whose class attributes say what it serves
(device types, dtypes, granularities, minimum CUDA compute capability, index width) and
which op its :meth:`Backend.conv2d` calls; :meth:`Backend.not_supported_reasons` turns the
declarations into reasons against a call, and a subclass adds only its special cases in
:meth:`Backend.extra_reasons` and its run-time requirements (a built extension, an
importable Triton) in :meth:`Backend.runtime_reason`.
"""

from __future__ import annotations

import torch

from ..geometry import mask_shape_of
from ..masks import GRANULARITIES
from .calibration import speed_reasons
from .call import ConvCall
from .padding import explicit_padding

INT32_MAX = 2**31 - 1


def _dtype_names(dtypes) -> str:
    return "/".join(str(d).removeprefix("torch.") for d in dtypes)


def int32_index_reasons(call: ConvCall) -> list[str]:
    """Kernels that index plan entries and sparse-row columns with int32 (csrc/block_mask.h,
    csrc/cpu/sparse_rows.h; every other offset is int64) need these counts below 2**31 - 1:
    they bound a mask row's or column's length and Cin/groups*KH*KW (forward, grad-weight)
    or Cout/groups*KH*KW (grad-input)."""
    cout, cin_g, kh, kw = call.weight_shape
    mo, mi, mh, mw = mask_shape_of(call.weight_shape, call.block)
    counts = {
        "Cin/groups*KH*KW": cin_g * kh * kw,
        "Cout/groups*KH*KW": cout // max(call.groups, 1) * kh * kw,
        "a mask row (MI*MH*MW blocks)": mi * mh * mw,
        "a mask column (MO*MH*MW blocks)": mo * mh * mw,
    }
    return [f"{name} = {n} overflows the kernels' int32 indices (must be below {INT32_MAX})"
            for name, n in counts.items() if n >= INT32_MAX]


# A plain dict rather than functools.cache, which torch.compile would trace through.
_CAPABILITIES: dict[int | None, tuple[int, int]] = {}


def _cuda_capability(index: int | None) -> tuple[int, int]:
    if index not in _CAPABILITIES:
        _CAPABILITIES[index] = torch.cuda.get_device_capability(index)
    return _CAPABILITIES[index]


class Backend:
    """A way to compute the masked convolution. Subclasses set the attributes below."""

    name: str = ""
    description: str = ""
    #: device types it runs on (``"cpu"``, ``"cuda"``); empty: every device
    devices: tuple[str, ...] = ()
    #: dtypes it computes in; None: every dtype
    dtypes: tuple[torch.dtype, ...] | None = None
    #: granularities (:data:`rskcnn.GRANULARITIES`) whose masks it serves
    granularities: tuple[str, ...] = GRANULARITIES
    #: minimum compute capability on CUDA devices, and what needs it
    min_capability: tuple[int, int] | None = None
    min_capability_why: str = ""
    #: whether its kernels index with int32 (:func:`int32_index_reasons`)
    int32_indices: bool = False
    #: whether it serves weights with an empty reduction (Cin/groups, KH or KW = 0)
    empty_reduction: bool = True
    #: auto's order among the backends of a device (lower first); None: auto never takes it
    auto_priority: int | None = None
    #: auto's last resort: always last in the priority list, never asks the speed tables
    fallback: bool = False
    #: the forward op (``torch.ops.rskcnn.<op>``) that :meth:`conv2d` calls
    op: str = ""
    #: whether :meth:`run` uses ``call.kept_per_row`` (a static kept count per mask row); under
    #: torch.compile ``RSKConv2d`` passes that count only to a backend it names that uses it
    uses_kept_per_row: bool = False

    # ----------------------------------------------------------------- declarations -> reasons

    def runtime_reason(self, device: torch.device) -> str | None:
        """Why the backend cannot run on ``device`` for a reason its attributes cannot say
        (an extension not built, Triton missing); checked after the device type."""
        return None

    def extra_reasons(self, call: ConvCall) -> list[str]:
        """A subclass's special reasons against ``call``, beyond its declarations."""
        return []

    def unavailable_reason(self, device: torch.device) -> str | None:
        """Why this backend cannot run on ``device`` at all, or None."""
        if self.devices and device.type not in self.devices:
            return f"runs on {' or '.join(self.devices)} devices only, not {device.type}"
        reason = self.runtime_reason(device)
        if reason is None and device.type == "cuda" and self.min_capability is not None:
            major, minor = _cuda_capability(device.index)
            if (major, minor) < self.min_capability:
                want = ".".join(map(str, self.min_capability))
                reason = f"needs compute capability >= {want} ({self.min_capability_why}), got {major}.{minor}"
        return reason

    def not_supported_reasons(self, call: ConvCall) -> list[str]:
        """Why this backend cannot run ``call``; empty when it can."""
        reason = self.unavailable_reason(call.device)
        reasons = [] if reason is None else [reason]
        if self.dtypes is not None and call.dtype not in self.dtypes:
            reasons.append(f"dtype {call.dtype} is not {_dtype_names(self.dtypes)}")
        if self.granularities != GRANULARITIES and call.granularity not in self.granularities:
            reasons.append(f"{call.granularity} masks are not served (only {', '.join(self.granularities)})")
        if not self.empty_reduction and min(call.weight_shape[1:]) == 0:
            reasons.append(f"weight {call.weight_shape} has an empty reduction (Cin/groups, KH or KW is 0)")
        if self.int32_indices:
            reasons.extend(int32_index_reasons(call))
        reasons.extend(self.extra_reasons(call))
        return reasons

    def auto_skip_reasons(self, call: ConvCall) -> list[str]:
        """Why ``auto`` should not pick this backend for ``call``: the reasons it cannot, or
        the measured speed table's reason it would be slower than the other options."""
        reasons = self.not_supported_reasons(call)
        if reasons or self.fallback:
            return reasons
        return speed_reasons(self.name, call)

    # ----------------------------------------------------------------- the computation

    def run(self, call: ConvCall, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        """The masked convolution ``call`` describes, as :func:`rskcnn.rsk_conv2d` runs it: :meth:`conv2d`.
        A backend that needs static facts of the call that the tensors do not carry
        (``call.kept_per_row``) overrides this."""
        return self.conv2d(input, weight, mask, bias, stride, padding, dilation, groups, block, scale)

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        """The masked convolution; ``padding`` is a pair of ints or 'same'/'valid'. By default,
        the declared op with the padding made explicit."""
        input, padding = explicit_padding(input, weight.shape, padding, dilation)
        op = getattr(torch.ops.rskcnn, self.op)
        return op(input, weight, mask, bias, list(stride), list(padding), list(dilation), groups, list(block),
                  float(scale))

"""The C++ kernels of csrc/cpu, which visit only kept weights."""

from __future__ import annotations

import torch

from .. import _extension
from ..masks import granularity_of
from .base import Backend, ConvCall
from .padding import explicit_padding

CPU_DTYPES = (torch.float32, torch.float64)

# auto takes this backend over dense oneDNN only while the mask keeps at most this
# fraction of the weights: the kept fraction below which a training step (forward,
# grad-input, grad-weight) measured faster than dense on every layer of
# `python -m rskcnn bench` (benchmarks/results/cpu-float32.md). Where the fraction is
# unknown (under torch.compile), auto uses this backend only if the bound is 1.
# Measured 2026-11-26 05:29 (2 AVX-512 cores, float32): filter steps beat dense at p = 0.5
# on every layer (0.54-0.82) but not at 0.75 on the paper's layer (1.09); block beats dense
# at p = 0.25 on the 256/512-channel layers (0.50-0.73) but not on the paper's 7x7 layer
# (1.26), nor does tap (2.21); element never did.
FASTER_THAN_DENSE_BELOW = {"filter": 0.5, "tap": 0.0, "block": 0.0, "element": 0.0, "grouped": 0.0}

INT32_MAX = 2**31 - 1


def int32_overflow_reasons(call: ConvCall) -> list[str]:
    """The kernels index plan entries and sparse-row columns with int32 (csrc/block_mask.h,
    csrc/cpu/sparse_rows.h); every other offset is int64. Those indices stay below a mask
    row's or column's length and below Cin/groups*KH*KW (forward, grad-weight) or
    Cout/groups*KH*KW (grad-input)."""
    cout, cin_g, kh, kw = call.weight_shape
    mo, mi, mh, mw = (-(-s // b) for s, b in zip(call.weight_shape, call.block))
    counts = {
        "Cin/groups*KH*KW": cin_g * kh * kw,
        "Cout/groups*KH*KW": cout // max(call.groups, 1) * kh * kw,
        "a mask row (MI*MH*MW blocks)": mi * mh * mw,
        "a mask column (MO*MH*MW blocks)": mo * mh * mw,
    }
    return [f"{name} = {n} overflows the kernels' int32 indices (must be below {INT32_MAX})"
            for name, n in counts.items() if n >= INT32_MAX]


class CpuBackend(Backend):
    name = "cpu"
    description = "C++ kernels (csrc/cpu) that visit only kept weights; float32/float64"

    def unavailable_reason(self, device: torch.device) -> str | None:
        if device.type != "cpu":
            return f"runs on the CPU only, not {device.type}"
        return _extension.load_error()

    def not_supported_reasons(self, call: ConvCall) -> list[str]:
        reasons = super().not_supported_reasons(call)
        if call.dtype not in CPU_DTYPES:
            reasons.append(f"dtype {call.dtype} is not float32/float64")
        reasons.extend(int32_overflow_reasons(call))
        if call.weight_shape[1] == 0:  # the C++ kernels read out of bounds (segfault) on such weights
            reasons.append("weight has Cin/groups = 0 input channels, which the C++ kernels do not handle")
        return reasons

    def auto_skip_reasons(self, call: ConvCall) -> list[str]:
        reasons = self.not_supported_reasons(call)
        if reasons:
            return reasons
        # Grouped convolutions never take the compacted oneDNN path of tap and filter.
        granularity = granularity_of(call.block, call.weight_shape) if call.groups == 1 else "grouped"
        bound = FASTER_THAN_DENSE_BELOW[granularity]
        if bound <= 0.0:
            reasons.append(f"dense oneDNN was faster for {granularity} masks at every measured keep probability")
        elif call.kept_fraction is None and bound < 1.0:
            reasons.append(f"kept fraction unread (traced), and dense oneDNN is faster for {granularity} "
                           f"masks keeping more than {bound:.2f}")
        elif call.kept_fraction is not None and call.kept_fraction > bound:
            reasons.append(f"dense oneDNN is faster for {granularity} masks keeping "
                           f"{call.kept_fraction:.2f} > {bound:.2f} of the weights")
        return reasons

    def conv2d(self, input, weight, mask, bias, stride, padding, dilation, groups, block, scale):
        input, padding = explicit_padding(input, weight.shape, padding, dilation)
        return torch.ops.rskcnn.masked_conv2d(
            input, weight, mask, bias, stride, padding, dilation, groups, block, float(scale)
        )

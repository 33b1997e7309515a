"""``rsk_conv2d``: the masked convolution every backend computes."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from . import backends
from .geometry import conv_out_extent
from .masks import check_block, mask_rows, mask_shape
from .ops.autocast import unify_floating_dtypes


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, bool) or isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair  # type: ignore[return-value]


def _padding(padding, stride: tuple[int, int]):
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        return padding
    return _pair(padding, "padding", 0)


def _check_tensors(input, weight, mask, bias, groups: int, block):
    for name, t in (("input", input), ("weight", weight), ("mask", mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {input.dtype}")
    if input.dim() != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D (Cout, Cin/groups, KH, KW), got shape {tuple(weight.shape)}")
    if weight.dtype != input.dtype:
        raise TypeError(f"weight dtype {weight.dtype} must match input dtype {input.dtype}")
    if weight.device != input.device:
        raise ValueError(f"weight is on {weight.device} but input is on {input.device}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a torch.bool tensor, got dtype {mask.dtype}")
    if mask.device != weight.device:
        raise ValueError(f"mask is on {mask.device} but weight is on {weight.device}")
    expected = mask_shape(weight.shape, block)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"mask must have shape {expected} = ceil(weight shape {tuple(weight.shape)} / block {block}), "
            f"got {tuple(mask.shape)}"
        )
    cout, cin_g = weight.shape[:2]
    if input.shape[1] != cin_g * groups:
        raise ValueError(
            f"input has {input.shape[1]} channels but weight expects Cin/groups * groups = "
            f"{cin_g} * {groups} = {cin_g * groups}"
        )
    if cout % groups:
        raise ValueError(f"weight.shape[0] = {cout} must be divisible by groups = {groups}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if tuple(bias.shape) != (cout,):
            raise ValueError(f"bias must have shape ({cout},), got {tuple(bias.shape)}")
        if bias.dtype != input.dtype or bias.device != input.device:
            raise TypeError(f"bias must be {input.dtype} on {input.device}, got {bias.dtype} on {bias.device}")


def _kept_fraction(mask: torch.Tensor, expected_keep: float | None) -> float | None:
    """The mask's kept fraction where reading it is free (a CPU mask, outside tracing), else
    the caller's expected_keep (a GPU mask is never read: that would sync)."""
    if mask.device.type != "cpu" or torch.compiler.is_compiling() or mask.numel() == 0:
        return expected_keep
    return int(mask.sum()) / mask.numel()


def _check_kept_per_row(kept_per_row, mask: torch.Tensor, weight_shape, block, groups: int) -> None:
    """``kept_per_row`` must be None or an int in [0, n] for the ``(rows, n)`` of
    :func:`rskcnn.masks.mask_rows`; where reading the mask is free (a CPU mask, outside
    tracing) every row must keep exactly that many units."""
    if kept_per_row is None:
        return
    rows, n = mask_rows(weight_shape, block, groups)
    if isinstance(kept_per_row, bool) or not isinstance(kept_per_row, int) or not 0 <= kept_per_row <= n:
        raise ValueError(f"kept_per_row must be None or an int in [0, {n}] (units per mask row), got {kept_per_row!r}")
    if mask.device.type != "cpu" or torch.compiler.is_compiling() or rows == 0:
        return
    kept = mask.reshape(rows, n).sum(1)
    if bool((kept != kept_per_row).any()):
        raise ValueError(f"kept_per_row = {kept_per_row}, but the mask's {rows} rows of {n} units keep "
                         f"{kept.tolist()} (rows as rskcnn.mask_rows defines them)")


def rsk_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    block: Sequence[int] = (1, 1, 1, 1),
    scale: float = 1.0,
    backend: str = "auto",
    expected_keep: float | None = None,
    kept_per_row: int | None = None,
) -> torch.Tensor:
    """``F.conv2d(input, weight * expand_mask(mask, block) * scale, bias, stride, padding, dilation, groups)``,
    computed without touching the weights the mask drops.

    Shapes: input ``(N, Cin, H, W)`` or ``(Cin, H, W)``; weight ``(Cout, Cin/groups, KH, KW)``;
    mask bool ``ceil(weight.shape / block)``; bias ``(Cout,)``; output ``(N, Cout, OH, OW)``.
    ``padding`` is an int, a pair, ``'same'`` or ``'valid'``. ``backend`` is ``'auto'`` or a
    name from :func:`rskcnn.available_backends`. Gradients of masked weights are exactly 0.
    ``expected_keep`` (the keep probability the mask was drawn with) lets ``auto`` choose
    on a GPU, where reading the mask's kept fraction would sync; it never changes the result.

    ``kept_per_row`` says that every row of the mask (``(rows, n) = rskcnn.mask_rows(weight.shape,
    block, groups)``: a filter's entries, or for ``filter`` masks the filters of one conv group)
    keeps exactly that many units, as masks of ``law='exact'`` do (``RSKConv2d(law='exact')``
    passes it). It never changes the result either; it lets a backend build its index lists
    with a static shape and no device sync (``compact`` needs it on CUDA, with groups > 1, and
    under ``torch.compile``). An int in ``[0, n]``; on the CPU outside tracing the mask is
    checked against it, elsewhere it must be true.
    """
    block = check_block(block)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"scale must be a real number, got {scale!r}")
    if not isinstance(backend, str) or backend not in backends.BACKEND_NAMES:
        raise ValueError(f"backend must be one of {backends.BACKEND_NAMES}, got {backend!r}")
    if expected_keep is not None and (isinstance(expected_keep, bool) or not isinstance(expected_keep, numbers.Real)
                                      or not 0.0 <= expected_keep <= 1.0):
        raise ValueError(f"expected_keep must be None or a float in [0, 1], got {expected_keep!r}")
    stride = _pair(stride, "stride", 1)
    dilation = _pair(dilation, "dilation", 1)
    padding = _padding(padding, stride)

    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if (isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor)
            and torch.is_autocast_enabled(input.device.type)):
        # As F.conv2d under autocast: a previous layer may hand over autocast's dtype while the
        # weight is float32. Unified to the wider dtype; the op's autocast rule does the rest.
        input, weight, bias = unify_floating_dtypes(input, weight, bias)
    _check_tensors(input, weight, mask, bias, groups, block)
    _check_kept_per_row(kept_per_row, mask, weight.shape, block, groups)

    pads = (0, 0) if padding == "valid" else padding if padding != "same" else None
    if pads is not None:
        extents = [
            conv_out_extent(input.shape[2 + d], weight.shape[2 + d], stride[d], pads[d], dilation[d]) for d in (0, 1)
        ]
        if min(extents) < 1:
            raise ValueError(
                f"kernel {tuple(weight.shape[2:])} with dilation {dilation} is larger than the padded input "
                f"{(input.shape[2] + 2 * pads[0], input.shape[3] + 2 * pads[1])}"
            )

    call = backends.ConvCall(
        device=input.device,
        dtype=input.dtype,
        input_shape=tuple(input.shape),
        weight_shape=tuple(weight.shape),
        block=block,
        stride=stride,
        padding=padding if isinstance(padding, tuple) else (0, 0),
        dilation=dilation,
        groups=groups,
        kept_fraction=_kept_fraction(mask, expected_keep) if backend == "auto" else None,
        kept_per_row=kept_per_row,
    )
    chosen = backends.resolve(backend, call)
    output = chosen.run(call, input, weight, mask, bias, stride, padding, dilation, groups, block, scale)
    return output.squeeze(0) if unbatched else output

"""Block masks: one representation for every granularity.

A mask over a weight ``(Cout, Cin/groups, KH, KW)`` with block ``(bo, bi, bh, bw)`` is a
bool tensor of shape ``ceil(weight_shape / block)``; weight element ``(o, i, h, w)`` is
kept iff ``mask[o // bo, i // bi, h // bh, w // bw]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Block = tuple[int, int, int, int]

GRANULARITIES = ("element", "tap", "filter", "block")


def _check_weight_shape(weight_shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) != 4 or any(s < 0 for s in shape):
        raise ValueError(
            f"weight_shape must be 4 non-negative sizes (Cout, Cin/groups, KH, KW), got {tuple(weight_shape)}"
        )
    return shape  # type: ignore[return-value]


def check_block(block: Sequence[int]) -> Block:
    """Validates a block shape and returns it as a tuple of 4 ints."""
    if isinstance(block, torch.Tensor) or not isinstance(block, Sequence) or len(block) != 4:
        raise ValueError(f"block must be 4 positive ints (bo, bi, bh, bw), got {block!r}")
    if not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block):
        raise ValueError(f"block must be 4 positive ints (bo, bi, bh, bw), got {tuple(block)!r}")
    return tuple(block)  # type: ignore[return-value]


def block_shape(
    granularity: str, weight_shape: Sequence[int], block_size: Sequence[int] = (32, 32)
) -> Block:
    """The block ``(bo, bi, bh, bw)`` of a named granularity for a weight shape.

    ``element`` (1,1,1,1) is the paper's text, ``tap`` (1,Cin_g,1,1) one kernel position of
    a filter, ``filter`` (1,Cin_g,KH,KW) the authors' code, and ``block`` (bo,bi,1,1)
    a tensor-core-sized tile with ``(bo, bi) = block_size``.
    """
    _, cin_g, kh, kw = _check_weight_shape(weight_shape)
    if granularity == "element":
        return (1, 1, 1, 1)
    if granularity == "tap":
        return (1, max(cin_g, 1), 1, 1)
    if granularity == "filter":
        return (1, max(cin_g, 1), max(kh, 1), max(kw, 1))
    if granularity == "block":
        if (
            len(block_size) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block_size)
        ):
            raise ValueError(f"block_size must be 2 positive ints (bo, bi), got {block_size!r}")
        return (block_size[0], block_size[1], 1, 1)
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def granularity_of(block: Sequence[int], weight_shape: Sequence[int]) -> str:
    """The named granularity a block acts as on a weight shape (``block`` for any other tile)."""
    bo, bi, bh, bw = check_block(block)
    _, cin_g, kh, kw = _check_weight_shape(weight_shape)
    if (bo, bi, bh, bw) == (1, 1, 1, 1):
        return "element"
    if bo == 1 and bi >= cin_g:
        if bh >= kh and bw >= kw:
            return "filter"
        if bh == 1 and bw == 1:
            return "tap"
    return "block"


def mask_shape(weight_shape: Sequence[int], block: Sequence[int]) -> tuple[int, int, int, int]:
    """``ceil(weight_shape / block)``, elementwise."""
    shape = _check_weight_shape(weight_shape)
    block = check_block(block)
    return tuple(math.ceil(s / b) for s, b in zip(shape, block))  # type: ignore[return-value]


def sample_mask(
    weight_shape: Sequence[int],
    keep_prob: float | torch.Tensor,
    block: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draws a bool mask of shape ``mask_shape(weight_shape, block)``, each entry True
    with probability ``keep_prob``.

    ``keep_prob`` may be a 0-dim tensor, so a schedule can change it without host sync.
    The draw happens on the generator's device and is moved to ``device``.
    """
    if not isinstance(keep_prob, torch.Tensor) and not 0.0 < float(keep_prob) <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    shape = mask_shape(weight_shape, block)
    draw_device = generator.device if generator is not None else device
    uniform = torch.rand(shape, generator=generator, device=draw_device)
    if isinstance(keep_prob, torch.Tensor):
        keep_prob = keep_prob.to(uniform.device)
    mask = uniform < keep_prob
    return mask if device is None else mask.to(device, non_blocking=True)


def expand_mask(
    mask: torch.Tensor, block: Sequence[int], weight_shape: Sequence[int]
) -> torch.Tensor:
    """The elementwise bool mask of shape ``weight_shape`` that a block mask stands for."""
    block = check_block(block)
    shape = _check_weight_shape(weight_shape)
    expected = mask_shape(shape, block)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"mask must have shape {expected} = ceil(weight shape {shape} / block {block}), "
            f"got {tuple(mask.shape)}"
        )
    full = mask
    for dim, b in enumerate(block):
        if b != 1:
            full = full.repeat_interleave(b, dim=dim)
    return full[: shape[0], : shape[1], : shape[2], : shape[3]]

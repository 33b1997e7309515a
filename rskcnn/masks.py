"""Block masks: one representation for every granularity.

A mask over a weight ``(Cout, Cin/groups, KH, KW)`` with block ``(bo, bi, bh, bw)`` is a
bool tensor of shape ``ceil(weight_shape / block)``; weight element ``(o, i, h, w)`` is
kept iff ``mask[o // bo, i // bi, h // bh, w // bw]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .geometry import mask_shape_of

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
    return mask_shape_of(_check_weight_shape(weight_shape), check_block(block))


_U32 = 0xFFFFFFFF


def _mul_u32(x, c: int):
    """``(x * c) mod 2**32`` for an int or int64 tensor ``x`` in [0, 2**32), in 16-bit halves of ``c`` so no
    int64 product overflows (signed overflow would differ between eager and compiled code)."""
    return (x * (c & 0xFFFF) + ((x * (c >> 16)) & 0xFFFF) * 65536) & _U32


def _mix_u32(x):
    """A bijective 32-bit integer hash (two xorshift-multiply rounds, "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = _mul_u32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul_u32(x, 0x846CA68B)
    return x ^ (x >> 16)


def check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise TypeError(f"{name} must be an int in [0, 2**64), got {seed!r}")
    return seed


def counter_uniform(shape: Sequence[int], seed: int, step: int | torch.Tensor,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """float32 numbers in [0, 1) of shape ``shape`` that depend only on ``(seed, step, index)``.

    A counter-based generator made of integer tensor ops: it keeps no state (``step`` is the
    caller's counter, an int or an int64 0-dim tensor), traces under ``torch.compile``
    without graph breaks, and gives the same numbers on every device, process and rank.
    Statistically fine for dropout masks; not for cryptography. Resolution 2**-24.
    """
    seed = check_seed(seed)
    step = torch.as_tensor(step, dtype=torch.int64, device=device)
    if device is None:
        device = step.device
    seed_lo, seed_hi = seed & _U32, seed >> 32
    key_a = _mix_u32((step & _U32) ^ seed_lo)
    key_b = _mix_u32(key_a ^ ((step >> 32) & _U32) ^ _mix_u32(seed_hi))
    index = torch.arange(math.prod(shape), dtype=torch.int64, device=device)
    bits = _mix_u32(_mix_u32((index & _U32) ^ key_b) ^ key_a ^ (index >> 32))
    return ((bits >> 8).to(torch.float32) * 2.0**-24).reshape(tuple(shape))


def sample_mask(
    weight_shape: Sequence[int],
    keep_prob: float | torch.Tensor,
    block: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    step: int | torch.Tensor = 0,
) -> torch.Tensor:
    """Draws a bool mask of shape ``mask_shape(weight_shape, block)``, each entry True
    with probability ``keep_prob``.

    ``keep_prob`` may be a 0-dim tensor, so a schedule can change it without host sync.
    The uniform numbers are float32 (never the default dtype, which may be float16), from
    torch's RNG (``generator``, else the global one; the draw happens on the generator's
    device and is moved to ``device``) or, with ``seed``, from :func:`counter_uniform` at
    ``step``, drawn on ``device`` (a pure function of ``(seed, step)``).
    """
    if not isinstance(keep_prob, torch.Tensor) and not 0.0 < float(keep_prob) <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    shape = mask_shape(weight_shape, block)
    if seed is not None:
        if generator is not None:
            raise ValueError("sample_mask: pass either generator or seed, not both")
        uniform = counter_uniform(shape, seed, step, device)
    else:
        draw_device = generator.device if generator is not None else device
        uniform = torch.rand(shape, generator=generator, device=draw_device, dtype=torch.float32)
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

"""Block masks: one representation for every granularity.

A mask over a weight ``(Cout, Cin/groups, KH, KW)`` with block ``(bo, bi, bh, bw)`` is a
bool tensor of shape ``ceil(weight_shape / block)``; weight element ``(o, i, h, w)`` is
kept iff ``mask[o // bo, i // bi, h // bh, w // bw]``.

Masks are drawn by one of two laws (:data:`LAWS`, :func:`sample_mask`): ``bernoulli``, every
entry kept independently with probability ``keep_prob`` (the paper's), or ``exact``, every row
(:func:`mask_rows`) keeping exactly ``exact_keep_count(keep_prob, n)`` of its ``n`` entries.
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


LAWS = ("bernoulli", "exact")


def check_law(law) -> str:
    """Validates a mask law name (one of :data:`LAWS`)."""
    if not isinstance(law, str) or law not in LAWS:
        raise ValueError(f"law must be one of {LAWS}, got {law!r}")
    return law


def mask_rows(weight_shape: Sequence[int], block: Sequence[int], groups: int = 1) -> tuple[int, int]:
    """``(rows, n)``: how the exact law splits the mask of ``weight_shape`` and ``block`` into
    rows of ``n`` units, each of which keeps exactly ``exact_keep_count(keep_prob, n)``.

    With the mask shape ``(MO, MI, MH, MW) = ceil(weight_shape / block)``, a row is the
    ``MI*MH*MW`` trailing entries of one output block-row ``mask[o]`` (``rows = MO``): the taps
    of a filter for ``tap``, its weights for ``element``, its tiles for ``block``. When
    ``MI*MH*MW == 1`` (``filter`` masks, and any mask of a 1x1 kernel whose block spans Cin/groups)
    each output block-row is a single unit, so a row is instead the output block-rows of one
    conv group (``rows = groups``, ``n = MO / groups``); if the block-rows straddle groups
    (``MO`` not a multiple of ``groups``, possible only with ``bo > 1``) the whole mask is one
    row. The mask viewed as ``(rows, n)``, row-major, holds the rows in order.
    """
    shape = mask_shape(weight_shape, block)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    cout = _check_weight_shape(weight_shape)[0]
    if cout % groups != 0:
        raise ValueError(f"groups must divide Cout = {cout} (weight shape {tuple(weight_shape)}), got {groups}")
    mo, per_row = shape[0], shape[1] * shape[2] * shape[3]
    if per_row != 1:
        return mo, per_row
    if mo % groups == 0:
        return groups, mo // groups
    return 1, mo


def exact_keep_count(keep_prob: float | torch.Tensor, n: int) -> int | torch.Tensor:
    """``k = max(1, round(keep_prob * n))``: the units the exact law keeps in a row of ``n``
    (0 when ``n == 0``; a row of one unit is always kept). Rounds half to even, as both
    Python's ``round`` and ``torch.round`` do.

    With a Python ``keep_prob`` the result is an int. With a tensor (any shape, typically the
    module's 0-dim float64 buffer) it is an int64 tensor of the same shape, computed in float64
    on the tensor's device without host sync, so a traced caller does not depend on its value.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(keep_prob, torch.Tensor):
        count = torch.round(keep_prob.to(torch.float64) * n)
        return count.clamp(min=min(1, n), max=n).to(torch.int64)
    if isinstance(keep_prob, bool) or not 0.0 < float(keep_prob) <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}")
    return min(n, max(1, round(float(keep_prob) * n)))


def keep_fraction(keep_prob: float | torch.Tensor, n: int, law: str = "bernoulli") -> float | torch.Tensor:
    """The expected fraction of a mask row's units that is kept: ``keep_prob`` under the
    ``bernoulli`` law, the realised ``exact_keep_count(keep_prob, n) / n`` under ``exact``
    (``n`` from :func:`mask_rows`; with ``n == 0``, ``keep_prob``). Scaling by it keeps
    ``scale_mode`` unbiased under either law. Under ``exact`` a tensor ``keep_prob`` gives a
    float64 tensor of the same shape (no host sync) and a float a float; ``bernoulli`` returns
    ``keep_prob`` itself.
    """
    check_law(law)
    if law == "bernoulli" or n == 0:  # a row of no units drops nothing: nothing to rescale
        return keep_prob
    count = exact_keep_count(keep_prob, n)
    if isinstance(count, torch.Tensor):
        return count.to(torch.float64) / n
    return count / n


def _keep_smallest_per_row(uniform: torch.Tensor, keep_prob: float | torch.Tensor, rows: int, n: int) -> torch.Tensor:
    """A bool tensor shaped like ``uniform`` that is True at the ``k = exact_keep_count(keep_prob, n)``
    smallest numbers of each row of ``uniform.reshape(rows, n)``: k units drawn uniformly without
    replacement (ties, at 2**-24 resolution, go to the lower index). One sort and one scatter,
    static shapes; a tensor ``k`` is compared as data, so a new keep_prob neither syncs nor retraces."""
    flat = uniform.reshape(rows, n)
    order = torch.argsort(flat, dim=1, stable=True)  # order[r, j]: index of the j-th smallest
    count = exact_keep_count(keep_prob, n)
    if isinstance(count, torch.Tensor):
        count = count.to(uniform.device)
    keep_by_rank = torch.arange(n, device=uniform.device) < count  # (n,): the first k ranks
    kept = torch.zeros_like(flat, dtype=torch.bool)
    kept.scatter_(1, order, keep_by_rank.expand(rows, n))
    return kept.reshape(uniform.shape)


def sample_mask(
    weight_shape: Sequence[int],
    keep_prob: float | torch.Tensor,
    block: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    step: int | torch.Tensor = 0,
    law: str = "bernoulli",
    groups: int = 1,
) -> torch.Tensor:
    """Draws a fresh bool mask of shape ``mask_shape(weight_shape, block)``.

    ``law`` decides which entries are True:

    * ``"bernoulli"`` (default, the paper's): each entry independently, with probability
      ``keep_prob``; ``groups`` is then unused.
    * ``"exact"``: each row of :func:`mask_rows(weight_shape, block, groups) <mask_rows>` keeps
      exactly ``k = exact_keep_count(keep_prob, n) = max(1, round(keep_prob * n))`` of its ``n``
      entries, chosen uniformly without replacement: the k smallest of the row's uniforms. A
      row is one output block-row's entries (``mask[o]``) for ``element``, ``tap`` and
      ``block`` masks, the filters of one of the ``groups`` conv groups for ``filter`` masks.
      The count per row is static, so kernels may use fixed trip counts.

    ``keep_prob`` may be a 0-dim tensor, so a schedule can change it without host sync (under
    the exact law ``k`` is then an int64 tensor, compared as data: no sync, no retrace).
    The uniform numbers are float32 (never the default dtype, which may be float16), from
    torch's RNG (``generator``, else the global one; the draw happens on the generator's
    device and is moved to ``device``) or, with ``seed``, from :func:`counter_uniform` at
    ``step``, drawn on ``device`` (a pure function of ``(seed, step)``). Both laws draw the
    same uniforms for the same source, and trace under ``torch.compile(fullgraph=True)``
    (except ``generator``, which Dynamo cannot trace).
    """
    check_law(law)
    if not isinstance(keep_prob, torch.Tensor) and not 0.0 < float(keep_prob) <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    shape = mask_shape(weight_shape, block)
    rows, n = mask_rows(weight_shape, block, groups)
    if seed is not None:
        if generator is not None:
            raise ValueError("sample_mask: pass either generator or seed, not both")
        uniform = counter_uniform(shape, seed, step, device)
    else:
        draw_device = generator.device if generator is not None else device
        uniform = torch.rand(shape, generator=generator, device=draw_device, dtype=torch.float32)
    if isinstance(keep_prob, torch.Tensor):
        keep_prob = keep_prob.to(uniform.device)
    if law == "exact":
        mask = _keep_smallest_per_row(uniform, keep_prob, rows, n)
    else:
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

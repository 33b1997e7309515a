"""Index lists for the tiled kernels, built on the device by one Triton launch per pass.

No host synchronisation: every list has a capacity fixed by the shapes (all steps of a
tile) and a count per tile, and the conv kernels loop over that many entries. One launch
instead of a chain of tensor ops matters on a GPU, where a compute-bound layer's pass takes
tens of microseconds, a few kernel launches' worth.

Conventions. The mask is the compact block mask, read through its strides as uint8; weight
element ``(o, c, kh, kw)`` is kept iff ``mask[o // bo, c // bi, kh // bh, kw // bw]``.
Output channels are visited in ``order`` (per conv group): sorted by whether the filter keeps
anything, then by its kept-tap bit pattern (first taps most significant), then by index, so
that dropped filters come last and channels keeping the same taps are adjacent, and whole
tiles of a ``filter`` or ``tap`` mask are empty and cost nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import MAX_GROUP_CHANNELS
from ..geometry import ConvGeometry

# The sort key packs (alive, pattern of the first _KEY_TAPS taps, channel) into an int64.
_KEY_TAPS = 40
_CHANNEL_BITS = 20


@triton.jit
def mask_at(mask_ptr, o, c, kh, kw, sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW):
    return mask_ptr + (o // BO) * sm_o + (c // BI) * sm_i + (kh // BH) * sm_h + (kw // BW) * sm_w


@triton.jit
def _store_group_order(mask_ptr, order_ptr, group, COUT_G, CIN_G, KW, TAPS,
                       sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW,
                       KEY_TAPS: tl.constexpr, CHANNEL_BITS: tl.constexpr, GROUP_P2: tl.constexpr):
    """Writes ``order[group * COUT_G + rank]`` (global output channels) for one conv group."""
    rank = tl.arange(0, GROUP_P2)
    ok = rank < COUT_G
    cout = group * COUT_G + rank
    pattern = tl.zeros((GROUP_P2,), dtype=tl.int64)
    alive = tl.zeros((GROUP_P2,), dtype=tl.int32)
    for tap in range(0, TAPS):
        kh = tap // KW
        kw = tap % KW
        kept = tl.zeros((GROUP_P2,), dtype=tl.int32)
        for c in range(0, CIN_G, BI):  # one mask column per step
            kept |= tl.load(mask_at(mask_ptr, cout, c, kh, kw, sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW),
                            mask=ok, other=0).to(tl.int32)
        alive |= kept
        if tap < KEY_TAPS:
            pattern = pattern * 2 + (kept != 0).to(tl.int64)
    channel_mask = (1 << CHANNEL_BITS) - 1
    key = ((((alive != 0).to(tl.int64) << KEY_TAPS) | pattern) << CHANNEL_BITS) | (channel_mask - rank)
    key = tl.where(ok, key, -1)
    local = channel_mask - (tl.sort(key, descending=True) & channel_mask)
    tl.store(order_ptr + group * COUT_G + rank, (group * COUT_G + local).to(tl.int32), mask=ok)


@triton.jit
def _plan_kernel(
    mask_ptr, order_ptr, steps_ptr, counts_ptr,
    COUT_G, CIN_G, KW, TAPS, sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW,
    N_TILES, N_CHUNKS,
    ROWS_ARE_INPUT: tl.constexpr, WITH_STEPS: tl.constexpr,
    KEY_TAPS: tl.constexpr, CHANNEL_BITS: tl.constexpr, GROUP_P2: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Program ``group * N_TILES + tile``: the group's channel order, then the kept steps
    ``s = tap * N_CHUNKS + chunk`` of its tile of rows (output channels in order for the
    forward, input channels for grad-input) against chunks of columns (the other side)."""
    tile_id = tl.program_id(0)
    group = tile_id // N_TILES
    tile = tile_id % N_TILES
    # Every program of a group writes the same order (no cross-program dependency), then
    # reads back what its own threads wrote.
    _store_group_order(mask_ptr, order_ptr, group, COUT_G, CIN_G, KW, TAPS, sm_o, sm_i, sm_h, sm_w,
                       BO, BI, BH, BW, KEY_TAPS, CHANNEL_BITS, GROUP_P2)
    if WITH_STEPS:
        tl.debug_barrier()
        rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        lane = tl.arange(0, BLOCK_K)
        if ROWS_ARE_INPUT:
            rows_ok = rows < CIN_G
        else:
            rows_ok = rows < COUT_G
            row_cout = tl.load(order_ptr + group * COUT_G + rows, mask=rows_ok, other=0)
        count = 0
        for step in range(0, TAPS * N_CHUNKS):
            tap = step // N_CHUNKS
            cols = (step % N_CHUNKS) * BLOCK_K + lane
            if ROWS_ARE_INPUT:
                cols_ok = cols < COUT_G
                cout = tl.load(order_ptr + group * COUT_G + cols, mask=cols_ok, other=0)
                where = mask_at(mask_ptr, cout[None, :], rows[:, None], tap // KW, tap % KW,
                                 sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW)
            else:
                cols_ok = cols < CIN_G
                where = mask_at(mask_ptr, row_cout[:, None], cols[None, :], tap // KW, tap % KW,
                                 sm_o, sm_i, sm_h, sm_w, BO, BI, BH, BW)
            m = tl.load(where, mask=rows_ok[:, None] & cols_ok[None, :], other=0)
            kept = tl.max(m.to(tl.int32)) > 0
            tl.store(steps_ptr + tile_id * (TAPS * N_CHUNKS) + count, step, mask=kept)
            count += kept.to(tl.int32)
        tl.store(counts_ptr + tile_id, count)


def mask_bytes(mask: torch.Tensor) -> torch.Tensor:
    """The bool mask as the kernels read it: contiguous uint8 (``mask`` itself if it already is).
    A (tiny) copy rather than ``view(torch.uint8)``: Inductor in torch 2.11 cannot lower a
    bitcast from bool."""
    return mask.to(torch.uint8, memory_format=torch.contiguous_format)


def mask_args(mask: torch.Tensor, block) -> dict:
    """The mask's strides and block sizes, as every kernel that reads the mask takes them."""
    return dict(sm_o=mask.stride(0), sm_i=mask.stride(1), sm_h=mask.stride(2), sm_w=mask.stride(3),
                BO=block[0], BI=block[1], BH=block[2], BW=block[3])


def _launch(mask, block, geo: ConvGeometry, n_tiles: int, n_chunks: int, *, rows_are_input: bool,
            with_steps: bool, block_n: int, block_k: int):
    mask8 = mask_bytes(mask)
    if geo.cout_g > MAX_GROUP_CHANNELS:
        raise ValueError(f"rskcnn triton: at most {MAX_GROUP_CHANNELS} output channels per group, got {geo.cout_g}")
    device = mask.device
    order = torch.empty(geo.cout, dtype=torch.int32, device=device)
    steps_per_tile = geo.taps * n_chunks if with_steps else 0
    steps = torch.empty((geo.groups * n_tiles, max(steps_per_tile, 1)), dtype=torch.int32, device=device)
    counts = torch.empty(geo.groups * n_tiles, dtype=torch.int32, device=device)
    wrap_triton(_plan_kernel)[(geo.groups * n_tiles,)](
        mask8, order, steps, counts,
        COUT_G=geo.cout_g, CIN_G=geo.cin_g, KW=geo.kw, TAPS=geo.taps, **mask_args(mask8, block),
        N_TILES=n_tiles, N_CHUNKS=n_chunks, ROWS_ARE_INPUT=rows_are_input, WITH_STEPS=with_steps,
        KEY_TAPS=_KEY_TAPS, CHANNEL_BITS=_CHANNEL_BITS, GROUP_P2=triton.next_power_of_2(max(geo.cout_g, 1)),
        BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return order, steps, counts


def forward_plan(mask, block, geo: ConvGeometry, block_n: int, block_k: int):
    """``order (Cout,)``, ``steps (G * n_tiles, T * n_chunks)`` and ``counts (G * n_tiles,)``, int32:
    per tile of ``block_n`` ordered output channels, the steps over ``block_k``-channel input chunks
    whose tile of the mask keeps a weight."""
    return _launch(mask, block, geo, triton.cdiv(geo.cout_g, block_n), triton.cdiv(geo.cin_g, block_k),
                   rows_are_input=False, with_steps=True, block_n=block_n, block_k=block_k)


def grad_input_plan(mask, block, geo: ConvGeometry, block_n: int, block_k: int):
    """As :func:`forward_plan`, per tile of ``block_n`` input channels, over chunks of ``block_k``
    ordered output channels."""
    return _launch(mask, block, geo, triton.cdiv(geo.cin_g, block_n), triton.cdiv(geo.cout_g, block_k),
                   rows_are_input=True, with_steps=True, block_n=block_n, block_k=block_k)


def channel_order(mask, block, geo: ConvGeometry) -> torch.Tensor:
    """``order (Cout,)`` only (grad-weight decides each tile's emptiness itself)."""
    return _launch(mask, block, geo, 1, 1, rows_are_input=False, with_steps=False, block_n=16, block_k=16)[0]
